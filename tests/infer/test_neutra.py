"""NeuTra: the pulled-back potential identity, exactness with an exact flow, sampling through a
trained flow, gradient accounting, and the Pyro-model route through AutoFlow."""

from __future__ import annotations

import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer import SVI, Trace_ELBO

from pyro_flows import Flow, flows
from pyro_flows.infer import AutoFlow, flow_forward, neutra, neutra_log_prob, neutra_model
from pyro_flows.transforms import ElementwiseAffine

LOC = torch.tensor([1.0, -2.0])
SCALE = torch.tensor([3.0, 0.5])


def gaussian(z: torch.Tensor) -> torch.Tensor:
    """Unnormalised N(LOC, diag SCALE^2): log Z = sum log(sqrt(2 pi) SCALE)."""
    return -0.5 * (((z - LOC) / SCALE) ** 2).sum(-1)


LOG_Z = float(torch.log(math.sqrt(2 * math.pi) * SCALE).sum())


def test_potential_identity_with_any_flow():
    """log p_f(eps) = log N(eps) + log p(f(eps)) - log q(f(eps)) for an arbitrary flow."""
    torch.manual_seed(0)
    flow = flows.maf(2, num_transforms=2, hidden_dims=(8,))
    for p in flow.parameters():
        p.data.add_(0.2 * torch.randn_like(p))
    eps = torch.randn(16, 2)
    x, log_det = flow_forward(flow, eps)
    base = torch.distributions.Normal(0.0, 1.0).log_prob(eps).sum(-1)
    pulled = neutra_log_prob(flow, gaussian)(eps)
    assert torch.allclose(pulled, gaussian(x) + log_det, atol=1e-5)
    assert torch.allclose(pulled, base + gaussian(x) - flow.log_prob(x), atol=1e-4)


def test_an_exact_flow_pulls_the_target_back_to_a_standard_normal():
    flow = Flow([ElementwiseAffine(2, loc=LOC, scale=SCALE)])
    eps = torch.randn(32, 2)
    pulled = neutra_log_prob(flow, gaussian)(eps)
    base = torch.distributions.Normal(0.0, 1.0).log_prob(eps).sum(-1)
    assert torch.allclose(pulled - base, torch.full((32,), LOG_Z), atol=1e-5)


def test_neutra_samples_the_target_and_counts_training_gradients():
    flow = Flow([ElementwiseAffine(2, loc=LOC + 0.5, scale=SCALE * 1.3)])  # imperfect flow
    result = neutra(flow, gaussian, training_grad_evals=1234, num_samples=400, warmup=200,
                    num_chains=2, progress=False, seed=1)
    assert result.method == "neutra" and result.samples.shape == (2, 400, 2)
    assert result.divergences == 0
    draws = result.samples.reshape(-1, 2)
    assert torch.allclose(draws.mean(0), LOC, atol=4 * float(SCALE.max()) / math.sqrt(800) * 2)
    assert torch.allclose(draws.std(0), SCALE, rtol=0.15)
    assert result.num_grad_evals == result.extra["sampling_grad_evals"] + 1234
    assert result.extra["base_samples"].shape == (2, 400, 2)
    # the flow is frozen during sampling and its trainability restored after
    assert all(p.requires_grad for p in flow.parameters())


def test_neutra_argument_errors():
    flow = Flow([ElementwiseAffine(2)])
    with pytest.raises(ValueError, match="training_grad_evals"):
        neutra(flow, gaussian, training_grad_evals=-1)
    with pytest.raises(TypeError, match="log density"):
        neutra_log_prob(flow, 3)



def test_neutra_restores_the_flows_train_mode():
    flow = flows.realnvp(2, num_transforms=1)
    flow.train()
    flow.transforms[0].eval()  # a mixed state comes back module by module
    neutra(flow, gaussian, num_samples=10, warmup=10, num_chains=1, progress=False)
    assert flow.training and not flow.transforms[0].training
    flow.eval()
    neutra(flow, gaussian, num_samples=10, warmup=10, num_chains=1, progress=False)
    assert not any(m.training for m in flow.modules())


@pytest.mark.parametrize(
    ("options", "error", "match"),
    [
        ({"num_chains": 2.0}, TypeError, "num_chains must be an int"),
        ({"num_chains": -1}, ValueError, "num_chains must be >= 1"),
        ({"num_chains": 0}, ValueError, "num_chains must be >= 1"),
        ({"seed": "a"}, TypeError, "seed must be an int or None"),
        ({"seed": 1.5}, TypeError, "seed must be an int or None"),
    ],
)
def test_neutra_checks_chains_and_seed_up_front(options, error, match):
    flow = flows.realnvp(2, num_transforms=1)
    flow.train()
    with pytest.raises(error, match=match):
        neutra(flow, gaussian, num_samples=10, warmup=10, progress=False, **options)
    assert flow.training and all(p.requires_grad for p in flow.parameters())


@pytest.mark.parametrize(
    ("eps", "error", "match"),
    [
        (torch.zeros(4, 2, dtype=torch.float64), TypeError, "flow's dtype torch.float32, got "
                                                            "torch.float64"),
        (torch.zeros(4, 2, dtype=torch.long), TypeError, "flow's dtype torch.float32"),
        ([[0.0, 0.0]], TypeError, "eps must be a torch.Tensor"),
        (torch.zeros(4, 3), ValueError, r"shape \(\.\.\., 2\), got \(4, 3\)"),
        (torch.tensor(0.0), ValueError, "eps must have shape"),
    ],
)
def test_flow_forward_checks_its_input(eps, error, match):
    flow = flows.realnvp(2, num_transforms=1)
    with pytest.raises(error, match=match):
        flow_forward(flow, eps)
    with pytest.raises(TypeError, match="pyro_flows.Flow"):
        flow_forward(torch.nn.Linear(2, 2), torch.zeros(4, 2))


def test_neutra_model_through_autoflow():
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    y = torch.tensor([1.2, 0.7, 2.1, 1.5])

    def model(y):
        mu = pyro.sample("mu", dist.Normal(0.0, 10.0))
        sigma = pyro.sample("sigma", dist.LogNormal(0.0, 1.0))
        with pyro.plate("data", len(y)):
            pyro.sample("y", dist.Normal(mu, sigma), obs=y)

    guide = AutoFlow(model, num_transforms=2, hidden_dims=(16,))
    svi = SVI(model, guide, pyro.optim.Adam({"lr": 0.02}), Trace_ELBO())
    for _ in range(300):
        svi.step(y)
    result = neutra_model(model, guide, y, training_grad_evals=300, num_samples=150,
                          warmup=100, num_chains=1, progress=False, seed=0)
    sites = result.extra["constrained"]
    assert set(sites) >= {"mu", "sigma"}
    assert sites["mu"].shape[:2] == (1, 150)
    assert bool((sites["sigma"] > 0).all())
    assert abs(float(sites["mu"].mean()) - float(y.mean())) < 0.6
    assert result.num_grad_evals == result.extra["sampling_grad_evals"] + 300
    pyro.clear_param_store()
