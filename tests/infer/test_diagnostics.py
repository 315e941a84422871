"""Diagnostics against cases with known answers: log Z, ESS, PSIS k-hat, R-hat, moments."""

from __future__ import annotations

import math

import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch

from pyro_flows import Flow
from pyro_flows.infer.diagnostics import (
    ess_fraction,
    flow_diagnostics,
    guide_psis_khat,
    importance_log_Z,
    log_mean_exp,
    mcmc_diagnostics,
    moment_errors,
    psis_khat,
    reference_moment_errors,
)
from pyro_flows.infer.results import SampleResult
from pyro_flows.transforms.rescale import Rescale


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# -- importance-sampling summaries --------------------------------------------------------------
def test_log_mean_exp_is_exact_and_stable():
    x = torch.tensor([[0.0, math.log(3.0)], [1e4, 1e4]], dtype=torch.float64)
    out = log_mean_exp(x, dim=-1)
    assert torch.allclose(out, torch.tensor([math.log(2.0), 1e4], dtype=torch.float64))
    assert log_mean_exp(torch.tensor([-1e4, -1e4])).item() == pytest.approx(-1e4)
    with pytest.raises(ValueError, match="at least one value"):
        log_mean_exp(torch.empty(0))
    with pytest.raises(TypeError, match="torch.Tensor"):
        log_mean_exp([1.0, 2.0])  # type: ignore[arg-type]


def test_importance_log_Z_matches_hand_computation():
    w = np.array([1.0, 2.0, 3.0, 6.0])
    est, se = importance_log_Z(np.log(w) + 100.0)  # a shift multiplies Z, not the error
    assert est == pytest.approx(math.log(w.mean()) + 100.0, abs=1e-12)
    assert se == pytest.approx(w.std(ddof=1) / (w.mean() * math.sqrt(4)), rel=1e-12)
    est, se = importance_log_Z(torch.full((10,), -3.0))
    assert est == pytest.approx(-3.0) and se == 0.0


def test_ess_fraction_known_values():
    assert ess_fraction(torch.zeros(100)) == pytest.approx(1.0, abs=1e-12)
    one = torch.full((100,), -math.inf)
    one[7] = 0.0
    assert ess_fraction(one) == pytest.approx(0.01)
    # weights 1, 1, 2, 2: (sum w)^2 / (n sum w^2) = 36 / 40
    assert ess_fraction(np.log([1.0, 1.0, 2.0, 2.0])) == pytest.approx(0.9)


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_log_weights_refuse_nan_and_plus_inf(bad):
    lw = torch.zeros(20)
    lw[3] = bad
    for fn in (importance_log_Z, ess_fraction, psis_khat):
        with pytest.raises(ValueError, match=r"NaN/\+inf at 1 index\(es\) \[3\]"):
            fn(lw)


def test_log_weights_shape_errors():
    with pytest.raises(ValueError, match="1-D"):
        ess_fraction(torch.zeros(3, 2))
    with pytest.raises(ValueError, match="at least 2"):
        importance_log_Z([0.0])
    with pytest.raises(ValueError, match="all -inf"):
        ess_fraction([-math.inf, -math.inf])
    with pytest.raises(TypeError, match="array of numbers"):
        ess_fraction("abc")


# -- PSIS k-hat ---------------------------------------------------------------------------------
@pytest.mark.parametrize("k", [0.2, 0.5, 0.8, 1.1])
def test_psis_khat_recovers_the_shape_of_a_pareto(k):
    # w = U^(-k) is Pareto with tail index 1/k: P(w > t) = t^(-1/k)
    u = torch.rand(20000, generator=gen(int(10 * k)), dtype=torch.float64)
    khat = psis_khat(-k * u.log())
    assert abs(khat - k) < 0.1
    assert _pyro_khat(-k * u.log()) == pytest.approx(khat, abs=1e-6)  # Pyro's estimator agrees


def _pyro_khat(lw: torch.Tensor) -> float:
    """The same tail (PSIS's cut-off) fitted by Pyro's own generalised-Pareto estimator."""
    from pyro.ops.stats import fit_generalized_pareto

    n = lw.numel()
    x = torch.sort(lw - lw.max()).values
    cutoff = float(x[-int(math.ceil(min(n / 5.0, 3.0 * math.sqrt(n)))) - 1])
    tail = x[x > cutoff]
    return float(fit_generalized_pareto(tail.exp() - math.exp(cutoff))[0])


def test_psis_khat_of_bounded_and_equal_weights():
    assert psis_khat(torch.zeros(100)) == -math.inf
    assert psis_khat(torch.full((100,), 5.0, dtype=torch.float32) + 1e-7) == -math.inf
    lw = torch.zeros(200)
    lw[:50] = -math.inf  # zero weights and equal ones: still bounded
    assert psis_khat(lw) == -math.inf
    u = torch.rand(5000, generator=gen(1), dtype=torch.float64)
    assert psis_khat(u.log()) < 0.0  # w = U: bounded, k = -1
    with pytest.raises(ValueError, match="at least 10"):
        psis_khat(torch.randn(5))
    with pytest.raises(ValueError, match="reff"):
        psis_khat(torch.randn(50, generator=gen()), reff=0.0)


# -- MCMC ---------------------------------------------------------------------------------------
def test_mcmc_diagnostics_iid_draws():
    x = torch.randn(4, 1000, 3, generator=gen())
    d = mcmc_diagnostics(x, wall_time=2.0, num_grad_evals=8000)
    assert d["rhat_max"] < 1.01
    assert all(3200 < e < 4800 for e in d["ess_bulk"])  # ESS ~ n = 4000
    assert all(3000 < e < 5000 for e in d["ess_tail"])
    assert d["ess_per_second"] == pytest.approx(d["ess_bulk_min"] / 2.0)
    assert d["ess_per_grad"] == pytest.approx(d["ess_bulk_min"] / 8000)
    assert all(abs(m * math.sqrt(4000) - 1) < 0.15 for m in d["mcse_mean"])  # sd / sqrt(n)


def test_mcmc_diagnostics_ar1_has_the_known_ess():
    # AR(1) with coefficient rho has integrated autocorrelation (1 + rho) / (1 - rho)
    rho, n = 0.8, 5000
    g = gen(3)
    x = torch.empty(4, n, dtype=torch.float64)
    x[:, 0] = torch.randn(4, generator=g, dtype=torch.float64)
    eps = torch.randn(4, n, generator=g, dtype=torch.float64) * math.sqrt(1 - rho**2)
    for t in range(1, n):
        x[:, t] = rho * x[:, t - 1] + eps[:, t]
    d = mcmc_diagnostics(x)  # (chains, draws) accepted as one coordinate
    expected = 4 * n * (1 - rho) / (1 + rho)
    assert abs(d["ess_bulk_min"] / expected - 1) < 0.15
    assert d["rhat_max"] < 1.01


def test_mcmc_diagnostics_flags_stuck_chains():
    x = torch.randn(4, 500, 2, generator=gen())
    x[1] += 3.0  # one chain stuck in another mode (the usual alarm is R-hat > 1.01)
    d = mcmc_diagnostics(x)
    assert d["rhat_max"] > 1.3 and d["rhat"][0] > 1.3 and d["rhat"][1] > 1.3
    x[1] -= 3.0
    assert mcmc_diagnostics(x)["rhat_max"] < 1.01
    one = mcmc_diagnostics(x[:1])
    assert math.isnan(one["rhat_max"]) and one["ess_bulk_min"] > 300
    with pytest.raises(ValueError, match="num_chains, num_draws, dim"):
        mcmc_diagnostics(torch.zeros(5))
    with pytest.raises(ValueError, match="at least 4 draws"):
        mcmc_diagnostics(torch.zeros(2, 3, 1))



def _apart_and_constant() -> torch.Tensor:
    """Coordinate 0: chains far apart (R-hat ~ 3); coordinate 1: one value everywhere."""
    apart = torch.randn(4, 200, 1, generator=gen()) + 5.0 * torch.arange(4.0)[:, None, None]
    return torch.cat([apart, torch.ones(4, 200, 1)], -1)


def test_a_constant_coordinate_does_not_hide_an_unconverged_one():
    d = mcmc_diagnostics(_apart_and_constant())
    assert d["rhat_max"] > 1.5 and d["rhat_max"] == d["rhat"][0]
    assert math.isnan(d["rhat"][1]) and d["constant_coords"] == [1]
    assert math.isfinite(d["ess_bulk_min"]) and d["ess_bulk_min"] < 50
    r = SampleResult("mh", _apart_and_constant(), wall_time=1.0, num_log_prob_evals=800,
                     num_grad_evals=0)
    out = r.diagnostics()  # what SampleResult reports flags it too
    assert out["rhat_max"] > 1.5 and out["constant_coords"] == [1]


def test_chains_stuck_at_different_constants_have_infinite_rhat():
    x = torch.randn(3, 100, 2, generator=gen())
    x[:, :, 1] = torch.tensor([0.0, 1.0, 2.0])[:, None]  # each chain constant, chains differ
    d = mcmc_diagnostics(x)
    assert d["rhat"][1] == math.inf and d["rhat_max"] == math.inf
    assert d["constant_coords"] == [] and d["rhat"][0] < 1.1
    everything_constant = mcmc_diagnostics(torch.ones(2, 10, 2))
    assert math.isnan(everything_constant["rhat_max"])
    assert everything_constant["constant_coords"] == [0, 1]


@pytest.mark.parametrize(
    ("samples", "options", "error", "match"),
    [
        (torch.zeros(4, 100, 0), {}, ValueError, "at least 1 coordinate"),
        (torch.zeros(0, 100, 2), {}, ValueError, "at least 1 chain"),
        (torch.randn(2, 50, 1), {"num_grad_evals": -5}, ValueError, "num_grad_evals must be"),
        (torch.randn(2, 50, 1), {"num_grad_evals": 2.5}, TypeError, "num_grad_evals must be"),
        (torch.randn(2, 50, 1), {"wall_time": -1.0}, ValueError, "wall_time must be"),
        (torch.randn(2, 50, 1), {"wall_time": math.nan}, ValueError, "wall_time must be"),
        (torch.randn(2, 50, 1), {"wall_time": "1s"}, TypeError, "wall_time must be"),
    ],
)
def test_mcmc_diagnostics_bad_input_is_named(samples, options, error, match):
    with pytest.raises(error, match=match):
        mcmc_diagnostics(samples, **options)


# -- moments ------------------------------------------------------------------------------------
def test_moment_errors_known_answers():
    x = torch.tensor([[1.0, 0.0], [3.0, 0.0], [1.0, 2.0], [3.0, 2.0]], dtype=torch.float64)
    # means (2, 1), sample sds (1.1547, 1.1547)
    e = moment_errors(x, mean=[2.0, 0.0], std=[2 / math.sqrt(3), 0.5])
    assert e["mean_error"] == pytest.approx([0.0, 2.0])
    assert e["std_error"] == pytest.approx([0.0, (2 / math.sqrt(3)) / 0.5 - 1])
    assert e["mean_error_max"] == pytest.approx(2.0)
    # weights put all mass on rows 0 and 3: mean (2, 1), sd (1, 1)
    lw = torch.tensor([0.0, -math.inf, -math.inf, 0.0])
    e = moment_errors(x, mean=[2.0, 1.0], std=1.0, log_weights=lw)
    assert e["mean_error_max"] == pytest.approx(0.0) and e["std_error_max"] == pytest.approx(0.0)
    with pytest.raises(ValueError, match="2 entries"):
        moment_errors(x, mean=[0.0, 0.0, 0.0], std=1.0)
    with pytest.raises(ValueError, match="positive"):
        moment_errors(x, mean=0.0, std=[1.0, 0.0])
    with pytest.raises(ValueError, match="one value per draw"):
        moment_errors(x, mean=0.0, std=1.0, log_weights=torch.zeros(3))


def test_reference_moment_errors():
    ref = torch.randn(20000, 2, generator=gen(), dtype=torch.float64) * torch.tensor([1.0, 3.0])
    same = reference_moment_errors(ref.reshape(4, 5000, 2), ref)
    assert same["mean_error_max"] == pytest.approx(0.0, abs=1e-12)
    shifted = reference_moment_errors(ref + torch.tensor([0.0, 1.5]), ref)
    assert shifted["mean_error"][1] == pytest.approx(0.5, rel=0.02)
    with pytest.raises(ValueError, match="coordinates"):
        reference_moment_errors(ref, ref[:, :1])


def test_sample_result_diagnostics_with_each_kind_of_reference():
    x = torch.randn(2, 500, 2, generator=gen(), dtype=torch.float64)
    r = SampleResult("mh", x, wall_time=1.0, num_log_prob_evals=1000, num_grad_evals=0)
    d = r.diagnostics()
    assert "mean_error_max" not in d and d["ess"] == d["ess_bulk_min"]
    assert d["ess_per_grad"] is None and d["ess_per_second"] == pytest.approx(d["ess"])
    by_dict = r.diagnostics({"mean": [0.0, 0.0], "std": [1.0, 1.0]})
    by_target = r.diagnostics(dist.Normal(torch.zeros(2), 1.0).to_event(1))
    assert by_dict["mean_error"] == pytest.approx(by_target["mean_error"])
    by_draws = r.diagnostics(torch.randn(100000, 2, generator=gen(1), dtype=torch.float64))
    assert by_draws["mean_error_max"] == pytest.approx(by_dict["mean_error_max"], abs=0.02)
    assert by_dict["mean_error_max"] < 4 / math.sqrt(by_dict["ess_bulk_min"])
    with pytest.raises(ValueError, match="reference must be"):
        r.diagnostics({"mean": [0.0, 0.0]})


# -- flows --------------------------------------------------------------------------------------
class ScaledGaussian:
    """Unnormalised N(0, s^2 I): log p~ = -|z|^2 / (2 s^2), log Z = (D/2) log(2 pi s^2)."""

    def __init__(self, dim: int, s: float) -> None:
        self.dim, self.s = dim, s
        self.log_Z = 0.5 * dim * math.log(2 * math.pi * s * s)

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        return -0.5 * (z**2).sum(-1) / self.s**2


def test_flow_diagnostics_exact_and_known_mismatch():
    torch.manual_seed(0)
    flow = Flow([Rescale(2)])  # identity at initialisation: q = N(0, I)
    exact = flow_diagnostics(flow, ScaledGaussian(2, 1.0), num_samples=2000)
    assert exact["log_Z_error"] == pytest.approx(0.0, abs=1e-5)
    assert exact["kl_q_p"] == pytest.approx(0.0, abs=1e-5)
    assert exact["ess_fraction"] == pytest.approx(1.0, abs=1e-6) and exact["khat"] == -math.inf
    # q = N(0, I), p = N(0, 4 I): KL(q||p) = D (log 2 + 1/8 - 1/2)
    d = flow_diagnostics(flow, ScaledGaussian(2, 2.0), num_samples=20000)
    kl = 2 * (math.log(2.0) + 1 / 8 - 1 / 2)
    assert d["kl_q_p"] == pytest.approx(kl, abs=0.02)
    assert d["elbo"] == pytest.approx(d["log_Z"] - kl, abs=0.02)
    assert d["khat"] > 0.5  # a too narrow proposal: heavy-tailed weights (true k = 3/4)


# -- guides -------------------------------------------------------------------------------------
X = torch.tensor([0.5, 1.5, -0.3, 2.0])
POST_MEAN = float(X.sum() / (len(X) + 1))
POST_SD = (1.0 / (len(X) + 1)) ** 0.5


def normal_normal(x):
    z = pyro.sample("z", dist.Normal(0.0, 1.0))
    with pyro.plate("data", len(x)):
        pyro.sample("x", dist.Normal(z, 1.0), obs=x)


def gaussian_guide(factor: float):
    def guide(x):
        pyro.sample("z", dist.Normal(POST_MEAN, factor * POST_SD))

    return guide


def test_guide_psis_khat_separates_good_and_bad_guides():
    pyro.set_rng_seed(0)
    assert guide_psis_khat(normal_normal, gaussian_guide(1.0), X, num_samples=2000) < 0.5
    assert guide_psis_khat(normal_normal, gaussian_guide(1.2), X, num_samples=2000) < 0.0
    # slightly too narrow: the ratios are Gaussian-tailed with k = 1 - 0.9^2 = 0.19
    assert guide_psis_khat(normal_normal, gaussian_guide(0.9), X, num_samples=2000) < 0.5
    # far too narrow: k = 1 - 0.1^2 = 0.99
    assert guide_psis_khat(normal_normal, gaussian_guide(0.1), X, num_samples=4000) > 0.7


def test_guide_psis_khat_sequential_and_errors():
    pyro.set_rng_seed(1)
    exact = guide_psis_khat(normal_normal, gaussian_guide(1.0), X, num_samples=200, vectorize=False)
    assert exact < 0.5
    chunked = guide_psis_khat(
        normal_normal, gaussian_guide(0.1), X, num_samples=4000, batch_size=1000
    )
    assert chunked > 0.7
    with pytest.raises(ValueError, match="num_samples"):
        guide_psis_khat(normal_normal, gaussian_guide(1.0), X, num_samples=5)
    with pytest.raises(ValueError, match="batch_size"):
        guide_psis_khat(normal_normal, gaussian_guide(1.0), X, batch_size=0)
