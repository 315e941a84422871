"""Fuzz: the image layers (:mod:`pyro_flows.transforms.image`) and the image flows
(``glow``, ``realnvp_image``, ``mintnet``, ``idf``) on bad options, shapes, values and contexts."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pyro_flows import flows
from pyro_flows.transforms import image as I

from ._cases import INF, NAN, raises_naming, result_or_refusal, unchanged

SHAPE = (2, 4, 4)

#: name -> factory(shape) of one image layer
LAYERS = {
    "ChannelActNorm": lambda s: I.ChannelActNorm(s),
    "ChannelPermute": lambda s: I.ChannelPermute(s),
    "ImageAffineCoupling": lambda s: I.ImageAffineCoupling(s, "checkerboard", 0, 4),
    "ImageAffineCoupling-channel": lambda s: I.ImageAffineCoupling(s, "channel", 1, 4),
    "IntegerAdditiveCoupling": lambda s: I.IntegerAdditiveCoupling(s, "checkerboard", 0, 4),
    "InvertibleConv1x1": lambda s: I.InvertibleConv1x1(s),
    "MintNetLayer": lambda s: I.MintNetLayer(s, 1),
    "MultiScale": lambda s: I.MultiScale(s),
    "ImageSequential": lambda s: I.ImageSequential([I.ChannelActNorm(s), I.ChannelPermute(s)]),
    "Squeeze": lambda s: I.Squeeze(s),
}
LAYER_NAMES = sorted(LAYERS)


def _layer(name: str) -> I.ImageTransform:
    torch.manual_seed(0)
    return LAYERS[name](SHAPE).eval()


def _images(n: int = 3, shape: tuple[int, ...] = SHAPE) -> torch.Tensor:
    return torch.randn(n, *shape, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize(
    "shape, fragments",
    [
        pytest.param((2, 4), ("shape", "(2, 4)"), id="two-entries"),
        pytest.param((0, 4, 4), ("shape", "0"), id="zero"),
        pytest.param((2, 4, 4.0), ("shape", "4.0"), id="float"),
        pytest.param((2, True, 4), ("shape", "True"), id="bool"),
        pytest.param("2x4x4", ("shape", "str"), id="str"),
        pytest.param(None, ("shape", "NoneType"), id="none"),
    ],
)
@pytest.mark.parametrize("name", LAYER_NAMES)
def test_bad_shape(name, shape, fragments):
    with raises_naming(fragments):
        LAYERS[name](shape)


@pytest.mark.parametrize("direction", ["forward_and_log_det", "inverse_and_log_det"])
@pytest.mark.parametrize("name", LAYER_NAMES)
@pytest.mark.parametrize(
    "shape, fragments",
    [
        pytest.param((3, 2, 4, 5), ("(..., 2, 4, 4)", "(3, 2, 4, 5)"), id="width"),
        pytest.param((3, 32), ("(..., 2, 4, 4)", "(3, 32)"), id="rows"),
        pytest.param((4, 4), ("(..., 2, 4, 4)", "(4, 4)"), id="two-dims"),
    ],
)
def test_wrong_image_shape(name, direction, shape, fragments):
    layer = _layer(name)
    if name == "Squeeze" and direction == "inverse_and_log_det":
        fragments = ("(..., 8, 2, 2)", fragments[1])
    with raises_naming(fragments):
        getattr(layer, direction)(torch.zeros(shape))


@pytest.mark.parametrize("name", LAYER_NAMES)
def test_numpy_images_refused_or_correct(name):
    layer, x = _layer(name), _images()
    got = result_or_refusal(lambda: layer.forward_and_log_det(x.numpy()), ("ndarray",))
    if got is not None:
        assert torch.allclose(got[0], layer.forward_and_log_det(x)[0], atol=1e-5)


@pytest.mark.parametrize("name", LAYER_NAMES)
def test_empty_batch(name):
    y, log_det = _layer(name).forward_and_log_det(torch.zeros(0, *SHAPE))
    assert y.shape[0] == 0 and log_det.shape == (0,)


@pytest.mark.parametrize("name", LAYER_NAMES)
def test_extra_batch_dims(name):
    layer, x = _layer(name), _images(6)
    y, log_det = layer.forward_and_log_det(x.reshape(2, 3, *SHAPE))
    y_flat, log_det_flat = layer.forward_and_log_det(x)
    assert log_det.shape == (2, 3)
    assert torch.allclose(y.reshape(y_flat.shape), y_flat, atol=1e-5)
    assert torch.allclose(log_det.reshape(-1), log_det_flat, atol=1e-4)


@pytest.mark.parametrize(
    "make, fragments",
    [
        pytest.param(lambda: I.ImageAffineCoupling(SHAPE, "stripes"), ("mask", "'stripes'"),
                     id="coupling-mask"),
        pytest.param(lambda: I.ImageAffineCoupling(SHAPE, parity=2), ("parity", "2"),
                     id="coupling-parity"),
        pytest.param(lambda: I.ImageAffineCoupling(SHAPE, parity=True), ("parity", "True"),
                     id="coupling-parity-bool"),
        pytest.param(lambda: I.ImageAffineCoupling((1, 4, 4), "channel"), ("2 channels", "1"),
                     id="channel-mask-one-channel"),
        pytest.param(lambda: I.ImageAffineCoupling(SHAPE, hidden_channels=0),
                     ("hidden_channels", "0"), id="coupling-hidden"),
        pytest.param(lambda: I.ImageAffineCoupling(SHAPE, num_blocks=-1), ("num_blocks", "-1"),
                     id="coupling-blocks"),
        pytest.param(lambda: I.ImageAffineCoupling(SHAPE, context_dim=0), ("context_dim", "0"),
                     id="coupling-context"),
        pytest.param(lambda: I.IntegerAdditiveCoupling(SHAPE, input_scale=0.0),
                     ("input_scale", "0"), id="idf-in-0"),
        pytest.param(lambda: I.IntegerAdditiveCoupling(SHAPE, input_scale=NAN),
                     ("input_scale", "nan"), id="idf-in-nan"),
        pytest.param(lambda: I.IntegerAdditiveCoupling(SHAPE, output_scale=INF),
                     ("output_scale", "inf"), id="idf-out-inf"),
        pytest.param(lambda: I.IntegerAdditiveCoupling(SHAPE, output_scale=True),
                     ("output_scale", "True"), id="idf-out-bool"),
        pytest.param(lambda: I.InvertibleConv1x1(SHAPE, "svd"), ("parametrization", "'svd'"),
                     id="conv-param"),
        pytest.param(lambda: I.MintNetLayer(SHAPE, tol=NAN), ("tol", "nan"), id="mint-tol-nan"),
        pytest.param(lambda: I.MintNetLayer(SHAPE, tol=INF), ("tol", "inf"), id="mint-tol-inf"),
        pytest.param(lambda: I.MintNetLayer(SHAPE, tol=-1.0), ("tol", "-1"), id="mint-tol-neg"),
        pytest.param(lambda: I.MintNetLayer(SHAPE, max_iter=0), ("max_iter", "0"),
                     id="mint-iter"),
        pytest.param(lambda: I.MintNetLayer(SHAPE, kernel_size=4), ("kernel_size", "4"),
                     id="mint-kernel-even"),
        pytest.param(lambda: I.MintNetLayer(SHAPE, hidden_per_channel=0),
                     ("hidden_per_channel", "0"), id="mint-hidden"),
        pytest.param(lambda: I.MintNetLayer(SHAPE, reverse="yes"), ("reverse", "str"),
                     id="mint-reverse-str"),
        pytest.param(lambda: I.ChannelPermute(SHAPE, [0, 0]), ("permutation", "[0, 0]"),
                     id="permute-dup"),
        pytest.param(lambda: I.ChannelPermute(SHAPE, [0, 1, 2]), ("permutation", "[0, 1, 2]"),
                     id="permute-long"),
        pytest.param(lambda: I.ChannelPermute(SHAPE, [0.5, 1]), ("permutation",),
                     id="permute-float"),
        pytest.param(lambda: I.Squeeze((1, 3, 4)), ("even", "(1, 3, 4)"), id="squeeze-odd"),
        pytest.param(lambda: I.Unsqueeze((3, 4, 4)), ("divisible by 4", "(3, 4, 4)"),
                     id="unsqueeze-channels"),
        pytest.param(lambda: I.MultiScale((1, 3, 4)), ("even", "(1, 3, 4)"), id="ms-odd"),
        pytest.param(lambda: I.MultiScale(SHAPE, keep_channels=0), ("keep_channels", "0"),
                     id="ms-keep-0"),
        pytest.param(lambda: I.MultiScale(SHAPE, keep_channels=9), ("keep_channels", "9"),
                     id="ms-keep-big"),
        pytest.param(lambda: I.MultiScale(SHAPE, steps=I.ChannelActNorm(SHAPE)),
                     ("steps", "(8, 2, 2)", "(2, 4, 4)"), id="ms-steps-shape"),
        pytest.param(lambda: I.MultiScale(SHAPE, steps="glow"), ("steps", "str"),
                     id="ms-steps-type"),
        pytest.param(lambda: I.ImageSequential([]), ("at least one",), id="seq-empty"),
        pytest.param(lambda: I.ImageSequential([I.ChannelActNorm(SHAPE), "x"]),
                     ("ImageTransform", "str"), id="seq-type"),
        pytest.param(lambda: I.ImageSequential([I.Squeeze(SHAPE), I.ChannelActNorm(SHAPE)]),
                     ("(8, 2, 2)", "(2, 4, 4)"), id="seq-shapes"),
    ],
)
def test_bad_layer_option(make, fragments):
    with raises_naming(fragments):
        make()


def test_conditional_coupling_contexts():
    t = I.ImageAffineCoupling(SHAPE, "channel", 0, 4, context_dim=3)
    x = _images()
    with raises_naming(("context_dim=3", "None")):
        t.forward_and_log_det(x)
    with raises_naming(("(..., 3)", "(3, 2)")):
        t.forward_and_log_det(x, torch.zeros(3, 2))
    with raises_naming(("(3,)", "(4,)")):
        t.forward_and_log_det(x, torch.zeros(4, 3))
    c = torch.zeros(3, 3)
    c[0, 0] = NAN
    with raises_naming(("non-finite", "context")):
        t.forward_and_log_det(x, c)


def test_actnorm_initialize_refuses_one_value_per_channel():
    t = I.ChannelActNorm((2, 1, 1))
    with unchanged(t), raises_naming(("2 values", "(1, 2, 1, 1)")):
        t.initialize(torch.zeros(1, 2, 1, 1))


def test_actnorm_initialize_refuses_non_finite():
    t = I.ChannelActNorm(SHAPE)
    x = _images()
    x[0, 0, 0, 0] = NAN
    with unchanged(t), raises_naming("non-finite"):
        t.initialize(x)


def test_integer_coupling_overflow_is_an_error():
    t = I.IntegerAdditiveCoupling(SHAPE, "checkerboard", 0, 4)
    with torch.no_grad():
        t.conditioner.last.bias.fill_(3.0)
    x = torch.full((1, *SHAPE), 2.0**24)
    with pytest.raises(OverflowError, match="2\\^24|16777216"):
        t.forward_and_log_det(x)


# -- image flows --------------------------------------------------------------------------------
FLOW_SHAPE = (1, 4, 4)
IMAGE_FLOWS = {
    "glow": lambda c=None: flows.glow(FLOW_SHAPE, 1, 4, c),
    "realnvp_image": lambda c=None: flows.realnvp_image(FLOW_SHAPE, 1, 4, c),
    "mintnet": lambda c=None: flows.mintnet(FLOW_SHAPE, 1, 1, tol=1e-5),
    "idf": lambda c=None: flows.idf(FLOW_SHAPE, 1, 4, num_levels=16),
}
FLOW_NAMES = sorted(IMAGE_FLOWS)


def _flow(name: str, context_dim: int | None = None):
    torch.manual_seed(0)
    return IMAGE_FLOWS[name](context_dim).eval()


def _pixels(n: int = 3) -> torch.Tensor:
    """Integer-valued images (valid for every flow, the integer one included)."""
    generator = torch.Generator().manual_seed(0)
    return torch.randint(0, 16, (n, *FLOW_SHAPE), generator=generator).float()


@pytest.mark.parametrize("name", FLOW_NAMES)
@pytest.mark.parametrize(
    "shape, fragments",
    [
        pytest.param((3, 1, 4, 5), ("(..., 1, 4, 4)", "(3, 1, 4, 5)"), id="width"),
        pytest.param((3, 2, 4, 4), ("(..., 1, 4, 4)", "(3, 2, 4, 4)"), id="channels"),
        pytest.param((4, 4), ("(..., 1, 4, 4)", "(4, 4)"), id="two-dims"),
        pytest.param((), ("(..., 1, 4, 4)", "()"), id="scalar"),
    ],
)
def test_flow_log_prob_wrong_shape(name, shape, fragments):
    with raises_naming(fragments):
        _flow(name).log_prob(torch.zeros(shape))


@pytest.mark.parametrize("name", FLOW_NAMES)
@pytest.mark.parametrize("bad", [NAN, INF])
def test_flow_log_prob_non_finite(name, bad):
    x = _pixels()
    x[1, 0, 2, 3] = bad
    with raises_naming(("non-finite", "x")):
        _flow(name).log_prob(x)


@pytest.mark.parametrize("name", FLOW_NAMES)
def test_flow_log_prob_numpy_same_as_tensor(name):
    flow, x = _flow(name), _pixels()
    assert torch.allclose(flow.log_prob(x.numpy().astype(np.float64)), flow.log_prob(x), atol=1e-4)


@pytest.mark.parametrize("name", FLOW_NAMES)
def test_flow_log_prob_empty_batch(name):
    assert _flow(name).log_prob(torch.zeros(0, *FLOW_SHAPE)).shape == (0,)


@pytest.mark.parametrize("name", FLOW_NAMES)
def test_flow_sample_bad_and_empty_shapes(name):
    flow = _flow(name)
    with raises_naming(("sample_shape", "-2")):
        flow.sample(-2)
    assert flow.sample(0).shape == (0, *FLOW_SHAPE)


def test_idf_log_prob_refuses_non_integers():
    x = _pixels()
    x[0, 0, 0, 0] = 0.5
    with raises_naming(("integer", "0.5")):
        _flow("idf").log_prob(x)


def test_idf_rsample_is_a_clear_error():
    with pytest.raises(NotImplementedError, match="rsample|reparametrised"):
        _flow("idf").rsample((2,))


@pytest.mark.parametrize("name", ["glow", "realnvp_image"])
def test_conditional_image_flow_contexts(name):
    flow, x = _flow(name, 2), _pixels()
    with raises_naming(("context_dim=2", "None")):
        flow.log_prob(x)
    with raises_naming(("(..., 2)", "(3, 5)")):
        flow.log_prob(x, torch.zeros(3, 5))
    c = torch.zeros(3, 2)
    c[2, 1] = INF
    with raises_naming(("non-finite", "context")):
        flow.log_prob(x, c)
    assert flow.sample((2,), torch.zeros(3, 2)).shape == (2, 3, *FLOW_SHAPE)


def test_mintnet_sample_meets_its_tolerance():
    flow = _flow("mintnet")
    z = torch.randn(2, *FLOW_SHAPE, generator=torch.Generator().manual_seed(3))
    x = flow.transforms[0].forward_without_log_det(z)
    back = flow.transforms[0].inverse_and_log_det(x)[0]
    assert torch.allclose(back, z, atol=1e-3)
