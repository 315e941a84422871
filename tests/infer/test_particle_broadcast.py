"""A model that runs vectorised over particles but sums them into one another (``b @ X.T`` with
``b`` of shape ``(S, 1, D)``) is run one draw at a time (under torch.func.vmap), by fit_guide
and by AutoFlow's Gaussian start: vectorised, both fitted the posterior of S copies of the data
(sd ratios 1/sqrt(8) = 0.35 in fit_guide, 1/sqrt(32) = 0.18 in the start)."""

import warnings

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer.autoguide import AutoNormal

from pyro_flows.infer import AutoFlow, fit_guide
from pyro_flows.infer._particle_dims import extra_particle_dims

N, D, NOISE, PRIOR = 30, 3, 1.0, 10.0


def _data() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    X = torch.randn(N, D, generator=g)
    return X, X @ torch.tensor([1.0, -2.0, 0.5]) + NOISE * torch.randn(N, generator=g)


def broadcast_model(X: torch.Tensor, y: torch.Tensor) -> None:
    b = pyro.sample("b", dist.Normal(0.0, PRIOR).expand([D]).to_event(1))
    with pyro.plate("n", len(y)):
        pyro.sample("y", dist.Normal(b @ X.T, NOISE), obs=y)  # (S, 1, D) @ (D, N): (S, 1, N)


def vectorised_model(X: torch.Tensor, y: torch.Tensor) -> None:
    b = pyro.sample("b", dist.Normal(0.0, PRIOR).expand([D]).to_event(1))
    with pyro.plate("n", len(y)):
        pyro.sample("y", dist.Normal((X * b).sum(-1), NOISE), obs=y)


def _posterior_sd(X: torch.Tensor) -> torch.Tensor:
    precision = X.double().T @ X.double() / NOISE**2 + torch.eye(D, dtype=torch.float64) / PRIOR**2
    return torch.linalg.inv(precision).diagonal().sqrt().float()


def test_extra_particle_dims_names_the_site_and_passes_a_vectorised_model() -> None:
    X, y = _data()
    elbo = pyro.infer.Trace_ELBO(num_particles=4, vectorize_particles=True, max_plate_nesting=1)
    pyro.clear_param_store()
    guide = AutoNormal(broadcast_model)
    said = extra_particle_dims(lambda: elbo.loss(broadcast_model, guide, X, y), 1)
    assert said is not None and "'y'" in said and "(4, 4, 30)" in said
    pyro.clear_param_store()
    guide = AutoNormal(vectorised_model)
    assert extra_particle_dims(lambda: elbo.loss(vectorised_model, guide, X, y), 1) is None


def test_fit_guide_runs_a_model_that_sums_particles_one_draw_at_a_time() -> None:
    X, y = _data()
    pyro.clear_param_store()
    guide = AutoNormal(broadcast_model)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = fit_guide(broadcast_model, guide, X, y, steps=800, lr=0.05, progress=False,
                           seed=0, khat_samples=0)
    assert not result.vectorized and result.particle_mode == "vmap"
    assert any("'y' has batch shape" in str(w.message) for w in caught)
    ratio = guide.scales.b / _posterior_sd(X)  # 0.35 (1/sqrt(8)) when vectorised
    assert ((ratio > 0.75) & (ratio < 1.3)).all(), ratio


def test_a_vectorised_model_stays_vectorised() -> None:
    X, y = _data()
    pyro.clear_param_store()
    result = fit_guide(vectorised_model, AutoNormal(vectorised_model), X, y, steps=20,
                       progress=False, seed=0, khat_samples=0)
    assert result.vectorized


@pytest.mark.parametrize("model", [broadcast_model, vectorised_model])
def test_autoflow_start_fits_the_posterior_not_copies_of_the_data(model) -> None:
    X, y = _data()
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    guide = AutoFlow(model, start_points=1)
    guide(X, y)  # the Gaussian start
    assert guide.start_result.accepted
    with torch.no_grad():
        draws = guide.sample_posterior(4000, X, y)["b"]
    # 0.18 (1/sqrt(32)) before: the start's 32 draws summed into one another; a start on 32
    # fixed draws is a start, the training does the rest
    ratio = draws.std(0) / _posterior_sd(X)
    assert ((ratio > 0.7) & (ratio < 1.4)).all(), ratio
