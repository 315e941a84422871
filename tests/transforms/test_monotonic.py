"""Family tests for the unconstrained monotonic neural autoregressive layer (UMNN / UNAF).

The shared harness (cases/monotonic.py) checks the generic contract; these check the quadrature
(exactness, error against a high-node reference), the map's monotonicity and its exact
derivative on perturbed parameters, the linear tails, the numerical inverse's tolerance, the
implicit gradients of the sampling direction, the builder and a small training run. Thresholds
are measured values with a margin (noted next to each).
"""

from __future__ import annotations

import math

import pytest
import torch

from pyro_flows.flows.monotonic import unaf
from pyro_flows.transforms import monotonic
from pyro_flows.transforms._quadrature import gauss_legendre, integrate_from_zero
from pyro_flows.transforms.monotonic import (
    _C0,
    MIN_SLOPE,
    UnconstrainedMonotonicAutoregressive,
)

UMNN = UnconstrainedMonotonicAutoregressive


def perturbed(seed: int, scale: float, nodes: int = 32, bound: float = 10.0) -> UMNN:
    """A float64 layer with every parameter moved by ``scale`` Gaussian noise."""
    torch.manual_seed(seed)
    t = UMNN(3, (32,), signal=8, network=(32, 32), quadrature_nodes=nodes, bound=bound).double()
    g = torch.Generator().manual_seed(seed + 100)
    with torch.no_grad():
        for p in t.parameters():
            p.add_(scale * torch.randn(p.shape, generator=g, dtype=torch.float64))
    return t


def column_map(t: UMNN, y: torch.Tensor, j: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """``Phi(y[:, j])`` and ``Phi'(y[:, j])`` of coordinate ``j`` (its conditioner read from
    ``y``)."""
    _, prepared = t._conditioner(y, None)
    return t._map(y[:, j], prepared[:, j])


def grid_points(lo: float, hi: float, n: int = 4001, seed: int = 0) -> torch.Tensor:
    """``n`` points whose coordinate 1 sweeps ``[lo, hi]`` and the others are fixed."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randn(1, 3, generator=g, dtype=torch.float64).repeat(n, 1)
    y[:, 1] = torch.linspace(lo, hi, n, dtype=torch.float64)
    return y


# -- the quadrature kernel ------------------------------------------------------------------------
@pytest.mark.parametrize("n", [1, 2, 5, 16, 32, 64])
def test_gauss_legendre_integrates_polynomials_of_degree_2n_minus_1_exactly(n):
    s, w = gauss_legendre(n)
    assert (w > 0).all() and abs(w.sum().item() - 1) < 1e-14
    assert ((s > 0) & (s < 1)).all()
    for k in range(2 * n):
        assert abs((w * s**k).sum().item() - 1 / (k + 1)) < 1e-13, k


def test_integral_of_a_polynomial_integrand_is_exact_with_linear_tails():
    x = torch.tensor([-15.0, -5.0, -3.0, -0.5, 0.0, 0.7, 3.0, 5.0, 15.0], dtype=torch.float64)
    phi, slope = integrate_from_zero(x, lambda t: (1 + t * t, 2 * t), *gauss_legendre(4), 5.0)
    c = x.clamp(-5, 5)
    assert torch.allclose(phi, c + c**3 / 3 + (x - c) * (1 + c * c), rtol=1e-14, atol=1e-13)
    assert torch.allclose(slope, 1 + c * c, rtol=1e-14)


# -- the layer's map ------------------------------------------------------------------------------
def test_near_identity_at_initialisation():
    torch.manual_seed(0)
    t = UMNN(4).double()
    y = torch.empty(2000, 4, dtype=torch.float64).uniform_(-10, 10)
    x, log_det = t.inverse_and_log_det(y)
    # measured: 0.019 and 0.0045 (0.032 and 0.0045 at worst over seeds 0-4)
    assert (x - y).abs().max() < 0.06 and log_det.abs().max() < 0.01


def test_constant_integrand_gives_the_affine_map():
    """Known answer: with the integrand's output layer zeroed, g = k everywhere and
    x = b + k y exactly (inside and beyond the quadrature interval)."""
    k, shift = 2.5, torch.tensor([0.5, -1.0, 2.0], dtype=torch.float64)
    t = UMNN(3, (8,), signal=2, network=(4,), bound=2.0).double()
    with torch.no_grad():
        out = t.integrand.layers[-1]
        out.weight.zero_()
        out.bias.fill_(math.log(math.expm1(k - MIN_SLOPE)) - _C0)
        made_out = t.made.layers[-1]
        made_out.weight.zero_()
        made_out.bias.zero_()
        made_out.bias[:3] = shift  # parameter-major: the first D outputs are b
    y = torch.tensor([[-30.0, -1.5, 0.0], [0.3, 2.0, 7.0], [1e3, -2.0, -1e3]], dtype=torch.float64)
    x, log_det = t.inverse_and_log_det(y)
    assert torch.allclose(x, shift + k * y, rtol=1e-14, atol=1e-12)
    assert torch.allclose(log_det, torch.full((3,), 3 * math.log(k), dtype=torch.float64))
    assert torch.allclose(t(x), y, rtol=1e-13, atol=1e-12)


@pytest.mark.parametrize("scale", [0.3, 0.5])
@pytest.mark.parametrize("seed", range(4))
def test_slope_is_positive_and_is_the_derivative_of_the_computed_map(seed, scale):
    # scale 0.5 is sharp: the relative error of Phi' against g reaches 1.5e-2 at 32 nodes and
    # the map stops being monotone at 16 (measured over 10 seeds); minimum slope measured 9.8e-4
    t = perturbed(seed, scale)
    y = grid_points(-20.0, 20.0)
    phi, slope = column_map(t, y)
    assert slope.min() > 0.5 * MIN_SLOPE
    assert (phi.diff() > 0).all()
    h = 1e-5
    up, down = y.clone(), y.clone()
    up[:, 1] += h
    down[:, 1] -= h
    finite_difference = (column_map(t, up)[0] - column_map(t, down)[0]) / (2 * h)
    # not across +-B, where the slope jumps from the quadrature's derivative to g(+-B)
    smooth = ((y[:, 1].abs() - t.bound).abs() > 2 * h).nonzero().squeeze(-1)
    assert torch.allclose(finite_difference[smooth], slope[smooth], rtol=1e-6, atol=1e-8)


def test_non_positive_slopes_of_an_unresolved_quadrature_give_finite_log_densities():
    """With too few nodes for a sharp integrand the computed map can fold; the log-det is then
    clamped (very low), never NaN."""
    y = grid_points(-10.0, 10.0)
    for seed in range(10):
        t = perturbed(seed, 0.5, nodes=8)
        if column_map(t, y)[1].min() <= 0:
            break
    else:
        pytest.fail("no folded map found (measured: several among 10 seeds)")
    x, log_det = t.inverse_and_log_det(y)
    assert torch.isfinite(x).all() and torch.isfinite(log_det).all()


def test_quadrature_error_against_a_256_node_reference():
    y = grid_points(-20.0, 20.0, n=1001)
    worst = {16: 0.0, 32: 0.0}
    worst_log_slope = 0.0
    for seed in range(3):
        reference = UMNN(3, (32,), signal=8, network=(32, 32), quadrature_nodes=256).double()
        for nodes in worst:
            t = perturbed(seed, 0.3, nodes=nodes)
            reference.load_state_dict(t.state_dict())
            phi, slope = column_map(t, y)
            phi_ref, slope_ref = column_map(reference, y)
            error = ((phi - phi_ref).abs() / (1 + phi_ref.abs())).max().item()
            worst[nodes] = max(worst[nodes], error)
            if nodes == 32:
                # the ideal map's log-slope is log g(y): measured within 4e-13 of log Phi'
                g = t.integrand(y[:, 1:2].clamp(-10, 10), t._conditioner(y, None)[1][:, 1])[0]
                gap = (slope.log() - g.squeeze(-1).log()).abs().max().item()
                worst_log_slope = max(worst_log_slope, gap)
    # measured: 6e-9 (16 nodes) and 2.5e-15 (32 nodes): geometric convergence
    assert worst[16] < 1e-7 and worst[32] < 1e-12
    assert worst_log_slope < 1e-10


def test_tails_are_exactly_linear_with_constant_log_det():
    t = perturbed(2, 0.3, bound=3.0)
    for sign in (1.0, -1.0):
        y = grid_points(0.0, 1.0, n=5)
        y[:, 1] = sign * torch.tensor([3.0, 4.0, 5.0, 100.0, 1e4], dtype=torch.float64)
        x = t.inverse_and_log_det(y)[0][:, 1]
        assert torch.allclose(x - x[0], (x[1] - x[0]) * (y[:, 1] - y[0, 1]) / sign, rtol=1e-12)
        # beyond the bound (not at it: there the slope is the quadrature's derivative)
        slope = column_map(t, y)[1]
        assert torch.allclose(slope[1:], (x[1] - x[0]).abs().expand(4), rtol=1e-12)


def test_chunked_evaluation_matches_one_go(monkeypatch):
    """Large CPU batches run the integrand in chunks: same values and gradients."""
    t = perturbed(4, 0.1)
    g = torch.Generator().manual_seed(6)
    y = (4 * torch.randn(2, 150, 3, generator=g, dtype=torch.float64)).requires_grad_()
    results = []
    for chunk in (2**40, 2000):  # one go; chunks of 2000 // (33 * 32) = 1 element
        monkeypatch.setattr(monotonic, "_CPU_CHUNK", chunk)
        x, log_det = t.inverse_and_log_det(y)
        (grad,) = torch.autograd.grad((x**2).sum() + log_det.sum(), y)
        results.append((x, log_det, grad, t.forward_and_log_det(x.detach()[:, :4])[0]))
    for one_go, chunked in zip(*results, strict=True):
        torch.testing.assert_close(chunked, one_go, rtol=1e-12, atol=1e-12)


# -- the numerical inverse ------------------------------------------------------------------------
@pytest.mark.parametrize(("dtype", "tol"), [(torch.float64, 1e-10), (torch.float32, 1e-4)])
def test_sampling_inverts_the_density_map(dtype, tol):
    # a moderate perturbation: at 0.3 the integrand of this network sits at its 1e-3 floor over
    # whole ranges, and three chained columns of slope 1e-3 amplify float32 rounding by ~1e9
    t = perturbed(1, 0.1).to(dtype)
    g = torch.Generator().manual_seed(5)
    y = (5 * torch.randn(256, 3, generator=g, dtype=torch.float64)).to(dtype)  # tails too
    x, log_det = t.inverse_and_log_det(y)
    y_back, log_det_back = t.forward_and_log_det(x)
    # measured: 4e-15 (float64) and 3e-6 (float32) relative
    assert ((y_back - y).abs() / (1 + y.abs())).max() < tol
    assert ((log_det + log_det_back).abs() / (1 + log_det.abs())).max() < tol


def test_gradients_match_finite_differences_in_both_directions():
    torch.manual_seed(0)
    t = UMNN(2, (4,), signal=2, network=(4,), quadrature_nodes=16).double()
    with torch.no_grad():
        for p in t.parameters():
            p.add_(0.3 * torch.randn_like(p))
    x = torch.randn(3, 2, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda v: t.forward_and_log_det(v), (x,))
    assert torch.autograd.gradcheck(lambda v: t.inverse_and_log_det(v), (x,))
    # parameters, through the solver's implicit gradients (sampling direction)
    x = x.detach()

    def loss() -> torch.Tensor:
        y, log_det = t.forward_and_log_det(x)
        return (y * torch.tensor([0.7, -1.3], dtype=torch.float64)).sum() + log_det.sum()

    loss().backward()
    h = 1e-6
    for name in ("integrand.layers.0.weight", "integrand.layers.1.bias", "made.layers.1.bias"):
        p = dict(t.named_parameters())[name]
        for index in [(0,) * p.dim(), tuple(s - 1 for s in p.shape)]:
            with torch.no_grad():
                p[index] += h
                up = loss().item()
                p[index] -= 2 * h
                down = loss().item()
                p[index] += h
            assert abs((up - down) / (2 * h) - p.grad[index].item()) < 1e-6, (name, index)


def test_far_outliers_are_finite_in_float32():
    t = perturbed(3, 0.3).float()
    y = torch.tensor([[1e6, -1e6, 0.0], [-1e4, 3.0, 1e5]], requires_grad=True)
    x, log_det = t.inverse_and_log_det(y)
    assert torch.isfinite(x).all() and torch.isfinite(log_det).all()
    (x.sum() + log_det.sum()).backward()
    assert torch.isfinite(y.grad).all()
    y_back, log_det_back = t.forward_and_log_det(x.detach())
    assert torch.isfinite(y_back).all() and torch.isfinite(log_det_back).all()


# -- arguments, builder, training -----------------------------------------------------------------
@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"signal": 0}, ValueError, "signal must be >= 1, got 0"),
        ({"signal": 2.5}, TypeError, "signal must be an int"),
        ({"quadrature_nodes": 0}, ValueError, "quadrature_nodes must be >= 1"),
        ({"bound": -1.0}, ValueError, "bound must be > 0, got -1.0"),
        ({"bound": float("nan")}, ValueError, "bound must be finite"),
        ({"network": (8, 0)}, ValueError, r"network\[1\] must be >= 1"),
        ({"network_activation": "relu"}, ValueError, "network_activation must be one of"),
    ],
)
def test_bad_arguments_are_clear_errors(kwargs, error, match):
    with pytest.raises(error, match=match):
        UMNN(3, (8,), **kwargs)
    with pytest.raises(error, match=match):
        unaf(3, 2, (8,), **kwargs)


def test_builder_stacks_layers_and_conditions_on_context():
    torch.manual_seed(0)
    flow = unaf(3, 2, hidden_dims=(8,), context_dim=2, signal=2, network=(8,))
    layers = [type(m).__name__ for m in flow.transforms]
    assert layers == [UMNN.__name__, "Reverse", UMNN.__name__]
    context = torch.randn(4, 2)
    y = flow.sample((5,), context=context)
    assert y.shape == (5, 4, 3)
    log_q = flow.log_prob(y, context=context)
    assert log_q.shape == (5, 4) and torch.isfinite(log_q).all()
    other = flow.log_prob(y, context=context + 1.0)
    assert not torch.allclose(log_q, other)


def test_training_fits_a_bimodal_density_that_affine_maf_cannot():
    """One layer learns a bimodal first coordinate (a monotone, non-affine map to the base) and
    a non-linear conditional mean for the second; the true entropy is 1.419 + 0.726."""
    g = torch.Generator().manual_seed(0)
    n = 1024
    y1 = torch.where(torch.rand(n, generator=g) < 0.5, -2.0, 2.0)
    y1 = y1 + 0.5 * torch.randn(n, generator=g)
    y2 = torch.sin(y1) + 0.5 * torch.randn(n, generator=g)
    data = torch.stack([y1, y2], -1)
    torch.manual_seed(0)
    flow = unaf(2, 1, hidden_dims=(16,), signal=4, network=(16, 16), quadrature_nodes=16)
    opt = torch.optim.Adam(flow.parameters(), lr=1e-2)
    for _ in range(150):
        opt.zero_grad()
        loss = -flow.log_prob(data).mean()
        loss.backward()
        opt.step()
    with torch.no_grad():
        nll = -flow.log_prob(data).mean().item()
    # measured: 2.24 (true entropy 2.145; best Gaussian 3.10; one affine MAF layer trained the
    # same way 2.93)
    assert nll < 2.45, nll
