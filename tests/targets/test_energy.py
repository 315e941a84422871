"""Rezende & Mohamed's U1-U4: log Z by quadrature, REFERENCE.md's numbers, the box and prior
handling, moments, and the exact samplers (moments and a 2-D chi-square test)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch.distributions import constraints

from pyro_flows.targets.energy import U1, U2, U3, U4

from ._stats import (
    assert_chi_square,
    assert_mean_std,
    chi_square_2d,
    grid_log_integral,
    midpoint_grid,
)

REFERENCE_LOG_Z = {"u1": 1.8775, "u2": 2.0823, "u3": 2.6420, "u4": 2.6849}
STRIPS = [U2, U3, U4]


def energy_numpy(name: str, z: np.ndarray) -> np.ndarray:
    """U(z) written out from REFERENCE.md's formulas, independently of the module."""
    z1, z2 = z[:, 0], z[:, 1]
    w1 = np.sin(2 * np.pi * z1 / 4)
    w2 = 3 * np.exp(-(((z1 - 1) / 0.6) ** 2) / 2)
    w3 = 3 / (1 + np.exp(-(z1 - 1) / 0.3))
    if name == "u1":
        r = np.sqrt(z1**2 + z2**2)
        lobes = np.exp(-(((z1 - 2) / 0.6) ** 2) / 2) + np.exp(-(((z1 + 2) / 0.6) ** 2) / 2)
        return ((r - 2) / 0.4) ** 2 / 2 - np.log(lobes)
    if name == "u2":
        return ((z2 - w1) / 0.4) ** 2 / 2
    if name == "u3":
        a = np.exp(-(((z2 - w1) / 0.35) ** 2) / 2)
        b = np.exp(-(((z2 - w1 + w2) / 0.35) ** 2) / 2)
        return -np.log(a + b)
    a = np.exp(-(((z2 - w1) / 0.4) ** 2) / 2)
    b = np.exp(-(((z2 - w1 + w3) / 0.35) ** 2) / 2)
    return -np.log(a + b)


def grid_facts(target, lows, highs, h):
    """log Z, mean and std of the target by the midpoint rule (float64)."""
    pts = midpoint_grid(lows, highs, h)
    lp = target.log_prob(pts)
    log_z = grid_log_integral(lp, h, 2)
    p = torch.exp(lp - log_z) * h * h
    mean = (p[:, None] * pts).sum(0)
    std = ((p[:, None] * (pts - mean) ** 2).sum(0)).sqrt()
    return log_z, mean, std, pts, lp


def prior_box(target):
    (lo1, hi1), (lo2, hi2) = target.bounds
    return (-8 * target.prior_scale, lo2 - 2.5), (8 * target.prior_scale, hi2 + 2.5)


@pytest.fixture(scope="module")
def u1_grid():
    return grid_facts(U1(), (-6.0, -6.0), (6.0, 6.0), 0.01)


# -- log_prob is exactly -U --------------------------------------------------------------------
@pytest.mark.parametrize("cls", [U1, *STRIPS], ids=lambda c: c.name)
def test_log_prob_is_minus_the_energy(cls):
    z = np.random.default_rng(0).uniform(-3.9, 3.9, size=(500, 2))
    lp = cls().log_prob(torch.as_tensor(z)).numpy()
    np.testing.assert_allclose(lp, -energy_numpy(cls.name, z), rtol=1e-12, atol=1e-12)


def test_prior_mode_adds_the_stated_prior():
    z = torch.randn(100, 2, dtype=torch.float64) * 3
    for cls in STRIPS:
        box, prior = cls(), cls(boundary="prior", prior_scale=2.0)
        inside = (z.abs() <= 4).all(-1)
        normal = torch.distributions.Normal(0.0, 2.0).log_prob(z[:, 0])
        expected = box.log_prob(z)[inside] + normal[inside]
        torch.testing.assert_close(prior.log_prob(z)[inside], expected)


# -- log Z by quadrature, and against REFERENCE.md -----------------------------------------------
def test_u1_log_z_by_cartesian_quadrature(u1_grid):
    log_z, mean, std, _, _ = u1_grid
    target = U1()
    assert abs(target.log_Z - log_z) < 1e-9  # smooth and decaying: the grid is spectrally exact
    assert abs(target.log_Z - REFERENCE_LOG_Z["u1"]) < 1e-4
    torch.testing.assert_close(mean, torch.zeros(2, dtype=torch.float64), atol=1e-9, rtol=0)
    torch.testing.assert_close(target.std.double(), std, atol=1e-6, rtol=0)


@pytest.mark.parametrize("cls", STRIPS, ids=lambda c: c.name)
def test_box_log_z_by_quadrature_and_reference(cls):
    target = cls()
    log_z, mean, std, _, _ = grid_facts(target, (-4.0, -4.0), (4.0, 4.0), 0.01)
    assert abs(target.log_Z - log_z) < 2e-6  # midpoint error, O(h^2) at the box edges
    torch.testing.assert_close(target.mean.double(), mean, atol=1e-5, rtol=0)
    torch.testing.assert_close(target.std.double(), std, atol=1e-5, rtol=0)
    # REFERENCE.md quotes 2-3e-4 higher values (see the module docstring)
    assert abs(target.log_Z - REFERENCE_LOG_Z[cls.name]) < 4e-4


def test_box_u2_log_z_closed_form():
    # w1 stays in [-1, 1], 7.5 widths from the box edges: the truncation is below 1e-13
    assert abs(U2().log_Z - math.log(8 * 0.4 * math.sqrt(2 * math.pi))) < 1e-12


@pytest.mark.parametrize("cls", STRIPS, ids=lambda c: c.name)
def test_prior_log_z_exact_and_by_quadrature(cls):
    target = cls(boundary="prior")
    closed = math.log(sum(cls._scales) * math.sqrt(2 * math.pi))
    assert target.log_Z == pytest.approx(closed, abs=1e-14)
    lows, highs = prior_box(target)
    log_z, mean, std, _, _ = grid_facts(target, lows, highs, 0.02)
    assert abs(target.log_Z - log_z) < 1e-9
    torch.testing.assert_close(target.mean.double(), mean, atol=1e-6, rtol=0)
    torch.testing.assert_close(target.std.double(), std, atol=1e-6, rtol=0)
    assert target.std[0].item() == pytest.approx(2.0, abs=1e-6)  # z1 follows the prior


def test_other_box_and_prior_sizes():
    wide = U2(box=6.0)
    assert abs(wide.log_Z - math.log(12 * 0.4 * math.sqrt(2 * math.pi))) < 1e-9
    broad = U3(boundary="prior", prior_scale=5.0)
    assert broad.log_Z == pytest.approx(U3(boundary="prior").log_Z, abs=1e-14)
    assert broad.std[0].item() == pytest.approx(5.0, abs=1e-5)


# -- the box ---------------------------------------------------------------------------------
@pytest.mark.parametrize("cls", STRIPS, ids=lambda c: c.name)
def test_box_support_and_outside(cls):
    target = cls()
    support = target.support
    assert isinstance(support, constraints.independent) and support.reinterpreted_batch_ndims == 1
    assert (support.base_constraint.lower_bound, support.base_constraint.upper_bound) == (-4, 4)
    assert target.support.check(torch.tensor([3.9, -3.9])).item()
    assert not target.support.check(torch.tensor([4.1, 0.0])).item()
    z = torch.tensor([[4.5, 0.0], [0.0, -4.2], [3.0, 0.5]], requires_grad=True)
    lp = target.log_prob(z)
    assert torch.isneginf(lp[:2]).all() and torch.isfinite(lp[2])
    lp[2].backward()
    assert torch.isfinite(z.grad).all() and (z.grad[:2] == 0).all()
    mapped = torch.distributions.biject_to(target.support)(torch.randn(50, 2) * 10)
    assert torch.isfinite(target.log_prob(mapped)).all()
    assert target.bounds == ((-4.0, 4.0), (-4.0, 4.0))


def test_prior_mode_is_unconstrained():
    target = U4(boundary="prior")
    assert target.support is constraints.real_vector
    assert torch.isfinite(target.log_prob(torch.tensor([[30.0, -20.0]]).double())).all()


def test_bad_options():
    with pytest.raises(ValueError, match="boundary must be one of"):
        U2(boundary="wall")
    with pytest.raises(ValueError, match="box must be a positive"):
        U3(box=-1.0)
    with pytest.raises(TypeError, match="prior_scale must be a positive float"):
        U4(boundary="prior", prior_scale="2")


# -- exact samples -----------------------------------------------------------------------------
N = 20000


def test_u1_samples(u1_grid):
    torch.manual_seed(1)
    target = U1()
    x = target.sample((N,)).double()
    assert_mean_std(x, target.mean, target.std)
    _, _, _, pts, lp = u1_grid
    stat, dof = chi_square_2d(x, lp - target.log_Z, pts, 0.01, target.bounds, bins=20)
    assert_chi_square(stat, dof)


@pytest.mark.parametrize("boundary", ["box", "prior"])
@pytest.mark.parametrize("cls", STRIPS, ids=lambda c: c.name)
def test_strip_samples(cls, boundary):
    torch.manual_seed(2)
    target = cls(boundary=boundary)
    x = target.sample((N,)).double()
    assert torch.isfinite(target.log_prob(x)).all()
    assert target.support.check(x).all()
    assert_mean_std(x, target.mean, target.std)
    if boundary == "box":
        lows, highs = (-4.0, -4.0), (4.0, 4.0)
    else:
        (lo1, hi1), (lo2, hi2) = target.bounds
        lows, highs = (lo1, lo2), (hi1, hi2)
    pts = midpoint_grid(lows, highs, 0.02)
    lp = target.log_prob(pts) - target.log_Z
    stat, dof = chi_square_2d(x, lp, pts, 0.02, target.bounds, bins=20)
    assert_chi_square(stat, dof)


def test_samples_are_seeded():
    torch.manual_seed(3)
    a = U4().sample(100)
    torch.manual_seed(3)
    torch.testing.assert_close(U4().sample(100), a)


@pytest.mark.parametrize("cls", [U2, U3, U4])
@pytest.mark.parametrize("boundary", ["box", "prior"])
def test_initial_point_is_high_and_inside_the_box(cls, boundary):
    """U3 and U4 peak on the box's edge (where their curves meet): the start must not sit there,
    since it maps to -inf on the unconstrained scale NUTS works on."""
    t = cls(boundary=boundary)
    z = t.initial_params()["z"]
    assert bool((z.abs() < 0.95 * 4.0).all()), z
    g = torch.linspace(-4, 4, 161, dtype=torch.float64)
    grid = torch.stack(torch.meshgrid(g, g, indexing="ij"), -1).reshape(-1, 2)
    best = float(t.log_prob(grid.to(z)).max())
    assert float(t.log_prob(z)) > best - 0.75, (float(t.log_prob(z)), best)
    u = t.unconstrained().initial_params()["z"]
    assert bool(u.abs().max() < 3.0), u
