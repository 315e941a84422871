"""Models that do not broadcast over particles (``X @ beta``) run per draw under torch.func.vmap:
the loss equals Pyro's vectorised one on the same draws, fit_guide and AutoFlow's Gaussian start
use it, and a model vmap cannot run falls back to a loop."""

from __future__ import annotations

import warnings

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer.autoguide import AutoNormal

from pyro_flows.infer import AutoFlow, fit_guide
from pyro_flows.infer._vmapped_model import VmappedELBO, per_draw_log_weights
from pyro_flows.infer.autoflow_start import particle_mode
from pyro_flows.infer.results import _forked_rng

N, K, NOISE, PRIOR = 40, 3, 0.5, 10.0


def _data(first: float = 30.0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(3)
    X = torch.randn(N, K, generator=g)
    return X, X @ torch.tensor([first, -2.0, 0.5]) + NOISE * torch.randn(N, generator=g)


def broadcasting(X: torch.Tensor, y: torch.Tensor) -> None:
    beta = pyro.sample("beta", dist.Normal(0.0, PRIOR).expand([K]).to_event(1))
    s = pyro.sample("s", dist.HalfCauchy(1.0))
    with pyro.plate("n", N):
        eta = pyro.sample("eta", dist.Normal(0.0, 1.0))
        pyro.sample("y", dist.Normal((X * beta).sum(-1) + 0.1 * s * eta, NOISE), obs=y)


def matmul(X: torch.Tensor, y: torch.Tensor) -> None:
    """The same model written with ``X @ beta`` (Pyro's vectorised ELBO raises on it)."""
    beta = pyro.sample("beta", dist.Normal(0.0, PRIOR).expand([K]).to_event(1))
    s = pyro.sample("s", dist.HalfCauchy(1.0))
    with pyro.plate("n", N):
        eta = pyro.sample("eta", dist.Normal(0.0, 1.0))
        pyro.sample("y", dist.Normal(X @ beta + 0.1 * s * eta, NOISE), obs=y)


def regression(X: torch.Tensor, y: torch.Tensor) -> None:
    beta = pyro.sample("beta", dist.Normal(0.0, PRIOR).expand([K]).to_event(1))
    with pyro.plate("n", N):
        pyro.sample("y", dist.Normal(X @ beta, NOISE), obs=y)


def branching(X: torch.Tensor, y: torch.Tensor) -> None:
    """Control flow on a latent's value: neither vectorised nor vmap can run it."""
    beta = pyro.sample("beta", dist.Normal(0.0, PRIOR).expand([K]).to_event(1))
    scale = NOISE if float(beta[0]) > -1e9 else 2 * NOISE
    with pyro.plate("n", N):
        pyro.sample("y", dist.Normal(X @ beta, scale), obs=y)


def _posterior(X: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    X, y = X.double(), y.double()
    cov = torch.linalg.inv(X.T @ X / NOISE**2 + torch.eye(K, dtype=torch.float64) / PRIOR**2)
    return (cov @ X.T @ y / NOISE**2).float(), cov.diagonal().sqrt().float()


@pytest.fixture(autouse=True)
def _fresh_store():
    pyro.clear_param_store()
    yield
    pyro.clear_param_store()


@pytest.mark.parametrize("make_guide", [AutoNormal, lambda m: AutoFlow(m, gaussian_start=False)])
@pytest.mark.parametrize("iwae", [False, True])
def test_the_vmapped_loss_is_pyros_vectorised_loss_on_the_same_draws(make_guide, iwae):
    X, y = _data()
    guide = make_guide(broadcasting)
    guide(X, y)
    options = dict(num_particles=16, vectorize_particles=True, max_plate_nesting=1)
    elbo = pyro.infer.RenyiELBO(alpha=0.0, **options) if iwae else pyro.infer.Trace_ELBO(**options)
    with _forked_rng(0, [None]):
        expected = elbo.loss(broadcasting, guide, X, y)
    with _forked_rng(0, [None]):
        got = VmappedELBO(16, 1, iwae=iwae).loss(matmul, guide, X, y)
    assert got == pytest.approx(expected, rel=1e-4, abs=1e-3)


def test_gradients_flow_to_the_guide() -> None:
    X, y = _data()
    guide = AutoNormal(matmul)
    loss = -per_draw_log_weights(matmul, guide, 8, 1, (X, y), {}).mean()
    loss.backward()
    grads = [p.unconstrained().grad for p in pyro.get_param_store().values()]
    assert grads and all(g is not None and bool(torch.isfinite(g).all()) for g in grads)
    assert any(float(g.abs().sum()) > 0 for g in grads)


def test_fit_guide_runs_a_matmul_model_under_vmap_and_fits_it() -> None:
    X, y = _data(first=3.0)  # AutoNormal at lr 1e-2 walks slowly to a far-off coefficient
    guide = AutoNormal(regression)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = fit_guide(regression, guide, X, y, steps=1500, progress=False, seed=0,
                           khat_samples=1000)
    assert result.particle_mode == "vmap" and not result.vectorized
    assert any("torch.func.vmap" in str(w.message) for w in caught)
    assert result.khat is not None and result.check is not None  # the check ran, per draw too
    mean, sd = _posterior(X, y)
    assert ((guide.locs.beta - mean).abs() / sd).max() < 0.3
    ratio = guide.scales.beta / sd  # mean field on a near-diagonal posterior
    assert ((ratio > 0.6) & (ratio < 1.2)).all(), ratio


def test_a_model_vmap_cannot_run_falls_back_to_the_loop() -> None:
    X, y = _data()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = fit_guide(branching, AutoNormal(branching), X, y, steps=20, progress=False,
                           seed=0, khat_samples=0)
    assert result.particle_mode == "loop"


def test_mean_field_loss_keeps_the_loop() -> None:
    X, y = _data()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = fit_guide(regression, AutoNormal(regression), X, y, steps=20, progress=False,
                           seed=0, khat_samples=0, loss="mean_field")
    assert result.particle_mode == "loop"


def test_autoflow_start_runs_under_vmap_and_is_accepted() -> None:
    """An intercept near 30 from a start at 0: the start (a loop over its 32 draws before, or
    refused outright) gets there on a model written with ``X @ beta``."""
    X, y = _data()
    guide = AutoFlow(regression)
    pyro.set_rng_seed(0)
    guide(X, y)
    assert guide.start_result is not None and guide.start_result.accepted
    assert particle_mode(regression, guide, 32, 1, None, (X, y), {}) == "vmap"
    assert particle_mode(broadcasting, AutoFlow(broadcasting), 32, 1, None, (X, y), {}) == (
        "vectorised")
    mean, sd = _posterior(X, y)
    with torch.no_grad():
        draws = guide.sample_posterior(4000, X, y)["beta"]
    assert ((draws.mean(0) - mean).abs() / sd).max() < 0.5
    ratio = draws.std(0) / sd
    assert ((ratio > 0.7) & (ratio < 1.4)).all(), ratio


def test_defensive_draws_scored_under_vmap_equal_the_vectorised_ones() -> None:
    from pyro_flows.infer.defensive_draws import defensive_draws

    X, y = _data()
    guide = AutoFlow(broadcasting)
    pyro.set_rng_seed(0)
    guide(X, y)
    options = dict(max_plate_nesting=1, batch_size=None)
    pyro.set_rng_seed(1)
    vectorised = defensive_draws(broadcasting, guide, (X, y), {}, 200, **options)
    pyro.set_rng_seed(1)
    vmapped = defensive_draws(matmul, guide, (X, y), {}, 200, vmapped=True, **options)
    assert torch.allclose(vmapped.mixture_log_ratios, vectorised.mixture_log_ratios,
                          rtol=1e-4, atol=1e-2)
    assert torch.allclose(vmapped.values["beta"], vectorised.values["beta"])


def test_fit_guide_keeps_the_defensive_check_under_vmap() -> None:
    X, y = _data()
    guide = AutoFlow(regression)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = fit_guide(regression, guide, X, y, steps=300, progress=False, seed=0,
                           khat_samples=400)
    assert result.particle_mode == "vmap"
    assert result.defensive_check is not None and result.defensive_check.num_samples == 400
