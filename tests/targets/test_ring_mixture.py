"""The ring and the separated mixture: log Z by quadrature and importance sampling, exact
moments and samples, the mode layout and the mass per mode."""

from __future__ import annotations

import math

import pytest
import torch
from torch.distributions import Categorical, Independent, MixtureSameFamily, Normal

from pyro_flows.targets.mixture import GaussianMixture, mixture_centres
from pyro_flows.targets.ring import Ring

from ._stats import (
    Z_TOL,
    assert_importance_mean,
    assert_mean_std,
    default_dtype,
    grid_log_integral,
    midpoint_grid,
)


# -- ring ----------------------------------------------------------------------------------
def test_ring_2d_log_z_closed_form_and_grid():
    r0, w = 3.0, 0.3
    target = Ring(radius=r0, width=w)
    phi = 0.5 * (1 + math.erf(r0 / w / math.sqrt(2)))
    radial = w**2 * math.exp(-(r0**2) / (2 * w**2)) + r0 * w * math.sqrt(2 * math.pi) * phi
    closed = math.log(2 * math.pi * radial)
    assert target.log_Z == pytest.approx(closed, abs=1e-12)
    pts = midpoint_grid((-5.0, -5.0), (5.0, 5.0), 0.01)
    assert grid_log_integral(target.log_prob(pts), 0.01, 2) == pytest.approx(closed, abs=1e-6)


def test_ring_3d_log_z_on_a_grid():
    target = Ring(dim=3, radius=2.0, width=0.4)
    pts = midpoint_grid((-4.5,) * 3, (4.5,) * 3, 0.05)
    assert grid_log_integral(target.log_prob(pts), 0.05, 3) == pytest.approx(target.log_Z, abs=1e-4)


def test_ring_5d_log_z_by_importance_sampling():
    torch.manual_seed(0)
    target = Ring(dim=5)
    q = Independent(Normal(torch.zeros(5, dtype=torch.float64), 1.5), 1)
    z = q.sample((100000,))
    assert_importance_mean(target.log_prob(z) - q.log_prob(z) - target.log_Z, 1.0)


@pytest.mark.parametrize("dim", [2, 6])
def test_ring_samples(dim):
    torch.manual_seed(1)
    target = Ring(dim=dim)
    x = target.sample((40000,)).double()
    assert_mean_std(x, target.mean, target.std)
    # the radius: its first two moments against quadrature of r^(d-1) exp(-(r - r0)^2 / 2w^2)
    r = x.norm(dim=-1)
    grid = torch.linspace(1e-6, 6.0, 200001, dtype=torch.float64)
    dens = grid ** (dim - 1) * torch.exp(-0.5 * ((grid - 3.0) / 0.3) ** 2)
    dens = dens / torch.trapezoid(dens, grid)
    m1 = torch.trapezoid(grid * dens, grid)
    sd = torch.trapezoid((grid - m1) ** 2 * dens, grid).sqrt()
    assert_mean_std(r[:, None], m1.reshape(1), sd.reshape(1))
    assert (target.std**2).sum().item() == pytest.approx(
        torch.trapezoid(grid**2 * dens, grid).item(), rel=1e-6
    )


def test_ring_options():
    with pytest.raises(ValueError, match="width must be a positive finite float, got 0"):
        Ring(width=0.0)
    with pytest.raises(ValueError, match="dim must be >= 2"):
        Ring(dim=1)
    assert Ring(radius=2.0).initial_params()["z"].tolist() == [2.0, 0.0]


# -- mixture layout --------------------------------------------------------------------------
@pytest.mark.parametrize(
    "dim,k", [(1, 2), (1, 5), (2, 3), (2, 4), (2, 8), (3, 4), (10, 4), (5, 11)]
)
def test_centres_are_separated(dim, k):
    c = mixture_centres(dim, k, 6.0)
    assert c.shape == (k, dim)
    if k > 1:
        assert torch.pdist(c).min().item() == pytest.approx(6.0, abs=1e-9)
    if k <= dim + 1:  # a regular simplex: every pair at the same distance, centred
        torch.testing.assert_close(torch.pdist(c), torch.full((k * (k - 1) // 2,), 6.0,
                                   dtype=torch.float64))  # fmt: skip
        torch.testing.assert_close(c.mean(0), torch.zeros(dim, dtype=torch.float64))


# -- mixture density --------------------------------------------------------------------------
def torch_mixture(target: GaussianMixture) -> MixtureSameFamily:
    comp = Independent(Normal(target.modes.double(), target.scale), 1)
    return MixtureSameFamily(Categorical(target.true_mode_weights.double()), comp)


def test_mixture_log_prob_matches_torch():
    with default_dtype(torch.float64):
        target = GaussianMixture(dim=5, num_modes=4, separation=6.0, scale=0.7)
    torch.manual_seed(2)
    z = torch.randn(200, 5, dtype=torch.float64) * 5
    torch.testing.assert_close(target.log_prob(z), torch_mixture(target).log_prob(z))


def test_mixture_2d_integrates_to_one():
    target = GaussianMixture()  # 4 modes on a square, side 8
    pts = midpoint_grid((-12.0, -12.0), (12.0, 12.0), 0.02)
    assert grid_log_integral(target.log_prob(pts), 0.02, 2) == pytest.approx(0.0, abs=1e-6)


def test_mixture_5d_integrates_to_one_by_importance_sampling():
    torch.manual_seed(3)
    target = GaussianMixture(dim=5, num_modes=3, separation=6.0)
    # proposal: equal-weight, 1.5x wider Gaussians on the centres (bounded-variance weights)
    comp = Independent(Normal(target.modes.double(), 1.5), 1)
    q = MixtureSameFamily(Categorical(torch.ones(3, dtype=torch.float64)), comp)
    z = q.sample((100000,))
    assert_importance_mean(target.log_prob(z) - q.log_prob(z), 1.0)


@pytest.mark.parametrize("dim,k", [(2, 4), (10, 5)])
def test_mixture_samples_and_moments(dim, k):
    torch.manual_seed(4)
    target = GaussianMixture(dim=dim, num_modes=k)
    x = target.sample((40000,)).double()
    assert_mean_std(x, target.mean, target.std)
    mix = torch_mixture(target)
    torch.testing.assert_close(target.mean.double(), mix.mean, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(target.std.double(), mix.variance.sqrt(), rtol=1e-6, atol=1e-6)


# -- modes -------------------------------------------------------------------------------------
def test_mode_masses_of_exact_samples_match_the_weights():
    torch.manual_seed(5)
    target = GaussianMixture(dim=3, num_modes=4, separation=8.0)
    n = 20000
    masses = target.mode_masses(target.sample((n,)))
    w = target.true_mode_weights
    se = (w * (1 - w) / n).sqrt()
    assert ((masses - w).abs() < Z_TOL * se).all(), (masses, w)
    assert masses.sum().item() == pytest.approx(1.0)


def test_mode_masses_with_importance_weights():
    """Equal-weight proposal draws, reweighted by p/q, recover the unequal true weights."""
    torch.manual_seed(6)
    target = GaussianMixture(dim=2, num_modes=3, separation=8.0)
    equal = GaussianMixture(dim=2, num_modes=3, separation=8.0, weights=[1.0, 1.0, 1.0])
    z = equal.sample((30000,))
    v = torch.exp(target.log_prob(z) - equal.log_prob(z))
    masses = target.mode_masses(z, weights=v)
    torch.testing.assert_close(masses, target.true_mode_weights, atol=0.02, rtol=0)


def test_a_missed_mode_gets_zero_mass():
    torch.manual_seed(7)
    target = GaussianMixture(num_modes=4)
    x = target.sample((2000,))
    keep = target.nearest_mode(x) != 2
    masses = target.mode_masses(x[keep])
    assert masses[2] == 0 and masses.sum().item() == pytest.approx(1.0)
    assert target.nearest_mode(target.modes).tolist() == [0, 1, 2, 3]


def test_mixture_options_and_errors():
    t = GaussianMixture(dim=2, num_modes=2, weights=torch.tensor([3.0, 1.0]),
                        centres=torch.tensor([[0.0, 0.0], [5.0, 0.0]]))  # fmt: skip
    assert t.true_mode_weights.tolist() == [0.75, 0.25] and t.separation == 5.0
    assert t.initial_params()["z"].tolist() == [0.0, 0.0]  # the heaviest mode
    with pytest.raises(ValueError, match=r"weights must have shape \(3,\) \(num_modes=3\)"):
        GaussianMixture(num_modes=3, weights=[1.0, 2.0])
    with pytest.raises(ValueError, match="weights must be positive"):
        GaussianMixture(num_modes=2, weights=[1.0, -1.0])
    with pytest.raises(ValueError, match=r"centres must have shape \(4, 2\)"):
        GaussianMixture(centres=torch.zeros(3, 2))
    with pytest.raises(ValueError, match="separation must be a positive"):
        GaussianMixture(separation=0.0)
    target = GaussianMixture()
    with pytest.raises(ValueError, match="at least one sample"):
        target.mode_masses(torch.zeros(0, 2))
    with pytest.raises(ValueError, match=r"weights must have the batch shape of samples \(5,\)"):
        target.mode_masses(torch.zeros(5, 2), weights=torch.ones(4))
    with pytest.raises(ValueError, match=r"expected z of shape \(\.\.\., 2\)"):
        target.mode_masses(torch.zeros(5, 3))
