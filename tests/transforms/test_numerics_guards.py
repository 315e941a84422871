"""Float32 extremes in the affine layers: the sequential solve, masked weights and saturated
scales never turn an overflow somewhere irrelevant into a NaN."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from pyro_flows.nn.made import MADE
from pyro_flows.transforms import InverseAutoregressive, MaskedAutoregressive
from pyro_flows.transforms._affine import _SHIFT, MIN_SCALE, scale_and_log_scale


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def funnel_made_layer(cls: type, dtype: torch.dtype) -> MaskedAutoregressive:
    """A 3-D layer whose second scale is ``softplus(u_0 - 20 + c) + 1e-3``: tiny at the solve's
    first guess ``u_0 = 0``, about 10 at the solution ``u_0 = 30``; every other output is 0."""
    t = cls(3, (8,)).to(dtype)
    with torch.no_grad():
        for p in t.parameters():
            p.zero_()
        first, last = t.made.layers
        first.weight[0, 0] = 1.0  # hidden unit 0 (degree 1) = relu(u_0)
        first.weight[1, 1] = 1.0  # hidden unit 1 (degree 2) = relu(u_1), read by nothing
        last.weight[3 + 1, 0] = 1.0  # raw scale of dimension 1 (parameter-major) = u_0 - 20
        last.bias[3 + 1] = -20.0
    return t


@pytest.mark.parametrize("cls", [MaskedAutoregressive, InverseAutoregressive])
def test_sequential_solve_is_not_poisoned_by_an_overflowing_guess(cls):
    """``v_1 = 1e36``: the first pass guesses ``u_1 = 1e36 / 1e-3``, beyond float32, which
    used to reach the next pass as ``inf * 0 = NaN`` through the masked weights; the solution
    ``u_1 = 1e36 / 10.5`` is finite and is what comes out (as in float64)."""
    v = torch.tensor([[30.0, 1e36, 1.0]], dtype=torch.float64)
    results = []
    for dtype in (torch.float32, torch.float64):
        t = funnel_made_layer(cls, dtype)
        solve = t.forward_and_log_det if cls is MaskedAutoregressive else t.inverse_and_log_det
        u, log_det = solve(v.to(dtype))
        results.append((u, log_det))
    (u32, ld32), (u64, ld64) = results
    assert torch.isfinite(u32).all() and torch.isfinite(ld32).all()
    torch.testing.assert_close(u32.double(), u64, rtol=1e-5, atol=0)
    torch.testing.assert_close(ld32.double(), ld64, rtol=1e-5, atol=1e-5)
    expected = 1e36 / (F.softplus(torch.tensor(10.0 + _SHIFT, dtype=torch.float64)) + MIN_SCALE)
    torch.testing.assert_close(u64[0, 1], expected, rtol=1e-12, atol=0)


def test_masked_weight_gradients_are_exact_zeros_even_where_the_products_overflow():
    made = MADE(3, (8,), param_dims=(1, 1))
    weights = made.masked_weights()
    grads = torch.autograd.grad(
        [w for w, _ in weights], [layer.weight for layer in made.layers],
        [torch.full_like(w, float("inf")) for w, _ in weights],
    )
    for grad, mask in zip(grads, made.masks, strict=True):
        assert torch.all(grad[~mask] == 0) and torch.all(grad[mask] == float("inf"))


@pytest.mark.parametrize("kind", ["softplus", "exp"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_saturated_scales_pass_no_nan_gradient(kind, dtype):
    """At the scale's floor (softplus) or bound (exp) its slope is 0: an overflowed incoming
    gradient gives 0 there, not NaN; values are those of the no-autograd path."""
    raw = torch.tensor([-1e4, -300.0, -90.0, 0.0, 2.0, 300.0, 1e4], dtype=dtype)
    with torch.no_grad():
        plain = scale_and_log_scale(raw, kind)
    tracked = raw.clone().requires_grad_()
    scale, log_scale = scale_and_log_scale(tracked, kind)
    for a, b in zip(plain, (scale, log_scale), strict=True):
        assert torch.equal(a, b.detach())
    (grad,) = torch.autograd.grad(scale, tracked, torch.full_like(scale, float("inf")))
    assert not grad.isnan().any()
    saturated = (raw.abs() >= 300) if kind == "exp" else (raw <= -300)
    assert torch.all(grad[saturated] == 0)


@pytest.mark.parametrize("kind", ["softplus", "exp"])
def test_scale_gradients_for_finite_upstream_are_unchanged(kind):
    """Against the textbook formulas the gradients agree (saturated tanh entries included,
    where both are 0); below the softplus floor (``raw + c < -87``) the guard drops a gradient
    of at most ``e^-87 / MIN_SCALE``, about ``2e-35``, per unit of incoming gradient."""
    raw = torch.linspace(-150.0, 150.0, 301, dtype=torch.float64, requires_grad=True)
    upstream = torch.linspace(-2.0, 3.0, 301, dtype=torch.float64)
    scale, log_scale = scale_and_log_scale(raw, kind)
    got = torch.autograd.grad((scale * upstream).sum() + log_scale.sum(), raw)[0]
    if kind == "exp":
        log_ref = 8.0 * torch.tanh(raw / 8.0)
        ref_scale = torch.exp(log_ref)
    else:
        ref_scale = F.softplus(raw + _SHIFT) + MIN_SCALE
        log_ref = torch.log(ref_scale)
    ref = torch.autograd.grad((ref_scale * upstream).sum() + log_ref.sum(), raw)[0]
    torch.testing.assert_close(got, ref, rtol=1e-12, atol=1e-33)
