"""Packed parameters: PackedLinear (nn.Linear with [W | b] in one tensor) and the MADE built on
it, the tail layers' packed rows, and state dicts saved with the old, separate keys."""

from __future__ import annotations

import copy

import pyro
import pyro.distributions as dist
import pytest
import torch
from torch import nn

from pyro_flows import flows
from pyro_flows.infer import AutoFlow
from pyro_flows.nn import MADE
from pyro_flows.nn.packed_linear import PackedLinear
from pyro_flows.transforms import SinhArcsinh, TukeyH


def test_map_and_gradients_match_nn_linear():
    torch.manual_seed(0)
    packed = PackedLinear(4, 3).double()
    dense = nn.Linear(4, 3).double()
    with torch.no_grad():
        dense.weight.copy_(packed.weight)
        dense.bias.copy_(packed.bias)
    x = torch.randn(6, 4, dtype=torch.float64)
    torch.testing.assert_close(packed(x), dense(x))
    (packed(x) ** 2).sum().backward()
    (dense(x) ** 2).sum().backward()
    grad = packed.weight_and_bias.grad
    torch.testing.assert_close(grad[:, :-1], dense.weight.grad)
    torch.testing.assert_close(grad[:, -1], dense.bias.grad)


def test_initial_values_are_nn_linears_from_the_same_seed():
    torch.manual_seed(3)
    packed = PackedLinear(5, 2)
    torch.manual_seed(3)
    dense = nn.Linear(5, 2)
    assert torch.equal(packed.weight, dense.weight) and torch.equal(packed.bias, dense.bias)


def test_views_write_through_and_one_tensor_is_registered():
    layer = PackedLinear(3, 2)
    with torch.no_grad():
        layer.weight.zero_()
        layer.bias.fill_(1.5)
    assert [n for n, _ in layer.named_parameters()] == ["weight_and_bias"]
    assert torch.equal(layer.weight_and_bias, torch.tensor([[0.0, 0.0, 0.0, 1.5]] * 2))


def test_a_packed_made_loads_a_state_dict_saved_before_packing():
    """Keys ``layers.i.weight`` / ``layers.i.bias`` load into ``layers.i.weight_and_bias``."""
    torch.manual_seed(0)
    made = MADE(3, (8, 8), param_dims=(1, 1))
    with torch.no_grad():
        for p in made.parameters():
            p.add_(0.1 * torch.randn_like(p))
    fresh = MADE(3, (8, 8), param_dims=(1, 1)).pack_parameters_()
    fresh.load_state_dict(made.state_dict())  # strict: no missing or unexpected keys
    x = torch.randn(5, 3)
    for a, b in zip(fresh(x), made(x), strict=True):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("context_dim", [None, 2])
def test_packing_keeps_the_map_and_its_gradients(context_dim):
    torch.manual_seed(0)
    made = MADE(4, (16, 16), param_dims=(1, 2), context_dim=context_dim).double()
    with torch.no_grad():
        for p in made.parameters():
            p.add_(0.3 * torch.randn_like(p))
    packed = copy.deepcopy(made).pack_parameters_()
    assert len(list(packed.parameters())) == len(packed.layers) == 3
    x = torch.randn(7, 4, dtype=torch.float64)
    c = None if context_dim is None else torch.randn(7, context_dim, dtype=torch.float64)
    outs, outs_packed = made(x, c), packed(x, c)
    for a, b in zip(outs, outs_packed, strict=True):
        torch.testing.assert_close(a, b)
    sum(o.square().sum() for o in outs).backward()
    sum(o.square().sum() for o in outs_packed).backward()
    for layer, layer_packed in zip(made.layers, packed.layers, strict=True):
        grad = layer_packed.weight_and_bias.grad
        torch.testing.assert_close(grad[:, :-1], layer.weight.grad)
        torch.testing.assert_close(grad[:, -1], layer.bias.grad)


def test_a_packed_iaf_keeps_both_directions():
    """The sequential inverse reuses the masked packed weights pass after pass."""
    torch.manual_seed(0)
    flow = flows.iaf(3, num_transforms=2, hidden_dims=(8,)).double()
    with torch.no_grad():
        for p in flow.parameters():
            p.add_(0.2 * torch.randn_like(p))
    packed = copy.deepcopy(flow)
    for m in packed.modules():
        if isinstance(m, MADE):
            m.pack_parameters_()
    x = torch.randn(6, 3, dtype=torch.float64)
    torch.testing.assert_close(packed.log_prob(x), flow.log_prob(x))
    torch.manual_seed(1)
    y, lq = flow.rsample_and_log_prob((4,))
    torch.manual_seed(1)
    y_p, lq_p = packed.rsample_and_log_prob((4,))
    torch.testing.assert_close(y_p, y)
    torch.testing.assert_close(lq_p, lq)


def test_a_made_without_a_trainable_weight_is_left_as_it_is():
    """D = 1 without hidden layers: the weight is a fixed zero buffer, nothing to pack."""
    made = MADE(1, (), param_dims=(1, 1)).pack_parameters_()
    assert isinstance(made.layers[0], nn.Linear)
    shift, _ = made(torch.randn(5, 1))
    assert shift.shape == (5, 1)


def test_autoflow_packs_its_mades():
    def model():
        pyro.sample("z", dist.Normal(torch.zeros(3), 1.0).to_event(1))

    guide = AutoFlow(model)
    guide()
    mades = [m for m in guide.flow.modules() if isinstance(m, MADE)]
    assert mades and all(isinstance(layer, PackedLinear) for m in mades for layer in m.layers)


@pytest.mark.parametrize(
    "make,old_names,packed",
    [
        (lambda: SinhArcsinh(3), ("raw_tail", "skew"), "tail_and_skew"),
        (lambda: TukeyH(3), ("raw_h_pos", "raw_h_neg"), "raw_h"),
    ],
)
def test_tail_layers_hold_one_tensor_and_load_their_old_split_state(make, old_names, packed):
    torch.manual_seed(0)
    layer = make()
    assert [n for n, _ in layer.named_parameters()] == [packed]
    old = {name: 0.1 * torch.randn(3).abs() for name in old_names}
    fresh = make()
    fresh.load_state_dict(old)  # strict
    for name in old_names:
        assert torch.equal(getattr(fresh, name), old[name])
    with torch.no_grad():  # the views write through
        getattr(fresh, old_names[0]).zero_()
    assert getattr(fresh, packed)[0].abs().max() == 0


def test_a_packed_made_follows_a_dtype_change_and_adds_no_buffers():
    torch.manual_seed(0)
    made = MADE(3, (8,), param_dims=(1, 1))
    buffers = {name for name, _ in made.named_buffers()}
    made.pack_parameters_()
    x = torch.randn(4, 3)
    made(x)  # builds the packed masks
    assert {name for name, _ in made.named_buffers()} == buffers
    assert set(made.state_dict()) == buffers | {"layers.0.weight_and_bias",
                                                "layers.1.weight_and_bias"}
    out = made.double()(x.double())
    assert all(o.dtype == torch.float64 for o in out)
