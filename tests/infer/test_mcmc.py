"""NUTS and HMC through Pyro: moments, divergences, honest gradient counts, Pyro models."""

from __future__ import annotations

import math

import pyro
import pyro.distributions as dist
import pytest
import torch

from pyro_flows.infer.mcmc import hmc, nuts, nuts_model
from pyro_flows.targets.eight_schools import (
    EIGHT_SCHOOLS_SIGMA,
    EIGHT_SCHOOLS_Y,
    eight_schools_noncentered,
)
from tests.infer.test_samplers import gaussian_2d, moment_zscores


def test_nuts_on_a_correlated_gaussian():
    target = gaussian_2d()
    r = nuts(target, num_samples=200, warmup=100, num_chains=2, progress=False, seed=0)
    assert r.samples.shape == (2, 200, 2) and r.samples.dtype == torch.float64
    assert r.divergences == 0 and not bool(r.extra["diverging"].any())
    d = r.diagnostics()
    assert d["rhat_max"] < 1.05 and d["ess_bulk_min"] > 60  # of 400 draws (diagonal mass, rho=0.8)
    assert moment_zscores(r.samples, target.mean, target.cov, target.precision).abs().max() < 4.5
    # every gradient is counted: per-draw leapfrog steps + warm-up (and step-size search)
    kept = int(r.extra["num_steps"].sum())
    assert 200 * 2 <= kept < r.num_grad_evals <= r.num_log_prob_evals
    assert r.extra["num_steps"].min() >= 1 and 0.6 < r.accept_rate <= 1.0
    assert bool(((r.extra["accept_prob"] >= 0) & (r.extra["accept_prob"] <= 1)).all())
    assert r.step_size.shape == (2,) and d["ess_per_grad"] == d["ess"] / r.num_grad_evals


def test_hmc_with_fixed_steps_leaves_the_gaussian_invariant_and_counts_exactly():
    target = gaussian_2d()
    init = target.sample(8, seed=4)
    r = hmc(
        target,
        init=init,
        step_size=0.25,
        num_steps=6,
        adapt_step_size=False,
        warmup=0,
        num_samples=100,
        num_chains=8,
        progress=False,
        seed=0,
    )
    # one gradient at the start (taken in the first iteration), then exactly num_steps per draw
    assert r.num_grad_evals == 8 * (1 + 100 * 6) == int(r.extra["num_steps"].sum())
    assert bool((r.extra["num_steps"][:, 1:] == 6).all())
    assert moment_zscores(r.samples, target.mean, target.cov, target.precision).abs().max() < 4.5
    assert torch.allclose(r.step_size, torch.full((8,), 0.25, dtype=torch.float64))


def test_divergences_are_detected_and_recorded_per_draw():
    def walled(z):  # N(0, I) cut at |z_0| < 0.3: trajectories hit an infinite wall
        inside = z[..., 0].abs() < 0.3
        return torch.where(inside, -0.5 * (z**2).sum(-1), torch.full_like(z[..., 0], -math.inf))

    r = nuts(
        walled,
        dim=2,
        init=torch.zeros(2),
        num_samples=100,
        warmup=50,
        num_chains=1,
        progress=False,
        seed=0,
    )
    assert r.divergences > 0
    assert r.divergences == int(r.extra["diverging"].sum())
    assert bool((r.samples[..., 0].abs() < 0.3).all())
    idata = r.to_inference_data()
    assert int(idata.sample_stats["diverging"].sum()) == r.divergences


def test_seeded_nuts_is_reproducible_and_leaves_the_global_rng_alone():
    torch.manual_seed(7)
    before = torch.get_rng_state()
    kw = dict(dim=2, num_samples=20, warmup=20, num_chains=1, progress=False, seed=3)
    a = nuts(lambda z: -0.5 * (z**2).sum(-1), **kw)
    assert torch.equal(torch.get_rng_state(), before)
    b = nuts(lambda z: -0.5 * (z**2).sum(-1), **kw)
    assert torch.equal(a.samples, b.samples)


def test_nuts_errors():
    with pytest.raises(ValueError, match=r"chain\(s\) \[0\]"):
        nuts(
            lambda z: -(z**2).sum(-1) - math.inf * (z[..., 0] > 0),
            dim=1,
            init=torch.ones(1),
            num_chains=1,
            progress=False,
        )
    with pytest.raises(ValueError, match="target_accept"):
        nuts(gaussian_2d(), target_accept=0.0, progress=False)
    with pytest.raises(ValueError, match="max_tree_depth"):
        nuts(gaussian_2d(), max_tree_depth=0, progress=False)
    with pytest.raises(ValueError, match="step_size"):
        hmc(gaussian_2d(), step_size=0.0, progress=False)



def _half_plane(z):
    """N(0, I) cut at z_0 > 0: the step size adaptation collapses on the wall."""
    lp = -0.5 * (z**2).sum(-1)
    return torch.where(z[..., 0] > 0, lp, torch.full_like(lp, -math.inf))


@pytest.mark.parametrize("seed", [0, 1])
def test_hmc_caps_the_leapfrog_steps_when_the_step_size_collapses(seed):
    # trajectory_length / step_size grew without bound here (warm-up never ended)
    with pytest.warns(RuntimeWarning, match="step size collapsed"):
        r = hmc(_half_plane, dim=2, trajectory_length=10.0, max_num_steps=32, num_samples=5,
                warmup=10, num_chains=1, init="uniform", progress=False, seed=seed)
    assert r.extra["max_num_steps"] == 32 and r.extra["capped_draws"] == 5
    assert int(r.extra["num_steps"].max()) <= 32
    assert r.num_grad_evals <= 50 + 15 * 32  # step-size search + capped trajectories
    assert float(r.step_size[0]) * 32 < 10.0 and bool((r.samples[..., 0] > 0).all())


def test_hmc_max_num_steps_errors():
    with pytest.raises(ValueError, match="max_num_steps=5 is below the 10 leapfrog steps"):
        hmc(gaussian_2d(), num_steps=10, max_num_steps=5, progress=False)
    with pytest.raises(ValueError, match="max_num_steps=8 is below the 20"):
        hmc(gaussian_2d(), step_size=0.5, trajectory_length=10.0, max_num_steps=8,
            progress=False)
    with pytest.raises(ValueError, match="max_num_steps must be >= 1"):
        hmc(gaussian_2d(), max_num_steps=0, progress=False)
    with pytest.raises(TypeError, match="max_num_steps must be an int"):
        hmc(gaussian_2d(), max_num_steps=64.0, progress=False)


@pytest.mark.parametrize("sampler", [nuts, hmc])
def test_a_target_without_gradient_is_a_clear_type_error(sampler):
    def flat(z):
        return torch.zeros(z.shape[:-1])  # no autograd graph: no gradient to follow

    with pytest.raises(TypeError, match=f"{sampler.__name__} needs gradients.*not differentiable"):
        sampler(flat, dim=2, num_samples=10, warmup=10, num_chains=1, init="uniform",
                progress=False, seed=0)


def conjugate(y):
    """mu | y ~ N(sum y / (n + 1), 1 / (n + 1)); scale has no likelihood: LogNormal(0, 0.5)."""
    mu = pyro.sample("mu", dist.Normal(0.0, 1.0))
    pyro.sample("scale", dist.LogNormal(0.0, 0.5))
    with pyro.plate("data", len(y)):
        pyro.sample("y", dist.Normal(mu, 1.0), obs=y)


def test_nuts_model_unconstrained_and_constrained_draws():
    y = torch.tensor([0.3, 1.2, -0.4, 0.9])
    r = nuts_model(conjugate, y, num_samples=200, warmup=100, num_chains=2, progress=False, seed=0)
    assert r.extra["sites"] == {"mu": (), "scale": ()}
    assert r.samples.shape == (2, 200, 2)
    c = r.extra["constrained"]
    # the flattened unconstrained draws map to the constrained ones by the sites' bijections
    assert torch.allclose(c["mu"], r.samples[..., 0])
    assert torch.allclose(c["scale"], r.samples[..., 1].exp())
    # known posteriors: mu ~ N(0.4, 1/5); log scale ~ N(0, 0.5^2)
    mean = torch.tensor([float(y.sum()) / 5, 0.0], dtype=r.samples.dtype)
    cov = torch.diag(torch.tensor([1 / 5, 0.25], dtype=r.samples.dtype))
    z = moment_zscores(r.samples, mean, cov, torch.linalg.inv(cov))
    assert z.abs().max() < 4.5, z
    assert r.num_grad_evals > 2 * 300 and r.divergences == 0
    idata = r.to_inference_data()
    assert set(idata.posterior.data_vars) == {"mu", "scale"}
    assert bool((idata.posterior["scale"] > 0).all())


SCHOOLS_Y = torch.tensor(EIGHT_SCHOOLS_Y)
SCHOOLS_SIGMA = torch.tensor(EIGHT_SCHOOLS_SIGMA)


@pytest.mark.slow
def test_nuts_model_eight_schools_matches_the_reference_posterior():
    r = nuts_model(
        eight_schools_noncentered,
        SCHOOLS_Y,
        SCHOOLS_SIGMA,
        num_samples=500,
        warmup=300,
        num_chains=2,
        jit_compile=True,
        progress=False,
        seed=0,
    )
    c = r.extra["constrained"]
    assert c["eta"].shape == (2, 500, 8) and r.samples.shape == (2, 500, 10)
    d = r.diagnostics()
    assert d["rhat_max"] < 1.05 and r.divergences <= 5
    # reference (Stan, non-centred): mu 4.41 +- 3.31, tau 3.60 +- 3.20
    mu, tau = c["mu"].double(), c["tau"].double()
    assert abs(float(mu.mean()) - 4.41) < 0.6 and abs(float(mu.std()) - 3.31) < 0.5
    assert abs(float(tau.mean()) - 3.60) < 0.8 and abs(float(tau.std()) - 3.20) < 1.0
