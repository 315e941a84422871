"""The IWAE bound on a linear-Gaussian model (probabilistic PCA), where log p(x) is exact."""

from __future__ import annotations

import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro import poutine

from pyro_flows.infer import iwae as iwae_module
from pyro_flows.infer.amortized import AmortizedFlow
from pyro_flows.infer.iwae import iwae_log_likelihood, log_importance_weights
from pyro_flows.transforms import InverseAutoregressive

K_LAT, D_OBS, N = 2, 4, 6


class PPCA:
    """z ~ N(0, I_k), x | z ~ N(W z + mu, sigma^2 I_d); exact marginal and posterior."""

    def __init__(self, seed: int = 0) -> None:
        g = torch.Generator().manual_seed(seed)
        kw = dict(generator=g, dtype=torch.float64)
        self.W = torch.randn(D_OBS, K_LAT, **kw)
        self.mu = torch.randn(D_OBS, **kw)
        self.sigma = 0.7
        self.x = torch.randn(N, D_OBS, **kw) * 2 + self.mu
        M = self.W.T @ self.W + self.sigma**2 * torch.eye(K_LAT, dtype=torch.float64)
        self.M_inv = torch.linalg.inv(M)
        self.post_cov = self.sigma**2 * self.M_inv
        self.post_mean = self.posterior_mean(self.x)

    def posterior_mean(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mu) @ self.W @ self.M_inv.T

    def log_px(self, x: torch.Tensor | None = None) -> torch.Tensor:
        cov = self.W @ self.W.T + self.sigma**2 * torch.eye(D_OBS, dtype=torch.float64)
        return dist.MultivariateNormal(self.mu, cov).log_prob(self.x if x is None else x)

    def model(self, x: torch.Tensor) -> None:
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(x.new_zeros(K_LAT), 1.0).to_event(1))
            loc = z @ self.W.T + self.mu
            pyro.sample("x", dist.Normal(loc, self.sigma).to_event(1), obs=x)

    def exact_guide(self, x: torch.Tensor) -> None:
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.MultivariateNormal(self.posterior_mean(x), self.post_cov))

    def poor_sd(self) -> torch.Tensor:
        return self.post_cov.diagonal().sqrt() * 1.5

    def poor_guide(self, x: torch.Tensor) -> None:
        """Shifted by half a posterior sd, diagonal and too wide: a proposal with finite weight
        variance (a wider proposal) but a clear ELBO gap."""
        sd = self.poor_sd()
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(self.posterior_mean(x) + sd / 3, sd).to_event(1))


def iwae(model, guide, *args, **kwargs):
    return iwae_log_likelihood(model, guide, *args, progress=False, **kwargs)


@pytest.mark.parametrize("num_samples,chunk_size", [(1, 1), (7, 3), (50, 50)])
def test_exact_posterior_gives_log_px_for_any_k(num_samples, chunk_size):
    ppca = PPCA()
    torch.manual_seed(0)
    bound = iwae(
        ppca.model, ppca.exact_guide, ppca.x, num_samples=num_samples, chunk_size=chunk_size
    )
    assert bound.shape == (N,)
    assert torch.allclose(bound, ppca.log_px(), atol=1e-10)


def test_poor_guide_bound_increases_with_k_towards_log_px():
    ppca = PPCA(seed=1)
    x = ppca.x.repeat(100, 1)  # 600 independent estimates: the averages below are precise
    exact = float(ppca.log_px(x).mean())
    gaps = []
    for k in (1, 4, 32, 512):
        torch.manual_seed(k)
        bound, elbo = iwae(
            ppca.model, ppca.poor_guide, x, num_samples=k, chunk_size=128, return_elbo=True
        )
        assert torch.all(elbo <= bound + 1e-12)
        gaps.append(exact - float(bound.mean()))
    assert gaps[0] > 0.2  # the poor guide leaves a real gap at K = 1 (the ELBO)
    assert all(a > b for a, b in zip(gaps, gaps[1:], strict=False)), gaps
    assert abs(gaps[-1]) < 0.01, gaps


def test_k1_is_the_analytic_elbo_on_average():
    ppca = PPCA(seed=2)
    torch.manual_seed(0)
    reps = 4000
    single = iwae(ppca.model, ppca.poor_guide, ppca.x.repeat(reps, 1), num_samples=1)
    single = single.view(reps, N)
    bound, standard_error = single.mean(0), single.std(0) / reps**0.5
    # ELBO = E_q[log p(x|z)] + E_q[log p(z)] + H(q), in closed form for Gaussians
    sd = ppca.poor_sd()
    m = ppca.post_mean + sd / 3
    resid = ppca.x - m @ ppca.W.T - ppca.mu
    trace = torch.trace(ppca.W @ torch.diag(sd**2) @ ppca.W.T)
    log_2pi = math.log(2 * math.pi)
    e_lik = (
        -0.5 * (resid.square().sum(-1) + trace) / ppca.sigma**2
        - D_OBS * math.log(ppca.sigma)
        - 0.5 * D_OBS * log_2pi
    )
    e_prior = -0.5 * (m.square().sum(-1) + sd.square().sum()) - 0.5 * K_LAT * log_2pi
    elbo = e_lik + e_prior + dist.Normal(m, sd).to_event(1).entropy()
    assert torch.all((bound - elbo).abs() < 4 * standard_error), (bound - elbo) / standard_error


def test_chunks_are_combined_by_logsumexp(monkeypatch):
    chunks = [torch.tensor([[0.0, -1.0], [2.0, 1.0], [-3.0, 0.5]]), torch.tensor([[1.5, -2.0]])]
    calls = []

    def fake(model, guide, *args, num_samples, **kwargs):
        calls.append(num_samples)
        return chunks[len(calls) - 1]

    monkeypatch.setattr(iwae_module, "log_importance_weights", fake)
    bound, elbo = iwae(
        None, None, num_samples=4, chunk_size=3, max_plate_nesting=1, return_elbo=True
    )
    assert calls == [3, 1]
    every = torch.cat(chunks)
    assert torch.allclose(bound, torch.logsumexp(every, 0) - math.log(4))
    assert torch.allclose(elbo, every.mean(0))


def test_inner_plates_are_summed_and_the_data_plate_may_be_any_dim():
    ppca = PPCA(seed=3)

    def model(x):
        with pyro.plate("data", x.shape[0], dim=-2):
            z = pyro.sample("z", dist.Normal(x.new_zeros(K_LAT), 1.0).to_event(1))
            loc = (z @ ppca.W.T + ppca.mu).squeeze(-2)
            with pyro.plate("features", D_OBS, dim=-1):
                pyro.sample("x", dist.Normal(loc, ppca.sigma), obs=x)

    def guide(x):
        with pyro.plate("data", x.shape[0], dim=-2):
            pyro.sample("z", dist.MultivariateNormal(ppca.post_mean.unsqueeze(-2), ppca.post_cov))

    torch.manual_seed(0)
    bound = iwae(model, guide, ppca.x, num_samples=5, chunk_size=2)
    assert torch.allclose(bound, ppca.log_px(), atol=1e-10)


def test_scale_is_ignored_and_masks_are_applied():
    ppca = PPCA()

    def scaled_model(x):
        with poutine.scale(scale=0.25):
            ppca.model(x)

    torch.manual_seed(0)
    assert torch.allclose(
        iwae(scaled_model, ppca.exact_guide, ppca.x, num_samples=3), ppca.log_px(), atol=1e-10
    )

    mask = torch.tensor([True, False, True, True, False, True])

    def masked_model(x):
        with poutine.mask(mask=mask):
            ppca.model(x)

    def masked_guide(x):
        with poutine.mask(mask=mask):
            ppca.exact_guide(x)

    bound = iwae(masked_model, masked_guide, ppca.x, num_samples=3)
    assert torch.allclose(bound[mask], ppca.log_px()[mask], atol=1e-10)
    assert torch.equal(bound[~mask], torch.zeros(2, dtype=torch.float64))


def test_log_importance_weights_shape_and_auxiliary_guides():
    ppca = PPCA()

    def auxiliary_guide(x):  # a flow-style guide: an auxiliary site, then Delta sites
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample(
                "aux",
                dist.MultivariateNormal(ppca.post_mean, ppca.post_cov),
                infer={"is_auxiliary": True},
            )
            pyro.sample("z", dist.Delta(z, event_dim=1))

    torch.manual_seed(0)
    log_w = log_importance_weights(ppca.model, auxiliary_guide, ppca.x, num_samples=4)
    assert log_w.shape == (4, N)
    assert torch.allclose(log_w, ppca.log_px().expand(4, N), atol=1e-10)


def test_amortized_iaf_guide_needs_no_inverse(monkeypatch):
    ppca = PPCA()
    torch.manual_seed(0)
    posterior = AmortizedFlow(K_LAT, D_OBS, flow="iaf", num_transforms=2, hidden_dims=(8,))
    posterior = posterior.double()

    def guide(x):
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", posterior(ppca.post_mean, ppca.post_cov.diagonal().sqrt(), x))

    def boom(*args, **kwargs):
        raise AssertionError("inverse pass called")

    monkeypatch.setattr(InverseAutoregressive, "inverse_and_log_det", boom)
    bound, elbo = iwae(ppca.model, guide, ppca.x, num_samples=64, chunk_size=16, return_elbo=True)
    assert bound.shape == elbo.shape == (N,)
    assert torch.all(elbo <= bound)
    gap_iwae, gap_elbo = ppca.log_px() - bound, ppca.log_px() - elbo
    assert float(gap_iwae.abs().mean()) < float(gap_elbo.mean()) / 2


def test_clear_errors():
    ppca = PPCA()

    def global_model(x):
        w = pyro.sample("w", dist.Normal(x.new_zeros(()), 1.0))
        with pyro.plate("data", x.shape[0]):
            loc = w.unsqueeze(-1).expand(*w.shape, D_OBS)
            pyro.sample("x", dist.Normal(loc, 1.0).to_event(1), obs=x)

    def global_guide(x):
        pyro.sample("w", dist.Normal(x.new_zeros(()), 1.0))

    with pytest.raises(ValueError, match="plate 'data'.*latent site 'w'"):
        iwae(global_model, global_guide, ppca.x, num_samples=2)

    def prior_only_guide(x):
        pass

    with pytest.raises(ValueError, match=r"latent sites \['z'\] are not sampled by the guide"):
        iwae(ppca.model, prior_only_guide, ppca.x, num_samples=2)

    def subsampled_model(x):
        with pyro.plate("data", x.shape[0], subsample_size=3) as idx:
            z = pyro.sample("z", dist.Normal(x.new_zeros(K_LAT), 1.0).to_event(1))
            pyro.sample("x", dist.Normal(z @ ppca.W.T, 1.0).to_event(1), obs=x[idx])

    def subsampled_guide(x):
        with pyro.plate("data", x.shape[0], subsample_size=3):
            pyro.sample("z", dist.Normal(x.new_zeros(K_LAT), 1.0).to_event(1))

    with pytest.raises(ValueError, match="subsamples 3 of 6"):
        iwae(subsampled_model, subsampled_guide, ppca.x, num_samples=2)
    with pytest.raises(ValueError, match="plate 'points'"):
        iwae(ppca.model, ppca.exact_guide, ppca.x, num_samples=2, data_plate="points")

    def unobserved(x):
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(x.new_zeros(K_LAT), 1.0).to_event(1))

    with pytest.raises(ValueError, match="no observed site"):
        iwae(unobserved, ppca.exact_guide, ppca.x, num_samples=2)
    with pytest.raises(ValueError, match="num_samples must be >= 1"):
        iwae(ppca.model, ppca.exact_guide, ppca.x, num_samples=0)
    with pytest.raises(TypeError, match="chunk_size must be an int"):
        iwae(ppca.model, ppca.exact_guide, ppca.x, chunk_size=2.5)
