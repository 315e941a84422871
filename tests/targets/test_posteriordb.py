"""posteriordb posteriors as Pyro models: every model runs with a finite log joint, its sites and
dimensions match posteriordb's, the name map covers the reference, hand-written Stan log
densities agree with Pyro's, batched parameters give the per-point log densities, float32 agrees
with float64, and the ODE integrator is accurate against dopri5. (The NUTS translation check is
in test_posteriordb_nuts.py.)"""

from __future__ import annotations

import itertools
import json
import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro import poutine
from pyro.infer.autoguide.initialization import InitMessenger
from scipy import stats
from torch.distributions import biject_to
from torchdiffeq import odeint

from pyro_flows.targets.posteriordb import (
    DATA_DIR,
    POSTERIORS,
    init_to_unconstrained_uniform,
    load_posterior,
    parse_element,
    reference_errors,
    rk4,
)
from pyro_flows.targets.posteriordb.arma import arma_errors
from pyro_flows.targets.posteriordb.hmm import hmm_log_likelihood
from pyro_flows.targets.posteriordb.lotka_volterra import lotka_volterra_solution
from pyro_flows.targets.posteriordb.pharmacokinetics import concentration

F64 = torch.float64
NAMES = list(POSTERIORS)


def _latent_sites(trace: poutine.Trace) -> list[dict]:
    return [
        s for s in trace.nodes.values() if s["type"] == "sample" and not s["is_observed"]
    ]


def _trace_at(spec, values: dict) -> poutine.Trace:
    return poutine.trace(poutine.condition(spec.model, values)).get_trace()


def _log_joint(spec, values: dict) -> torch.Tensor:
    return _trace_at(spec, values).log_prob_sum()


# -- registry and vendored files ------------------------------------------------------------------
def test_registry_holds_the_fifteen_vendored_posteriors():
    folders = sorted(p.name for p in DATA_DIR.iterdir() if p.is_dir())
    assert sorted(NAMES) == folders and len(NAMES) == 15
    for name in folders:
        files = {p.name for p in (DATA_DIR / name).iterdir()}
        assert {"data.json", "model.stan", "posterior.json", "reference_summary.json"} <= files
    assert "BSD" in (DATA_DIR / "README.md").read_text()
    kinds = {s.kind for s in POSTERIORS.values()}
    assert kinds == {"regression", "time series", "ode", "hmm", "gp"}


def test_load_posterior_refuses_unknown_names_and_lists_the_valid_ones():
    with pytest.raises(ValueError, match="valid names: .*arma-arma11"):
        load_posterior("eight_schools")
    with pytest.raises(TypeError, match="must be a str"):
        load_posterior(3)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="floating torch.dtype"):
        load_posterior("arma-arma11", dtype=torch.int64)


def test_parse_element_is_one_based():
    assert parse_element("theta[4]") == ("theta", (3,))
    assert parse_element("y[2, 1]") == ("y", (1, 0))
    with pytest.raises(ValueError, match="1-based"):
        parse_element("beta[0]")
    with pytest.raises(ValueError, match="cannot parse"):
        parse_element("beta[1")


# -- every model --------------------------------------------------------------------------------
@pytest.mark.parametrize("name", NAMES)
def test_model_runs_with_finite_log_joint_and_posteriordb_dimensions(name):
    spec = POSTERIORS[name]
    pyro.set_rng_seed(0)
    trace = poutine.trace(InitMessenger(init_to_unconstrained_uniform)(spec.model)).get_trace()
    sites = _latent_sites(trace)
    # Stan's names and shapes, posteriordb's dimensions, the unconstrained dimension
    assert [s["name"] for s in sites] == list(spec.parameters)
    assert {s["name"]: tuple(s["value"].shape) for s in sites} == spec.parameters
    dims = {n: math.prod(shape) for n, shape in spec.parameters.items()}
    assert dims == spec.info["dimensions"]
    unconstrained = sum(
        biject_to(s["fn"].support).inverse_shape(s["value"].shape).numel() for s in sites
    )
    assert unconstrained == spec.dim
    assert all(s["value"].dtype == torch.get_default_dtype() for s in sites)
    # finite at a Stan-style random initial point (unless Stan would reject it too) and at the
    # reference means
    at_reference = _log_joint(spec, spec.reference_point())
    assert torch.isfinite(at_reference), at_reference
    assert not torch.isnan(trace.log_prob_sum())


@pytest.mark.parametrize("name", NAMES)
def test_reference_elements_map_to_site_values(name):
    spec = POSTERIORS[name]
    point = spec.reference_point()
    draws = spec.reference_draws(_trace_at(spec, point))
    assert set(draws) == set(spec.reference)
    for element, value in draws.items():
        assert value.shape == (1,)
        expected = torch.tensor(spec.reference[element]["mean"])
        torch.testing.assert_close(value[0], expected.to(value), rtol=1e-6, atol=0)


@pytest.mark.parametrize("name", NAMES)
def test_batched_parameters_give_the_per_point_log_joint(name):
    """Guides evaluate the model on a batch of particles: parameters with leading batch dims
    must broadcast (no plates), each batch element scored as on its own."""
    spec = POSTERIORS[name]
    point = spec.reference_point()
    nodes = _trace_at(spec, point).nodes
    supports = {n: nodes[n]["fn"].support for n in point}
    scale = {e: 0.3 * r["sd"] for e, r in spec.reference.items()}
    g = torch.Generator().manual_seed(1)
    batch = []
    for _ in range(3):
        values = {n: v.clone() for n, v in point.items()}
        for element, (site, index) in ((e, parse_element(e)) for e in spec.reference):
            values[site][index] += scale[element] * float(torch.randn((), generator=g))
        if spec.kind == "hmm":  # keep the simplexes and orderings valid
            for n in ("theta1", "theta2"):
                values[n] = values[n].clamp_min(1e-3) / values[n].clamp_min(1e-3).sum()
            for n in ("phi", "lambda"):
                values[n] = values[n].clamp_min(1e-3).sort().values
        for n, v in values.items():  # a positive parameter perturbed below 0: reflect it
            if not bool(supports[n].check(v).all()):
                values[n] = v.abs()
        batch.append(values)
    stacked = {n: torch.stack([b[n] for b in batch]) for n in point}
    trace = _trace_at(spec, stacked)
    trace.compute_log_prob()
    joint = sum(s["log_prob"] for s in trace.nodes.values() if s["type"] == "sample")
    assert joint.shape == (3,)
    singles = torch.stack([_log_joint(spec, b) for b in batch])
    torch.testing.assert_close(joint, singles, rtol=1e-5, atol=1e-3)


@pytest.mark.parametrize("name", NAMES)
def test_float32_log_density_and_gradient_agree_with_float64(name):
    """The data are bound as float32 by default: at the reference means the log density and
    its gradient must match a float64 evaluation, the gradient measured on the posterior's scale
    (d log p / d theta_j times the reference sd of theta_j: nats per posterior sd)."""
    results = []
    for dtype in (torch.float32, F64):
        spec = load_posterior(name, dtype=dtype)
        point = {n: v.clone().requires_grad_() for n, v in spec.reference_point().items()}
        lp = _log_joint(spec, point)
        grads = dict(zip(point, torch.autograd.grad(lp, list(point.values())), strict=True))
        scaled = torch.tensor(
            [float(grads[site][index]) * spec.reference[e]["sd"]
             for e, (site, index) in ((e, parse_element(e)) for e in spec.reference)],
            dtype=F64,
        )
        results.append((float(lp.detach()), scaled))
    (lp32, g32), (lp64, g64) = results
    assert abs(lp32 - lp64) < 1e-5 * abs(lp64) + 1e-3, (lp32, lp64)
    assert float((g32 - g64).abs().max()) < 0.01, (g32, g64)


# -- hand-written Stan log densities ---------------------------------------------------------
def test_kidiq_momiq_log_density_by_hand():
    spec = load_posterior("kidiq-kidscore_momiq", dtype=F64)
    beta1, beta2, sigma = 26.0, 0.6, 18.5
    y, iq = (torch.tensor(spec.data[k], dtype=F64).numpy() for k in ("kid_score", "mom_iq"))
    # beta flat (0), sigma ~ cauchy(0, 2.5) truncated at 0, y ~ normal
    expected = stats.halfcauchy.logpdf(sigma, scale=2.5)
    expected += stats.norm.logpdf(y, beta1 + beta2 * iq, sigma).sum()
    got = _log_joint(spec, {"beta": torch.tensor([beta1, beta2], dtype=F64),
                            "sigma": torch.tensor(sigma, dtype=F64)})
    assert abs(float(got) - expected) < 1e-8 * abs(expected)


def test_kilpisjarvi_log_density_by_hand():
    spec = load_posterior("kilpisjarvi_mod-kilpisjarvi", dtype=F64)
    d = spec.data
    alpha, beta, sigma = -60.0, 0.0175, 1.1
    expected = stats.norm.logpdf(alpha, d["pmualpha"], d["psalpha"])
    expected += stats.norm.logpdf(beta, d["pmubeta"], d["psbeta"])
    x, y = torch.tensor(d["x"], dtype=F64).numpy(), torch.tensor(d["y"], dtype=F64).numpy()
    expected += stats.norm.logpdf(y, alpha + beta * x, sigma).sum()
    values = {k: torch.tensor(v, dtype=F64) for k, v in zip(("alpha", "beta", "sigma"),
                                                             (alpha, beta, sigma), strict=True)}
    assert abs(float(_log_joint(spec, values)) - expected) < 1e-8 * abs(expected)


def test_arma_log_density_by_hand_with_stans_loop():
    spec = load_posterior("arma-arma11", dtype=F64)
    y = spec.data["y"]
    mu, phi, theta, sigma = 0.01, 0.95, -0.05, 0.17
    err = [y[0] - (mu + phi * mu)]
    for t in range(1, len(y)):
        err.append(y[t] - (mu + phi * y[t - 1] + theta * err[t - 1]))
    expected = (stats.norm.logpdf(mu, 0, 10) + stats.norm.logpdf(phi, 0, 2)
                + stats.norm.logpdf(theta, 0, 2) + stats.halfcauchy.logpdf(sigma, scale=2.5)
                + stats.norm.logpdf(err, 0, sigma).sum())
    values = {k: torch.tensor(v, dtype=F64) for k, v in
              zip(("mu", "phi", "theta", "sigma"), (mu, phi, theta, sigma), strict=True)}
    assert abs(float(_log_joint(spec, values)) - expected) < 1e-8 * abs(expected)


def test_gp_log_density_by_hand():
    spec = load_posterior("gp_pois_regr-gp_regr", dtype=F64)
    x, y = torch.tensor(spec.data["x"], dtype=F64), torch.tensor(spec.data["y"], dtype=F64)
    rho, alpha, sigma = 6.9, 2.4, 1.8
    cov = alpha**2 * torch.exp(-((x[:, None] - x[None]) ** 2) / (2 * rho**2))
    cov = cov + sigma * torch.eye(len(x), dtype=F64)  # sigma, not sigma^2, as in the program
    expected = (stats.gamma.logpdf(rho, 25, scale=1 / 4) + stats.halfnorm.logpdf(alpha, scale=2)
                + stats.halfnorm.logpdf(sigma, scale=1)
                + stats.multivariate_normal.logpdf(y.numpy(), cov=cov.numpy()))
    values = {k: torch.tensor(v, dtype=F64) for k, v in
              zip(("rho", "alpha", "sigma"), (rho, alpha, sigma), strict=True)}
    assert abs(float(_log_joint(spec, values)) - expected) < 1e-8 * abs(expected)


def test_hmm_log_density_by_hand_with_stans_loops():
    spec = load_posterior("bball_drive_event_0-hmm_drive_0", dtype=F64)
    d = spec.data
    theta = [[0.99, 0.01], [0.035, 0.965]]
    phi, lam = [1.8, 6.7], [0.028, 0.076]

    def exp_lpdf(x, rate):
        return math.log(rate) - rate * x

    def log_sum_exp(v):
        m = max(v)
        return m + math.log(sum(math.exp(a - m) for a in v))

    gamma = [exp_lpdf(d["u"][0], phi[k]) + exp_lpdf(d["v"][0], lam[k]) for k in range(2)]
    for t in range(1, d["N"]):
        gamma = [
            log_sum_exp([gamma[j] + math.log(theta[j][k]) + exp_lpdf(d["u"][t], phi[k])
                         + exp_lpdf(d["v"][t], lam[k]) for j in range(2)])
            for k in range(2)
        ]
    expected = log_sum_exp(gamma)
    expected += sum(stats.dirichlet.logpdf(theta[k], d["alpha"][k]) for k in range(2))
    expected += stats.norm.logpdf(phi, [0, 3], 1).sum() + stats.norm.logpdf(lam, [0, 3], 1).sum()
    values = {"theta1": theta[0], "theta2": theta[1], "phi": phi, "lambda": lam}
    values = {k: torch.tensor(v, dtype=F64) for k, v in values.items()}
    assert abs(float(_log_joint(spec, values)) - expected) < 1e-9 * abs(expected)


def test_hmm_tree_reduction_equals_the_sequential_forward_algorithm():
    g = torch.Generator().manual_seed(0)
    for n in (1, 2, 5, 8, 13):
        log_t = torch.randn(4, 3, 3, generator=g, dtype=F64).log_softmax(-1)
        e = torch.randn(4, n, 3, generator=g, dtype=F64)
        gamma = e[:, 0]
        for t in range(1, n):
            gamma = torch.logsumexp(gamma[:, :, None] + log_t, dim=1) + e[:, t]
        torch.testing.assert_close(hmm_log_likelihood(log_t, e), torch.logsumexp(gamma, -1))


def test_arma_scan_equals_the_loop_for_a_batch_of_parameters():
    g = torch.Generator().manual_seed(0)
    y = torch.randn(37, generator=g, dtype=F64)
    mu, phi, theta = (torch.randn(5, generator=g, dtype=F64) * 0.5 for _ in range(3))
    err = arma_errors(y, mu, phi, theta)
    loop = [y[0] - mu - phi * mu]
    for t in range(1, len(y)):
        loop.append(y[t] - mu - phi * y[t - 1] - theta * loop[-1])
    torch.testing.assert_close(err, torch.stack(loop, -1))


# -- the ODE solutions --------------------------------------------------------------------------
def _dopri5(f, y0, times):
    grid = torch.tensor([0.0, *times], dtype=F64)
    return odeint(f, y0, grid, rtol=1e-11, atol=1e-11, method="dopri5")[1:]


def test_lotka_volterra_rk4_error_is_far_below_the_noise_on_the_reference_box():
    spec = load_posterior("hudson_lynx_hare-lotka_volterra", dtype=F64)
    ref, ts = spec.reference, [float(t) for t in spec.data["ts"]]
    names = [f"theta[{i}]" for i in range(1, 5)] + ["z_init[1]", "z_init[2]"]
    corners = torch.tensor(
        [[ref[e][q] for e, q in zip(names, qs, strict=True)]
         for qs in itertools.product(("q05", "q95"), repeat=6)],
        dtype=F64,
    )
    theta, z0 = corners[:, :4], corners[:, 4:]
    a, b, c, d = (theta[:, i] for i in range(4))

    def f(t, z):
        return torch.stack([(a - b * z[:, 1]) * z[:, 0], (d * z[:, 0] - c) * z[:, 1]], -1)

    exact = _dopri5(f, z0, ts).transpose(0, 1)
    rel = ((lotka_volterra_solution(theta, z0, ts) - exact) / exact).abs().max()
    assert rel < 1e-4, rel  # 2e-5 measured; sigma ~ 0.25 on the log scale


def test_one_comp_rk4_error_is_far_below_the_noise_on_the_reference_grid():
    spec = load_posterior("one_comp_mm_elim_abs-one_comp_mm_elim_abs", dtype=F64)
    ref, d = spec.reference, spec.data
    times = [float(t) for t in d["times"]]
    grid = torch.tensor(
        [[ref[e][q] for e, q in zip(("k_a", "K_m", "V_m"), qs, strict=True)]
         for qs in itertools.product(("q05", "mean", "q95"), repeat=3)]
        + [[0.76, 1e-3, 0.65]],  # K_m far in the lower tail: sharply bent elimination
        dtype=F64,
    )
    k_a, k_m, v_m = (grid[:, i] for i in range(3))

    def f(t, c):
        return torch.exp(-k_a * t) * d["D"] * k_a / d["V"] - (v_m / d["V"]) * c / (k_m + c)

    exact = _dopri5(f, torch.zeros(len(grid), dtype=F64), times).T
    got = concentration(k_a, k_m, v_m, float(d["D"]), float(d["V"]), 0.0, times)
    rel = ((got - exact) / exact).abs().max()
    assert rel < 1e-3, rel  # 3.1e-4 measured; sigma ~ 0.13 on the log scale


def test_rk4_is_fourth_order_and_checks_its_arguments():
    def f(t, y):
        return torch.cos(t * torch.ones_like(y)) * y

    exact = math.exp(math.sin(2.0))
    errors = [abs(float(rk4(f, torch.ones(1, dtype=F64), 0.0, [2.0], h)[0, 0]) - exact)
              for h in (0.1, 0.05)]
    assert 12 < errors[0] / errors[1] < 20  # 2^4 = 16
    with pytest.raises(ValueError, match="increase strictly"):
        rk4(f, torch.ones(1), 0.0, [1.0, 1.0], 0.1)
    with pytest.raises(ValueError, match="max_step"):
        rk4(f, torch.ones(1), 0.0, [1.0], 0.0)


# -- reference_errors ---------------------------------------------------------------------------
def _gaussian_draws(spec, n: int, shift: float = 0.0, scale: float = 1.0, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    draws = {n_: torch.zeros((n, *s), dtype=F64) for n_, s in spec.parameters.items()}
    for element, r in spec.reference.items():
        site, index = parse_element(element)
        z = torch.randn(n, generator=g, dtype=F64)
        draws[site][(slice(None), *index)] = r["mean"] + r["sd"] * (shift + scale * z)
    return draws


def test_reference_errors_measures_mean_shift_and_sd_ratio():
    spec = POSTERIORS["mesquite-logmesquite"]
    exact = reference_errors(spec.name, _gaussian_draws(spec, 20000))
    assert exact["worst_mean_error"] < 0.05
    assert 0.95 < min(exact["sd_ratio"].values()) and max(exact["sd_ratio"].values()) < 1.05
    off = reference_errors(spec, _gaussian_draws(spec, 20000, shift=1.0, scale=0.5))
    assert all(0.95 < e < 1.05 for e in off["mean_error"].values())
    assert 0.45 < off["worst_sd_ratio"] < 0.55
    assert off["sd_ratio_range"][1] < 0.55 and off["n_draws"] == 20000
    # chains x draws are pooled
    chains = {k: v.reshape(4, 5000, *v.shape[1:]) for k, v in _gaussian_draws(spec, 20000).items()}
    assert reference_errors(spec, chains)["n_draws"] == 20000


def test_reference_errors_refuses_bad_input():
    spec = POSTERIORS["kidiq-kidscore_momhs"]
    draws = _gaussian_draws(spec, 10)
    with pytest.raises(ValueError, match=r"lack the parameter\(s\) \['sigma'\]"):
        reference_errors(spec.name, {"beta": draws["beta"]})
    with pytest.raises(ValueError, match=r"must have shape \(\*batch, 2\)"):
        reference_errors(spec.name, {"beta": draws["beta"][:, :1], "sigma": draws["sigma"]})
    with pytest.raises(ValueError, match="at least 2 draws"):
        reference_errors(spec.name, {k: v[:1] for k, v in draws.items()})
    with pytest.raises(ValueError, match="valid names"):
        reference_errors("kidiq", draws)
    with pytest.raises(TypeError, match="dict of tensors"):
        reference_errors(spec.name, [1, 2])  # type: ignore[arg-type]


def test_vendored_reference_matches_the_shared_copy_format():
    for name in NAMES:
        ref = json.loads((DATA_DIR / name / "reference_summary.json").read_text())
        for summary in ref.values():
            assert summary["q05"] <= summary["q50"] <= summary["q95"] and summary["sd"] > 0
            assert summary["n_draws"] == 10000


def test_improper_sites_are_improper_uniform():
    """Stan's implicit flat priors stay improper: no sampler, log density 0."""
    spec = POSTERIORS["earnings-logearn_height"]
    with pytest.raises(NotImplementedError):
        spec.model()
    trace = _trace_at(spec, spec.reference_point())
    for name in ("beta", "sigma"):
        assert isinstance(trace.nodes[name]["fn"], dist.ImproperUniform)
