"""Dequantization (uniform, variational), DequantizedModel's bound, and the Logit layer."""

from __future__ import annotations

import copy
import io
import math

import pyro.distributions as dist
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from pyro_flows import Flow, flows
from pyro_flows.data import (
    DequantizedModel,
    UniformDequantization,
    VariationalDequantization,
    bits_per_dim_to_nats,
    check_discrete,
    load_digits_dataset,
    nats_to_bits_per_dim,
)
from pyro_flows.transforms.logit import Logit

Normal = torch.distributions.Normal(0.0, 1.0)


def perturb(module: torch.nn.Module, scale: float = 0.3, seed: int = 1) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(scale * torch.randn(p.shape, generator=g, dtype=p.dtype))


def normal_flow(dim: int) -> Flow:
    """No transforms: a standard Normal in logit space (its cell masses are known exactly)."""
    base = dist.Normal(torch.zeros(dim, dtype=torch.float64), 1.0).to_event(1)
    return Flow([], base=base).double()


def exact_log_mass(x: torch.Tensor, num_levels: int, alpha: float) -> torch.Tensor:
    """log P(x) = sum_i log[Phi(z((x_i + 1)/K)) - Phi(z(x_i/K))], z(y) = logit(a + (1-2a) y)."""

    def z(y):
        p = alpha + (1 - 2 * alpha) * y
        return torch.log(p) - torch.log1p(-p)

    upper, lower = Normal.cdf(z((x + 1) / num_levels)), Normal.cdf(z(x / num_levels))
    return torch.log(upper - lower).sum(-1)


def log_mean_exp_and_stderr(values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """log of the mean of exp(values) over dim 0, and the delta-method standard error."""
    m = values.max(0).values
    w = (values - m).exp()
    return w.mean(0).log() + m, w.std(0) / w.mean(0) / math.sqrt(values.shape[0])


# -- helpers ------------------------------------------------------------------------------------
def test_bits_per_dim_conversions():
    assert nats_to_bits_per_dim(64 * math.log(2), 64) == pytest.approx(1.0)
    assert bits_per_dim_to_nats(nats_to_bits_per_dim(123.4, 10), 10) == pytest.approx(123.4)
    t = nats_to_bits_per_dim(torch.tensor([10.0, 20.0]), 5)
    assert torch.allclose(t, torch.tensor([10.0, 20.0]) / (5 * math.log(2)))
    with pytest.raises(ValueError, match="dim must be >= 1"):
        nats_to_bits_per_dim(1.0, 0)


def test_check_discrete_errors():
    assert check_discrete(torch.tensor([[0, 16]]), 17).dtype == torch.get_default_dtype()
    with pytest.raises(
        ValueError, match=r"levels in \[0, 16\] \(num_levels=17\), got values in \[0, 17\]"
    ):
        check_discrete(torch.tensor([[0.0, 17.0]]), 17)
    with pytest.raises(ValueError, match=r"levels in \[0, 3\].*got values in \[-1, 2\]"):
        check_discrete(torch.tensor([[-1.0, 2.0]]), 4)
    with pytest.raises(
        ValueError, match=r"integer-valued data.*1 non-integer value\(s\), e.g. \[0.5"
    ):
        check_discrete(torch.tensor([[0.5, 1.0]]), 4)
    with pytest.raises(ValueError, match="non-integer"):
        check_discrete(torch.tensor([[math.nan, 1.0]]), 4)
    with pytest.raises(ValueError, match=r"shape \(\.\.\., 3\), got shape \(2, 4\)"):
        check_discrete(torch.zeros(2, 4), 4, input_dim=3)
    with pytest.raises(ValueError, match="flatten images"):
        check_discrete(torch.zeros(2, 1, 8, 8), 17, input_dim=64)
    with pytest.raises(ValueError, match="dtype torch.bool"):
        check_discrete(torch.zeros(2, 4, dtype=torch.bool), 4)
    with pytest.raises(TypeError, match="torch.Tensor"):
        check_discrete([[0, 1]], 4)  # type: ignore[arg-type]


# -- uniform dequantization ---------------------------------------------------------------------
def test_uniform_dequantization():
    deq = UniformDequantization(17, input_dim=3)
    x = torch.randint(0, 17, (100, 3)).double()
    y, log_q = deq(x, generator=torch.Generator().manual_seed(0))
    y2, _ = deq(x, generator=torch.Generator().manual_seed(0))
    assert torch.equal(y, y2) and y.dtype == torch.float64
    assert ((y >= x / 17) & (y < (x + 1) / 17)).all()
    assert torch.allclose(log_q, torch.full((100,), 3 * math.log(17), dtype=torch.float64))
    assert list(deq.parameters()) == []
    with pytest.raises(
        ValueError, match=r"UniformDequantization expected discrete data of shape \(\.\.\., 3\)"
    ):
        deq(torch.zeros(4, 2))
    with pytest.raises(ValueError, match="num_levels must be >= 2"):
        UniformDequantization(1)


def test_uniform_bound_is_below_and_converges_to_the_exact_log_mass():
    K, alpha = 4, 0.05
    model = DequantizedModel(normal_flow(2), UniformDequantization(K), logit=alpha)
    x = torch.tensor([[0.0, 3.0], [1.0, 2.0], [3.0, 3.0]], dtype=torch.float64)
    exact = exact_log_mass(x, K, alpha)
    torch.manual_seed(0)
    bounds = model.log_prob(x.expand(4000, 3, 2))  # 4000 independent one-sample bounds
    stderr = bounds.std(0) / math.sqrt(4000)
    assert (bounds.mean(0) < exact + 3 * stderr).all()  # E[bound] <= log P(x)
    estimate, se = log_mean_exp_and_stderr(bounds)  # importance weighting: -> log P(x)
    assert ((estimate - exact).abs() < 5 * se + 1e-4).all(), (estimate, exact, se)
    iw = model.log_prob(x, num_samples=4000)
    assert iw.shape == (3,) and ((iw - exact).abs() < 5 * se + 1e-4).all()


# -- variational dequantization -----------------------------------------------------------------
@pytest.fixture
def vdeq() -> VariationalDequantization:
    torch.manual_seed(0)
    deq = VariationalDequantization(2, 5, num_transforms=2, hidden_dims=(16,)).double()
    perturb(deq)
    return deq


def test_variational_noise_density_and_consistency(vdeq):
    x = torch.tensor([[0.0, 4.0], [2.0, 1.0]], dtype=torch.float64)
    y, log_q = vdeq(x)
    assert ((y >= x / 5) & (y <= (x + 1) / 5)).all()
    # the sampling path's log q(y | x) equals the density path's at the same point
    u = y * 5 - x
    assert torch.allclose(vdeq.noise_log_prob(u, x) + 2 * math.log(5), log_q, atol=1e-8)
    # q(u | x) is a density on the unit square
    n = 300
    g = (torch.arange(n, dtype=torch.float64) + 0.5) / n
    uu = torch.stack(torch.meshgrid(g, g, indexing="ij"), -1).reshape(-1, 2)
    for row in x:
        mass = vdeq.noise_log_prob(uu, row.expand(n * n, 2)).exp().mean()
        assert abs(mass.item() - 1.0) < 2e-3, mass
    with pytest.raises(ValueError, match=r"open interval \(0, 1\), got values in \[0, 0.5\]"):
        vdeq.noise_log_prob(torch.tensor([[0.0, 0.5]], dtype=torch.float64), x[:1])


def test_variational_importance_weights_recover_the_exact_log_mass(vdeq):
    K, alpha = 5, 0.05
    model = DequantizedModel(normal_flow(2), vdeq, logit=alpha)
    x = torch.tensor([[0.0, 4.0], [2.0, 1.0], [4.0, 4.0]], dtype=torch.float64)
    exact = exact_log_mass(x, K, alpha)
    with torch.no_grad():
        bounds = model.log_prob(x.expand(4000, 3, 2))
    assert (bounds.mean(0) < exact + 3 * bounds.std(0) / math.sqrt(4000)).all()
    estimate, se = log_mean_exp_and_stderr(bounds)
    assert ((estimate - exact).abs() < 5 * se + 1e-4).all(), (estimate, exact, se)


def test_training_the_dequantizer_tightens_the_bound(vdeq):
    """With p fixed, maximising E_q[log p - log q] over q beats the uniform bound and stays
    below log P(x) (Ho et al. 2019)."""
    K, alpha = 5, 0.05
    torch.manual_seed(0)
    x = torch.randint(0, K, (64, 2)).double()
    exact = exact_log_mass(x, K, alpha).mean()
    uniform = DequantizedModel(normal_flow(2), UniformDequantization(K), logit=alpha)
    model = DequantizedModel(normal_flow(2), vdeq, logit=alpha)
    opt = torch.optim.Adam(model.parameters(), lr=5e-3)
    for _ in range(150):
        opt.zero_grad()
        (-model.log_prob(x).mean()).backward()
        opt.step()
    with torch.no_grad():
        xs = x.expand(200, 64, 2)
        variational_bound = model.log_prob(xs).mean()
        uniform_bound = uniform.log_prob(xs).mean()
    assert uniform_bound < variational_bound < exact + 0.01, (
        uniform_bound,
        variational_bound,
        exact,
    )


# -- DequantizedModel ---------------------------------------------------------------------------
def fit(model: torch.nn.Module, data: torch.Tensor, steps: int = 60, batch_size: int = 64):
    """A generic trainer: only model.log_prob(batch).mean() and model.parameters()."""
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    g = torch.Generator().manual_seed(0)
    losses = []
    for _ in range(steps):
        batch = data[torch.randint(0, len(data), (batch_size,), generator=g)]
        loss = -model.log_prob(batch).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


def test_joint_training_on_digits():
    data = load_digits_dataset()
    torch.manual_seed(0)
    model = DequantizedModel(
        flows.realnvp(64, num_transforms=3, hidden_dims=(64,)),
        VariationalDequantization(64, 17, num_transforms=2, hidden_dims=(32,)),
    )
    names = {n for n, _ in model.named_parameters()}
    assert any(n.startswith("flow.") for n in names)
    assert any(n.startswith("dequantizer.") for n in names)
    losses = fit(model, data.train)
    assert all(math.isfinite(v) for v in losses)
    assert sum(losses[-10:]) / 10 < sum(losses[:10]) / 10 - 5.0
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
    with torch.no_grad():
        bpd = model.bits_per_dim(data.test).mean().item()
    assert 0.0 < bpd < math.log2(17) + 1.0


def test_model_shapes_context_and_sampling():
    torch.manual_seed(0)
    cond = DequantizedModel(
        flows.realnvp(4, num_transforms=2, hidden_dims=(8,), context_dim=3),
        UniformDequantization(8),
        logit=Logit(4, alpha=1e-6),
    )
    x = torch.randint(0, 8, (5, 4)).float()
    ctx = torch.randn(5, 3)
    assert cond.log_prob(x, ctx).shape == (5,)
    assert cond.log_prob(x, ctx, num_samples=7).shape == (5,)
    s = cond.sample((6,), context=ctx[0])
    assert s.shape == (6, 4) and torch.equal(s, s.round()) and s.min() >= 0 and s.max() <= 7
    plain = DequantizedModel(
        flows.maf(4, num_transforms=1, hidden_dims=(8,)), UniformDequantization(8), None
    )
    assert plain.logit is None and plain.log_prob(x).shape == (5,)
    assert plain.bits_per_dim(x).shape == (5,)


def test_model_validation():
    flow = flows.realnvp(4, num_transforms=1, hidden_dims=(8,))
    with pytest.raises(
        ValueError, match="dequantizer has input_dim=3 but the flow has input_dim=4"
    ):
        DequantizedModel(flow, UniformDequantization(8, input_dim=3))
    with pytest.raises(ValueError, match=r"logit \(alpha\) must be in \(0, 0.5\)"):
        DequantizedModel(flow, UniformDequantization(8), logit=0.0)
    with pytest.raises(ValueError, match="Logit layer has input_dim=2"):
        DequantizedModel(flow, UniformDequantization(8), logit=Logit(2))
    with pytest.raises(TypeError, match="num_levels"):
        DequantizedModel(flow, torch.nn.Identity())
    with pytest.raises(ValueError, match="input_dim=3 and context_dim=3, got input_dim=4"):
        VariationalDequantization(3, 8, flow=flows.realnvp(4, context_dim=3))
    model = DequantizedModel(flow, UniformDequantization(8))
    with pytest.raises(
        ValueError, match=r"expected discrete data of shape \(\.\.\., 4\), got shape \(2, 3\)"
    ):
        model.log_prob(torch.zeros(2, 3))
    with pytest.raises(ValueError, match=r"levels in \[0, 7\].*got values in \[0, 255\]"):
        model.log_prob(torch.tensor([[0.0, 1.0, 2.0, 255.0]]))
    with pytest.raises(ValueError, match="non-integer"):
        model.log_prob(torch.rand(2, 4))


# -- the Logit layer: the harness's checks on in-domain data ------------------------------------
ALPHAS = [0.05, 1e-6, 0.0]


def in_domain(t: Logit, n: int, seed: int = 0, dtype=torch.float64) -> torch.Tensor:
    lo, hi = t.bounds
    g = torch.Generator().manual_seed(seed)
    u = torch.sigmoid(1.5 * torch.randn(n, t.input_dim, generator=g, dtype=torch.float64))
    return (lo + (hi - lo) * u).to(dtype)


@pytest.mark.parametrize("alpha", ALPHAS)
def test_logit_round_trips_and_log_dets(alpha):
    t = Logit(3, alpha=alpha).double()
    x = torch.randn(16, 3, dtype=torch.float64) * 3
    y, ld = t.forward_and_log_det(x)
    lo, hi = t.bounds
    assert ((y > lo) & (y < hi)).all()
    x_back, ld_back = t.inverse_and_log_det(y)
    assert torch.allclose(x_back, x, atol=1e-8) and torch.allclose(ld_back, -ld, atol=1e-10)
    y_data = in_domain(t, 16)
    x2, ld2 = t.inverse_and_log_det(y_data)
    y2, ld2_fwd = t.forward_and_log_det(x2)
    assert torch.allclose(y2, y_data, atol=1e-12) and torch.allclose(ld2, -ld2_fwd, atol=1e-10)
    assert torch.allclose(t.inv(t(x)), x, atol=1e-8)  # Pyro interface, no cache
    assert torch.allclose(t.log_abs_det_jacobian(x, y), ld)
    for fn, points in ((t.forward_and_log_det, x), (t.inverse_and_log_det, y_data)):
        for n in range(3):
            jac = torch.autograd.functional.jacobian(lambda v, fn=fn: fn(v)[0], points[n])
            assert torch.allclose(torch.linalg.slogdet(jac)[1], fn(points[n])[1], atol=1e-8)
    # extra batch dimensions
    yb, ldb = t.forward_and_log_det(x.reshape(2, 8, 3))
    assert yb.shape == (2, 8, 3) and ldb.shape == (2, 8)


@settings(max_examples=30, deadline=None, derandomize=True)
@given(data=st.data())
def test_logit_round_trip_on_arbitrary_in_domain_inputs(data):
    t = Logit(2, alpha=data.draw(st.sampled_from(ALPHAS))).double()
    lo, hi = t.bounds
    values = data.draw(
        arrays(
            "float64",
            (3, 2),
            elements=st.floats(lo, hi, exclude_min=True, exclude_max=True, allow_subnormal=False),
        )
    )
    y = torch.from_numpy(values)
    x, ld = t.inverse_and_log_det(y)
    assert torch.isfinite(x).all() and torch.isfinite(ld).all()
    y_back, ld_fwd = t.forward_and_log_det(x)
    assert torch.allclose(y_back, y, atol=1e-12)
    assert torch.allclose(ld, -ld_fwd, atol=1e-6 * (1 + ld.abs().max().item()))


def test_logit_out_of_domain_is_a_clear_error():
    t = Logit(3, alpha=0.05)
    with pytest.raises(
        ValueError,
        match=r"interval \(-0.0555556, 1.05556\).*2 value\(s\) outside it, ranging over \[-3, 2\]",
    ):
        t.inverse_and_log_det(torch.tensor([[2.0, 0.5, -3.0]]))
    with pytest.raises(ValueError, match=r"open interval \(0, 1\).*ranging over \[0, 0\]"):
        Logit(2, alpha=0.0).inverse_and_log_det(torch.tensor([[0.0, 0.5]]))
    with pytest.raises(ValueError, match="non-finite"):
        t.inverse_and_log_det(torch.tensor([[math.nan, 0.5, 0.5]]))
    with pytest.raises(ValueError, match=r"\(\.\.\., 3\).*got shape"):
        t.inverse_and_log_det(torch.zeros(2, 4))
    with pytest.raises(ValueError, match=r"alpha must be in \[0, 0.5\)"):
        Logit(2, alpha=0.5)


def test_logit_float32_near_the_boundaries_and_large_inputs():
    t = Logit(2, alpha=0.05)
    lo, hi = t.bounds
    eps = torch.tensor([1e-6, 1e-3, 0.3, 0.7, 1 - 1e-3, 1 - 1e-6])
    y = (lo + (hi - lo) * eps).float().reshape(3, 2).requires_grad_(True)
    y = torch.cat([y, torch.tensor([[0.0, 1.0]])])
    x, ld = t.inverse_and_log_det(y)
    assert torch.isfinite(x).all() and torch.isfinite(ld).all()
    (x.sum() + ld.sum()).backward()
    big = torch.tensor([[-1e3, 1e3], [-30.0, 30.0]])
    y2, ld2 = t.forward_and_log_det(big)
    assert torch.isfinite(y2).all() and torch.isfinite(ld2).all()


def test_logit_density_integrates_to_one_over_its_domain():
    t = Logit(2, alpha=0.05).double()
    flow = Flow([t]).double()
    lo, hi = t.bounds
    n = 400
    h = (hi - lo) / n
    g = lo + h * (torch.arange(n, dtype=torch.float64) + 0.5)
    pts = torch.stack(torch.meshgrid(g, g, indexing="ij"), -1).reshape(-1, 2)
    with torch.no_grad():
        mass = flow.log_prob(pts).exp().sum() * h * h
    assert abs(mass.item() - 1.0) < 1e-3


def test_logit_is_a_pyro_transform_module_and_serialises():
    from pyro.distributions.torch_transform import TransformModule

    t = Logit(3, alpha=1e-6)
    assert isinstance(t, TransformModule) and t._cache_size == 0
    assert t.domain.event_dim == 1 and t.codomain.event_dim == 1
    assert list(t.parameters()) == [] and "alpha=1e-06" in repr(t)
    x = torch.randn(5, 3)
    base = dist.Normal(torch.zeros(3), 1.0).to_event(1)
    d = dist.TransformedDistribution(base, [t])
    y = t(x)
    assert torch.allclose(d.log_prob(y), base.log_prob(x) - t.log_abs_det_jacobian(x, y))
    buffer = io.BytesIO()
    torch.save(t, buffer)
    buffer.seek(0)
    for other in (torch.load(buffer, weights_only=False), copy.deepcopy(t)):
        assert torch.equal(other(x), y) and other.alpha == t.alpha
