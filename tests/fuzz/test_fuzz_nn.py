"""Fuzz: the networks of :mod:`pyro_flows.nn` (``MLP``, ``MADE``, ``ConvResNet``,
``MaskedConv2d``) on bad sizes, options and inputs."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from pyro_flows.nn import MADE, MLP, ConvResNet, MaskedConv2d
from pyro_flows.nn.masked_conv import triangular_masks

from ._cases import INF, NAN, bad_positive_ints, raises_naming


# -- MLP ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("value, fragments", bad_positive_ints("out_features"))
def test_mlp_bad_out_features(value, fragments):
    with raises_naming(fragments):
        MLP(2, (4,), value)


@pytest.mark.parametrize(
    "value, fragments", [(-1, ("in_features", "-1")), (1.5, ("in_features", "1.5")),
                         (True, ("in_features", "True"))]
)
def test_mlp_bad_in_features(value, fragments):
    with raises_naming(fragments):
        MLP(value, (4,), 2)


@pytest.mark.parametrize("value, fragments", bad_positive_ints("context_dim"))
def test_mlp_bad_context_dim(value, fragments):
    with raises_naming(fragments):
        MLP(2, (4,), 2, context_dim=value)


@pytest.mark.parametrize("hidden", [(0,), (4, -1), (2.0,), "ab", 3.5])
def test_mlp_bad_hidden_dims(hidden):
    with raises_naming("hidden_dims"):
        MLP(2, hidden, 2)


@pytest.mark.parametrize(
    "activation, fragments",
    [("relu", ("activation", "str")), (nn.ReLU(), ("activation", "ReLU")), (3, ("activation",))],
)
def test_mlp_bad_activation(activation, fragments):
    with raises_naming(fragments):
        MLP(2, (4,), 2, activation=activation)


@pytest.mark.parametrize("value", [NAN, INF, "0.1", True])
def test_mlp_bad_out_scale(value):
    with raises_naming("out_scale"):
        MLP(2, (4,), 2, out_scale=value)


def test_mlp_no_inputs():
    with raises_naming(("in_features", "context_dim")):
        MLP(0, (4,), 2)


@pytest.mark.parametrize(
    "x, context, fragments",
    [
        pytest.param(torch.zeros(5, 3), torch.zeros(5, 1), ("(..., 2)", "(5, 3)"), id="x-size"),
        pytest.param(torch.zeros(5, 2), torch.zeros(5, 2), ("(..., 1)", "(5, 2)"), id="c-size"),
        pytest.param(torch.zeros(5, 2), None, ("context_dim=1", "None"), id="c-missing"),
        pytest.param(torch.zeros(5, 2), torch.zeros(4, 1), ("(5,)", "(4,)"), id="batch"),
    ],
)
def test_mlp_forward_bad_inputs(x, context, fragments):
    net = MLP(2, (4,), 3, context_dim=1)
    with raises_naming(fragments):
        net(x, context)


def test_mlp_forward_context_on_unconditional():
    with raises_naming(("context_dim=None", "(5, 1)")):
        MLP(2, (4,), 3)(torch.zeros(5, 2), torch.zeros(5, 1))


def test_mlp_forward_empty_batch():
    assert MLP(2, (4,), 3, context_dim=1)(torch.zeros(0, 2), torch.zeros(0, 1)).shape == (0, 3)


# -- MADE ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("value, fragments", bad_positive_ints("input_dim"))
def test_made_bad_input_dim(value, fragments):
    with raises_naming(fragments):
        MADE(value, (8,))


@pytest.mark.parametrize(
    "order, fragments",
    [([0, 0, 1], ("input_order", "[0, 0, 1]")), ([0, 1], ("input_order", "[0, 1]")),
     ([0, 1, 3], ("input_order", "[0, 1, 3]"))],
)
def test_made_bad_input_order(order, fragments):
    with raises_naming(fragments):
        MADE(3, (8,), input_order=order)


@pytest.mark.parametrize("param_dims", [(0,), (-1, 1), (), (1.5,)])
def test_made_bad_param_dims(param_dims):
    with raises_naming("param_dims"):
        MADE(3, (8,), param_dims=param_dims)


def test_made_forward_wrong_size():
    with raises_naming(("(..., 3)", "(4, 2)")):
        MADE(3, (8,))(torch.zeros(4, 2))


# -- ConvResNet ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "kwargs, fragments",
    [
        ({"hidden_channels": 0}, ("hidden_channels", "0")),
        ({"out_channels": 0}, ("out_channels", "0")),
        ({"in_channels": -1}, ("in_channels", "-1")),
        ({"num_blocks": -1}, ("num_blocks", "-1")),
        ({"num_blocks": 1.5}, ("num_blocks", "1.5")),
        ({"context_dim": 0}, ("context_dim", "0")),
        ({"context_dim": True}, ("context_dim", "True")),
        ({"out_scale": NAN}, ("out_scale", "nan")),
        ({"out_scale": "0"}, ("out_scale", "str")),
        ({"in_channels": 0}, ("in_channels", "context_dim")),
    ],
)
def test_conv_resnet_bad_options(kwargs, fragments):
    options = {"in_channels": 2, "hidden_channels": 4, "out_channels": 2, **kwargs}
    with raises_naming(fragments):
        ConvResNet(**options)


@pytest.mark.parametrize(
    "x, context, fragments",
    [
        pytest.param(torch.zeros(2, 3, 4, 4), torch.zeros(2, 1), ("2 channels", "(2, 3, 4, 4)"),
                     id="channels"),
        pytest.param(torch.zeros(2, 4, 4), torch.zeros(2, 1), ("(N, 2, H, W)", "(2, 4, 4)"),
                     id="three-dims"),
        pytest.param(torch.zeros(2, 2, 4, 4), torch.zeros(2, 3), ("(N, 1)", "(2, 3)"),
                     id="context-size"),
        pytest.param(torch.zeros(2, 2, 4, 4), torch.zeros(3, 1), ("(N, 1)", "(3, 1)"),
                     id="context-rows"),
        pytest.param(torch.zeros(2, 2, 4, 4), None, ("context_dim=1", "None"), id="missing"),
    ],
)
def test_conv_resnet_bad_inputs(x, context, fragments):
    net = ConvResNet(2, 4, 2, context_dim=1)
    with raises_naming(fragments):
        net(x, context)


def test_conv_resnet_context_on_unconditional():
    with raises_naming(("context_dim=None", "(2, 1)")):
        ConvResNet(2, 4, 2)(torch.zeros(2, 2, 4, 4), torch.zeros(2, 1))


# -- MaskedConv2d -------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "kwargs, fragments",
    [
        ({"kernel_size": 2}, ("kernel_size", "2")),
        ({"kernel_size": 0}, ("kernel_size", "0")),
        ({"in_group": 0}, ("in_group", "0")),
        ({"out_group": -1}, ("out_group", "-1")),
        ({"out_group": 3}, ("groups",)),
        ({"in_channels": 0}, ("in_channels", "0")),
        ({"reverse": "yes"}, ("reverse", "str")),
        ({"bias": 1}, ("bias", "int")),
        ({"scale": NAN}, ("scale", "nan")),
        ({"diagonal_init": 0.0}, ("diagonal_init", "0")),
        ({"diagonal_init": -1.0}, ("diagonal_init", "-1")),
        ({"diagonal_init": INF}, ("diagonal_init", "inf")),
    ],
)
def test_masked_conv_bad_options(kwargs, fragments):
    options = {"in_channels": 2, "out_channels": 4, "out_group": 2, **kwargs}
    with raises_naming(fragments):
        MaskedConv2d(**options)


@pytest.mark.parametrize(
    "args, fragments",
    [((2, 4, 3, 0, 1), ("in_group", "0")), ((3, 4, 3, 2, 2), ("whole groups",)),
     ((2, 2, 4), ("kernel_size", "4"))],
)
def test_triangular_masks_bad_options(args, fragments):
    with raises_naming(fragments):
        triangular_masks(*args)


def test_masked_conv_forward_wrong_channels():
    with raises_naming(("2", "(1, 3, 4, 4)")):
        MaskedConv2d(2, 4, out_group=2)(torch.zeros(1, 3, 4, 4))
