"""FAB's multimodal targets: the 40-mode mixture (:class:`GMM40`) and the many-well
(:class:`ManyWell`). log Z by rules independent of the ones the targets use, exact moments
against exact samples, the mass per mode, the errors, gradients and shapes."""

from __future__ import annotations

import math

import pytest
import torch
from torch.distributions import Categorical, Independent, MixtureSameFamily, Normal

from pyro_flows.compare.settings import settings_for
from pyro_flows.targets import GMM40, TARGETS, ManyWell, get_target
from pyro_flows.targets.gmm40 import gmm40_centres
from pyro_flows.targets.many_well import double_well_facts, double_well_log_density

from ._stats import (
    Z_TOL,
    assert_chi_square,
    assert_importance_mean,
    assert_mean_std,
    default_dtype,
    grid_log_integral,
    midpoint_grid,
)

F64 = torch.float64
FAB_SD = math.log1p(math.e)  # softplus(1): the component sd of fab-torch's code


def _chunked_log_prob(target, points: torch.Tensor, chunk: int = 50_000) -> torch.Tensor:
    return torch.cat([target.log_prob(p) for p in points.split(chunk)])


def _simpson(f: torch.Tensor, h: float) -> float:
    """Composite Simpson's rule on an odd number of equally spaced values."""
    assert f.numel() % 2 == 1
    w = torch.ones_like(f)
    w[1:-1:2], w[2:-1:2] = 4.0, 2.0
    return (h / 3.0 * (w * f).sum()).item()


def _simpson_on(low: float, high: float, fn, panels: int = 200_000) -> float:
    x = torch.linspace(low, high, 2 * panels + 1, dtype=F64)
    return _simpson(fn(x), (high - low) / (2 * panels))


# -- GMM40: the centres -------------------------------------------------------------------------
def test_gmm40_centres_are_fabs_draw_and_ignore_the_global_rng():
    torch.manual_seed(123)
    a = GMM40().modes.double()
    torch.rand(7)  # move the global RNG on
    b = gmm40_centres()
    torch.manual_seed(0)  # fab-torch: torch.manual_seed(0); (torch.rand((40, 2)) - 0.5) * 2 * 40
    fab = ((torch.rand((40, 2)) - 0.5) * 2 * 40).double()
    torch.testing.assert_close(a, fab, rtol=0, atol=1e-6)  # buffers in float32
    assert torch.equal(b, fab)
    assert a.shape == (40, 2) and bool((a.abs() <= 40).all())
    assert not torch.equal(gmm40_centres(seed=1), b)  # the seed is the only source
    t = GMM40()
    assert t.dim == 2 and t.num_modes == 40 and t.log_Z == 0.0
    torch.testing.assert_close(t.true_mode_weights, torch.full((40,), 1 / 40))


def test_gmm40_options_and_errors():
    t = GMM40(num_modes=5, half_width=10.0, scale=FAB_SD, seed=3)
    assert t.modes.shape == (5, 2) and bool((t.modes.abs() <= 10).all())
    assert t.bounds == ((-17.0, 17.0), (-17.0, 17.0))  # ceil(10 + 5 * 1.3133)
    assert "seed=3" in repr(t) and "half_width=10" in repr(t)
    with pytest.raises(ValueError, match="half_width must be a positive finite float, got -1"):
        GMM40(half_width=-1.0)
    with pytest.raises(ValueError, match="seed must be >= 0, got -2"):
        GMM40(seed=-2)
    with pytest.raises(ValueError, match="scale must be a positive finite float"):
        GMM40(scale=0.0)
    with pytest.raises(TypeError, match="num_modes must be an int"):
        GMM40(num_modes=4.0)


# -- GMM40: log Z and the moments on a grid -----------------------------------------------------
@pytest.mark.parametrize("scale", [1.0, FAB_SD], ids=["identity", "fab-code"])
def test_gmm40_log_z_and_moments_on_a_grid(scale):
    with default_dtype(F64):  # weights 1/40 stored in float64 (float32 rounds log Z by 1.5e-8)
        t = GMM40(scale=scale)
    h = 0.25  # midpoint rule: error about exp(-2 pi^2 s^2 / h^2) < 1e-100 for sd s >= 1
    pts = midpoint_grid((-55.0, -55.0), (55.0, 55.0), h)
    lp = _chunked_log_prob(t, pts)
    assert grid_log_integral(lp, h, 2) == pytest.approx(0.0, abs=1e-9)
    p = torch.exp(lp) * h * h
    mean = (p[:, None] * pts).sum(0)
    std = ((p[:, None] * (pts - mean) ** 2).sum(0)).sqrt()
    torch.testing.assert_close(t.mean, mean, rtol=0, atol=1e-8)
    torch.testing.assert_close(t.std, std, rtol=1e-10, atol=0)
    if scale == 1.0:
        torch.testing.assert_close(t.std, torch.tensor([21.0022, 24.9541], dtype=F64), atol=1e-4,
                                   rtol=0)  # fmt: skip


def test_gmm40_log_z_by_importance_sampling_from_wider_components():
    """E_q[p / q] = 1 for q the equal mixture of N(mu_k, (2s)^2 I): p / q <= 4 everywhere."""
    torch.manual_seed(0)
    with default_dtype(F64):
        t = GMM40(scale=FAB_SD)
    comp = Independent(Normal(t.modes, torch.full_like(t.modes, 2 * FAB_SD)), 1)
    q = MixtureSameFamily(Categorical(torch.ones(40, dtype=F64)), comp)
    z = q.sample((100_000,))
    assert_importance_mean(t.log_prob(z) - q.log_prob(z) - t.log_Z, 1.0)


# -- GMM40: exact samples and the mass per mode -------------------------------------------------
def test_gmm40_samples_moments_and_mode_masses():
    torch.manual_seed(1)
    t = GMM40().double()
    n = 100_000
    x = t.sample(n)
    assert_mean_std(x, t.mean, t.std)
    masses = t.mode_masses(x)
    assert masses.shape == (40,) and masses.sum().item() == pytest.approx(1.0)
    se = math.sqrt((1 / 40) * (39 / 40) / n)
    assert (masses - 1 / 40).abs().max().item() < Z_TOL * se
    assert int((masses > 0).sum()) == 40
    # a sampler stuck in one mode is seen as such
    stuck = t.modes[7] + torch.randn(500, 2, dtype=F64)
    assert t.mode_masses(stuck)[7].item() > 0.9


# -- ManyWell: the 1-D factor -------------------------------------------------------------------
def _f(x: torch.Tensor) -> torch.Tensor:
    return torch.exp(-(x**4) + 6 * x**2 + 0.5 * x)  # the formula, written out separately


def test_double_well_factor_by_simpsons_rule():
    facts = double_well_facts()
    z1 = _simpson_on(-7.0, 7.0, _f)
    assert math.exp(facts.log_Z1) == pytest.approx(z1, rel=1e-11)
    assert math.exp(facts.log_Z1) == pytest.approx(11784.50927, rel=1e-9)  # fab-torch's value
    # the wells and the barrier: the roots of g' = -4x^3 + 12x + 1/2
    for x in (facts.left_well, facts.barrier, facts.right_well):
        assert abs(-4 * x**3 + 12 * x + 0.5) < 1e-12
    assert facts.left_well < facts.barrier < 0 < facts.right_well
    right = _simpson_on(facts.barrier, 7.0, _f) / z1
    left = _simpson_on(-7.0, facts.barrier, _f) / z1
    assert facts.mass_right == pytest.approx(right, rel=1e-10)
    assert facts.mass_left == pytest.approx(left, rel=1e-10)
    assert facts.mass_left + facts.mass_right == pytest.approx(1.0, abs=1e-14)
    mean = _simpson_on(-7.0, 7.0, lambda x: x * _f(x)) / z1
    second = _simpson_on(-7.0, 7.0, lambda x: x * x * _f(x)) / z1
    assert facts.mean == pytest.approx(mean, rel=1e-10)
    assert facts.std == pytest.approx(math.sqrt(second - mean**2), rel=1e-10)


def test_many_well_log_z_and_facts():
    facts = double_well_facts()
    pair = facts.log_Z1 + 0.5 * math.log(2 * math.pi)
    t = ManyWell()
    assert t.dim == 32 and t.num_pairs == 16
    assert t.log_Z == pytest.approx(16 * pair, rel=1e-14)
    assert t.log_Z == pytest.approx(164.695675, abs=1e-6)
    torch.testing.assert_close(t.mean[:4], torch.tensor([facts.mean, 0.0, facts.mean, 0.0]))
    torch.testing.assert_close(t.std[1::2], torch.ones(16))
    torch.testing.assert_close(t.well_masses, torch.tensor([facts.mass_left, facts.mass_right]))
    assert t.support.check(t.sample(3)).all() and "pairs=16" in repr(t)


def test_many_well_pair_log_z_on_a_2d_grid():
    t = ManyWell(dim=2).double()
    h = 0.01
    pts = midpoint_grid((-4.0, -10.0), (4.0, 10.0), h)
    assert grid_log_integral(_chunked_log_prob(t, pts), h, 2) == pytest.approx(t.log_Z, abs=1e-9)


def test_many_well_log_prob_formula_gradients_and_shapes():
    t = ManyWell(dim=6).double()
    torch.manual_seed(2)
    z = (2 * torch.randn(2, 3, 6, dtype=F64)).requires_grad_(True)
    lp = t.log_prob(z)
    assert lp.shape == (2, 3)
    x1, x2 = z[..., 0::2], z[..., 1::2]
    expected = (-(x1**4) + 6 * x1**2 + 0.5 * x1 - 0.5 * x2**2).sum(-1)
    torch.testing.assert_close(lp, expected)
    lp.sum().backward()
    grad = torch.empty_like(z)
    grad[..., 0::2] = -4 * x1**3 + 12 * x1 + 0.5
    grad[..., 1::2] = -x2
    torch.testing.assert_close(z.grad, grad.detach())
    # float32 in, float32 out, finite gradients
    z32 = t.float().sample((4,)).requires_grad_(True)
    out = ManyWell(dim=6).log_prob(z32)
    assert out.dtype == torch.float32 and out.shape == (4,)
    out.sum().backward()
    assert torch.isfinite(z32.grad).all()
    # +-inf in the quartic coordinate is -inf, not NaN
    edge = torch.zeros(2, 6, dtype=F64)
    edge[0, 0], edge[1, 0] = math.inf, -math.inf
    assert (t.log_prob(edge) == -math.inf).all()
    assert double_well_log_density(torch.tensor(1.0)).item() == 5.5


def test_many_well_start_is_the_deepest_mode():
    t = ManyWell(dim=4).double()
    z = t.initial_params()["z"].requires_grad_(True)
    t.log_prob(z).backward()
    assert z.grad.abs().max().item() < 1e-12  # a stationary point: the right well, x2 = 0
    assert z[0].item() == pytest.approx(double_well_facts().right_well)


@pytest.mark.parametrize("dim", [7, 1, 0, -4])
def test_many_well_dim_must_be_even(dim):
    with pytest.raises(ValueError, match=rf"expected an even int >= 2, got {dim}"):
        ManyWell(dim=dim)


def test_many_well_dim_type_error():
    with pytest.raises(TypeError, match="dim must be an int"):
        ManyWell(dim=4.0)


# -- ManyWell: exact samples ----------------------------------------------------------------------
def test_many_well_samples_match_the_quadrature_moments():
    torch.manual_seed(3)
    t = ManyWell(dim=8).double()
    x = t.sample(50_000)
    assert x.shape == (50_000, 8) and x.dtype == F64
    assert_mean_std(x, t.mean, t.std)


def test_many_well_double_well_histogram():
    """The first coordinate's histogram against cell masses integrated by Simpson's rule."""
    torch.manual_seed(4)
    t = ManyWell(dim=2).double()
    n = 200_000
    x1 = t.sample(n)[:, 0]
    edges = torch.linspace(-3.0, 3.0, 61, dtype=F64)
    z1 = _simpson_on(-7.0, 7.0, _f)
    cells = zip(edges[:-1].tolist(), edges[1:].tolist(), strict=True)
    probs = torch.tensor([_simpson_on(a, b, _f, 200) / z1 for a, b in cells])
    counts = torch.histc(x1, bins=60, min=-3.0, max=3.0)
    outside = n - counts.sum()
    expected = torch.cat([n * probs, (n * (1 - probs.sum())).reshape(1)])
    observed = torch.cat([counts, outside.reshape(1)])
    keep = expected >= 5
    obs = torch.cat([observed[keep], observed[~keep].sum().reshape(1)])
    exp = torch.cat([expected[keep], expected[~keep].sum().reshape(1)])
    nonzero = exp > 0
    stat = (((obs - exp) ** 2)[nonzero] / exp[nonzero]).sum().item()
    assert_chi_square(stat, int(nonzero.sum()) - 1)


def test_many_well_mode_masses_of_exact_samples():
    torch.manual_seed(5)
    t = ManyWell().double()  # D = 32: 16 pairs, 65536 modes
    n = 20_000
    x = t.sample(n)
    masses = t.mode_masses(x)
    assert masses.shape == (16, 2)
    torch.testing.assert_close(masses.sum(-1), torch.ones(16, dtype=F64))
    left, right = t.well_masses.tolist()
    se = math.sqrt(left * right / n)
    assert (masses - t.well_masses).abs().max().item() < Z_TOL * se
    # the number of distinct modes: mean exact; the variance is at most the sum of the
    # indicators' variances (occupancy indicators are negatively correlated)
    visited = t.modes_visited(x)
    expected = t.expected_modes_visited(n)
    bound = sum(
        math.comb(16, k) * q * (1 - q)
        for k in range(17)
        for q in [1 - (1 - right**k * left ** (16 - k)) ** n]
    )
    assert abs(visited - expected) < Z_TOL * math.sqrt(bound), (visited, expected)
    assert 3700 < expected < 3800  # 3754.9: far fewer than the 65536 modes
    # a sampler stuck in the deepest mode
    stuck = t.initial_params()["z"] + 0.1 * torch.randn(1000, 32, dtype=F64)
    assert t.modes_visited(stuck) == 1
    torch.testing.assert_close(t.mode_masses(stuck)[:, 1], torch.ones(16, dtype=F64))


def test_expected_modes_visited_closed_forms():
    t = ManyWell(dim=2)
    left, right = t.facts.mass_left, t.facts.mass_right
    for n in (1, 3, 50):
        assert t.expected_modes_visited(n) == pytest.approx(
            2 - (1 - left) ** n - (1 - right) ** n, rel=1e-12
        )
    assert t.expected_modes_visited(0) == 0.0
    assert ManyWell(dim=8).expected_modes_visited(10**7) == pytest.approx(16.0)


def test_many_well_mode_masses_with_importance_weights():
    torch.manual_seed(6)
    t = ManyWell(dim=2).double()
    q = Independent(Normal(torch.zeros(2, dtype=F64), torch.full((2,), 2.0, dtype=F64)), 1)
    z = q.sample((200_000,))
    log_w = t.log_prob(z) - q.log_prob(z)
    w = torch.exp(log_w - log_w.max())
    masses = t.mode_masses(z, weights=w)
    torch.testing.assert_close(masses[0], t.well_masses, atol=0.01, rtol=0)
    torch.testing.assert_close(t.mode_masses(z, weights=2 * w), masses)
    with pytest.raises(ValueError, match="batch shape of samples"):
        t.mode_masses(z, weights=w[:10])
    with pytest.raises(ValueError, match="not all zero"):
        t.mode_masses(z, weights=torch.zeros_like(w))
    with pytest.raises(ValueError, match="at least one sample"):
        t.mode_masses(z[:0])
    assert t.modes_visited(z[:0]) == 0


# -- the registry and compare's settings ----------------------------------------------------------
def test_registered_with_compare_settings():
    assert TARGETS["gmm40"] is GMM40 and TARGETS["many_well"] is ManyWell
    assert get_target("GMM40").name == "gmm40"
    assert get_target("many_well", dim=4).dim == 4
    for name in ("gmm40", "many_well"):
        full, quick = settings_for(name), settings_for(name, quick=True)
        assert quick.flow.steps < full.flow.steps and full.flow.anneal is not None
