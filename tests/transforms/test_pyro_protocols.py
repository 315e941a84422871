"""Pyro's and torch's transform protocols, as their own test suites exercise them.

* ``sign``: defined (not torch's ``NotImplementedError``) and equal to the sign of the Jacobian
  determinant;
* ``torch.jit.trace`` of a module holding a layer or a whole flow, checked against eager
  evaluation on fresh inputs (``check_trace=False``, as ``pyro.infer.JitTrace_ELBO`` traces);
  ``ContinuousFlow`` refuses tracing with an error that names the way out;
* the conditional protocol of ``.inv``: ``ConditionalTransformedDistribution(base,
  [layer.inv])`` for every conditional layer, checked against the layer's own maths.

The layers come from the shared harness's cases (``tests/transforms/cases``).
"""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.distributions.conditional import (
    ConditionalComposeTransformModule,
    ConditionalTransform,
    ConditionalTransformedDistribution,
    ConditionalTransformModule,
)
from pyro.distributions.torch_transform import TransformModule
from pyro.infer import SVI, JitTrace_ELBO, Trace_ELBO
from pyro.optim import Adam

from pyro_flows import Flow, flows
from pyro_flows.flows.image import realnvp_image
from pyro_flows.transforms import (
    ChannelPermute,
    ContinuousFlow,
    ImageSequential,
    IntegerAdditiveCoupling,
    InvertibleConv1x1,
    InvertibleLinear,
    MarginalGaussianization,
    MaskedAutoregressive,
    MultiScale,
    Permute,
    Planar,
    Reverse,
)
from pyro_flows.transforms.base import FlowTransform, InverseFlowTransform
from pyro_flows.transforms.permutation import permutation_sign

from .cases import Case
from .test_harness import CASES, build, contexts, data_side, fresh_x

pytestmark = [
    pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning"),
    pytest.mark.filterwarnings("ignore:`torch.jit.trace` is deprecated:DeprecationWarning"),
    pytest.mark.filterwarnings("ignore:`torch.jit.trace_method` is deprecated:DeprecationWarning"),
]

CASE_IDS = [c.id for c in CASES]
CONDITIONAL = [c for c in CASES if c.context_dim is not None]


@pytest.mark.parametrize("case", CONDITIONAL, ids=[c.id for c in CONDITIONAL])
def test_a_conditional_layer_is_a_conditional_transform_module(case):
    """API.md: conditional layers are Pyro ``ConditionalTransformModule``s whose
    ``.condition(context)`` is a ``TransformModule``."""
    t = build(case)
    assert isinstance(t, ConditionalTransformModule)
    ctx = contexts(case, n=1)[0]
    assert isinstance(t.condition(ctx), TransformModule)


def jacobian_sign(t: FlowTransform, case: Case, x: torch.Tensor, ctx: torch.Tensor | None) -> int:
    """The sign of det(dy/dx) of ``t`` at the single point ``x`` (no batch dimension)."""
    jac = torch.autograd.functional.jacobian(
        lambda v: t.forward_and_log_det(v.reshape(1, *case.shape), ctx)[0].reshape(-1),
        x.reshape(-1),
    )
    return int(torch.linalg.slogdet(jac)[0])


# -- sign ---------------------------------------------------------------------------------------
# classes whose determinant can be negative and that do not (yet) override ``sign``: checked on
# purpose-built instances in test_sign_of_layers_that_need_an_override instead
NO_OVERRIDE = (InvertibleLinear, InvertibleConv1x1, ChannelPermute, ImageSequential, MultiScale)


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_sign_is_the_sign_of_the_jacobian_determinant(case):
    t = build(case)
    if case.discrete or isinstance(t, IntegerAdditiveCoupling):
        pytest.skip("rounding: no Jacobian")
    if isinstance(t, NO_OVERRIDE):
        pytest.skip("sign not overridden yet: see test_sign_of_layers_that_need_an_override")
    ctx = contexts(case, n=1)
    tc = t if ctx is None else t.condition(ctx)
    for seed in (4, 5):
        x = fresh_x(case, n=1, seed=seed)[0]
        assert tc.sign == jacobian_sign(t, case, x, ctx), case.id
    assert tc.inv.sign == tc.sign  # det(dx/dy) = 1 / det(dy/dx): the same sign


@pytest.mark.parametrize(
    "permutation",
    [[0], [1, 0], [1, 2, 0], [2, 1, 0], [0, 3, 1, 2], [4, 3, 2, 1, 0], [1, 0, 3, 2, 5, 4]],
)
def test_permutation_sign_is_the_determinant_of_the_permutation_matrix(permutation):
    perm = torch.tensor(permutation)
    matrix = torch.eye(len(permutation), dtype=torch.float64)[perm]
    expected = int(torch.linalg.det(matrix).round())
    assert permutation_sign(perm) == expected
    assert Permute(perm).sign == expected


@pytest.mark.parametrize("dim", range(1, 8))
def test_reverse_sign_is_the_determinant_of_the_reversal(dim):
    matrix = torch.eye(dim, dtype=torch.float64).flip(0)
    assert Reverse(dim).sign == int(torch.linalg.det(matrix).round())


def test_permute_sign_follows_a_loaded_permutation():
    t = Permute([0, 1, 2])
    assert t.sign == 1
    t.load_state_dict(
        {"permutation": torch.tensor([1, 0, 2]), "inverse_permutation": torch.tensor([1, 0, 2])}
    )
    assert t.sign == -1


def _reflecting_linear() -> InvertibleLinear:
    t = InvertibleLinear(2).identity_()
    t.diag_sign[0] = -1.0  # W = diag(-1, 1)
    return t


def _reflecting_conv() -> InvertibleConv1x1:
    t = InvertibleConv1x1((2, 1, 1))
    t.linear.identity_()
    t.linear.diag_sign[0] = -1.0
    return t


REFLECTIONS = {
    "InvertibleLinear": (_reflecting_linear, (2,)),
    "InvertibleConv1x1": (_reflecting_conv, (2, 1, 1)),
    "ChannelPermute": (lambda: ChannelPermute((2, 1, 1)), (2, 1, 1)),
    "ImageSequential": (lambda: ImageSequential([ChannelPermute((2, 1, 1))]), (2, 1, 1)),
}


def _reflection(name: str) -> tuple[FlowTransform, int]:
    """The instance and the sign of its Jacobian determinant, measured."""
    make, shape = REFLECTIONS[name]
    t = make().double()
    case = Case(name, lambda: t, int(torch.Size(shape).numel()), event_shape=shape)
    x = torch.randn(shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    return t, jacobian_sign(t, case, x, None)


@pytest.mark.parametrize("name", REFLECTIONS)
def test_the_reflecting_instances_reverse_the_orientation(name):
    assert _reflection(name)[1] == -1


@pytest.mark.parametrize("name", list(REFLECTIONS))
def test_sign_of_layers_that_need_an_override(name):
    t, measured = _reflection(name)
    assert t.sign == measured


# -- torch.jit.trace ----------------------------------------------------------------------------
class Forward(torch.nn.Module):
    """A module holding one layer: its forward map and log-det (context optional)."""

    def __init__(self, layer: FlowTransform) -> None:
        super().__init__()
        self.layer = layer

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None):
        return self.layer.forward_and_log_det(x, context)


class Inverse(Forward):
    def forward(self, y: torch.Tensor, context: torch.Tensor | None = None):
        return self.layer.inverse_and_log_det(y, context)


class LogProb(torch.nn.Module):
    def __init__(self, flow: Flow) -> None:
        super().__init__()
        self.flow = flow

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.flow.log_prob(x)


def trace(module: torch.nn.Module, *inputs: torch.Tensor | None):
    return torch.jit.trace(module, tuple(i for i in inputs if i is not None), check_trace=False)


def assert_same(traced, eager, rtol: float = 1e-4, atol: float = 1e-4) -> None:
    traced = traced if isinstance(traced, tuple) else (traced,)
    eager = eager if isinstance(eager, tuple) else (eager,)
    for a, b in zip(traced, eager, strict=True):
        assert a.shape == b.shape and a.dtype == b.dtype
        torch.testing.assert_close(a, b, rtol=rtol, atol=atol)


# directions computed by a data-dependent number of iterations or by data-dependent branches:
# a trace records the traced input's count and branches (see the dedicated tests below and the
# protocols report); ContinuousFlow refuses tracing
ITERATIVE = {
    "cnf": ("forward", "inverse"),
    "gaussianization": ("forward", "inverse"),
    "planar": ("inverse",),
    "image-mintnet": ("forward",),
    "iresidual": ("forward",),  # fixed-point solve: see tests/transforms/test_residual.py
}


@pytest.mark.parametrize("direction", ["forward", "inverse"])
@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_a_module_holding_a_layer_traces(case, direction):
    """Trace on small inputs, compare with eager on fresh, larger ones (other branches)."""
    if any(case.id.startswith(k) and direction in v for k, v in ITERATIVE.items()):
        pytest.skip("data-dependent iterations: see the dedicated tests")
    t = build(case, dtype=torch.float32)
    t.eval()
    module, points = (
        (Forward(t), lambda n, s: fresh_x(case, n, s).float())
        if direction == "forward"
        else (Inverse(t), lambda n, s: data_side(case, n, s, dtype=torch.float32))
    )
    unbounded = direction == "forward" or case.data_bounds is None
    ctx = contexts(case, n=4, dtype=torch.float32)
    traced = trace(module, points(4, 5) * (0.1 if unbounded else 1.0), ctx)
    fresh = points(4, 9) * (3.0 if unbounded else 1.0)
    fresh_ctx = contexts(case, n=4, seed=8, dtype=torch.float32)
    inputs = (fresh,) if fresh_ctx is None else (fresh, fresh_ctx)
    with torch.no_grad():
        assert_same(traced(*inputs), module(*inputs))


VECTOR_BUILDERS = {
    "nice": lambda: flows.nice(3, num_transforms=2, hidden_dims=(8,)),
    "realnvp": lambda: flows.realnvp(3, num_transforms=2, hidden_dims=(8,)),
    "realnvp-actnorm": lambda: flows.realnvp(
        3, num_transforms=2, hidden_dims=(8,), normalization="actnorm"
    ),
    "maf": lambda: flows.maf(3, num_transforms=2, hidden_dims=(8,)),
    "maf-batchnorm": lambda: flows.maf(
        3, num_transforms=2, hidden_dims=(8,), normalization="batchnorm"
    ),
    "iaf": lambda: flows.iaf(3, num_transforms=2, hidden_dims=(8,)),
    "planar": lambda: flows.planar(3, num_transforms=2),
    "radial": lambda: flows.radial(3, num_transforms=2),
    "nsf": lambda: flows.nsf(3, num_transforms=2, hidden_dims=(8,), num_bins=4),
    "nsf-coupling": lambda: flows.nsf(
        3, num_transforms=2, hidden_dims=(8,), num_bins=4, coupling=True
    ),
    "gaussianization": lambda: flows.gaussianization(3),
}
GAUSSIANIZATION_BRANCHES = (
    "pyro_flows/transforms/_gaussianization.py takes fast paths chosen by bool(mask.any()) "
    "(lines ~106 and ~143) and _root_finding.py stops iterating by bool(done.all()) (line ~74): "
    "a trace records the branches of the traced input (see the protocols report)"
)


@pytest.mark.parametrize(
    "name",
    [
        n
        for n in VECTOR_BUILDERS
    ],
)
def test_a_module_holding_a_flow_traces(name):
    flow, g = _prepared_flow(name)
    module = LogProb(flow)
    traced = trace(module, 0.1 * torch.randn(5, 3, generator=g))
    for scale in (1.0, 5.0):
        fresh = scale * torch.randn(5, 3, generator=g)
        with torch.no_grad():
            assert_same(traced(fresh), module(fresh))


def _prepared_flow(name: str) -> tuple[Flow, torch.Generator]:
    """The builder's flow, perturbed, its ActNorm/BatchNorm statistics set, in eval mode."""
    torch.manual_seed(0)
    flow = VECTOR_BUILDERS[name]()
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in flow.parameters():
            p.add_(0.3 * torch.randn(p.shape, generator=g))
        flow.train()
        flow.log_prob(torch.randn(64, 3, generator=g))  # ActNorm initialisation, running stats
    flow.eval()
    return flow, g


@pytest.mark.parametrize("name", list(VECTOR_BUILDERS))
def test_the_tracer_sanity_check_passes(name):
    """``torch.jit.trace`` with its defaults (``check_trace=True``) on a flow's ``log_prob``."""
    flow, g = _prepared_flow(name)
    torch.jit.trace(LogProb(flow), (torch.randn(5, 3, generator=g),))


def test_a_flow_of_pyro_flows_and_torch_transforms_traces():
    from torch.distributions.transforms import AffineTransform

    torch.manual_seed(0)
    flow = Flow([MaskedAutoregressive(3, (8,)), AffineTransform(torch.ones(3), 2 * torch.ones(3))])
    module = LogProb(flow)
    traced = trace(module, torch.randn(5, 3))
    fresh = 4 * torch.randn(5, 3)
    with torch.no_grad():
        assert_same(traced(fresh), module(fresh))


def test_planar_inverse_trace_holds_away_from_the_traced_input():
    """At ``y = 0`` the root solve converges in one iteration; elsewhere it needs several, which
    a trace that recorded one iteration does not run."""
    t = Planar(2)
    with torch.no_grad():
        t.u.fill_(3.0)
        t.w.fill_(3.0)
        t.bias.zero_()
    module = Inverse(t)
    traced = trace(module, torch.zeros(1, 2))
    fresh = 3 * torch.randn(50, 2, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert_same(traced(fresh), module(fresh))


def test_marginal_gaussianization_trace_holds_in_the_tails():
    case = next(c for c in CASES if c.id == "gaussianization-d2")
    t = build(case, dtype=torch.float32)
    assert isinstance(t, MarginalGaussianization)
    module = Inverse(t)
    traced = trace(module, 0.01 * data_side(case, n=4, seed=5, dtype=torch.float32))
    fresh = 3 * data_side(case, n=4, seed=9, dtype=torch.float32)
    with torch.no_grad():
        assert_same(traced(fresh), module(fresh))


def _cnf() -> Flow:
    torch.manual_seed(0)
    return flows.cnf(2, hidden_dims=(4,))


@pytest.mark.parametrize("direction", ["log_prob", "rsample"])
def test_continuous_flow_refuses_tracing_with_a_clear_error(direction):
    flow = _cnf()

    class Sample(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.flow = flow

        def forward(self, z: torch.Tensor) -> torch.Tensor:
            return self.flow._push(z, None)

    module = LogProb(flow) if direction == "log_prob" else Sample()
    x = torch.randn(3, 2)
    with pytest.raises(RuntimeError, match=r"ContinuousFlow cannot run under torch\.jit\.trace"):
        torch.jit.trace(module, (x,))
    assert torch.isfinite(module(x)).all()  # nothing half-applied: eager use still works


def test_continuous_flow_under_jit_trace_elbo_says_to_use_trace_elbo():
    flow = _cnf()

    def model():
        pyro.sample("z", dist.Normal(torch.zeros(2), 1.0).to_event(1))

    def guide():
        pyro.module("cnf", flow)
        pyro.sample("z", flow())

    pyro.clear_param_store()
    svi = SVI(model, guide, Adam({"lr": 1e-3}), JitTrace_ELBO())
    with pytest.raises(RuntimeError, match=r"JitTrace_ELBO.*Use pyro\.infer\.Trace_ELBO"):
        svi.step()
    pyro.clear_param_store()
    loss = SVI(model, guide, Adam({"lr": 1e-3}), Trace_ELBO()).step()
    assert isinstance(loss, float) and loss == loss


def test_continuous_flow_error_is_raised_before_any_solve():
    layer = ContinuousFlow(2, hidden_dims=(4,))
    calls = []
    layer.dynamics.register_forward_hook(lambda *args: calls.append(1))
    with pytest.raises(RuntimeError, match="Trace_ELBO"):
        torch.jit.trace(Forward(layer), (torch.randn(3, 2),), check_trace=False)
    assert calls == []


# -- the conditional protocol of .inv ------------------------------------------------------------
def _conditional_image_sequential() -> FlowTransform:
    flow = realnvp_image((1, 4, 4), num_transforms=2, hidden_channels=4, context_dim=2)
    return ImageSequential(list(flow.transforms))


CONDITIONAL_CASES = [
    *CONDITIONAL,
    Case(
        "image-sequential-couplings-ctx2",
        _conditional_image_sequential,
        16,
        context_dim=2,
        event_shape=(1, 4, 4),
        inverse_atol=1e-6,
    ),
]


def _base(case: Case, n: int) -> dist.Distribution:
    zeros = torch.zeros(n, *case.shape, dtype=torch.float64)
    return dist.Normal(zeros, 1.0).to_event(len(case.shape))


@pytest.mark.parametrize("case", CONDITIONAL_CASES, ids=[c.id for c in CONDITIONAL_CASES])
def test_conditional_layer_inverse_in_conditional_transformed_distribution(case):
    """``ConditionalTransformedDistribution(base, [layer.inv])``: the layer maps data -> base.

    ``log_prob(x) = log N(f(x)) + log|det df/dx|`` with ``f`` the layer's forward map, and a
    sample is the layer's inverse applied to a base draw.
    """
    t, n = build(case), 6
    ctx = contexts(case, n=n)
    inv = t.inv
    assert isinstance(inv, ConditionalTransform) and isinstance(inv, InverseFlowTransform)
    assert inv.inv is t
    d = ConditionalTransformedDistribution(_base(case, n), [inv]).condition(ctx)

    # an ODE layer scores y by its own solve from y: as exact as its round trip
    tol = max(1e-9, 10 * case.inverse_atol)
    x = fresh_x(case, n=n, seed=6)
    z, log_det = t.forward_and_log_det(x, ctx)
    expected = _base(case, n).log_prob(z) + log_det
    torch.testing.assert_close(d.log_prob(x), expected, rtol=tol, atol=tol)

    torch.manual_seed(3)
    sample = d.sample()
    torch.manual_seed(3)
    expected_sample = t.inverse_and_log_det(_base(case, n).sample(), ctx)[0]
    torch.testing.assert_close(sample, expected_sample, rtol=tol, atol=tol)
    assert sample.shape == (n, *case.shape)
    draws = d.rsample((4,))
    assert draws.shape == (4, n, *case.shape)


@pytest.mark.parametrize("case", CONDITIONAL_CASES[:3], ids=[c.id for c in CONDITIONAL_CASES[:3]])
def test_conditional_inverse_condition_is_the_inverse_of_the_conditioned_layer(case):
    t = build(case)
    ctx = contexts(case, n=5)
    bound_inv = t.inv.condition(ctx)
    y = data_side(case, n=5)
    torch.testing.assert_close(bound_inv(y), t.inverse_and_log_det(y, ctx)[0])
    x = bound_inv(y)
    torch.testing.assert_close(
        bound_inv.log_abs_det_jacobian(y, x), t.inverse_and_log_det(y, ctx)[1]
    )
    with pytest.raises(ValueError, match=r"condition\(context\)"):
        t.inv(y)  # unconditioned: the layer's clear error, not a shape error


def test_unconditional_layer_inverse_conditions_to_itself():
    t = MaskedAutoregressive(3, (8,))
    assert t.inv.condition(torch.zeros(2)) is t.inv
    d = ConditionalTransformedDistribution(dist.Normal(torch.zeros(3), 1.0).to_event(1), [t.inv])
    x = torch.randn(4, 3)
    z, log_det = t.forward_and_log_det(x)
    expected = dist.Normal(torch.zeros(3), 1.0).to_event(1).log_prob(z) + log_det
    torch.testing.assert_close(d.condition(torch.zeros(2)).log_prob(x), expected)


def test_conditional_compose_transform_module_matches_flow():
    """Pyro's documented pattern: a ``ConditionalComposeTransformModule`` stack (and its
    ``.inv``) scores data exactly as the equivalent :class:`Flow`."""
    torch.manual_seed(0)
    layers = [
        MaskedAutoregressive(3, (8,), context_dim=2),
        Reverse(3),
        MaskedAutoregressive(3, (8,), context_dim=2),
    ]
    flow = Flow(layers)
    base = dist.Normal(torch.zeros(3), 1.0).to_event(1)
    stack = ConditionalComposeTransformModule(layers)
    x, ctx = torch.randn(5, 3), torch.randn(5, 2)
    forward = ConditionalTransformedDistribution(base, [stack]).condition(ctx)
    torch.testing.assert_close(forward.log_prob(x), flow.log_prob(x, ctx))
    # the inverse stack pushes base draws through data -> base: its density at w is the base
    # density at the flow's forward image of w times the forward Jacobian
    w, y, log_det = x, x, torch.zeros(5)
    for layer in layers:
        y, ld = layer.forward_and_log_det(y, ctx if layer.context_dim else None)
        log_det = log_det + ld
    inverse = ConditionalTransformedDistribution(base, [stack.inv]).condition(ctx)
    torch.testing.assert_close(inverse.log_prob(w), base.log_prob(y) + log_det)
