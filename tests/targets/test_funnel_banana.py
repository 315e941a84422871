"""Neal's funnel and the banana: log densities against torch.distributions, normalisation by
quadrature and importance sampling, exact moments against exact samples."""

from __future__ import annotations

import math

import pytest
import torch
from torch.distributions import Normal

from pyro_flows.targets._numerics import gauss_legendre
from pyro_flows.targets.banana import Banana
from pyro_flows.targets.funnel import Funnel

from ._stats import assert_importance_mean, assert_mean_std


def N(loc, scale) -> Normal:  # noqa: N802 - the maths name
    """A float64 Normal (torch would build float32 parameters from Python floats)."""
    f64 = torch.float64
    return Normal(torch.as_tensor(loc, dtype=f64), torch.as_tensor(scale, dtype=f64))


# -- funnel --------------------------------------------------------------------------------
def test_funnel_log_prob_matches_torch_distributions():
    target = Funnel(dim=10)
    torch.manual_seed(0)
    x = torch.randn(50, 10, dtype=torch.float64) * 3
    expected = N(0.0, 3.0).log_prob(x[:, 0]) + N(
        torch.zeros_like(x[:, 1:]), torch.exp(x[:, :1] / 2)
    ).log_prob(x[:, 1:]).sum(-1)
    torch.testing.assert_close(target.log_prob(x), expected, rtol=1e-12, atol=1e-12)


def test_funnel_reference_facts():
    target = Funnel()
    assert target.log_Z == 0.0 and target.dim == 10
    assert target.std[0].item() == pytest.approx(3.0)
    assert target.std[1:].tolist() == pytest.approx([9.488] * 9, abs=5e-4)  # REFERENCE.md
    # Var(x_i) = E[exp(x0)]: Gauss-Legendre over x0 against the closed form exp(9/2)
    x0, w = gauss_legendre(-40.0, 40.0, panels=200)
    e_exp = (w * torch.exp(N(0.0, 3.0).log_prob(x0) + x0)).sum().item()
    assert math.sqrt(e_exp) == pytest.approx(target.std[1].item(), rel=1e-6)


def test_funnel_2d_integrates_to_one():
    """For each x0 node, x1 on a grid that scales with the funnel's width there."""
    target = Funnel(dim=2)
    x0, w0 = gauss_legendre(-30.0, 30.0, panels=120)
    u = torch.linspace(-12.0, 12.0, 2401, dtype=torch.float64)
    x1 = torch.exp(x0 / 2)[:, None] * u[None, :]
    lp = target.log_prob(torch.stack([x0[:, None].expand_as(x1), x1], -1))
    inner = torch.trapezoid(torch.exp(lp), x1, dim=-1)
    assert (w0 * inner).sum().item() == pytest.approx(1.0, abs=1e-9)


def test_funnel_10d_normalised_by_importance_sampling():
    """E_q[p/q] = 1 under a wider funnel q (bounded weights: sds 1.15x larger everywhere)."""
    torch.manual_seed(1)
    n = 100000
    x0 = 3.45 * torch.randn(n, 1, dtype=torch.float64)
    rest = 1.15 * torch.exp(x0 / 2) * torch.randn(n, 9, dtype=torch.float64)
    log_q = N(0.0, 3.45).log_prob(x0[:, 0])
    log_q = log_q + N(0.0, 1.15 * torch.exp(x0 / 2)).log_prob(rest).sum(-1)
    log_w = Funnel().log_prob(torch.cat([x0, rest], -1)) - log_q
    assert_importance_mean(log_w, 1.0)


def test_funnel_samples():
    torch.manual_seed(2)
    target = Funnel()
    x = target.sample((50000,)).double()
    # x0 and the standardised x_i = e^{x0/2} eps_i have light tails: test them directly
    assert_mean_std(x[:, :1], target.mean[:1], target.std[:1])
    eps = x[:, 1:] * torch.exp(-x[:, :1] / 2)
    assert_mean_std(eps, torch.zeros(9), torch.ones(9))
    # the heavy-tailed x_i: the mean within 5 SE (their kurtosis makes the variance check weak)
    assert_mean_std(x[:, 1:2], target.mean[1:2], target.std[1:2], z_tol=5.0)
    assert (eps[:, 0] * eps[:, 1]).mean().abs() < 5 / math.sqrt(50000)  # independent


def test_funnel_options():
    target = Funnel(dim=4, scale=1.0)
    assert target.std.tolist() == pytest.approx([1.0] + [math.exp(0.25)] * 3)
    with pytest.raises(ValueError, match="dim must be >= 2, got 1"):
        Funnel(dim=1)
    with pytest.raises(ValueError, match="scale must be a positive finite float, got -1"):
        Funnel(scale=-1.0)


# -- banana --------------------------------------------------------------------------------
@pytest.mark.parametrize("dim", [2, 4])
def test_banana_log_prob_matches_torch_distributions(dim):
    target = Banana(dim=dim, curvature=0.1, scale=5.0)
    torch.manual_seed(3)
    x = torch.randn(50, dim, dtype=torch.float64) * 5
    expected = (
        N(0.0, 5.0).log_prob(x[:, 0])
        + N(0.1 * (x[:, 0] ** 2 - 25.0), 1.0).log_prob(x[:, 1])
        + N(0.0, 1.0).log_prob(x[:, 2:]).sum(-1)
    )
    torch.testing.assert_close(target.log_prob(x), expected, rtol=1e-12, atol=1e-12)


def test_banana_2d_integrates_to_one():
    """x2 on a grid that follows the parabola at each x1 node."""
    target = Banana()
    x1, w1 = gauss_legendre(-100.0, 100.0, panels=100)
    centre = 0.03 * (x1**2 - 100.0)
    x2 = centre[:, None] + torch.linspace(-12.0, 12.0, 2401, dtype=torch.float64)[None, :]
    lp = target.log_prob(torch.stack([x1[:, None].expand_as(x2), x2], -1))
    inner = torch.trapezoid(torch.exp(lp), x2, dim=-1)
    assert (w1 * inner).sum().item() == pytest.approx(1.0, abs=1e-9)


def test_banana_samples_and_moments():
    torch.manual_seed(4)
    target = Banana(dim=3)
    assert target.std.tolist() == pytest.approx([10.0, math.sqrt(19.0), 1.0])
    x = target.sample((50000,)).double()
    assert_mean_std(x, target.mean, target.std)
    # the twist: x2 - b (x1^2 - a^2) is standard normal and independent of x1
    y2 = x[:, 1] - 0.03 * (x[:, 0] ** 2 - 100.0)
    assert_mean_std(y2[:, None], torch.zeros(1), torch.ones(1))
    assert (y2 * x[:, 0] / 10).mean().abs() < 5 / math.sqrt(50000)


def test_banana_options():
    with pytest.raises(ValueError, match="dim must be >= 2"):
        Banana(dim=1)
    with pytest.raises(TypeError, match="curvature must be a float, got str"):
        Banana(curvature="0.1")
    assert Banana(curvature=0.0).std.tolist() == pytest.approx([10.0, 1.0])
