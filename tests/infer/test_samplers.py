"""Random-walk Metropolis, MALA and ULA: invariance, tuning, ULA's exact bias, costs, errors."""

from __future__ import annotations

import math

import pytest
import torch

from pyro_flows.infer.diagnostics import mcmc_diagnostics
from pyro_flows.infer.results import SampleResult, TargetDensity
from pyro_flows.infer.samplers import langevin, mala, random_walk_metropolis, ula


class Gaussian:
    """A correlated Gaussian target with the pyro_flows.targets protocol (unnormalised)."""

    def __init__(self, mean: torch.Tensor, cov: torch.Tensor, offset: float = 3.0) -> None:
        self.dim = mean.numel()
        self.mean_, self.cov = mean, cov
        self.precision = torch.linalg.inv(cov)
        self.offset = offset
        self.log_Z = (
            offset + 0.5 * self.dim * math.log(2 * math.pi) + 0.5 * float(torch.logdet(cov))
        )

    @property
    def mean(self) -> torch.Tensor:
        return self.mean_

    @property
    def std(self) -> torch.Tensor:
        return self.cov.diagonal().sqrt()

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        d = z - self.mean_
        return self.offset - 0.5 * ((d @ self.precision) * d).sum(-1)

    def sample(self, n: int, seed: int = 0) -> torch.Tensor:
        g = torch.Generator().manual_seed(seed)
        eps = torch.randn(n, self.dim, generator=g, dtype=self.cov.dtype)
        return self.mean_ + eps @ torch.linalg.cholesky(self.cov).T


def gaussian_2d() -> Gaussian:
    cov = torch.tensor([[1.0, 0.8], [0.8, 1.0]], dtype=torch.float64)
    return Gaussian(torch.tensor([1.0, -1.0], dtype=torch.float64), cov)


def gaussian_5d() -> Gaussian:
    g = torch.Generator().manual_seed(42)
    a = torch.randn(5, 5, generator=g, dtype=torch.float64)
    cov = a @ a.T / 5 + 0.3 * torch.eye(5, dtype=torch.float64)
    return Gaussian(torch.linspace(-1.0, 1.0, 5, dtype=torch.float64), cov)


def moment_zscores(
    samples: torch.Tensor, mean: torch.Tensor, cov: torch.Tensor, precision: torch.Tensor
) -> torch.Tensor:
    """(estimate - truth) / Monte Carlo standard error for every mean and covariance entry and
    for the quadratic form d^T P d (truth tr(P cov)), which weighs all eigen-directions of the
    target (precision P) equally; the standard errors use each statistic's own ESS."""
    d = samples - mean
    dim = samples.shape[-1]
    feats = [((d @ precision) * d).sum(-1)]
    truth = [torch.trace(precision @ cov)]
    for i in range(dim):
        feats.append(samples[..., i])
        truth.append(mean[i])
        for j in range(i, dim):
            feats.append(d[..., i] * d[..., j])
            truth.append(cov[i, j])
    f = torch.stack(feats, -1)
    se = torch.tensor(mcmc_diagnostics(f)["mcse_mean"], dtype=f.dtype)
    return (f.mean((0, 1)) - torch.stack(truth)) / se


# -- invariance: chains started at exact draws must stay exact -----------------------------------
def test_rwm_leaves_a_correlated_5d_gaussian_invariant():
    target = gaussian_5d()
    init = target.sample(64, seed=1)
    r = random_walk_metropolis(
        target,
        init=init,
        step_size=0.6,
        warmup=0,
        num_samples=300,
        num_chains=64,
        progress=False,
        seed=0,
    )
    assert 0.1 < r.accept_rate < 0.6
    z = moment_zscores(r.samples, target.mean, target.cov, target.precision)
    assert z.abs().max() < 4.5, z


def test_mala_leaves_a_correlated_gaussian_invariant_where_ula_does_not():
    target = gaussian_2d()  # covariance eigenvalues 1.8 and 0.2
    init = target.sample(64, seed=2)
    kw = dict(
        init=init, step_size=0.2, warmup=0, num_samples=300, num_chains=64, progress=False, seed=0
    )
    r = mala(target, **kw)
    assert 0.5 < r.accept_rate < 0.95
    assert moment_zscores(r.samples, target.mean, target.cov, target.precision).abs().max() < 4.5
    # the same proposal without the correction drifts away from the target: the check has power
    u = ula(target, **kw)
    assert moment_zscores(u.samples, target.mean, target.cov, target.precision).abs().max() > 8


def test_ula_has_the_exact_variance_inflation_on_a_gaussian():
    # z' = (I - h/2 S^-1) z + sqrt(h) xi has stationary covariance (I - h/4 S^-1)^-1 S
    target = gaussian_2d()
    h = 0.2
    eye = torch.eye(2, dtype=torch.float64)
    stationary = torch.linalg.solve(eye - h / 4 * target.precision, target.cov)
    r = ula(
        target,
        init=target.sample(128, seed=3),
        step_size=h,
        warmup=150,
        num_samples=300,
        num_chains=128,
        progress=False,
        seed=1,
    )
    z = moment_zscores(r.samples, target.mean, stationary, target.precision)
    assert z.abs().max() < 4.5, z
    # 1-D: v = s^2 / (1 - h / (4 s^2)); h = 0.5, s = 1 gives 8/7
    one = ula(
        lambda x: -0.5 * (x**2).sum(-1),
        dim=1,
        step_size=0.5,
        warmup=100,
        num_samples=500,
        num_chains=256,
        progress=False,
        seed=2,
    )
    var = one.samples.pow(2).mean()
    se = float(torch.tensor(mcmc_diagnostics(one.samples.pow(2))["mcse_mean"][0]))
    assert abs(float(var) - 8 / 7) < 4.5 * se
    assert float(var) - 1.0 > 10 * se  # clearly inflated, in the predicted direction


# -- tuning -------------------------------------------------------------------------------------
def test_adapted_acceptance_rates_are_near_their_targets():
    target = gaussian_5d()
    m = mala(target, warmup=500, num_samples=500, num_chains=8, progress=False, seed=0)
    assert abs(m.accept_rate - 0.574) < 0.08
    assert m.step_size.shape == (8,) and bool((m.step_size > 0).all())
    d = m.diagnostics()  # MALA mixes slowly along the long axis: ESS ~ 100-300 of 4000 here
    assert d["rhat_max"] < 1.1 and d["mean_error_max"] < 0.3 and d["std_error_max"] < 0.3
    w = random_walk_metropolis(
        target, warmup=500, num_samples=500, num_chains=8, progress=False, seed=0
    )
    assert abs(w.accept_rate - 0.234) < 0.08
    assert w.diagnostics()["mean_error_max"] < 0.3  # the target knows its mean and std
    u = ula(target, warmup=500, num_samples=200, num_chains=8, progress=False, seed=0)
    assert u.extra["step_size_adapted"] and torch.allclose(u.step_size, m.step_size)


def test_step_size_is_frozen_after_warmup_and_seed_reproduces():
    target = gaussian_2d()
    a = mala(target, warmup=100, num_samples=50, num_chains=3, progress=False, seed=5)
    b = mala(target, warmup=100, num_samples=150, num_chains=3, progress=False, seed=5)
    assert torch.equal(a.step_size, b.step_size)  # nothing is tuned while sampling
    assert torch.equal(a.samples, b.samples[:, :50])
    c = mala(target, warmup=100, num_samples=50, num_chains=3, progress=False, seed=6)
    assert not torch.equal(a.samples, c.samples)


def test_seeded_runs_leave_the_global_rng_alone():
    torch.manual_seed(123)
    before = torch.get_rng_state()
    random_walk_metropolis(gaussian_2d(), warmup=10, num_samples=10, progress=False, seed=0)
    assert torch.equal(torch.get_rng_state(), before)


# -- costs and outputs --------------------------------------------------------------------------
def test_evaluation_counts_are_honest():
    target = gaussian_2d()
    w = random_walk_metropolis(
        target, warmup=30, num_samples=20, num_chains=4, init="uniform", progress=False, seed=0
    )
    # one probe of the target's dtype, the starts, then one log p per iteration and chain
    assert w.num_log_prob_evals == 1 + 4 * (1 + 30 + 20) and w.num_grad_evals == 0
    m = mala(target, warmup=30, num_samples=20, num_chains=4, init="uniform", progress=False,
             seed=0)
    # start: one log p + one (log p, grad); then one (log p, grad) per iteration and chain
    assert m.num_grad_evals == 4 * (1 + 30 + 20)
    assert m.num_log_prob_evals == 1 + 4 * (2 + 30 + 20)
    # the default start adds its mode search: 64 points climbing 300 Adam steps (+ 1)
    d = mala(target, warmup=30, num_samples=20, num_chains=4, progress=False, seed=0)
    assert d.extra["init_search_grad_evals"] == 64 * 301
    assert d.num_grad_evals == 64 * 301 + 4 * (1 + 30 + 20)
    search_lp = d.extra["init_search_log_prob_evals"]
    assert d.num_log_prob_evals == 1 + search_lp + 4 * (2 + 30 + 20)
    f = mala(
        target,
        init=torch.zeros(2, dtype=torch.float64),
        warmup=30,
        num_samples=20,
        num_chains=4,
        progress=False,
        seed=0,
    )
    assert f.num_log_prob_evals == 4 * (2 + 30 + 20)  # no probe with an init
    assert m.extra["num_grad_evals_warmup"] == 4 * 31
    assert m.wall_time > 0


def test_result_to_inference_data_and_summary():
    import arviz as az

    r = mala(gaussian_2d(), warmup=50, num_samples=40, num_chains=2, progress=False, seed=0)
    idata = r.to_inference_data(var_name="theta")
    assert dict(idata.posterior["theta"].sizes) == {"chain": 2, "draw": 40, "theta_dim": 2}
    stats = idata.sample_stats
    assert set(stats.data_vars) >= {"lp", "acceptance_rate", "step_size"}
    assert torch.allclose(torch.as_tensor(stats["lp"].values), r.extra["log_prob"])
    assert idata.posterior.attrs["method"] == "mala"
    summary = az.summary(idata)
    assert list(summary.index) == ["theta[0]", "theta[1]"]
    lp = gaussian_2d().log_prob(r.samples)
    assert torch.allclose(lp, r.extra["log_prob"])  # the recorded log densities are the draws'


def test_progress_bar_can_be_silenced(capsys):
    random_walk_metropolis(gaussian_2d(), warmup=5, num_samples=5, progress=False, seed=0)
    assert capsys.readouterr().err == ""
    random_walk_metropolis(gaussian_2d(), warmup=5, num_samples=5, progress=True, seed=0)
    assert "mh" in capsys.readouterr().err


def test_default_init_redraws_chains_outside_the_support():
    def exponential(z):  # Exp(1) on z > 0, -inf elsewhere
        return torch.where(z[..., 0] > 0, -z[..., 0], torch.full_like(z[..., 0], -math.inf))

    r = random_walk_metropolis(
        exponential, dim=1, warmup=300, num_samples=1000, num_chains=8, progress=False, seed=0
    )
    assert bool((r.samples > 0).all())
    assert abs(float(r.samples.mean()) - 1.0) < 0.15


# -- errors -------------------------------------------------------------------------------------
def test_non_finite_start_names_the_chain():
    init = torch.zeros(3, 2)
    init[1, 0] = float("nan")
    with pytest.raises(ValueError, match=r"chain\(s\) \[1\]"):
        random_walk_metropolis(gaussian_2d(), init=init.double(), num_chains=3, progress=False)

    def half_plane(z):
        return torch.where(z[..., 0] > 0, -(z**2).sum(-1), torch.full_like(z[..., 0], -math.inf))

    bad = torch.tensor([[1.0, 0.0], [-1.0, 0.0]])
    with pytest.raises(ValueError, match=r"chain\(s\) \[1\]"):
        mala(half_plane, dim=2, init=bad, num_chains=2, progress=False)


def test_wrong_log_prob_shape_is_reported():
    with pytest.raises(ValueError, match=r"returned shape \(1, 2\).*expected \(1,\)"):
        random_walk_metropolis(lambda z: -0.5 * z**2, dim=2, progress=False)
    with pytest.raises(TypeError, match="must return a Tensor"):
        random_walk_metropolis(lambda z: 0.0, dim=2, progress=False)


def test_argument_errors():
    target = gaussian_2d()
    with pytest.raises(ValueError, match="pass dim="):
        random_walk_metropolis(lambda z: -(z**2).sum(-1), progress=False)
    with pytest.raises(ValueError, match="dim=3 but the target has dimension 2"):
        random_walk_metropolis(target, dim=3, progress=False)
    with pytest.raises(ValueError, match="warmup=0"):
        mala(target, warmup=0, progress=False)
    with pytest.raises(ValueError, match="num_samples must be >= 1"):
        mala(target, num_samples=0, progress=False)
    with pytest.raises(TypeError, match="num_chains must be an int"):
        mala(target, num_chains=2.0, progress=False)
    with pytest.raises(ValueError, match="target_accept"):
        random_walk_metropolis(target, target_accept=1.5, progress=False)
    with pytest.raises(ValueError, match="step_size"):
        ula(target, step_size=-1.0, progress=False)
    with pytest.raises(ValueError, match="init must have shape"):
        mala(target, init=torch.zeros(3), progress=False)
    with pytest.raises(TypeError, match="log_prob"):
        random_walk_metropolis(42, dim=2, progress=False)
    with pytest.raises(TypeError, match="do not pass adjust"):
        mala(target, adjust=False)


def test_langevin_needs_gradients_and_ula_reports_divergence():
    def no_grad(z):
        return torch.as_tensor(-(z.detach().numpy() ** 2).sum(-1))

    with pytest.raises(TypeError, match="differentiable"):
        langevin(no_grad, dim=2, progress=False)
    with pytest.raises(FloatingPointError, match="ULA diverged"):
        ula(lambda z: -50.0 * (z**2).sum(-1), dim=2, step_size=1.0, progress=False, seed=0)


def test_target_density_and_result_validation():
    density = TargetDensity(torch.distributions.MultivariateNormal(torch.zeros(3), torch.eye(3)))
    assert density.dim == 3 and density.log_Z == 0.0
    assert torch.allclose(density.std, torch.ones(3, dtype=torch.float64))
    with pytest.raises(ValueError, match="event_shape"):
        TargetDensity(torch.distributions.Normal(0.0, 1.0))
    with pytest.raises(ValueError, match="num_chains, num_draws, dim"):
        SampleResult("mh", torch.zeros(3, 2), wall_time=0.0, num_log_prob_evals=0, num_grad_evals=0)


def test_works_with_the_targets_package():
    from pyro_flows.targets import Funnel

    target = Funnel(dim=3, scale=1.0)  # exact means 0, sds (1, e^(1/4), e^(1/4))
    r = mala(target, warmup=300, num_samples=500, num_chains=8, progress=False, seed=0)
    d = r.diagnostics()  # moment errors against the target's own mean and std
    assert d["rhat_max"] < 1.05 and d["mean_error_max"] < 0.2 and d["std_error_max"] < 0.2
    assert r.extra["target_log_Z"] == 0.0
