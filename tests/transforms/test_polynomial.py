"""Polynomial layers (sum-of-squares and Bernstein): the pure maths against known answers and
quadrature, the linear tails, the numerical inverse, the layers and the ``sospf``/``bpf``
builders. (The shared harness runs every layer through the generic checks.)"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from pyro_flows.flows.polynomial import bpf, sospf
from pyro_flows.transforms._polynomial import (
    bernstein_coefficients,
    bernstein_polynomial,
    invert_with_linear_tails,
    sos_polynomial,
    with_linear_tails,
)
from pyro_flows.transforms.polynomial import BernsteinAutoregressive, SOSPolynomialAutoregressive

F64 = torch.float64


@pytest.fixture(autouse=True)
def one_thread():
    """Every tensor here is tiny: run single-threaded."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def randn(*shape: int, seed: int = 0, scale: float = 1.0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return scale * torch.randn(*shape, generator=g, dtype=F64)


def sos_core(a, shift, bound, floor):
    return lambda y: sos_polynomial(y, a, shift, bound, floor)


def bernstein_core(raw, bound, min_slope=1e-3):
    theta = bernstein_coefficients(raw, bound, min_slope)
    return lambda y: bernstein_polynomial(y, theta, bound)


def cores(n: int, seed: int = 0, scale: float = 2.0):
    """A random SOS and a random Bernstein core, ``n`` independent maps each."""
    sos = sos_core(randn(n, 3, 5, seed=seed, scale=scale), randn(n, seed=seed + 1), 2.0, 1e-3)
    bern = bernstein_core(randn(n, 9, seed=seed + 2, scale=scale), 3.0)
    return {"sos": (sos, 2.0), "bernstein": (bern, 3.0)}


# -- sum of squares: known answers ------------------------------------------------------------
def test_sos_with_one_square_is_the_cubic():
    """One square q(t) = t, floor eps, bound B: g(y) = c + B (eps t + (1 - eps) t^3 / 3)."""
    B, eps, c = 2.0, 0.1, 0.5
    y = torch.linspace(-B, B, 41, dtype=F64)
    a = torch.tensor([[0.0, 1.0]], dtype=F64).expand(41, 1, 2)
    value, slope = sos_polynomial(y, a, torch.full_like(y, c), B, eps)
    t = y / B
    assert torch.allclose(value, c + B * (eps * t + (1 - eps) * t**3 / 3), atol=1e-14)
    assert torch.allclose(slope, eps + (1 - eps) * t**2, atol=1e-14)


def test_sos_with_unit_squares_is_the_identity():
    y = torch.linspace(-3.0, 3.0, 13, dtype=F64)
    a = torch.zeros(13, 3, 4, dtype=F64)
    a[..., 0] = 1.0
    value, slope = sos_polynomial(y, a, torch.zeros_like(y), 3.0, 1e-3)
    assert torch.allclose(value, y, atol=1e-14) and torch.allclose(slope, torch.ones_like(y))


def test_sos_closed_form_integral_matches_quadrature():
    """g(y) - c against Gauss-Legendre quadrature of the slope on [0, y] (exact for the
    degree-2L integrand with 20 nodes)."""
    n, B = 50, 2.5
    a = randn(n, 3, 5, seed=1, scale=1.5)
    y = torch.linspace(-B, B, n, dtype=F64)
    value, _ = sos_polynomial(y, a, torch.zeros_like(y), B, 1e-3)
    nodes, weights = (torch.from_numpy(v) for v in np.polynomial.legendre.leggauss(20))
    s = 0.5 * y[:, None] * (nodes + 1)  # nodes mapped to [0, y]
    _, slope = sos_polynomial(s, a[:, None].expand(n, 20, 3, 5), torch.zeros_like(s), B, 1e-3)
    quadrature = 0.5 * y * (weights * slope).sum(-1)
    assert torch.allclose(value, quadrature, atol=1e-12, rtol=1e-12)


def test_sos_slope_is_the_derivative_of_the_value():
    a = randn(30, 2, 4, seed=2, scale=2.0)
    y = torch.linspace(-1.9, 1.9, 30, dtype=F64, requires_grad=True)
    value, slope = sos_polynomial(y, a, torch.zeros(30, dtype=F64), 2.0, 1e-3)
    (grad,) = torch.autograd.grad(value.sum(), y)
    assert torch.allclose(grad, slope, atol=1e-12, rtol=1e-12)


# -- Bernstein: known answers -----------------------------------------------------------------
def test_bernstein_with_zero_outputs_is_the_identity():
    y = torch.linspace(-5.0, 5.0, 21, dtype=F64)
    value, slope = bernstein_core(torch.zeros(21, 15, dtype=F64), 5.0)(y)
    assert torch.allclose(value, y, atol=1e-13) and torch.allclose(slope, torch.ones_like(y))


def test_bernstein_ends_and_slopes():
    """g(-B) = theta_0, g(B) = theta_M, g'(+-B) = M Delta_{0, M-1} / (2B), g''(+-B) = 0."""
    B, n = 3.0, 8
    raw = randn(n, 9, seed=3, scale=2.0)
    theta = bernstein_coefficients(raw, B, 1e-3)
    M = theta.shape[-1] - 1
    assert torch.all(theta[..., 1:] > theta[..., :-1])
    ends = torch.tensor([-B, B], dtype=F64).expand(n, 2).T.contiguous().requires_grad_(True)
    value, slope = bernstein_polynomial(ends, theta, B)
    assert torch.allclose(value[0], theta[:, 0], atol=1e-13)
    assert torch.allclose(value[1], theta[:, -1], atol=1e-13)
    assert torch.allclose(slope[0], M * (theta[:, 1] - theta[:, 0]) / (2 * B), atol=1e-12)
    assert torch.allclose(slope[1], M * (theta[:, -1] - theta[:, -2]) / (2 * B), atol=1e-12)
    (curvature,) = torch.autograd.grad(slope.sum(), ends)
    assert torch.allclose(curvature, torch.zeros_like(curvature), atol=1e-11)


def test_bernstein_slope_is_the_derivative_of_the_value():
    raw = randn(30, 7, seed=4, scale=2.0)
    y = torch.linspace(-2.9, 2.9, 30, dtype=F64, requires_grad=True)
    value, slope = bernstein_core(raw, 3.0)(y)
    (grad,) = torch.autograd.grad(value.sum(), y)
    assert torch.allclose(grad, slope, atol=1e-12, rtol=1e-12)


# -- both: monotone, tails, inverse -----------------------------------------------------------
@pytest.mark.parametrize("kind", ["sos", "bernstein"])
def test_strictly_increasing_with_the_slope_floor(kind):
    """Wild coefficients (scale 10): the slope stays >= the floor 1e-3 everywhere, tails too,
    and the values increase along a dense grid."""
    core, B = cores(16, seed=5, scale=10.0)[kind]
    y = torch.linspace(-4 * B, 4 * B, 4001, dtype=F64)[:, None].expand(4001, 16)
    x, log_slope = with_linear_tails(y, B, core)
    assert torch.all(log_slope >= math.log(1e-3) - 1e-12)
    assert torch.all(x[1:] > x[:-1])


@pytest.mark.parametrize("kind", ["sos", "bernstein"])
def test_linear_tails_are_continuous_in_value_and_slope(kind):
    core, B = cores(16, seed=6)[kind]
    h = 1e-7
    for end in (-B, B):
        y = torch.tensor([end - h, end, end + h], dtype=F64)[:, None].expand(3, 16)
        x, log_slope = with_linear_tails(y, B, core)
        slope = log_slope.exp()
        # value: the jump across the end is the slope times the step, to O(h^2)
        assert torch.allclose(x[2] - x[1], slope[1] * h, rtol=1e-5, atol=1e-12)
        assert torch.allclose(x[1] - x[0], slope[1] * h, rtol=1e-5, atol=1e-12)
        assert torch.allclose(slope[0], slope[2], rtol=1e-5)
    # far out the map is exactly linear
    y = torch.tensor([10 * B, 20 * B], dtype=F64)[:, None].expand(2, 16)
    x, log_slope = with_linear_tails(y, B, core)
    assert torch.allclose((x[1] - x[0]) / (10 * B), log_slope[0].exp(), rtol=1e-12)


@pytest.mark.parametrize("dtype, rtol", [(torch.float64, 1e-12), (torch.float32, 2e-5)])
@pytest.mark.parametrize("kind", ["sos", "bernstein"])
def test_inverse_tolerance(kind, dtype, rtol):
    """Round trip g^{-1}(g(y)) on [-1e3, 1e3], relative to 1 + |y| (slopes of order one)."""
    core64, B = cores(16, seed=7)[kind]

    def core(y):
        return tuple(v.to(dtype) for v in core64(y.double()))

    y = torch.cat([torch.linspace(-1e3, 1e3, 201), torch.linspace(-2 * B, 2 * B, 201)])
    y = y.to(dtype)[:, None].expand(402, 16)
    x, log_slope = with_linear_tails(y, B, core)
    y_back, log_slope_back = invert_with_linear_tails(x, B, core)
    assert torch.all(torch.isfinite(y_back))
    assert torch.all((y_back - y).abs() <= rtol * (1 + y.abs()))
    assert torch.allclose(log_slope_back, -log_slope, atol=1e3 * rtol)


def test_inverse_gradients_match_finite_differences():
    """The implicit gradients of the inverse, with respect to x and the coefficients."""
    a0, shift0 = randn(6, 2, 3, seed=8), randn(6, seed=9)
    raw0 = randn(6, 7, seed=10)
    x0 = torch.tensor([-30.0, -2.5, -0.3, 0.4, 1.9, 40.0], dtype=F64)

    def sos(x, a, shift):
        return invert_with_linear_tails(x, 2.0, sos_core(a, shift, 2.0, 1e-3))

    def bern(x, raw):
        return invert_with_linear_tails(x, 3.0, bernstein_core(raw, 3.0))

    args = [t.clone().requires_grad_(True) for t in (x0, a0, shift0)]
    assert torch.autograd.gradcheck(sos, args, atol=1e-6)
    args = [t.clone().requires_grad_(True) for t in (x0, raw0)]
    assert torch.autograd.gradcheck(bern, args, atol=1e-6)


# -- the layers -------------------------------------------------------------------------------
LAYERS = [
    lambda **kw: SOSPolynomialAutoregressive(3, (16,), degree=3, **kw),
    lambda **kw: BernsteinAutoregressive(3, (16,), degree=8, **kw),
]


@pytest.mark.parametrize("make", LAYERS, ids=["sos", "bernstein"])
def test_zero_network_outputs_give_the_identity(make):
    t = make().double()
    with torch.no_grad():
        t.made.layers[-1].weight.zero_()
    y = randn(10, 3, seed=11, scale=4.0)
    x, log_det = t.inverse_and_log_det(y)
    assert torch.allclose(x, y, atol=1e-12) and torch.allclose(log_det, torch.zeros(10, dtype=F64))
    assert torch.allclose(t.forward_and_log_det(y)[0], y, atol=1e-12)


@pytest.mark.parametrize("make", LAYERS, ids=["sos", "bernstein"])
def test_conditional_sampling_round_trips_per_context(make):
    torch.manual_seed(0)
    t = make(context_dim=2).double()
    with torch.no_grad():
        for p in t.parameters():
            p.add_(0.3 * torch.randn_like(p))
    x, c = randn(4, 5, 3, seed=12), randn(5, 2, seed=13)
    y, log_det = t.forward_and_log_det(x, c)  # the context broadcasts over the leading dim
    x_back, log_det_back = t.inverse_and_log_det(y, c)
    assert torch.allclose(x_back, x, atol=1e-10) and torch.allclose(log_det_back, -log_det)
    y_other = t.forward_and_log_det(x, randn(5, 2, seed=14))[0]
    assert not torch.allclose(y, y_other)


def test_bad_arguments_are_clear_errors():
    with pytest.raises(ValueError, match="degree must be >= 1, got 0"):
        SOSPolynomialAutoregressive(2, degree=0)
    with pytest.raises(ValueError, match="polynomials must be >= 1"):
        SOSPolynomialAutoregressive(2, polynomials=0)
    with pytest.raises(TypeError, match="degree must be an int"):
        SOSPolynomialAutoregressive(2, degree=2.0)
    with pytest.raises(ValueError, match="degree must be >= 3, got 2"):
        BernsteinAutoregressive(2, degree=2)
    with pytest.raises(ValueError, match="bound must be a positive finite float, got -1"):
        BernsteinAutoregressive(2, bound=-1.0)
    with pytest.raises(TypeError, match="bound must be a positive float, got str"):
        SOSPolynomialAutoregressive(2, bound="5")
    with pytest.raises(ValueError, match=r"min_slope must be in \(0, 1\), got 1.5"):
        BernsteinAutoregressive(2, min_slope=1.5)
    with pytest.raises(ValueError, match="num_transforms must be >= 1"):
        sospf(2, num_transforms=0)
    with pytest.raises(ValueError, match="permutation must be one of"):
        bpf(2, permutation="sideways")


# -- the builders -----------------------------------------------------------------------------
@pytest.mark.parametrize("builder", [sospf, bpf])
def test_builders_stack_layers_with_permutations(builder):
    flow = builder(3, num_transforms=3, hidden_dims=(8,))
    names = [type(t).__name__ for t in flow.transforms]
    layer = "SOSPolynomialAutoregressive" if builder is sospf else "BernsteinAutoregressive"
    assert names == [layer, "Reverse", layer, "Reverse", layer]
    torch.manual_seed(0)
    y, log_q = flow.rsample_and_log_prob((6,))
    assert y.shape == (6, 3) and torch.allclose(flow.log_prob(y), log_q, atol=1e-4)


@pytest.mark.parametrize("builder", [sospf, bpf])
def test_conditional_builders(builder):
    torch.manual_seed(0)
    flow = builder(2, num_transforms=2, hidden_dims=(8,), context_dim=3).double()
    c = randn(4, 3, seed=15)
    y = flow.sample((5,), context=c)
    assert y.shape == (5, 4, 2)
    assert torch.isfinite(flow.log_prob(y, context=c)).all()


def banana(n: int, g: torch.Generator) -> torch.Tensor:
    x1 = torch.randn(n, generator=g, dtype=F64)
    x2 = 0.5 * x1**2 - 1.0 + 0.5 * torch.randn(n, generator=g, dtype=F64)
    return torch.stack([x1, x2], -1)


def banana_nll(x: torch.Tensor) -> float:
    x1, x2 = x.unbind(-1)
    z2 = (x2 - 0.5 * x1**2 + 1.0) / 0.5
    log_p = -0.5 * (x1**2 + z2**2) - math.log(2 * math.pi) - math.log(0.5)
    return -log_p.mean().item()


@pytest.mark.parametrize("builder", [sospf, bpf])
def test_training_learns_a_banana(builder):
    """200 full-batch Adam steps on 1024 draws. Held-out NLL minus the true entropy estimate,
    measured (CPU, float64): 0.032 (sospf) and 0.012 (bpf) with these seeds; over model seeds
    0-9, sospf 0.018-0.049, and bpf 0.012-0.016 over seeds 0-2 (from 0.68 at initialisation).
    The threshold 0.15 leaves a wide margin. (With 512 draws sospf overfits: a few held-out
    points beyond the data's range get very low density, see the module docstring.)"""
    g = torch.Generator().manual_seed(0)
    train, test = banana(1024, g), banana(2048, g)
    torch.manual_seed(0)
    flow = builder(2, num_transforms=2, hidden_dims=(16, 16)).double()
    opt = torch.optim.Adam(flow.parameters(), lr=1e-2)
    for _ in range(200):
        opt.zero_grad()
        (-flow.log_prob(train).mean()).backward()
        opt.step()
    with torch.no_grad():
        gap = -flow.log_prob(test).mean().item() - banana_nll(test)
    assert gap < 0.15, gap
