"""Family-specific tests for Sylvester flows (the shared harness covers the generic checks)."""

from __future__ import annotations

import math

import numpy as np
import pyro.distributions as dist
import pyro.distributions.transforms as T
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from pyro_flows import Flow
from pyro_flows.flows import sylvester
from pyro_flows.transforms.planar import planar_forward, planar_inverse
from pyro_flows.transforms.sylvester import (
    Sylvester,
    householder_frame,
    orthogonal_frame,
    sylvester_inverse,
    sylvester_triangular,
)

f64 = torch.float64


def diag_positions(m: int) -> torch.Tensor:
    rows, cols = torch.triu_indices(m, m)
    return rows == cols


def perturbed(t: Sylvester, scale: float = 0.5, seed: int = 0) -> Sylvester:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in t.parameters():
            p.add_(scale * torch.randn(p.shape, generator=g, dtype=f64).to(p))
    return t


def set_raw(t: Sylvester, p=None, q=None, off=None, bias=None) -> Sylvester:
    """Set the raw diagonal entries ``p`` (of R), ``q`` (of R~), the off-diagonals and ``b``."""
    on = diag_positions(t.num_vectors)
    with torch.no_grad():
        if p is not None:
            t.triangular[0, on] = torch.as_tensor(p, dtype=t.triangular.dtype)
        if q is not None:
            t.triangular[1, on] = torch.as_tensor(q, dtype=t.triangular.dtype)
        if off is not None:
            off = torch.as_tensor(off, dtype=t.triangular.dtype)
            t.triangular[:, ~on] = off.reshape(2, -1)
        if bias is not None:
            t.bias.copy_(torch.as_tensor(bias, dtype=t.bias.dtype))
    return t


# -- an independent reference: plain bisection and an explicit Jacobian (numpy) ---------------


def reference_inverse(t: Sylvester, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    q, r, rt, b = (a.detach().double().numpy() for a in t.factors())
    y = np.asarray(y, dtype=np.float64)
    m = r.shape[0]
    c = y @ q
    v, z = np.zeros_like(c), np.zeros_like(c)
    for i in reversed(range(m)):
        e = c[:, i] - np.tanh(z[:, i + 1 :]) @ r[i, i + 1 :]
        s = b[i] + v[:, i + 1 :] @ rt[i, i + 1 :]
        lo, hi = e - abs(r[i, i]) - 1, e + abs(r[i, i]) + 1
        for _ in range(200):
            mid = 0.5 * (lo + hi)
            pos = mid + r[i, i] * np.tanh(rt[i, i] * mid + s) - e > 0
            lo, hi = np.where(pos, lo, mid), np.where(pos, mid, hi)
        v[:, i] = 0.5 * (lo + hi)
        z[:, i] = rt[i, i] * v[:, i] + s
    x = y - np.tanh(z) @ (q @ r).T
    log_det = np.empty(len(y))
    for n in range(len(y)):
        e2 = np.exp(-2 * np.abs(z[n]))
        sech2 = 4 * e2 / (1 + e2) ** 2  # sech^2 without overflow
        jac = np.eye(y.shape[1]) + q @ r @ np.diag(sech2) @ rt @ q.T
        log_det[n] = -np.linalg.slogdet(jac)[1]
    return x, log_det


# -- known answers ---------------------------------------------------------------------------


def test_one_dimensional_known_answer():
    # softplus(p) = 1.5 and q = 0: R~ = 1, R = 0.5, so y = x + 0.5 tanh(x + b)
    t = set_raw(Sylvester(1).double(), p=[math.log(math.exp(1.5) - 1)], q=[0.0], bias=[0.2])
    x = torch.tensor([[0.3], [-4.0]], dtype=f64)
    y, ld = t.forward_and_log_det(x)
    z = x[:, 0] + 0.2
    assert torch.allclose(y[:, 0], x[:, 0] + 0.5 * torch.tanh(z))
    assert torch.allclose(ld, torch.log(1 + 0.5 / torch.cosh(z) ** 2))
    x_back, ld_back = t.inverse_and_log_det(y)
    assert torch.allclose(x_back, x, atol=1e-12) and torch.allclose(ld_back, -ld)


@pytest.mark.parametrize("kind", ["householder", "orthogonal", "triangular"])
def test_one_vector_is_the_planar_map(kind):
    """M = 1: y = x + (R q) tanh((R~ q)^T x + b), Planar with u_hat = R q, w = R~ q."""
    t = perturbed(Sylvester(4, num_vectors=1, kind=kind).double(), scale=1.0)
    q, r, rt, b = t.factors()
    u_hat, w = r[0, 0] * q[:, 0], rt[0, 0] * q[:, 0]
    softplus_a = 1 + (w * u_hat).sum()
    x = 3 * torch.randn(50, 4, dtype=f64)
    y, ld = t.forward_and_log_det(x)
    y_ref, ld_ref = planar_forward(x, u_hat, w, b[0], softplus_a)
    assert torch.allclose(y, y_ref) and torch.allclose(ld, ld_ref)
    x_data = 3 * torch.randn(50, 4, dtype=f64)
    x_back, ld_back = t.inverse_and_log_det(x_data)
    x_ref, ld_back_ref = planar_inverse(x_data, u_hat, w, b[0], softplus_a)
    assert torch.allclose(x_back, x_ref, atol=1e-10) and torch.allclose(ld_back, ld_back_ref)


@pytest.mark.parametrize("kind", ["householder", "orthogonal"])
@pytest.mark.parametrize("d, m", [(5, 5), (5, 2), (3, 1)])
def test_frames_are_orthonormal_and_the_complement_passes_unchanged(kind, d, m):
    t = perturbed(Sylvester(d, num_vectors=m, kind=kind).double(), scale=1.0)
    q = t.factors()[0]
    assert q.shape == (d, m) and torch.allclose(q.T @ q, torch.eye(m, dtype=f64), atol=1e-12)
    x = torch.randn(20, d, dtype=f64)
    y, _ = t.forward_and_log_det(x)
    proj = torch.eye(d, dtype=f64) - q @ q.T
    assert torch.allclose(y @ proj, x @ proj, atol=1e-12)


def test_frame_functions_batch_and_handle_zero_vectors():
    vectors = torch.randn(6, 3, 4, dtype=f64)
    vectors[0, 1] = 0.0  # a zero reflection vector is the identity, not a NaN
    q = householder_frame(vectors, 2)
    assert q.shape == (6, 4, 2) and torch.isfinite(q).all()
    assert torch.allclose(q.mT @ q, torch.eye(2, dtype=f64).expand(6, 2, 2), atol=1e-12)
    q2 = orthogonal_frame(torch.randn(6, 4, 3, dtype=f64))
    assert torch.allclose(q2.mT @ q2, torch.eye(3, dtype=f64).expand(6, 3, 3), atol=1e-12)


def test_diagonal_products_exceed_minus_one_for_any_raw_values():
    m = 4
    packed = 30 * torch.randn(2, 50, m * (m + 1) // 2, dtype=f64)
    packed[0, :, diag_positions(m)] = torch.linspace(-1e3, 40, 50 * m, dtype=f64).reshape(50, m)
    r, rt, softplus_p = sylvester_triangular(packed[0], packed[1])
    assert torch.equal(r, r.triu()) and torch.equal(rt, rt.triu())
    prod = r.diagonal(dim1=-2, dim2=-1) * rt.diagonal(dim1=-2, dim2=-1)
    assert (prod >= -1 - 1e-12).all() and (rt.diagonal(dim1=-2, dim2=-1) > 0).all()
    assert torch.allclose(1 + prod, softplus_p, atol=1e-12)


# -- invertibility and scoring of arbitrary points -------------------------------------------

ADVERSARIAL = {
    "mild": dict(p=[0.3, -0.5, 1.0], q=[0.0, 0.2, -0.1], off=0.5),
    "contracting": dict(p=[-8.0, -12.0, -6.0], q=[0.5, -0.5, 1.0], off=2.0),
    "expanding": dict(p=[4.0, 6.0, 3.0], q=[-1.0, 1.0, 0.0], off=3.0),
    "large-offdiagonal": dict(p=[0.0, -3.0, 2.0], q=[2.0, -2.0, 0.0], off=50.0),
    "extreme-scales": dict(p=[-1e3, 30.0, -40.0], q=[10.0, -10.0, 5.0], off=1e3),
}


def adversarial_layer(name: str, kind: str = "householder") -> Sylvester:
    torch.manual_seed(0)
    t = perturbed(Sylvester(4, num_vectors=3, kind=kind).double(), scale=1.0)
    cfg = ADVERSARIAL[name]
    off = cfg["off"] * torch.randn(6, dtype=f64)
    return set_raw(t, p=cfg["p"], q=cfg["q"], off=off, bias=[0.3, -0.2, 1.0])


@pytest.mark.parametrize("kind", ["householder", "triangular"])
@pytest.mark.parametrize("name", list(ADVERSARIAL))
def test_inverse_scores_points_it_did_not_sample(name, kind):
    t = adversarial_layer(name, kind)
    g = torch.Generator().manual_seed(1)
    y = torch.cat(
        [
            5 * torch.randn(60, 4, generator=g, dtype=f64),
            1e-3 * torch.randn(10, 4, generator=g, dtype=f64),
            torch.tensor([[1e3, -1e3, 5e2, 0.0], [0.0, 0.0, 0.0, 0.0]], dtype=f64),
        ]
    )
    with torch.no_grad():
        x, ld = t.inverse_and_log_det(y)
        y_back, ld_fwd = t.forward_and_log_det(x)
    assert torch.isfinite(x).all() and torch.isfinite(ld).all()
    _, r, rt, _ = t.factors()
    if name != "extreme-scales":
        assert (y_back - y).abs().max() <= 1e-12 * (1 + y.abs().max() + r.abs().sum())
    else:  # |R| ~ 1e3, R~_11 = e^10: the forward map amplifies rounding in x by ~|R||R~|
        cond = (1 + y.abs().max()) * (1 + r.abs().sum()) * (1 + rt.abs().sum())
        assert (y_back - y).abs().max() <= 1e-14 * cond
        assert torch.allclose(ld, -ld_fwd, atol=1e-6)
    if name != "extreme-scales":  # there log-dets near -700 are only as exact as the root
        assert torch.allclose(ld, -ld_fwd, atol=1e-8)
        x_ref, ld_ref = reference_inverse(t, y.numpy())
        np.testing.assert_allclose(x.numpy(), x_ref, atol=1e-8, rtol=1e-8)
        np.testing.assert_allclose(ld.numpy(), ld_ref, atol=1e-7, rtol=1e-7)


@settings(max_examples=30, deadline=None, derandomize=True)
@given(
    raw=st.lists(st.floats(-30, 30), min_size=2 * 6 + 3, max_size=2 * 6 + 3),
    y=st.lists(st.floats(-100, 100), min_size=3, max_size=3),
)
def test_round_trip_property_under_random_raw_parameters(raw, y):
    t = Sylvester(3, kind="triangular").double()
    values = torch.tensor(raw, dtype=f64)
    with torch.no_grad():
        t.triangular.copy_(values[:12].reshape(2, 6))
        t.bias.copy_(values[12:])
    y_t = torch.tensor([y], dtype=f64)
    x, ld_inv = t.inverse_and_log_det(y_t)
    y_back, ld_fwd = t.forward_and_log_det(x)
    assert torch.isfinite(x).all() and torch.isfinite(ld_inv).all()
    scale = 1 + y_t.abs().max() + t.factors()[1].abs().sum()
    assert (y_back - y_t).abs().max() <= 1e-11 * scale
    if ld_fwd.item() > -20:  # away from a numerically singular point
        assert torch.allclose(ld_inv, -ld_fwd, atol=1e-6)


def test_density_of_a_deep_flow_integrates_to_one_in_two_dimensions():
    torch.manual_seed(2)
    layers = [perturbed(Sylvester(2).double(), seed=k) for k in range(3)]
    flow = Flow(layers).double()
    grid = torch.linspace(-12, 12, 481, dtype=f64)
    xx, yy = torch.meshgrid(grid, grid, indexing="ij")
    with torch.no_grad():
        mass = flow.log_prob(torch.stack([xx, yy], -1).reshape(-1, 2)).exp().sum()
    assert abs(mass * (grid[1] - grid[0]) ** 2 - 1) < 5e-3


# -- gradients, float32, conditional ---------------------------------------------------------


def test_inverse_gradient_is_the_implicit_gradient():
    torch.manual_seed(3)
    m = 3
    y = (2 * torch.randn(4, 4, dtype=f64)).requires_grad_()
    tri = (0.7 * torch.randn(2, 6, dtype=f64)).requires_grad_()
    b = torch.randn(m, dtype=f64, requires_grad=True)
    vectors = torch.randn(3, 4, dtype=f64, requires_grad=True)

    def fn(y, tri, b, vectors):
        r, rt, softplus_p = sylvester_triangular(tri[0], tri[1])
        return sylvester_inverse(y, householder_frame(vectors, m), r, rt, b, softplus_p)

    assert torch.autograd.gradcheck(fn, (y, tri, b, vectors), atol=1e-6, rtol=1e-5)


def test_conditional_inverse_gradcheck_in_y_and_context():
    torch.manual_seed(4)
    t = perturbed(Sylvester(3, context_dim=2, hidden_dims=(8,)).double(), scale=0.3)
    y = torch.randn(4, 3, dtype=f64, requires_grad=True)
    ctx = torch.randn(4, 2, dtype=f64, requires_grad=True)
    assert torch.autograd.gradcheck(t.inverse_and_log_det, (y, ctx), atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("name", ["contracting", "expanding", "large-offdiagonal"])
def test_float32_outliers_are_finite_with_finite_gradients(name):
    t = adversarial_layer(name).float()
    y = torch.tensor(
        [[0.0, 0.0, 0.0, 0.0], [1e3, -1e3, 1e3, -1e3], [-1e3, 30.0, 1e-3, 2.5], [1e3] * 4],
        requires_grad=True,
    )
    base = dist.Normal(torch.zeros(4), 1.0).to_event(1)
    x, ld = t.inverse_and_log_det(y)
    log_q = base.log_prob(x) + ld
    assert torch.isfinite(log_q).all() and (log_q[1:] < -1e4).all()
    log_q.sum().backward()
    assert torch.isfinite(y.grad).all()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in t.parameters())
    y2, ld2 = t.forward_and_log_det(y.detach())
    assert torch.isfinite(y2).all() and torch.isfinite(ld2).all()


@pytest.mark.parametrize("kind", ["householder", "orthogonal", "triangular"])
def test_conditional_layer_is_a_per_row_layer(kind):
    torch.manual_seed(5)
    t = perturbed(Sylvester(3, context_dim=2, hidden_dims=(8,), kind=kind).double(), 0.3)
    S, B = 4, 5
    ctx = torch.randn(B, 2, dtype=f64)
    x = torch.randn(S, B, 3, dtype=f64)
    for fn in (t.forward_and_log_det, t.inverse_and_log_det):
        out, ld = fn(x, ctx)
        assert out.shape == (S, B, 3) and ld.shape == (S, B)
        for b in range(B):
            out_b, ld_b = fn(x[:, b], ctx[b])
            assert torch.allclose(out[:, b], out_b) and torch.allclose(ld[:, b], ld_b)
    assert t.factors(ctx)[0].shape == (B, 3, 3)
    y, _ = t.forward_and_log_det(x, ctx)
    assert torch.allclose(t.inverse_and_log_det(y, ctx)[0], x, atol=1e-10)


@pytest.mark.parametrize("context_dim", [None, 3])
@pytest.mark.parametrize("kind", ["householder", "orthogonal", "triangular"])
def test_fresh_layers_start_near_identity(context_dim, kind):
    torch.manual_seed(6)
    t = Sylvester(4, context_dim=context_dim, kind=kind)
    ctx = None if context_dim is None else torch.randn(100, 3)
    x = torch.randn(100, 4)
    y, ld = t.forward_and_log_det(x, ctx)
    assert (y - x).abs().max() < 0.1 and ld.abs().max() < 0.1


# -- Pyro ------------------------------------------------------------------------------------


def test_agrees_with_pyro_on_its_own_samples_when_q_is_the_identity():
    """Pyro's ``Sylvester`` computes ``y = x + tanh(x S Q^T + b) Q R`` on row vectors, i.e.
    ``x + R^T Q^T tanh(Q S^T x + b)``: its log-det ``sum log(1 + R_ii S_ii h')`` is exact only
    when ``Q`` commutes with the diagonal, so the comparison uses ``Q = H(u) H(u) = I``. That
    map, ``x + R^T tanh(S^T x + b)``, is our triangular layer in reversed coordinates with
    ``R' = J R^T J``, ``R~' = J S^T J``, ``b' = J b``."""
    torch.manual_seed(7)
    d = 3
    theirs = T.Sylvester(d, count_transforms=2)
    with torch.no_grad():
        for p in theirs.parameters():
            p.copy_(torch.randn_like(p))
        theirs.u_unnormed[1] = theirs.u_unnormed[0]
        theirs.S_diag.abs_()  # tanh(S_ii) > 0: our R~_ii = exp(q) > 0 (no loss, see docs)
    rho, sigma = torch.tanh(theirs.R_diag), torch.tanh(theirs.S_diag)
    flip = list(reversed(range(d)))
    r_full = (theirs.R_dense.triu(1) + torch.diag(rho)).T[flip][:, flip]
    s_full = (theirs.S_dense.triu(1) + torch.diag(sigma)).T[flip][:, flip]
    ours = Sylvester(d, kind="triangular")
    rows, cols = torch.triu_indices(d, d)
    on = rows == cols
    with torch.no_grad():
        ours.triangular[0] = r_full[rows, cols]
        ours.triangular[1] = s_full[rows, cols]
        ours.triangular[0, on] = torch.log(torch.expm1(1 + (rho * sigma)[flip]))
        ours.triangular[1, on] = torch.log(sigma[flip])
        ours.bias.copy_(theirs.b[flip])
    base = dist.Normal(torch.zeros(d), 1.0).to_event(1)
    pyro_dist = dist.TransformedDistribution(base, [theirs])
    samples = pyro_dist.sample((200,))
    expected = pyro_dist.log_prob(samples)  # Pyro scores its own samples from its cache
    x, ld = ours.inverse_and_log_det(samples.clone()[:, flip])
    assert torch.allclose(base.log_prob(x[:, flip]) + ld, expected, atol=1e-4)
    with pytest.raises(KeyError):  # and cannot score a point it did not sample
        pyro_dist.log_prob(samples.clone())


# -- the builder ----------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["householder", "orthogonal", "triangular"])
@pytest.mark.parametrize("context_dim", [None, 2])
def test_builder_scores_its_samples_and_external_points(kind, context_dim):
    torch.manual_seed(9)
    flow = sylvester(
        3, num_transforms=3, hidden_dims=(8,), context_dim=context_dim, num_vectors=2, kind=kind
    ).double()
    perturbed(flow, scale=0.3)
    layers = [m for m in flow.modules() if isinstance(m, Sylvester)]
    assert len(layers) == 3 and all(t.num_vectors == 2 and t.kind == kind for t in layers)
    ctx = None if context_dim is None else torch.randn(5, 2, dtype=f64)
    x, log_q = flow.rsample_and_log_prob((5,), context=ctx)
    assert torch.allclose(flow.log_prob(x.detach().clone(), context=ctx), log_q, atol=1e-8)
    external = 4 * torch.randn(5, 3, dtype=f64)
    assert torch.isfinite(flow.log_prob(external, context=ctx)).all()


def test_builder_rejects_bad_options():
    with pytest.raises(ValueError, match="kind must be one of"):
        sylvester(3, kind="cayley")
    with pytest.raises(ValueError, match="num_vectors must be <= input_dim=3"):
        sylvester(3, num_vectors=5)
    with pytest.raises(ValueError, match="permutation must be one of"):
        sylvester(3, permutation="shuffle")


# -- validation ------------------------------------------------------------------------------


def test_bad_arguments_are_clear_errors():
    with pytest.raises(ValueError, match=r"num_vectors must be <= input_dim=3, got 4"):
        Sylvester(3, num_vectors=4)
    with pytest.raises(ValueError, match="num_vectors must be >= 1, got 0"):
        Sylvester(3, num_vectors=0)
    with pytest.raises(TypeError, match="num_vectors must be an int"):
        Sylvester(3, num_vectors=2.0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="kind must be one of"):
        Sylvester(3, kind="cayley")
    with pytest.raises(ValueError, match=r"hidden_dims\[0\] must be >= 1"):
        Sylvester(3, context_dim=2, hidden_dims=(0,))
    assert "num_vectors=2, kind='triangular'" in repr(
        Sylvester(3, num_vectors=2, kind="triangular")
    )
