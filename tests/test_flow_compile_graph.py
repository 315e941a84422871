"""The public passes of a :class:`~pyro_flows.Flow` and of its :class:`FlowDistribution` trace
under ``torch.compile`` as one graph (no graph break), with and without a context, and give what
eager mode gives; eager mode keeps every value check.

Compiled calls check shapes and dtypes, not values (``pyro_flows._validation.compiling``): the
finiteness checks, the overflow check of ``log_prob`` and the checked-context ``ContextVar``
are skipped only while TorchDynamo traces. TorchDynamo alone traces here (``backend="eager"``,
``torch._dynamo.explain``): seconds per call, no Inductor compile; ``fullgraph=True`` makes
any graph break an error."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
import torch._dynamo

from pyro_flows import Flow, flows
from pyro_flows.distribution import FlowDistribution

BUILDERS: dict[str, Callable[..., Flow]] = {
    "maf": lambda **kw: flows.maf(3, 2, (8,), **kw),
    "realnvp": lambda **kw: flows.realnvp(3, 2, (8,), **kw),
    "iaf": lambda **kw: flows.iaf(3, 2, (8,), **kw),
    "nsf": lambda **kw: flows.nsf(3, 2, (8,), **kw),
}
CONTEXT_DIM = 2
ROWS = 6


@pytest.fixture(autouse=True)
def fresh_dynamo():
    """One thread; TorchDynamo's caches emptied around each test (the lambdas below share code
    objects across flows, which would otherwise pile up recompilations)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()
    torch.set_num_threads(threads)


def build(name: str, conditional: bool, seed: int) -> tuple[Flow, torch.Tensor | None]:
    torch.manual_seed(seed)
    flow = BUILDERS[name](context_dim=CONTEXT_DIM if conditional else None)
    with torch.no_grad():  # move every layer away from its identity start
        for p in flow.parameters():
            p.add_(0.3 * torch.randn_like(p))
    context = torch.randn(ROWS, CONTEXT_DIM) if conditional else None
    return flow, context


def public_calls(flow: Flow, context: torch.Tensor | None) -> dict[str, Callable]:
    """Each public pass as a function of ``(x, context)``; draws take ``ROWS`` rows."""
    shape = (ROWS,) if context is None else ()

    def own_score(x, c, path_gradient=False):
        d = FlowDistribution(flow, c, path_gradient=path_gradient)
        y = d.rsample(shape)
        return y, d.log_prob(y)

    return {
        "log_prob": lambda x, c: flow.log_prob(x, c),
        "base_and_log_prob": lambda x, c: flow.base_and_log_prob(x, c),
        "rsample_and_log_prob": lambda x, c: flow.rsample_and_log_prob(shape, c),
        "rsample": lambda x, c: flow.rsample(shape, c),
        "sample": lambda x, c: flow.sample(shape, c),
        "dist.log_prob": lambda x, c: flow(c).log_prob(x),
        "dist.rsample": lambda x, c: flow(c).rsample(shape),
        "dist.own_score": own_score,
        "dist.own_score_path_gradient": lambda x, c: own_score(x, c, True),
    }


def run(fn: Callable, x: torch.Tensor, context: torch.Tensor | None, seed: int):
    torch.manual_seed(seed)
    return fn(x, context)


def assert_one_graph_equal_to_eager(name: str, conditional: bool, methods: list[str] | None):
    flow, context = build(name, conditional, seed=3)
    x = torch.randn(ROWS, 3)
    for method, fn in public_calls(flow, context).items():
        if methods is not None and method not in methods:
            continue
        expected = run(fn, x, context, seed=11)
        compiled = torch.compile(fn, backend="eager", fullgraph=True)  # a break is an error
        got = run(compiled, x, context, seed=11)
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6, msg=method)


@pytest.mark.parametrize("conditional", [False, True], ids=["plain", "context"])
def test_every_public_pass_is_one_graph_equal_to_eager(conditional):
    assert_one_graph_equal_to_eager("maf", conditional, None)


@pytest.mark.parametrize("conditional", [False, True], ids=["plain", "context"])
@pytest.mark.parametrize("name", ["realnvp", "iaf", "nsf"])
def test_both_directions_are_one_graph_equal_to_eager(name, conditional):
    assert_one_graph_equal_to_eager(name, conditional, ["log_prob", "rsample_and_log_prob"])


@pytest.mark.parametrize(("name", "conditional"), [("maf", True), ("realnvp", False)])
def test_explain_counts_one_graph_and_no_break(name, conditional):
    flow, context = build(name, conditional, seed=5)
    x = torch.randn(ROWS, 3)
    for method, fn in public_calls(flow, context).items():
        torch._dynamo.reset()
        explanation = torch._dynamo.explain(fn)(x, context)
        assert explanation.graph_break_count == 0, (method, explanation.break_reasons)
        assert explanation.graph_count == 1, method


@pytest.mark.parametrize("path_gradient", [False, True])
@pytest.mark.parametrize("name", ["maf", "iaf"])
def test_the_compiled_training_loss_has_the_eager_gradient(name, path_gradient):
    """The ELBO-style loss ``mean(log q(x))`` of a distribution's own draws: one graph, the
    eager value and parameter gradient (the path-only gradient with ``path_gradient``)."""
    flow, context = build(name, True, seed=7)

    def loss(context):
        d = FlowDistribution(flow, context, path_gradient=path_gradient)
        return d.log_prob(d.rsample((4,))).mean()

    grads = []
    for fn in (loss, torch.compile(loss, backend="eager", fullgraph=True)):
        flow.zero_grad()
        torch.manual_seed(2)
        value = fn(context)
        value.backward()
        grads.append((value.detach(), [p.grad.clone() for p in flow.parameters()]))
    (v_eager, g_eager), (v_compiled, g_compiled) = grads
    torch.testing.assert_close(v_compiled, v_eager, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(g_compiled, g_eager, rtol=1e-5, atol=1e-6)
    assert any(g.abs().max() > 0 for g in g_eager)


def test_eager_calls_still_check_values_after_a_compiled_call():
    flow, context = build("maf", True, seed=1)
    x = torch.randn(ROWS, 3)
    compiled = torch.compile(flow.log_prob, backend="eager", fullgraph=True)
    compiled(x, context)
    bad_x = x.clone()
    bad_x[2, 0] = float("nan")
    with pytest.raises(ValueError, match=r"non-finite values in 1 row\(s\) of x \(flat row "
                       r"indices \[2\]\)"):
        flow.log_prob(bad_x, context)
    bad_context = context.clone()
    bad_context[4, 1] = float("inf")
    with pytest.raises(ValueError, match=r"non-finite values \(NaN or inf\) in 1 row\(s\) of "
                       r"context"):
        flow.log_prob(x, bad_context)
    with pytest.raises(ValueError, match="non-finite"):
        flow.rsample_and_log_prob((), bad_context)
    # compiled calls check shapes, not values: NaN goes through to the result
    assert torch.isnan(compiled(bad_x, context)[2])
    with pytest.raises(Exception, match=r"expected x of shape \(\.\.\., 3\)"):
        compiled(torch.randn(ROWS, 4), context)


def shift_parameters(flow: Flow) -> None:
    with torch.no_grad():
        for p in flow.parameters():
            p.add_(0.1)


def test_an_own_sample_remembered_eagerly_is_recomputed_when_compiled():
    """Pairs remembered eagerly are never served under compile (no value comparison there),
    and pairs remembered under compile are never served eagerly: a parameter change between
    draw and score always shows."""
    flow, _ = build("maf", False, seed=4)
    d = flow()
    y = d.rsample((ROWS,))
    shift_parameters(flow)  # after the draw
    fresh = flow.log_prob(y)
    compiled = torch.compile(lambda v: d.log_prob(v), backend="eager", fullgraph=True)
    torch.testing.assert_close(compiled(y), fresh)

    draw = torch.compile(lambda: d.rsample((ROWS,)), backend="eager", fullgraph=True)
    y = draw()
    shift_parameters(flow)
    torch.testing.assert_close(d.log_prob(y), flow.log_prob(y))
