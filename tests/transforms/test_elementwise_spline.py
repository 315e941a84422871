"""Elementwise rational splines (``Spline``, ``ConditionalSpline``) and the rational-linear kernel:
known answers (Dolatabadi et al.'s formulas written out, Pyro's implementation), exactness of the
inverse on hard parameters, smoothness, the Pyro-facing names and the ``count_bins`` alias.
(The shared harness runs the layers through the generic checks.)"""

from __future__ import annotations

import pyro.distributions as dist
import pytest
import torch
import torch.nn.functional as F

from pyro_flows.transforms import (
    InverseSplineAutoregressive,
    SplineAutoregressive,
    SplineCoupling,
)
from pyro_flows.transforms._linear_rational_spline import linear_rational_spline
from pyro_flows.transforms._spline import derivative_shift, knot_derivatives, spline_knots
from pyro_flows.transforms.elementwise_spline import (
    ConditionalSpline,
    Spline,
    conditional_spline,
    spline,
)
from pyro_flows.transforms.spline import resolve_num_bins, spline_coupling

B = 3.0
K = 6


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def params(K: int = K, scale: float = 2.0, seed: int = 0, dtype=torch.float64):
    """Unnormalised widths, heights, derivatives and split points of one random spline."""
    g = torch.Generator().manual_seed(seed)
    shapes = [(1, K), (1, K), (1, K - 1), (1, K)]
    return [(scale * torch.randn(s, generator=g, dtype=torch.float64)).to(dtype) for s in shapes]


def lrs(x, w, h, d, lam, inverse=False, bound=B):
    n = x.shape[0]
    return linear_rational_spline(
        x, *(p.expand(n, -1) for p in (w, h, d, lam)), bound, inverse=inverse
    )


def reference(x, w, h, d, lam, bound=B):
    """Dolatabadi et al.'s rational-linear spline written out (weights w_a = 1,
    w_b = sqrt(d_k / d_k+1), w_c, the split value y_c), on the knots of our parametrisation."""
    xk = spline_knots(w, bound, 1e-3)[0]
    yk = spline_knots(h, bound, 1e-3)[0]
    dk = knot_derivatives(d, 1e-3)[0]
    lk = 0.025 + 0.95 * torch.sigmoid(lam[0])
    k = (torch.searchsorted(xk, x, right=True) - 1).clamp(0, len(lk) - 1)
    xa, wdt, ya, yb = xk[k], xk[k + 1] - xk[k], yk[k], yk[k + 1]
    da, db, lm = dk[k], dk[k + 1], lk[k]
    s = (yb - ya) / wdt
    wa, wb = 1.0, torch.sqrt(da / db)
    wc = (lm * wa * da + (1 - lm) * wb * db) / s
    yc = ((1 - lm) * wa * ya + lm * wb * yb) / ((1 - lm) * wa + lm * wb)
    th = (x - xa) / wdt
    left = th <= lm
    y = torch.where(
        left,
        (wa * ya * (lm - th) + wc * yc * th) / (wa * (lm - th) + wc * th),
        (wc * yc * (1 - th) + wb * yb * (th - lm)) / (wc * (1 - th) + wb * (th - lm)),
    )
    inside = x.abs() <= bound
    return torch.where(inside, y, x)


@pytest.mark.parametrize("seed", range(4))
def test_linear_kernel_matches_the_papers_formulas(seed):
    w, h, d, lam = params(seed=seed, scale=2.5)
    x = torch.linspace(-B - 1, B + 1, 4001, dtype=torch.float64)
    y, log_det = lrs(x, w, h, d, lam)
    assert torch.allclose(y, reference(x, w, h, d, lam), atol=1e-12)
    # log-det against the derivative by autograd, and exact inverse
    xr = x.clone().requires_grad_()
    (grad,) = torch.autograd.grad(lrs(xr, w, h, d, lam)[0].sum(), xr)
    assert torch.allclose(log_det, grad.log(), atol=1e-10)
    x_back, inv_log_det = lrs(y, w, h, d, lam, inverse=True)
    assert torch.allclose(x_back, x, atol=1e-12)
    assert torch.allclose(inv_log_det, -log_det, atol=1e-10)


def test_linear_kernel_matches_pyro_inside_the_end_bins():
    """Pyro's ``order="linear"`` kernel, fed our normalised parameters, agrees except on the two
    end bins (Pyro's boundary knot derivatives are ``1 - 1e-3``, ours exactly 1)."""
    from pyro.distributions.transforms.spline import _monotonic_rational_spline

    w, h, d, lam = params(seed=5)
    x = torch.linspace(-B, B, 3001, dtype=torch.float64)
    n = x.shape[0]
    y, log_det = lrs(x, w, h, d, lam)
    ours_d = F.softplus(d + derivative_shift(1e-3))
    y_pyro, ld_pyro = _monotonic_rational_spline(
        x,
        *(p.expand(n, -1) for p in (F.softmax(w, -1), F.softmax(h, -1), ours_d)),
        torch.sigmoid(lam).expand(n, -1),
        bound=B,
    )
    knots = spline_knots(w, B, 1e-3)[0]
    interior = (x > knots[1]) & (x < knots[-2])
    assert interior.sum() > 200
    assert torch.allclose(y[interior], y_pyro[interior], atol=1e-12)
    assert torch.allclose(log_det[interior], ld_pyro[interior], atol=1e-10)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_linear_kernel_inverse_on_hard_parameters(dtype):
    """Large parameters (slopes from 2e-6 to 800): the closed-form inverse is backward stable
    (its error is within a few ulps of ``B`` divided by the slope, the conditioning of the
    problem, as for the quadratic kernel), knots and the bound map exactly, and everything
    stays finite."""
    eps = torch.finfo(dtype).eps
    w, h, d, lam = params(seed=7, scale=6.0, dtype=dtype)
    knots = spline_knots(w, B, 1e-3)[0]
    x = torch.cat([torch.linspace(-B, B, 2001, dtype=dtype), knots, knots.new_tensor([-1e3, 1e3])])
    y, log_det = lrs(x, w, h, d, lam)
    assert torch.isfinite(y).all() and torch.isfinite(log_det).all()
    assert log_det.min() < -13 and log_det.max() > 6  # the hard case it claims to be
    assert (y[1:2001] >= y[:2000]).all()  # monotone
    assert y[0] == -B and y[2000] == B
    x_back, inv_log_det = lrs(y, w, h, d, lam, inverse=True)
    assert ((x_back - x).abs() <= 4 * eps * B / log_det.exp()).all()
    y_again, log_det_again = lrs(x_back, w, h, d, lam)
    assert torch.allclose(y_again, y, atol=8 * eps * B, rtol=0)
    # the log-slope's own conditioning: float32 knots of bins 6e-3 wide (as for the quadratic)
    ld_tol = (1e3 if dtype == torch.float64 else 1e4) * eps
    assert torch.allclose(inv_log_det, -log_det_again, atol=ld_tol, rtol=0)


def test_linear_kernel_is_continuously_differentiable():
    """Slope continuous at the knots (given derivatives) and at each bin's split point."""
    w, h, d, lam = params(seed=3, scale=2.0)
    knots = spline_knots(w, B, 1e-3)[0]
    lk = 0.025 + 0.95 * torch.sigmoid(lam[0])
    split = knots[:-1] + lk * (knots[1:] - knots[:-1])
    for points in (knots[1:-1], split, torch.tensor([-B, B], dtype=torch.float64)):
        for side in (-1.0, 1.0):
            _, a = lrs(points, w, h, d, lam)
            _, b = lrs(points + side * 1e-9, w, h, d, lam)
            assert torch.allclose(a, b, atol=1e-6)
    _, at_knots = lrs(knots[1:-1], w, h, d, lam)
    assert torch.allclose(at_knots.exp(), knot_derivatives(d, 1e-3)[0, 1:-1], rtol=1e-10)


def test_linear_kernel_gradients_are_finite_everywhere():
    w, h, d, lam = (p.requires_grad_() for p in params(seed=2, scale=4.0))
    knots = spline_knots(w.detach(), B, 1e-3)[0]
    x = torch.cat([knots, torch.tensor([-1e4, -B, 0.0, B, 1e4], dtype=torch.float64)])
    x.requires_grad_()
    for inverse in (False, True):
        y, log_det = lrs(x, w, h, d, lam, inverse=inverse)
        grads = torch.autograd.grad((y + log_det).sum(), [x, w, h, d, lam])
        assert all(torch.isfinite(g).all() for g in grads)


def test_linear_kernel_rejects_bad_arguments():
    w, h, d, lam = params()
    x = torch.zeros(1)
    with pytest.raises(ValueError, match="K - 1 derivatives"):
        linear_rational_spline(x, w, h, d, lam[..., :-1], B)
    with pytest.raises(ValueError, match="min_lambda"):
        linear_rational_spline(x, w, h, d, lam, B, min_lambda=0.5)
    with pytest.raises(ValueError, match="bin_dim"):
        linear_rational_spline(x, w, h, d, lam, B, bin_dim=0)


def test_bin_dim_layouts_agree():
    g = torch.Generator().manual_seed(0)
    x = 2 * torch.randn(5, 3, generator=g, dtype=torch.float64)
    raw = [torch.randn(5, 3, n, generator=g, dtype=torch.float64) for n in (K, K, K - 1, K)]
    a = linear_rational_spline(x, *raw, B)
    b = linear_rational_spline(x, *(p.transpose(-1, -2) for p in raw), B, bin_dim=-2)
    assert all(torch.allclose(u, v, atol=1e-13) for u, v in zip(a, b, strict=True))


# -- the layers ----------------------------------------------------------------------------


@pytest.mark.parametrize("order", ["linear", "quadratic"])
def test_spline_is_the_identity_at_initialisation(order):
    t = Spline(3, count_bins=5, order=order)
    x = 4 * torch.randn(50, 3)
    y, log_det = t.forward_and_log_det(x)
    assert torch.allclose(y, x, atol=1e-5) and log_det.abs().max() < 1e-5
    c = conditional_spline(3, 2, count_bins=5, order=order)
    y, log_det = c.forward_and_log_det(x, torch.randn(50, 2))
    assert torch.allclose(y, x, atol=0.1) and log_det.abs().max() < 0.1


def test_parameters_have_pyros_names_and_shapes():
    import pyro.distributions.transforms as PT

    ours = dict(Spline(2, count_bins=16).named_parameters())
    pyros = dict(PT.Spline(2, count_bins=16).named_parameters())
    assert {k: v.shape for k, v in ours.items()} == {k: v.shape for k, v in pyros.items()}
    assert "unnormalized_lambdas" not in dict(Spline(2, order="quadratic").named_parameters())


def test_defaults_follow_pyro():
    t = spline(4)
    assert (t.count_bins, t.num_bins, t.bound, t.order) == (8, 8, 3.0, "linear")
    c = conditional_spline(3, context_dim=2)
    assert (c.count_bins, c.bound, c.order, c.hidden_dims) == (8, 3.0, "linear", (30, 30))
    assert c.net.net[-1].out_features == (4 * 8 - 1) * 3
    q = conditional_spline(3, context_dim=2, count_bins=4, order="quadratic")
    assert q.net.net[-1].out_features == (3 * 4 - 1) * 3


def test_orders_differ_and_are_validated():
    torch.manual_seed(0)
    lin, quad = Spline(2, order="linear"), Spline(2, order="quadratic")
    with torch.no_grad():
        for t in (lin, quad):
            for name in ("unnormalized_widths", "unnormalized_heights", "unnormalized_derivatives"):
                getattr(t, name).copy_(torch.randn_like(getattr(t, name), dtype=None))
        quad.load_state_dict({k: v for k, v in lin.state_dict().items() if "lambdas" not in k})
    x = torch.randn(20, 2)
    assert not torch.allclose(lin(x), quad(x), atol=1e-4)
    for bad in ("cubic", "Linear", None):
        with pytest.raises(ValueError, match="order must be one of"):
            Spline(2, order=bad)
        with pytest.raises(ValueError, match="order must be one of"):
            conditional_spline(2, 1, order=bad)


def test_conditional_spline_reads_each_context_row_once():
    """``K`` draws per context row (IWAE shapes): the MLP sees the context's own batch."""
    t = ConditionalSpline(2, 3, hidden_dims=(8,), count_bins=4).double()
    with torch.no_grad():
        for p in t.parameters():
            p.add_(0.5 * torch.randn_like(p))
    c = torch.randn(5, 3, dtype=torch.float64)
    x = torch.randn(7, 5, 2, dtype=torch.float64)
    seen = []
    hook = t.net.register_forward_hook(lambda m, i, o: seen.append(o.shape))
    y, log_det = t.forward_and_log_det(x, c)
    hook.remove()
    assert seen == [torch.Size([5, (4 * 4 - 1) * 2])] and y.shape == (7, 5, 2)
    y_rows, ld_rows = t.forward_and_log_det(x[3], c)
    assert torch.allclose(y[3], y_rows) and torch.allclose(log_det[3], ld_rows)


def test_pyro_style_conditional_spline_is_a_clear_error():
    from pyro.nn import DenseNN

    with pytest.raises(TypeError, match="builds its own MLP"):
        ConditionalSpline(DenseNN(1, [4], [8]), 1, 8)
    with pytest.raises(ValueError, match="context_dim"):
        ConditionalSpline(2, None)


def test_pyro_interfaces():
    """Pyro's ``TransformedDistribution`` / ``ConditionalTransformedDistribution`` usage: event
    dim 1, so ``log_prob`` sums over the coordinates; ``clear_cache`` works (a no-op)."""
    t = Spline(2)
    d = dist.TransformedDistribution(dist.Normal(torch.zeros(2), torch.ones(2)), [t])
    assert d.log_prob(torch.randn(6, 2)).shape == (6,)
    d.clear_cache()
    c = conditional_spline(1, context_dim=1)
    cd = dist.ConditionalTransformedDistribution(dist.Normal(torch.zeros(1), torch.ones(1)), [c])
    assert cd.condition(torch.ones(1)).sample().shape == (1,)
    assert cd.condition(torch.randn(9, 1)).sample((9,)).shape == (9, 1)
    inv = dist.ConditionalTransformedDistribution(dist.Normal(torch.zeros(1), 1.0), [c.inv])
    assert inv.condition(torch.zeros(1)).log_prob(torch.zeros(4, 1)).shape == (4,)


# -- count_bins, Pyro's name for num_bins ---------------------------------------------------

LAYERS = {
    "coupling": lambda **kw: SplineCoupling(4, (8,), **kw),
    "ar": lambda **kw: SplineAutoregressive(3, (8,), **kw),
    "iaf": lambda **kw: InverseSplineAutoregressive(3, (8,), **kw),
    "spline": lambda **kw: Spline(3, **kw),
    "conditional": lambda **kw: ConditionalSpline(3, 2, (8,), **kw),
}


@pytest.mark.parametrize("name", list(LAYERS))
def test_count_bins_is_an_alias_of_num_bins(name):
    make = LAYERS[name]
    assert make(count_bins=5).num_bins == 5
    assert make(num_bins=5).num_bins == 5
    assert make(num_bins=5, count_bins=5).num_bins == 5
    assert make().num_bins == 8
    with pytest.raises(ValueError, match="num_bins=5 and count_bins=6"):
        make(num_bins=5, count_bins=6)
    with pytest.raises(ValueError, match="num_bins must be >= 2"):
        make(count_bins=1)


def test_resolve_num_bins():
    assert resolve_num_bins(None, None) == 8 and resolve_num_bins(None, None, default=3) == 3
    assert resolve_num_bins(4, None) == resolve_num_bins(None, 4) == resolve_num_bins(4, 4) == 4


def test_spline_coupling_follows_pyros_signature():
    t = spline_coupling(3, count_bins=16)
    assert (t.num_bins, t.bound, t.split_dim) == (16, 3.0, 1)
    assert t.conditioner.net[0].out_features == 30
    assert spline_coupling(4, 3, [7]).split_dim == 3
    with pytest.raises(ValueError, match="count_bins"):
        spline_coupling(3, count_bins=4, num_bins=5)


def test_the_nsf_builder_takes_pyros_count_bins():
    from pyro_flows import flows

    for coupling in (False, True):
        flow = flows.nsf(3, num_transforms=1, hidden_dims=(8,), count_bins=4, coupling=coupling)
        same = flows.nsf(3, num_transforms=1, hidden_dims=(8,), num_bins=4, coupling=coupling)
        assert sum(p.numel() for p in flow.parameters()) == sum(
            p.numel() for p in same.parameters()
        )
        with pytest.raises(ValueError, match="num_bins=5 and count_bins=4"):
            flows.nsf(3, num_bins=5, count_bins=4, coupling=coupling)
