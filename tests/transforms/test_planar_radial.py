"""Family-specific tests for Planar and Radial (the shared harness covers the generic checks)."""

from __future__ import annotations

import math

import numpy as np
import pyro.distributions.transforms as T
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from pyro_flows.transforms._root_finding import implicit_root, solve_increasing
from pyro_flows.transforms.planar import Planar, planar_constrain, planar_inverse
from pyro_flows.transforms.radial import Radial, radial_forward, radial_inverse

f64 = torch.float64


def set_planar(t: Planar, u, w, b) -> Planar:
    with torch.no_grad():
        t.u.copy_(torch.as_tensor(u, dtype=t.u.dtype))
        t.w.copy_(torch.as_tensor(w, dtype=t.w.dtype))
        t.bias.fill_(float(b))
    return t


def set_radial(t: Radial, x0, alpha_prime, beta_prime) -> Radial:
    with torch.no_grad():
        t.x0.copy_(torch.as_tensor(x0, dtype=t.x0.dtype))
        t.alpha_prime.fill_(float(alpha_prime))
        t.beta_prime.fill_(float(beta_prime))
    return t


# -- independent high-precision references (numpy, plain bisection) ---------------------------


def bisect(f, lo: np.ndarray, hi: np.ndarray, iters: int = 200) -> np.ndarray:
    """Root of an increasing vectorised ``f`` in ``[lo, hi]`` by plain bisection."""
    lo, hi = lo.copy(), hi.copy()
    for _ in range(iters):
        mid = 0.5 * (lo + hi)
        pos = f(mid) > 0
        hi = np.where(pos, mid, hi)
        lo = np.where(pos, lo, mid)
    return 0.5 * (lo + hi)


def planar_reference_inverse(t: Planar, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    u, w, b = (p.detach().double().numpy() for p in (t.u, t.w, t.bias))
    a_raw = u @ w
    u_hat = u + (np.log1p(np.exp(a_raw)) - 1 - a_raw) * w / (w @ w)
    a = w @ u_hat
    c = y @ w + b[0]
    big = np.abs(c) + abs(a) + 1
    alpha = bisect(lambda s: s + a * np.tanh(s) - c, -big, big)
    x = y - np.outer(np.tanh(alpha), u_hat)
    e = np.exp(-2 * np.abs(alpha))
    log_det = -np.log1p(a * 4 * e / (1 + e) ** 2)  # sech^2 without overflow
    return x, log_det


def radial_reference_inverse(t: Radial, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    x0 = t.x0.detach().double().numpy()
    alpha = np.log1p(np.exp(t.alpha_prime.item()))
    beta = -alpha + np.log1p(np.exp(t.beta_prime.item()))
    r_y = np.linalg.norm(y - x0, axis=-1)
    # r_y = r (1 + beta / (alpha + r)) is increasing in r, with r <= r_y (1 + alpha/(alpha+beta))
    r = bisect(lambda r: r * (1 + beta / (alpha + r)) - r_y, 0 * r_y, r_y * 10 + 10)
    x = x0 + (y - x0) / (1 + beta / (alpha + r))[:, None]
    h = 1 / (alpha + r)
    d = y.shape[-1]
    log_det = (d - 1) * np.log1p(beta * h) + np.log1p(beta * h - beta * h * h * r)
    return x, -log_det


# -- Planar ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "u_of_w",
    [lambda w: -10 * w, lambda w: -1e3 * w, lambda w: -1e3 * w + 1.0, lambda w: 50 * w],
    ids=["u=-10w", "u=-1000w", "u=-1000w+1", "u=50w"],
)
@pytest.mark.parametrize("w_scale", [1e-3, 1.0, 30.0])
def test_planar_constraint_holds_for_adversarial_raw_parameters(u_of_w, w_scale):
    torch.manual_seed(0)
    w = w_scale * torch.randn(4, dtype=f64)
    u = u_of_w(w)
    u_hat, softplus_a = planar_constrain(u, w)
    a_dot = (w * u_hat).sum()
    assert a_dot >= -1 - 1e-9 * w.norm() * u_hat.norm()
    assert torch.allclose(softplus_a - 1, torch.nn.functional.softplus((w * u).sum()) - 1)
    # the worst point, sech^2 = 1 at w^T x + b = 0, where det = 1 + w^T u_hat = softplus(w^T u)
    t = set_planar(Planar(4).double(), u, w, 0.3)
    v = torch.randn(4, dtype=f64)
    worst = -0.3 * w / w.dot(w) + v - v.dot(w) * w / w.dot(w)
    x = torch.stack([worst, torch.randn(4, dtype=f64)])
    y, ld = t.forward_and_log_det(x)
    assert torch.isfinite(ld).all()
    if softplus_a > 1e-8:  # else rounding of w^T x + b ~ 1e-16 dominates tanh^2 + softplus
        assert torch.allclose(ld[0], torch.log(softplus_a), rtol=1e-6)
    else:
        assert ld[0] < math.log(1e-6)  # nearly singular, and reported as such
    jac = torch.autograd.functional.jacobian(lambda v: t.forward_and_log_det(v)[0], x[1])
    sign, logabsdet = torch.linalg.slogdet(jac)
    if ld[1] > -10:  # slogdet itself is only accurate away from singularity
        assert sign > 0 and torch.allclose(logabsdet, ld[1], atol=1e-6)
    x_back, ld_inv = t.inverse_and_log_det(y)
    assert torch.isfinite(x_back).all() and torch.isfinite(ld_inv).all()
    assert torch.allclose(t.forward_and_log_det(x_back)[0], y, atol=1e-8, rtol=1e-8)
    # at a numerically singular point z is only determined to ~eps^(1/3), so is its log-det
    regular = slice(None) if softplus_a > 1e-8 else slice(1, None)
    assert torch.allclose(ld_inv[regular], -ld[regular], atol=1e-8)


def test_planar_zero_w_is_a_finite_translation():
    t = set_planar(Planar(3).double(), [1.0, -2.0, 0.5], [0.0, 0.0, 0.0], 0.7)
    x = torch.randn(5, 3, dtype=f64, requires_grad=True)
    y, ld = t.forward_and_log_det(x)
    assert torch.allclose(y, x + math.tanh(0.7) * t.u)
    assert torch.equal(ld, torch.zeros(5, dtype=f64))
    x_back, _ = t.inverse_and_log_det(y)
    assert torch.allclose(x_back, x)
    (x_back.sum() + ld.sum()).backward()
    assert all(torch.isfinite(p.grad).all() for p in t.parameters())


@pytest.mark.parametrize(
    "u, w, b",
    [
        ([0.3, -0.2, 0.1], [0.5, 0.4, -0.3], 0.1),  # mild
        ([-4.0, 1.0, 0.0], [1.0, 0.5, 0.2], -0.5),  # strong contraction, w^T u_hat near -1
        ([8.0, 5.0, -2.0], [1.5, 1.0, 0.3], 1.0),  # strong expansion, w^T u_hat ~ 16
    ],
    ids=["mild", "contracting", "expanding"],
)
def test_planar_inverse_scores_points_it_did_not_sample(u, w, b):
    t = set_planar(Planar(3).double(), u, w, b)
    g = torch.Generator().manual_seed(0)
    y = torch.cat(
        [
            20 * torch.randn(200, 3, generator=g, dtype=f64),
            torch.randn(50, 3, generator=g, dtype=f64) * 1e-3,
            torch.tensor([[1e3, -1e3, 5e2], [0.0, 0.0, 0.0]], dtype=f64),
        ]
    )
    x, ld = t.inverse_and_log_det(y)
    x_ref, ld_ref = planar_reference_inverse(t, y.numpy())
    np.testing.assert_allclose(x.detach().numpy(), x_ref, atol=1e-9, rtol=1e-9)
    np.testing.assert_allclose(ld.detach().numpy(), ld_ref, atol=1e-9, rtol=1e-9)


def planar_inverse_fn(y: torch.Tensor, u: torch.Tensor, w: torch.Tensor, b: torch.Tensor):
    u_hat, softplus_a = planar_constrain(u, w)
    return planar_inverse(y, u_hat, w, b, softplus_a)


@pytest.mark.parametrize(
    "u, w", [([0.3, -0.2], [0.5, 0.4]), ([-3.0, 1.0], [1.2, -0.7])], ids=["mild", "contracting"]
)
def test_planar_inverse_gradient_is_the_implicit_gradient(u, w):
    torch.manual_seed(1)
    y = (3 * torch.randn(6, 2, dtype=f64)).requires_grad_()
    params = [
        torch.tensor(u, dtype=f64, requires_grad=True),
        torch.tensor(w, dtype=f64, requires_grad=True),
        torch.tensor(0.2, dtype=f64, requires_grad=True),
    ]
    assert torch.autograd.gradcheck(planar_inverse_fn, (y, *params), atol=1e-6, rtol=1e-5)


def test_conditional_planar_inverse_gradcheck_in_y_and_context():
    torch.manual_seed(2)
    t = Planar(2, context_dim=2, hidden_dims=(8,)).double()
    with torch.no_grad():
        for p in t.parameters():
            p.add_(0.3 * torch.randn_like(p))
    y = torch.randn(4, 2, dtype=f64, requires_grad=True)
    ctx = torch.randn(4, 2, dtype=f64, requires_grad=True)
    assert torch.autograd.gradcheck(t.inverse_and_log_det, (y, ctx), atol=1e-6, rtol=1e-5)


@settings(max_examples=40, deadline=None)
@given(
    u=st.lists(st.floats(-50, 50), min_size=2, max_size=2),
    w=st.lists(st.floats(-5, 5), min_size=2, max_size=2),
    b=st.floats(-5, 5),
    y=st.lists(st.floats(-100, 100), min_size=2, max_size=2),
)
def test_planar_round_trip_property(u, w, b, y):
    t = set_planar(Planar(2).double(), u, w, b)
    y_t = torch.tensor([y], dtype=f64)
    x, ld_inv = t.inverse_and_log_det(y_t)
    y_back, ld_fwd = t.forward_and_log_det(x)
    assert torch.isfinite(x).all() and torch.isfinite(ld_inv).all()
    # the residual of the scalar equation is at rounding level, so y is recovered to a tolerance
    # set by |u_hat| (the size of the correction) and the conditioning of the map
    scale = 1 + t.u_hat().norm() + y_t.abs().max()
    assert (y_back - y_t).abs().max() <= 1e-10 * scale
    assert torch.allclose(ld_inv, -ld_fwd, atol=1e-8)


def test_planar_float32_extreme_inputs_and_near_singular_layer():
    t = set_planar(Planar(2), [-60.0, 1.0], [1.0, 0.0], 0.0)  # w^T u_hat = -1 + 1e-26
    y = torch.tensor(
        [[0.0, 0.0], [1e-6, 1.0], [-1e3, 1e3], [1e3, -1e3], [30.0, 2.5]], requires_grad=True
    )
    x, ld = t.inverse_and_log_det(y)
    (x.sum() + ld.sum()).backward()
    assert torch.isfinite(x).all() and torch.isfinite(ld).all()
    assert torch.isfinite(y.grad).all()
    assert all(torch.isfinite(p.grad).all() for p in t.parameters())
    y2, ld2 = t.forward_and_log_det(x.detach())
    assert torch.isfinite(y2).all() and torch.isfinite(ld2).all()


def test_planar_matches_pyro_forward():
    torch.manual_seed(3)
    ours = Planar(4).double()
    with torch.no_grad():
        for p in ours.parameters():
            p.add_(0.5 * torch.randn_like(p))
    theirs = T.Planar(4).double()
    theirs.load_state_dict(ours.state_dict())
    x = torch.randn(20, 4, dtype=f64)
    y, ld = ours.forward_and_log_det(x)
    assert torch.allclose(y, theirs(x))
    assert torch.allclose(ld, theirs.log_abs_det_jacobian(x, y))


# -- Radial ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "alpha_prime, beta_prime",
    [(0.5, 1.5), (0.5, -6.0), (-3.0, 4.0), (2.0, 2.0)],
    ids=["expand", "contract-hard", "small-alpha", "beta-zero"],
)
def test_radial_inverse_scores_points_it_did_not_sample(alpha_prime, beta_prime):
    t = set_radial(Radial(3).double(), [0.5, -1.0, 0.2], alpha_prime, beta_prime)
    g = torch.Generator().manual_seed(0)
    x0 = t.x0.detach()
    y = torch.cat(
        [
            20 * torch.randn(200, 3, generator=g, dtype=f64),
            x0 + 1e-6 * torch.randn(20, 3, generator=g, dtype=f64),
            torch.tensor([[1e3, -1e3, 5e2]], dtype=f64),
        ]
    )
    x, ld = t.inverse_and_log_det(y)
    x_ref, ld_ref = radial_reference_inverse(t, y.numpy())
    np.testing.assert_allclose(x.detach().numpy(), x_ref, atol=1e-10, rtol=1e-10)
    np.testing.assert_allclose(ld.detach().numpy(), ld_ref, atol=1e-10, rtol=1e-10)


def test_radial_matches_pyro_forward():
    torch.manual_seed(4)
    ours = Radial(4).double()
    with torch.no_grad():
        for p in ours.parameters():
            p.add_(0.5 * torch.randn_like(p))
    theirs = T.Radial(4).double()
    theirs.load_state_dict(ours.state_dict())
    x = torch.randn(20, 4, dtype=f64)
    y, ld = ours.forward_and_log_det(x)
    assert torch.allclose(y, theirs(x))
    assert torch.allclose(ld, theirs.log_abs_det_jacobian(x, y))


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("conditional", [False, True])
def test_radial_at_the_centre_is_finite_with_finite_gradients(dtype, conditional):
    torch.manual_seed(5)
    t = Radial(3, context_dim=2 if conditional else None, hidden_dims=(8,)).to(dtype)
    ctx = torch.randn(2, 2, dtype=dtype) if conditional else None
    with torch.no_grad():
        for p in t.parameters():
            p.add_(0.3 * torch.randn_like(p))
    x0 = t.x0.detach() if not conditional else t._params(ctx)[0].detach()
    x0 = x0.expand(2, 3)
    for fn in (t.forward_and_log_det, t.inverse_and_log_det):
        t.zero_grad()
        point = x0.clone().requires_grad_()
        out, ld = fn(point, ctx)
        assert torch.allclose(out, x0) and torch.isfinite(ld).all()
        _, alpha, gamma = t._params(ctx)
        sign = 1 if fn == t.forward_and_log_det else -1
        assert torch.allclose(ld, sign * 3 * torch.log(gamma / alpha).expand(2))
        (out.sum() + ld.sum()).backward()
        assert torch.isfinite(point.grad).all()
        assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in t.parameters())


@pytest.mark.parametrize("direction", ["forward", "inverse"])
def test_radial_gradcheck(direction):
    torch.manual_seed(6)
    fn = radial_forward if direction == "forward" else radial_inverse
    point = (2 * torch.randn(5, 3, dtype=f64)).requires_grad_()
    x0 = torch.randn(3, dtype=f64, requires_grad=True)
    alpha = torch.tensor(0.7, dtype=f64, requires_grad=True)
    gamma = torch.tensor(2.5, dtype=f64, requires_grad=True)
    assert torch.autograd.gradcheck(fn, (point, x0, alpha, gamma))


# -- both families ---------------------------------------------------------------------------


@pytest.mark.parametrize("cls", [Planar, Radial])
def test_conditional_context_batch_rule_and_context_dependence(cls):
    torch.manual_seed(7)
    t = cls(3, context_dim=2, hidden_dims=(8,)).double()
    with torch.no_grad():
        for p in t.parameters():
            p.add_(0.3 * torch.randn_like(p))
    S, B = 4, 5
    ctx = torch.randn(B, 2, dtype=f64)
    x = torch.randn(S, B, 3, dtype=f64)
    for fn in (t.forward_and_log_det, t.inverse_and_log_det):
        out, ld = fn(x, ctx)
        assert out.shape == (S, B, 3) and ld.shape == (S, B)
        for b in range(B):
            out_b, ld_b = fn(x[:, b], ctx[b])
            assert torch.allclose(out[:, b], out_b) and torch.allclose(ld[:, b], ld_b)
        other, ld_other = fn(x, torch.randn(B, 2, dtype=f64))
        assert not torch.allclose(other, out) and not torch.allclose(ld_other, ld)
    y, _ = t.forward_and_log_det(x, ctx)
    assert torch.allclose(t.inverse_and_log_det(y, ctx)[0], x, atol=1e-8)


@pytest.mark.parametrize("cls", [Planar, Radial])
@pytest.mark.parametrize("context_dim", [None, 3])
def test_fresh_layers_start_near_identity(cls, context_dim):
    torch.manual_seed(8)
    t = cls(4, context_dim=context_dim)
    ctx = None if context_dim is None else torch.randn(100, 3)
    x = torch.randn(100, 4)
    y, ld = t.forward_and_log_det(x, ctx)
    assert (y - x).abs().max() < 0.05 and ld.abs().max() < 0.05


# -- the shared solver -----------------------------------------------------------------------


def test_solver_and_implicit_gradient_on_a_cubic():
    # f(s) = s^3 + k s - c is increasing for k >= 0 (k = 0: a triple root at c = 0)
    c = torch.tensor([-50.0, -1.0, 0.0, 1e-9, 2.0, 1e3], dtype=f64, requires_grad=True)
    k = torch.tensor([1.0, 0.0, 0.0, 0.0, 3.0, 0.5], dtype=f64, requires_grad=True)

    def fun(s):
        return s**3 + k * s - c, 3 * s**2 + k

    root = solve_increasing(fun, -c.abs() - 1, c.abs() + 1, ftol=1e-14)
    ref = bisect(
        lambda s: s**3 + k.detach().numpy() * s - c.detach().numpy(),
        -np.abs(c.detach().numpy()) - 1,
        np.abs(c.detach().numpy()) + 1,
    )
    np.testing.assert_allclose(root.numpy(), ref, atol=1e-6, rtol=1e-12)
    s = implicit_root(fun, root)
    assert torch.equal(s.detach(), root)
    (s[[0, 4, 5]].sum()).backward()
    fprime = 3 * root**2 + k.detach()
    expected_dc = torch.zeros(6, dtype=f64)
    expected_dc[[0, 4, 5]] = 1 / fprime[[0, 4, 5]]
    assert torch.allclose(c.grad, expected_dc)
    assert torch.allclose(k.grad, -root * expected_dc)
