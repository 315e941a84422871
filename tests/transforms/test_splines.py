"""Rational-quadratic splines: the pure functions against brute force, edge cases, the layers and
the ``nsf`` builder. (The shared harness runs every spline layer through the generic checks.)"""

from __future__ import annotations

import pytest
import torch

from pyro_flows import flows
from pyro_flows.transforms import (
    InverseSplineAutoregressive,
    Reverse,
    SplineAutoregressive,
    SplineCoupling,
)
from pyro_flows.transforms._spline import (
    knot_derivatives,
    rational_quadratic_spline,
    spline_knots,
)

B = 3.0
K = 6


@pytest.fixture(autouse=True)
def one_thread():
    """Every tensor here is tiny: run single-threaded. (On a busy machine torch 2.13 opens a
    parallel region even for 512-element exp/log/softmax, and each one can cost milliseconds.)"""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def params(n: int = 1, K: int = K, scale: float = 2.0, seed: int = 0, dtype=torch.float64):
    """Unnormalised widths, heights and derivatives of ``n`` random splines."""
    g = torch.Generator().manual_seed(seed)
    shapes = [(n, K), (n, K), (n, K - 1)]
    return [(scale * torch.randn(s, generator=g, dtype=torch.float64)).to(dtype) for s in shapes]


def knot_tol(dtype: torch.dtype) -> float:
    """Tolerance for knots computed twice: 16 units in the last place of the bound. The spline
    maps *its own* knots to its own knots exactly (theta is exactly 0 there), but
    :func:`spline_knots` recomputes them separately, and the softmax and cumulative-sum kernels
    round differently with the batch layout, the vector width and the BLAS code path (seen:
    4e-16 to 2e-15 apart in float64 with the same torch build on another CPU)."""
    return 16 * torch.finfo(dtype).eps * B


def spline(x, w, h, d, inverse=False, bound=B):
    """One spline (parameters of shape ``(1, .)``) applied to every entry of ``x``."""
    n = x.shape[0]
    return rational_quadratic_spline(
        x, w.expand(n, -1), h.expand(n, -1), d.expand(n, -1), bound, inverse=inverse
    )


@pytest.mark.parametrize("seed", range(4))
def test_brute_force_monotone_continuous_c1(seed):
    w, h, d = params(seed=seed)
    x = torch.linspace(-B - 1, B + 1, 40001, dtype=torch.float64)
    y, log_det = spline(x, w, h, d)
    assert torch.all(y.diff() > 0)  # strictly increasing
    # log-det against central finite differences, away from the knots (where the second
    # derivative jumps; the slopes there are checked below)
    kx, ky = spline_knots(w, B, 1e-3)[0], spline_knots(h, B, 1e-3)[0]
    eps = 1e-6
    smooth = (x[:, None] - kx).abs().min(-1).values > 1e-4
    fd = (spline(x + eps, w, h, d)[0] - spline(x - eps, w, h, d)[0]) / (2 * eps)
    torch.testing.assert_close(log_det[smooth], fd.log()[smooth], atol=1e-5, rtol=0)
    # knots map to knots (to a few ulps, see knot_tol; the bound exactly), with the knot
    # derivatives as slopes
    dk = knot_derivatives(d, 1e-3)[0]
    assert kx[0] == -B and kx[-1] == B and ky[0] == -B and ky[-1] == B
    yk, ldk = spline(kx, w, h, d)
    torch.testing.assert_close(yk, ky, atol=knot_tol(torch.float64), rtol=0)
    assert yk[0] == -B and yk[-1] == B
    torch.testing.assert_close(ldk.exp(), dk, rtol=1e-12, atol=0)
    assert dk[0] == 1 and dk[-1] == 1  # the tails' slope
    # continuity in value and slope on both sides of every knot
    for delta in (1e-11, -1e-11):
        yd, ldd = spline(kx + delta, w, h, d)
        torch.testing.assert_close(yd, ky + delta * dk, atol=1e-12, rtol=0)
        torch.testing.assert_close(ldd, dk.log(), atol=1e-6, rtol=0)
    # identity tails
    outside = x.abs() > B
    assert torch.equal(y[outside], x[outside]) and torch.all(log_det[outside] == 0)


@pytest.mark.parametrize("seed", range(3))
def test_inverse_matches_bisection_on_the_forward_map(seed):
    w, h, d = params(seed=seed)
    y = torch.linspace(-B + 1e-3, B - 1e-3, 501, dtype=torch.float64)
    lo, hi = torch.full_like(y, -B), torch.full_like(y, B)
    for _ in range(80):
        mid = (lo + hi) / 2
        below = spline(mid, w, h, d)[0] < y
        lo, hi = torch.where(below, mid, lo), torch.where(below, hi, mid)
    x, log_det_inv = spline(y, w, h, d, inverse=True)
    slope = spline(x, w, h, d)[1].exp()
    assert torch.all((x - lo).abs() <= 1e-12 * (1 + 1 / slope))
    torch.testing.assert_close(log_det_inv, -spline(x, w, h, d)[1], atol=1e-12, rtol=0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_round_trips_on_knots_at_the_bound_and_far_outside(dtype):
    w, h, d = params(seed=7, dtype=dtype)
    kx, ky = spline_knots(w, B, 1e-3)[0], spline_knots(h, B, 1e-3)[0]
    far = torch.tensor([-1e4, -B - 1e-3, B + 1e-3, 1e4], dtype=dtype)
    # on the knots: knots <-> knots to a few ulps (knot_tol; the inverse's error in x is that
    # of y over the slope there), the bound to the bound exactly
    tol = knot_tol(dtype)
    y, _ = spline(kx, w, h, d)
    torch.testing.assert_close(y, ky, atol=tol, rtol=0)
    x, _ = spline(ky, w, h, d, inverse=True)
    slope = knot_derivatives(d, 1e-3)[0]
    assert torch.all((x - kx).abs() <= tol * (1 + 1 / slope))
    for ends in (y, x):
        assert ends[0] == -B and ends[-1] == B
    # outside: the identity with log-det 0, both ways
    for inverse in (False, True):
        out, log_det = spline(far, w, h, d, inverse=inverse)
        assert torch.equal(out, far) and torch.all(log_det == 0)
    # and generic points round-trip
    pts = torch.linspace(-B - 2, B + 2, 1001, dtype=dtype)
    y, ld = spline(pts, w, h, d)
    back, ld_back = spline(y, w, h, d, inverse=True)
    tol = 1e-12 if dtype == torch.float64 else 1e-4
    torch.testing.assert_close(back, pts, atol=tol, rtol=0)
    torch.testing.assert_close(ld_back, -ld, atol=tol, rtol=0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("inverse", [False, True])
@pytest.mark.parametrize("scale", [1.0, 50.0])
def test_values_and_gradients_are_finite_everywhere(dtype, inverse, scale):
    w, h, d = params(seed=3, scale=scale, dtype=dtype)
    knots = spline_knots(h if inverse else w, B, 1e-3)[0]
    special = [-1e30, -1e4, -B, -B + 1e-7, 0.0, B - 1e-7, B, 1e4, 1e30]
    x = torch.cat([knots, torch.tensor(special, dtype=dtype)]).requires_grad_()
    n = x.shape[0]
    ws, hs, ds = (p.expand(n, -1).clone().requires_grad_() for p in (w, h, d))
    out, log_det = rational_quadratic_spline(x, ws, hs, ds, B, inverse=inverse)
    assert torch.isfinite(out).all() and torch.isfinite(log_det).all()
    (out.sum() + log_det.sum()).backward()
    for t in (x, ws, hs, ds):
        assert torch.isfinite(t.grad).all()
    # outside the bound: dy/dx = 1 and no parameter gradient
    far = x.detach().abs() > B
    assert torch.all(x.grad[far] == 1)
    assert torch.all(ws.grad[far] == 0) and torch.all(ds.grad[far] == 0)


@pytest.mark.parametrize("inverse", [False, True])
def test_gradcheck(inverse):
    w, h, d = (p.expand(5, -1).clone().requires_grad_() for p in params(seed=11))
    x = torch.tensor([-4.0, -1.3, 0.1, 2.2, 2.9], dtype=torch.float64, requires_grad=True)

    def fn(x, w, h, d):
        return rational_quadratic_spline(x, w, h, d, B, inverse=inverse)

    assert torch.autograd.gradcheck(fn, (x, w, h, d))
    assert torch.autograd.gradgradcheck(fn, (x, w, h, d))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_zero_parameters_are_the_identity(dtype):
    x = torch.linspace(-2 * B, 2 * B, 1001, dtype=dtype)
    zeros = [torch.zeros(1, K, dtype=dtype)] * 2 + [torch.zeros(1, K - 1, dtype=dtype)]
    tol = 1e-6 if dtype == torch.float32 else 1e-13
    for inverse in (False, True):
        y, log_det = spline(x, *zeros, inverse=inverse)
        torch.testing.assert_close(y, x, atol=tol, rtol=0)
        torch.testing.assert_close(log_det, torch.zeros_like(x), atol=tol, rtol=0)


@pytest.mark.parametrize(
    "make",
    [
        lambda: SplineCoupling(4, (16,), context_dim=2),
        lambda: SplineAutoregressive(4, (16,), context_dim=2),
        lambda: InverseSplineAutoregressive(4, (16,), context_dim=2),
    ],
    ids=["coupling", "ar", "inverse-ar"],
)
def test_layers_start_at_the_identity(make):
    torch.manual_seed(0)
    t = make()
    x, c = 2 * torch.randn(64, 4), torch.randn(64, 2)
    y, log_det = t.forward_and_log_det(x, c)
    assert (y - x).abs().max() < 0.1 and log_det.abs().max() < 0.1  # small initial outputs
    last = t.conditioner.net[-1] if isinstance(t, SplineCoupling) else t.made.layers[-1]
    with torch.no_grad():
        last.weight.zero_()
    y, log_det = t.forward_and_log_det(x, c)
    torch.testing.assert_close(y, x, atol=1e-6, rtol=0)
    torch.testing.assert_close(log_det, torch.zeros(64), atol=1e-6, rtol=0)


def test_stable_inverse_where_the_textbook_root_cancels():
    """A bin with slope 1 and a steep right knot (b < 0 in the quadratic): the float32 inverse
    stays within a few ulps of the float64 one, where ``2c / (-b - sqrt(b^2 - 4ac))`` loses
    about 2 digits (error ~85 units here)."""
    bound, m = 2.0, 0.25  # with K = 2 and zero widths/heights the knots -2, 0, 2 are exact

    def inverse(y, dtype):
        w = torch.zeros(y.shape[0], 2, dtype=dtype)
        d = torch.full((y.shape[0], 1), 200.0, dtype=dtype)  # derivative ~200 at the knot 0
        return rational_quadratic_spline(
            y.to(dtype), w, w, d, bound, inverse=True, min_bin_width=m, min_bin_height=m
        )

    y = torch.linspace(-2.0, 0.0, 2001)[1:-1]
    x32, _ = inverse(y, torch.float32)
    x64, log_det = inverse(y, torch.float64)
    units = (x32.double() - x64).abs() / (1.2e-7 * (1 + 2 * (-log_det).exp()))
    assert units.max() < 4


def test_layouts_and_broadcasting_agree():
    w, h, d = params(n=12, seed=5)
    x = torch.linspace(-4, 4, 12, dtype=torch.float64)
    y, ld = rational_quadratic_spline(x, w, h, d, B)
    # bins along dim -2: (..., K, N) parameters for (..., N) inputs
    y2, ld2 = rational_quadratic_spline(
        x.reshape(3, 4),
        *(p.reshape(3, 4, -1).transpose(-1, -2) for p in (w, h, d)),
        B,
        bin_dim=-2,
    )
    # the same maths in another memory layout: equal up to rounding (kernels may round
    # differently per layout and vector width)
    tol = knot_tol(torch.float64)
    torch.testing.assert_close(y2.reshape(12), y, atol=tol, rtol=0)
    torch.testing.assert_close(ld2.reshape(12), ld, atol=tol, rtol=0)
    # one spline broadcast over a batch of inputs
    yb, _ = rational_quadratic_spline(x.reshape(3, 4), w[0], h[0], d[0], B)
    ye, _ = spline(x, w[:1], h[:1], d[:1])
    torch.testing.assert_close(yb.reshape(12), ye, atol=1e-12, rtol=0)


def test_bad_arguments_are_clear_errors():
    w, h, d = params()
    with pytest.raises(ValueError, match="K - 1 derivatives"):
        rational_quadratic_spline(torch.zeros(1), w, h, w, B)
    with pytest.raises(ValueError, match="K >= 2"):
        rational_quadratic_spline(torch.zeros(1), w[:, :1], h[:, :1], d[:, :0], B)
    with pytest.raises(ValueError, match="min_bin_width"):
        rational_quadratic_spline(torch.zeros(1), w, h, d, B, min_bin_width=0.2)
    with pytest.raises(ValueError, match="bin_dim"):
        rational_quadratic_spline(torch.zeros(1), w, h, d, B, bin_dim=0)
    with pytest.raises(ValueError, match="num_bins must be >= 2"):
        SplineAutoregressive(3, num_bins=1)
    with pytest.raises(ValueError, match="bound"):
        SplineCoupling(3, bound=0.0)
    with pytest.raises(ValueError, match="input_dim >= 2"):
        SplineCoupling(1)
    with pytest.raises(ValueError, match="input_dim >= 2"):
        flows.nsf(1, coupling=True)


def test_nsf_builder():
    flow = flows.nsf(3, num_transforms=2, hidden_dims=(8,), num_bins=5, bound=4.0)
    layers = list(flow.transforms)
    assert [type(t) for t in layers] == [SplineAutoregressive, Reverse, SplineAutoregressive]
    assert layers[0].num_bins == 5 and layers[0].bound == 4.0
    coupling = flows.nsf(3, 2, (8,), context_dim=2, coupling=True, permutation=None)
    assert [type(t) for t in coupling.transforms] == [SplineCoupling, SplineCoupling]
    assert coupling.log_prob(torch.randn(4, 3), torch.randn(4, 2)).shape == (4,)
    one = flows.nsf(1, 2, (8,))  # autoregressive works in 1-D
    assert one.sample((5,)).shape == (5, 1)


def test_cost_of_each_direction_in_made_passes():
    calls = []
    for cls, one_pass in [(SplineAutoregressive, "inverse"), (InverseSplineAutoregressive, "fwd")]:
        t = cls(4, (8,))
        t.made.register_forward_hook(lambda *args: calls.append(1))
        x = torch.randn(3, 4)
        for name, fn in [("fwd", t.forward_and_log_det), ("inverse", t.inverse_and_log_det)]:
            calls.clear()
            fn(x)
            assert len(calls) == (1 if name == one_pass else 4), (cls.__name__, name)


def test_nsf_beats_maf_on_a_bimodal_toy():
    """2-D data with a bimodal first coordinate (entropy 1.70 nats): 300 Adam steps bring the
    spline flow within 0.15 nats of the entropy, clearly below the affine MAF of the same size."""

    def data(n, g):
        sign = torch.randint(0, 2, (n,), generator=g) * 2.0 - 1.0
        x1 = 2.0 * sign + 0.4 * torch.randn(n, generator=g)
        return torch.stack([x1, 0.5 * x1 + 0.4 * torch.randn(n, generator=g)], -1)

    def test_nll(builder):
        g = torch.Generator().manual_seed(0)
        train, test = data(2000, g), data(2000, g)
        torch.manual_seed(0)
        flow = builder(2, 2, (32, 32))
        opt = torch.optim.Adam(flow.parameters(), lr=5e-3)
        for _ in range(300):
            batch = train[torch.randint(0, 2000, (256,), generator=g)]
            loss = -flow.log_prob(batch).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
        with torch.no_grad():
            return -flow.log_prob(test).mean().item()

    nsf, maf = test_nll(flows.nsf), test_nll(flows.maf)
    assert nsf < 1.70 + 0.15, nsf
    assert nsf < maf - 0.1, (nsf, maf)


def test_input_order_sets_the_dependency_structure():
    """With ``input_order`` the Jacobian is triangular in that order, in both directions."""
    order = [2, 0, 3, 1]
    rank = torch.empty(4, dtype=torch.long)
    rank[order] = torch.arange(4)
    allowed = rank[None, :] <= rank[:, None]  # output i may depend on input j
    torch.manual_seed(0)
    for cls in (SplineAutoregressive, InverseSplineAutoregressive):
        t = cls(4, (32, 32), input_order=order).double()
        with torch.no_grad():
            for p in t.parameters():
                p.add_(0.3 * torch.randn_like(p))
        x = torch.randn(4, dtype=torch.float64)
        for fn in (t.forward_and_log_det, t.inverse_and_log_det):
            jac = torch.autograd.functional.jacobian(lambda v, fn=fn: fn(v)[0], x)
            assert torch.all(jac[~allowed] == 0) and torch.all(jac.diagonal() > 0)
            assert torch.count_nonzero(jac[allowed]) > 4  # it does depend on earlier inputs
