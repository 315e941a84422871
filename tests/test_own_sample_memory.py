"""``OwnSampleMemory`` keeps its values as one vector per dtype and device (issue 18): every
change the per-tensor comparison caught is still caught, whatever group the tensor is in."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from pyro_flows import flows
from pyro_flows.distribution import OwnSampleMemory


class Mixed(nn.Module):
    """Parameters and buffers of several dtypes; the float64 and bool groups hold one tensor
    each (the groups whose saved vector must not be a view of the live tensor)."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(3, 2)
        self.scale = nn.Parameter(torch.ones(2, dtype=torch.float64))
        self.register_buffer("mask", torch.tensor([True, False, True]))
        self.register_buffer("order", torch.tensor([2, 0, 1]))
        self.shared = self.lin  # the same submodule twice


def _remembered(seed: int) -> tuple[OwnSampleMemory, torch.Tensor, torch.Tensor, Mixed]:
    torch.manual_seed(seed)
    module, memory = Mixed(), OwnSampleMemory()
    x, log_q = torch.randn(4, 3), torch.randn(4, requires_grad=True)
    memory.remember(x, log_q, (None,), module)
    assert memory.recall(x, (None,), module) is log_q
    return memory, x, log_q, module


EDITS = {
    "float32 weight via .data": lambda m: m.lin.weight.data.add_(1e-7),
    "float64 single-tensor group": lambda m: m.scale.data.mul_(2.0),
    "bool single-tensor group": lambda m: m.mask.logical_not_(),
    "int64 buffer": lambda m: m.order.copy_(torch.tensor([0, 1, 2])),
    "NaN, even in place of a NaN": lambda m: m.lin.bias.data.fill_(float("nan")),
    "same values, other dtype": lambda m: setattr(m.scale, "data", m.scale.data.float()),
    "same values, other shape": lambda m: setattr(
        m.lin.weight, "data", m.lin.weight.data.reshape(3, 2)
    ),
    "a parameter replaced": lambda m: setattr(m.lin, "bias", nn.Parameter(m.lin.bias + 1)),
    "a submodule added": lambda m: m.add_module("extra", nn.Linear(1, 1)),
    "a buffer removed": lambda m: delattr(m, "order"),
}


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("edit", list(EDITS))
def test_any_change_is_seen(edit, seed):
    memory, x, _, module = _remembered(seed)
    with torch.no_grad():
        EDITS[edit](module)
    assert memory.recall(x, (None,), module) is None


def test_a_nan_parameter_never_matches_itself():
    memory, x, log_q, module = _remembered(0)
    module.lin.bias.data[0] = float("nan")
    memory.remember(x, log_q, (None,), module)
    assert memory.recall(x, (None,), module) is None


@pytest.mark.parametrize("seed", [0, 1])
def test_the_sample_and_the_context_are_compared_too(seed):
    memory, x, log_q, module = _remembered(seed)
    context = torch.randn(5)
    memory.remember(x, log_q, (context,), module)
    assert memory.recall(x, (context,), module) is log_q
    context[0] += 1.0
    assert memory.recall(x, (context,), module) is None
    memory.remember(x, log_q, (None,), module)
    x.data[0, 0] += 1.0
    assert memory.recall(x, (None,), module) is None


def test_an_edit_undone_serves_again_and_other_tensors_never():
    memory, x, log_q, module = _remembered(0)
    before = module.lin.weight.detach().clone()
    module.lin.weight.data.add_(1.0)
    assert memory.recall(x, (None,), module) is None
    module.lin.weight.data.copy_(before)
    assert memory.recall(x, (None,), module) is log_q
    assert memory.recall(x.clone(), (None,), module) is None


def test_an_iaf_scores_its_own_sample_once_and_sees_an_edit():
    torch.manual_seed(0)
    flow = flows.iaf(3, num_transforms=2, hidden_dims=(8,))
    d = flow()
    x = d.rsample((5,))
    calls = []
    original = flow.log_prob
    flow.log_prob = lambda *a, **k: calls.append(1) or original(*a, **k)  # type: ignore[method-assign]
    first = d.log_prob(x)
    assert not calls
    next(flow.parameters()).data.add_(0.5)
    second = d.log_prob(x)
    assert calls and not torch.allclose(first, second)
