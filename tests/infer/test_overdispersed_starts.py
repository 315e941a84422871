"""The MCMC samplers' default starts: over-dispersed around the target's modes (Gelman & Rubin,
1992), so that chains that stay in different modes make R-hat exceed 1; Stan's uniform draw
as ``init="uniform"`` and as the fallback where the mode search finds nothing."""

from __future__ import annotations

import math

import pytest
import torch

from pyro_flows.infer import hmc, mala, mcmc_diagnostics, nuts, random_walk_metropolis, ula
from pyro_flows.infer.results import START_MASS_NATS, _generator, _half_nat_scales, as_target
from pyro_flows.targets import Funnel

SAMPLERS = {"nuts": nuts, "hmc": hmc, "mala": mala, "ula": ula, "mh": random_walk_metropolis}


def two_modes(z: torch.Tensor) -> torch.Tensor:
    """Equal-mass Gaussians at (+-4, 0), sd 0.7: a 16-nat barrier no sampler here crosses."""
    a = -0.5 * (((z - torch.tensor([4.0, 0.0])) / 0.7) ** 2).sum(-1)
    b = -0.5 * (((z + torch.tensor([4.0, 0.0])) / 0.7) ** 2).sum(-1)
    return torch.logaddexp(a, b)


def gaussian_mixture(z: torch.Tensor, centres, sds, weights) -> torch.Tensor:
    d = z.shape[-1]
    parts = [
        math.log(w) - d * math.log(s) - 0.5 * (((z - c) / s) ** 2).sum(-1)
        for c, s, w in zip(centres, sds, weights, strict=True)
    ]
    return torch.logsumexp(torch.stack(parts), 0)


def starts(target, num_chains=4, init=None, seed=0, dim=None):
    density = as_target(target, dim)
    gen, _ = _generator(seed)
    z, lp = density.initial_points(num_chains, init, gen)
    return z, lp, density


# -- the point of it: R-hat sees a mode that chains do not cross to --------------------------
def test_nuts_chains_start_in_both_modes_and_rhat_flags_them():
    r = nuts(two_modes, dim=2, num_samples=100, warmup=50, num_chains=4, progress=False, seed=0)
    assert r.extra["init"] == "modes"
    assert sorted(r.extra["init_modes"][:, 0].round().tolist()) == [-4.0, 4.0]
    assert r.extra["init_mode_of_chain"].tolist() == [0, 1, 0, 1]  # round-robin
    side = torch.sign(r.samples[..., 0].mean(1))
    assert sorted(side.tolist()) == [-1.0, -1.0, 1.0, 1.0]  # two chains in each mode
    assert bool((r.samples[..., 0].abs() > 1.0).all())  # no chain crossed the barrier
    assert mcmc_diagnostics(r.samples)["rhat_max"] > 1.01


@pytest.mark.parametrize("name", sorted(SAMPLERS))
def test_every_sampler_puts_chains_in_every_mode(name):
    # a fixed small step (no tuning) where the sampler takes one: no chain jumps the barrier
    options = {} if name in ("nuts", "hmc") else {"step_size": 0.1}
    r = SAMPLERS[name](two_modes, dim=2, num_samples=50, warmup=50, num_chains=4,
                       progress=False, seed=1, **options)
    assert r.extra["init_mode_of_chain"].tolist() == [0, 1, 0, 1]
    side = torch.sign(r.samples[..., 0].mean(1))
    assert sorted(side.tolist()) == [-1.0, -1.0, 1.0, 1.0]


def test_a_unimodal_target_still_gives_rhat_near_one():
    mean = torch.tensor([3.0, -2.0, 0.5])
    scale = torch.tensor([[1.0, 0.0, 0.0], [0.6, 0.8, 0.0], [0.0, 0.3, 0.5]])
    target = torch.distributions.MultivariateNormal(mean, scale_tril=scale)
    r = nuts(target, num_samples=200, warmup=150, num_chains=4, progress=False, seed=0)
    assert r.extra["init"] == "modes" and r.extra["init_modes"].shape == (1, 3)
    assert torch.allclose(r.extra["init_modes"][0], mean, atol=1e-2)
    # 4 x 200 draws: seeds 0-3 give 1.005-1.023 (two modes above give about 1.7)
    assert mcmc_diagnostics(r.samples)["rhat_max"] < 1.05
    assert torch.allclose(r.samples.reshape(-1, 3).mean(0), mean, atol=0.25)


# -- where the chains go ----------------------------------------------------------------------
def test_starts_are_jittered_in_the_units_of_each_mode():
    # sd 0.2 at (2, 1) and sd 1 at (-4, 0): U(-2, 2) jitter would throw the narrow mode's
    # chains ten sds out
    def target(z):
        return gaussian_mixture(z, [torch.tensor([2.0, 1.0]), torch.tensor([-4.0, 0.0])],
                                [0.2, 1.0], [0.5, 0.5])

    z, lp, density = starts(target, num_chains=8, dim=2)
    facts = density.start_facts()
    assert len(facts["init_modes"]) == 2 and torch.isfinite(lp).all()
    modes = facts["init_modes"][facts["init_mode_of_chain"]]
    offset = (z - modes).abs() / torch.where(modes[:, :1] > 0, 0.2, 1.0)
    assert bool((offset <= 2.0 * 1.01).all())  # within 2 local sds of their mode ...
    assert float(offset.amax()) > 0.5  # ... and spread over them (not all at the maximum)
    assert torch.unique(z, dim=0).shape[0] == 8


def test_half_nat_scales_are_the_sds_of_a_gaussian():
    sd = torch.tensor([0.003, 0.5, 2.0, 20.0], dtype=torch.float64)

    def log_p(z):
        return -0.5 * ((z / sd) ** 2).sum(-1)

    scales, flat = _half_nat_scales(log_p, torch.zeros(1, 4, dtype=torch.float64),
                                    torch.zeros(1, dtype=torch.float64))
    assert torch.allclose(scales[0], sd, rtol=1e-6) and not bool(flat.any())


def test_a_broad_mode_of_equal_mass_gets_chains():
    # 5-D, sds 0.4 and 2: equal masses, heights 5 log 5 = 8.0 nats apart, more than
    # START_MASS_NATS: a rule on heights would drop the broad mode
    dim = 5
    e0 = torch.eye(dim)[0]
    assert dim * math.log(5.0) > START_MASS_NATS

    def target(z):
        return gaussian_mixture(z, [3.0 * e0, -3.0 * e0], [0.4, 2.0], [0.5, 0.5])

    _, _, density = starts(target, num_chains=4, dim=dim, seed=0)
    kept = density.start_facts()["init_modes"]
    assert sorted(kept[:, 0].round().tolist()) == [-3.0, 3.0]


@pytest.mark.parametrize("minor, kept", [(1e-2, 2), (1e-4, 1)])
def test_a_mode_with_a_negligible_share_of_the_mass_gets_no_chain(minor, kept):
    def target(z):  # equal widths: log mass ratio = log(minor), the cut is log(1000)
        return gaussian_mixture(z, [torch.tensor([4.0, 0.0]), torch.tensor([-4.0, 0.0])],
                                [0.7, 0.7], [1.0, minor])

    _, _, density = starts(target, dim=2)
    modes = density.start_facts()["init_modes"]
    assert len(modes) == kept and float(modes[0, 0]) == pytest.approx(4.0, abs=1e-2)


# -- today's behaviour, on request and as the fallback ----------------------------------------
def test_uniform_init_is_stans_draw_as_before():
    target = Funnel(dim=3)
    z, _, density = starts(target, num_chains=5, init="uniform", seed=7)
    u = torch.rand(5, 3, generator=torch.Generator().manual_seed(7))
    assert torch.allclose(z, 2.0 * (2.0 * u - 1.0))
    assert density.start_facts() == {"init": "uniform"}
    assert density.num_grad_evals == 0


def test_the_funnel_falls_back_to_the_uniform_draw():
    target = Funnel(dim=10)  # the neck never converges: no maximum
    z, _, density = starts(target, seed=5)
    facts = density.start_facts()
    assert facts["init"] == "uniform" and "no local maximum converged" in facts["init_fallback"]
    assert "init_modes" not in facts
    uniform, _, _ = starts(target, init="uniform", seed=5)
    assert torch.equal(z, uniform)  # the search drew nothing from the sampler's generator
    r = nuts(target, num_samples=5, warmup=5, progress=False, seed=5)
    assert r.extra["init"] == "uniform" and r.extra["init_search_grad_evals"] > 0


def test_targets_without_gradients_or_with_plateaus_fall_back():
    def no_grad(z):  # a log density autograd cannot differentiate
        return torch.as_tensor(-(z.detach().numpy() ** 2).sum(-1))

    r = random_walk_metropolis(no_grad, dim=2, num_samples=20, warmup=20, progress=False, seed=0)
    assert r.extra["init"] == "uniform" and "mode search failed" in r.extra["init_fallback"]
    assert r.num_grad_evals == 0

    def steps(z):  # piecewise constant: zero gradient everywhere
        return -torch.floor((z**2).sum(-1))

    _, _, density = starts(steps, dim=2)
    assert "flat" in density.start_facts()["init_fallback"]

    def box(z):  # uniform on a square, differentiable (gradient 0) inside
        inside = (z.abs() < 1.0).all(-1)
        return torch.where(inside, 0.0 * z.sum(-1), torch.full_like(z[..., 0], -math.inf))

    z, _, density = starts(box, dim=2)
    assert density.start_facts()["init"] == "uniform" and bool((z.abs() < 1.0).all())


def test_a_start_outside_the_support_is_redrawn_nearer_its_mode():
    def half_normal(z):  # a maximum at the edge of the support
        x = z[..., 0]
        return torch.where(x > 0, -0.5 * (x - 0.01) ** 2 - 0.5 * z[..., 1] ** 2,
                           torch.full_like(x, -math.inf))

    z, lp, density = starts(half_normal, num_chains=16, dim=2)
    assert bool(torch.isfinite(lp).all()) and bool((z[:, 0] > 0).all())


# -- costs, determinism and the global RNG ----------------------------------------------------
def test_the_search_counts_in_the_costs():
    a = mala(two_modes, dim=2, num_samples=20, warmup=30, num_chains=4, progress=False, seed=0)
    search = a.extra["init_search_grad_evals"]
    assert search >= 64 * 300  # at least 64 starts climbing 300 steps
    assert a.num_grad_evals == search + 4 * (1 + 30 + 20)
    assert a.num_log_prob_evals > a.extra["init_search_log_prob_evals"] >= search
    assert a.extra["init_search_seconds"] < a.wall_time


def test_the_search_is_seeded_and_leaves_the_global_rng_alone():
    torch.manual_seed(123)
    before = torch.get_rng_state()
    z1, _, _ = starts(two_modes, dim=2, seed=11)
    z2, _, _ = starts(two_modes, dim=2, seed=11)
    z3, _, _ = starts(two_modes, dim=2, seed=12)
    assert torch.equal(z1, z2) and not torch.equal(z1, z3)
    r = random_walk_metropolis(two_modes, dim=2, num_samples=10, warmup=10, progress=False,
                               seed=0)
    assert r.extra["init"] == "modes"
    assert torch.equal(torch.get_rng_state(), before)


def test_bad_init_strings_are_refused_with_the_choices():
    for sampler in (nuts, random_walk_metropolis, mala):
        with pytest.raises(ValueError, match=r"'modes'.*'uniform'.*got the str 'origin'"):
            sampler(two_modes, dim=2, init="origin", num_samples=5, warmup=5, progress=False)
    with pytest.raises(TypeError, match="init must be a tensor"):
        nuts(two_modes, dim=2, init=object(), num_samples=5, warmup=5, progress=False)


def test_explicit_modes_is_the_default_and_a_given_init_is_untouched():
    a = random_walk_metropolis(two_modes, dim=2, num_samples=10, warmup=10, progress=False,
                               seed=4)
    b = random_walk_metropolis(two_modes, dim=2, num_samples=10, warmup=10, init="modes",
                               progress=False, seed=4)
    assert torch.equal(a.samples, b.samples)
    given = torch.tensor([[0.5, 0.0], [0.6, 0.1]])
    z, _, density = starts(two_modes, num_chains=2, init=given, dim=2)
    assert torch.equal(z, given) and density.start_facts() == {"init": "given"}
    assert density.num_grad_evals == 0
