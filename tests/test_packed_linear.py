"""Packed parameters: PackedLinear (nn.Linear with [W | b] in one tensor) and the MADE built on
it, the tail layers' packed rows, and state dicts saved with the old, separate keys."""

from __future__ import annotations

import pytest
import torch
from torch import nn

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


def test_a_made_saved_with_nn_linear_layers_loads():
    """A state dict from before the packing (keys ``layers.i.weight`` / ``layers.i.bias``)."""
    torch.manual_seed(0)
    made = MADE(3, (8, 8), param_dims=(1, 1))
    old = {}
    for key, value in made.state_dict().items():
        if key.endswith("weight_and_bias"):
            stem = key[: -len("weight_and_bias")]
            old[stem + "weight"], old[stem + "bias"] = value[:, :-1].clone(), value[:, -1].clone()
        else:
            old[key] = value.clone()
    fresh = MADE(3, (8, 8), param_dims=(1, 1))
    fresh.load_state_dict(old)  # strict: no missing or unexpected keys
    x = torch.randn(5, 3)
    for a, b in zip(fresh(x), made(x), strict=True):
        torch.testing.assert_close(a, b)


def test_made_has_one_parameter_tensor_per_layer():
    made = MADE(4, (16, 16, 16), param_dims=(1, 1), context_dim=2)
    assert len(list(made.parameters())) == len(made.layers) == 4


def test_a_fully_masked_weight_stays_zero_under_training():
    """D = 1 without context: nothing feeds the output, so it is a learnable constant."""
    torch.manual_seed(0)
    made = MADE(1, (), param_dims=(1, 1))
    assert made.layers[0].weight.abs().max() == 0
    optim = torch.optim.Adam(made.parameters(), lr=0.1)
    for _ in range(5):
        optim.zero_grad()
        shift, _ = made(torch.randn(16, 1))
        ((shift - 2.0) ** 2).mean().backward()
        assert made.layers[0].weight_and_bias.grad[:, :-1].abs().max() == 0
        optim.step()
    assert made.layers[0].weight.abs().max() == 0 and made.layers[0].bias.abs().max() > 0.1


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
