"""The shared correctness harness: every transform case in ``cases/`` goes through every check.

Parameters are perturbed away from the (near-identity) initialisation before each check, so a
wrong log-determinant or inverse cannot hide behind an identity map.
"""

from __future__ import annotations

import copy
import io

import pyro.distributions as dist
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from pyro_flows import Flow
from pyro_flows.transforms.base import FlowTransform

from .cases import Case, all_cases

CASES = all_cases()
IDS = [c.id for c in CASES]
N = 16


def perturb(module: torch.nn.Module, scale: float = 0.3, seed: int = 1) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(scale * torch.randn(p.shape, generator=g, dtype=torch.float64).to(p))


def data_side(case: Case, n: int = 64, seed: int = 2, dtype=torch.float64) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    y = 1.5 * torch.randn(n, *case.out_shape, generator=g, dtype=torch.float64) + 0.5
    if case.data_bounds is not None:
        lo, hi = case.data_bounds
        y = lo + (hi - lo) * torch.sigmoid(y)
    return y.to(dtype)


def contexts(case: Case, n: int = N, seed: int = 3, dtype=torch.float64) -> torch.Tensor | None:
    if case.context_dim is None:
        return None
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, case.context_dim, generator=g, dtype=torch.float64).to(dtype)


def build(case: Case, dtype=torch.float64, seed: int = 0) -> FlowTransform:
    torch.manual_seed(seed)
    t = case.make().to(dtype)
    perturb(t)
    data = data_side(case, dtype=dtype)
    if case.prepare is not None:
        case.prepare(t, data)
    if case.batch_statistics:
        t.train()
        ctx = contexts(case, n=data.shape[0], dtype=dtype)
        for _ in range(5):
            t.inverse_and_log_det(data, ctx)
        t.eval()
    return t


def fresh_x(case: Case, n: int = N, seed: int = 4) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, *case.shape, generator=g, dtype=torch.float64)


def scored(t: FlowTransform, y: torch.Tensor, ctx: torch.Tensor | None) -> torch.Tensor:
    """log density of y (one batch dim) under the one-layer flow with a standard Normal base."""
    x, log_det = t.inverse_and_log_det(y, ctx)
    base = dist.Normal(torch.zeros_like(x), torch.ones_like(x)).to_event(x.dim() - 1)
    return base.log_prob(x) + log_det


def standard_normal(case: Case, dtype=torch.float64) -> dist.Distribution:
    """The standard Normal on the layer's input (base-side) event shape."""
    return dist.Normal(torch.zeros(case.shape, dtype=dtype), 1.0).to_event(len(case.shape))


def shape_pattern(shape: tuple[int, ...]) -> str:
    """The regex of ``(..., *shape)`` as error messages write it."""
    return r"\(\.\.\., " + ", ".join(map(str, shape)) + r"\)"


@pytest.fixture(params=CASES, ids=IDS)
def case(request) -> Case:
    return request.param


def test_is_a_pyro_transform_module(case):
    from pyro.distributions.torch_transform import TransformModule

    t = build(case)
    assert isinstance(t, TransformModule) and isinstance(t, FlowTransform)
    event_dim = len(case.shape)
    assert t.domain.event_dim == event_dim and t.codomain.event_dim == event_dim
    assert t._cache_size == 0


def test_round_trip_on_fresh_tensors(case):
    t, x, ctx = build(case), fresh_x(case), contexts(case)
    y, _ = t.forward_and_log_det(x, ctx)
    assert torch.allclose(t.inverse_and_log_det(y.clone(), ctx)[0], x, atol=case.inverse_atol)
    y_fresh = data_side(case, n=N)
    x_back, _ = t.inverse_and_log_det(y_fresh, ctx)
    y_again, _ = t.forward_and_log_det(x_back.clone(), ctx)
    assert torch.allclose(y_again, y_fresh, atol=case.inverse_atol)
    # the Pyro interface, on fresh copies (no identity cache can help)
    tc = t.condition(ctx) if ctx is not None else t
    assert torch.allclose(tc.inv(tc(x.clone()).clone()), x, atol=case.inverse_atol)


@settings(
    max_examples=20,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(data=st.data())
def test_round_trip_on_arbitrary_inputs(case, data):
    """Property-based: any finite input of moderate size round-trips, both directions."""
    t = build(case)
    n = data.draw(st.integers(1, 5))
    values = data.draw(
        arrays("float64", (n, *case.shape), elements=st.floats(-20, 20, allow_subnormal=False))
    )
    x = torch.from_numpy(values)
    ctx = contexts(case, n=n)
    y, ld = t.forward_and_log_det(x, ctx)
    assert torch.isfinite(y).all() and torch.isfinite(ld).all()
    scale = 1.0 + x.abs().max().item()
    assert torch.allclose(t.inverse_and_log_det(y, ctx)[0], x, atol=case.inverse_atol * scale)
    if case.data_bounds is not None:
        lo, hi = case.data_bounds
        y_elements = st.floats(lo, hi, exclude_min=True, exclude_max=True, allow_subnormal=False)
        y_values = data.draw(arrays("float64", (n, *case.out_shape), elements=y_elements))
        x = torch.from_numpy(y_values)
    elif case.out_shape != case.shape:
        x = x.reshape(n, *case.out_shape)
    x_back, ld_back = t.inverse_and_log_det(x, ctx)
    assert torch.allclose(t.forward_and_log_det(x_back, ctx)[0], x, atol=case.inverse_atol * scale)
    assert torch.allclose(ld_back, -t.forward_and_log_det(x_back, ctx)[1], atol=1e-6)


@pytest.mark.parametrize("direction", ["forward", "inverse"])
def test_log_det_matches_autograd_jacobian(case, direction):
    t, ctx = build(case), contexts(case)
    points = fresh_x(case) if direction == "forward" else data_side(case, n=N)
    fn = t.forward_and_log_det if direction == "forward" else t.inverse_and_log_det
    _, log_det = fn(points, ctx)
    for n in range(3):
        c = None if ctx is None else ctx[n : n + 1]
        in_shape = points.shape[1:]
        jac = torch.autograd.functional.jacobian(
            lambda v, c=c, s=in_shape: fn(v.reshape(1, *s), c)[0].reshape(-1),
            points[n].reshape(-1),
        )
        sign, logabsdet = torch.linalg.slogdet(jac)
        assert sign != 0
        assert torch.allclose(logabsdet, log_det[n], atol=1e-6, rtol=1e-6), (logabsdet, log_det[n])


def test_sampling_path_matches_forward(case):
    """``forward_without_log_det`` (the sampling path, and Pyro's ``t(x)``) is the same map."""
    t, x, ctx = build(case), fresh_x(case), contexts(case)
    y, _ = t.forward_and_log_det(x, ctx)
    assert torch.allclose(t.forward_without_log_det(x, ctx), y, atol=1e-12)
    tc = t.condition(ctx) if ctx is not None else t
    assert torch.allclose(tc(x), y, atol=1e-12)


def test_inverse_log_det_is_minus_forward(case):
    t, x, ctx = build(case), fresh_x(case), contexts(case)
    y, ld_fwd = t.forward_and_log_det(x, ctx)
    _, ld_inv = t.inverse_and_log_det(y, ctx)
    assert torch.allclose(ld_inv, -ld_fwd, atol=1e-7)
    tc = t.condition(ctx) if ctx is not None else t
    assert torch.allclose(tc.log_abs_det_jacobian(x, y), ld_fwd, atol=1e-7)
    assert torch.allclose(tc.inv.log_abs_det_jacobian(y, x), -ld_fwd, atol=1e-7)


def test_extra_batch_dimensions(case):
    t = build(case)
    shape, out = case.shape, case.out_shape
    x = fresh_x(case, n=6).reshape(2, 3, *shape)
    ctx = contexts(case, n=3)  # broadcast over the leading dim
    y, ld = t.forward_and_log_det(x, ctx)
    assert y.shape == (2, 3, *out) and ld.shape == (2, 3)
    flat_ctx = None if ctx is None else ctx.repeat(2, 1)
    y_flat, ld_flat = t.forward_and_log_det(x.reshape(6, *shape), flat_ctx)
    assert torch.allclose(y.reshape(6, *out), y_flat, atol=1e-10)
    assert torch.allclose(ld.reshape(6), ld_flat, atol=1e-10)
    x_back, ld_back = t.inverse_and_log_det(y, ctx)
    assert x_back.shape == (2, 3, *shape) and ld_back.shape == (2, 3)
    single_ctx = None if ctx is None else ctx[0]
    y1, ld1 = t.forward_and_log_det(x[0, 0], single_ctx)
    assert y1.shape == out and ld1.shape == ()


def test_autoregressive_jacobian_is_triangular(case):
    if not case.lower_triangular:
        pytest.skip("not an autoregressive layer")
    t, x, ctx = build(case), fresh_x(case), contexts(case)
    c = None if ctx is None else ctx[:1]
    for fn in (t.forward_and_log_det, t.inverse_and_log_det):
        jac = torch.autograd.functional.jacobian(
            lambda v, fn=fn: fn(v.reshape(1, *case.shape), c)[0].reshape(-1), x[0].reshape(-1)
        )
        assert torch.count_nonzero(jac.triu(1)) == 0
        assert torch.all(jac.diagonal() != 0)


def has_parameters(t: torch.nn.Module) -> bool:
    return any(True for _ in t.parameters())


def test_every_parameter_gets_a_gradient(case):
    t, x, ctx = build(case), fresh_x(case).requires_grad_(), contexts(case)
    y_data = data_side(case, n=N).requires_grad_()
    y, ld = t.forward_and_log_det(x, ctx)
    x2, ld2 = t.inverse_and_log_det(y_data, ctx)
    loss = (y**2).sum() + ld.sum() + (x2**2).sum() + ld2.sum()
    loss.backward()
    for v in (x, y_data):
        assert torch.isfinite(v.grad).all() and v.grad.abs().sum() > 0
    for name, p in t.named_parameters():
        assert p.grad is not None, f"{name} got no gradient"
        assert torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, f"{name} got an all-zero gradient"


def test_no_stale_result_after_step_load_or_to(case):
    t, ctx = build(case), contexts(case)
    tc = t.condition(ctx) if ctx is not None else t
    d = dist.TransformedDistribution(standard_normal(case), [tc])
    y = data_side(case, n=N)
    before = d.log_prob(y)
    state = copy.deepcopy(t.state_dict())
    if has_parameters(t) and case.discrete:
        # rounding is piecewise constant: a small step may change nothing; move far instead
        g = torch.Generator().manual_seed(7)
        with torch.no_grad():
            for p in t.parameters():
                p.add_(3.0 * torch.randn(p.shape, generator=g, dtype=p.dtype))
    elif has_parameters(t):
        opt = torch.optim.SGD(t.parameters(), lr=0.05)
        (-before.mean()).backward()
        opt.step()
    if has_parameters(t):
        after = d.log_prob(y)
        assert not torch.allclose(after, before), "log_prob did not change after an optimiser step"
        assert torch.allclose(after, scored(t, y, ctx), atol=1e-10)
    t.load_state_dict(state)
    assert torch.allclose(d.log_prob(y), before, atol=1e-10)
    t.to(torch.float32)
    y32 = y.float()
    ctx32 = None if ctx is None else ctx.float()
    lp32 = scored(t, y32, ctx32)
    assert lp32.dtype == torch.float32
    assert torch.allclose(lp32.double(), before, atol=1e-3, rtol=1e-3)


def test_training_loop_reuses_the_same_data_tensor(case):
    t, ctx = build(case), contexts(case, n=64)
    if not has_parameters(t):
        pytest.skip("no parameters to train")
    if case.discrete:
        pytest.skip("rounded outputs: a few small steps need not change the loss")
    tc = t.condition(ctx) if ctx is not None else t
    d = dist.TransformedDistribution(standard_normal(case), [tc])
    data = data_side(case, n=64)
    opt = torch.optim.Adam(t.parameters(), lr=1e-2)
    losses = []
    for _ in range(4):
        opt.zero_grad()
        loss = -d.log_prob(data).mean()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert all(torch.isfinite(torch.tensor(losses)))
    assert losses[-1] < losses[0]


def test_save_load_and_deepcopy(case):
    t, x, ctx = build(case), fresh_x(case), contexts(case)
    y, ld = t.forward_and_log_det(x, ctx)
    buffer = io.BytesIO()
    torch.save(t, buffer)
    buffer.seek(0)
    loaded = torch.load(buffer, weights_only=False)
    copied = copy.deepcopy(t)
    torch.manual_seed(123)
    rebuilt = case.make().to(torch.float64)
    rebuilt.load_state_dict(t.state_dict())
    rebuilt.train(t.training)
    for other in (loaded, copied, rebuilt):
        y2, ld2 = other.forward_and_log_det(x, ctx)
        assert torch.equal(y2, y) and torch.equal(ld2, ld)
        x2, _ = other.inverse_and_log_det(y, ctx)
        assert torch.equal(x2, t.inverse_and_log_det(y, ctx)[0])


def test_float32_is_finite_for_large_inputs(case):
    t = build(case, dtype=torch.float32)
    D = case.input_dim
    values = torch.tensor([-1e3, -30.0, -1.0, 0.0, 1e-3, 2.5, 30.0, 1e3])
    if case.data_bounds is not None:
        lo, hi = case.data_bounds
        frac = torch.tensor([1e-6, 1e-3, 0.1, 0.4, 0.5, 0.9, 1 - 1e-3, 1 - 1e-6])
        values = (lo + (hi - lo) * frac.double()).float()
    y = values[torch.arange(8 * D) % 8].reshape(8, D)
    y = y[:, torch.randperm(D, generator=torch.Generator().manual_seed(0))]
    y = y.reshape(8, *case.out_shape).requires_grad_(True)
    ctx = contexts(case, n=8, dtype=torch.float32)
    log_q = scored(t, y, ctx)
    assert torch.isfinite(log_q).all(), log_q
    log_q.sum().backward()
    assert torch.isfinite(y.grad).all()
    for name, p in t.named_parameters():
        assert p.grad is None or torch.isfinite(p.grad).all(), name
    x, ld = t.forward_and_log_det(y.detach().reshape(8, *case.shape), ctx)
    assert torch.isfinite(x).all() and torch.isfinite(ld).all()


def test_train_and_eval_modes_agree(case):
    t, x, ctx = build(case), fresh_x(case), contexts(case)
    t.eval()
    y_eval, ld_eval = t.forward_and_log_det(x, ctx)
    if case.batch_statistics:
        # eval mode uses running statistics: the exact inverse of the forward map
        x_back, ld_back = t.inverse_and_log_det(y_eval, ctx)
        assert torch.allclose(x_back, x, atol=1e-10) and torch.allclose(ld_back, -ld_eval)
        return
    t.train()
    y_train, ld_train = t.forward_and_log_det(x, ctx)
    assert torch.allclose(y_train, y_eval) and torch.allclose(ld_train, ld_eval)


def test_context_changes_the_output(case):
    if case.context_dim is None:
        pytest.skip("unconditional layer")
    t, x = build(case), fresh_x(case)
    c1, c2 = contexts(case, seed=10), contexts(case, seed=11)
    assert not torch.allclose(t.forward_and_log_det(x, c1)[0], t.forward_and_log_det(x, c2)[0])
    assert not torch.allclose(t.inverse_and_log_det(x, c1)[0], t.inverse_and_log_det(x, c2)[0])
    with pytest.raises(ValueError, match="context"):
        t.forward_and_log_det(x, None)
    with pytest.raises(ValueError, match=rf"\(\.\.\., {case.context_dim}\)"):
        t.forward_and_log_det(x, torch.zeros(N, case.context_dim + 1, dtype=torch.float64))
    with pytest.raises(ValueError, match="condition"):
        t(x)


def test_wrong_event_size_is_a_clear_error(case):
    t, ctx = build(case), contexts(case)
    for shape, fn in ((case.shape, t.forward_and_log_det), (case.out_shape, t.inverse_and_log_det)):
        bad = torch.zeros(N, *shape[:-1], shape[-1] + 1, dtype=torch.float64)
        with pytest.raises(ValueError, match=shape_pattern(shape) + ".*got shape"):
            fn(bad, ctx)


def test_two_dimensional_density_integrates_to_one(case):
    if case.shape != (2,) or case.context_dim is not None:
        pytest.skip("grid integration is for unconditional 2-D layers")
    t = build(case)
    t.eval()
    flow = Flow([t]).double()
    if case.data_bounds is None:
        lo, hi = -10.0, 10.0
        grid = torch.linspace(lo, hi, 401, dtype=torch.float64)
    else:  # a bounded data side: the midpoint grid of the open box
        lo, hi = case.data_bounds
        grid = lo + (hi - lo) * (torch.arange(400, dtype=torch.float64) + 0.5) / 400
    xx, yy = torch.meshgrid(grid, grid, indexing="ij")
    pts = torch.stack([xx, yy], -1).reshape(-1, 2)
    with torch.no_grad():
        mass = flow.log_prob(pts).exp().sum() * (grid[1] - grid[0]) ** 2
        torch.manual_seed(0)
        samples = flow.sample((20000,))
        inside = ((samples >= lo) & (samples <= hi)).all(-1).double().mean()
    assert abs(mass - inside) < 0.01, (mass, inside)
