"""Fuzz: every flow builder of :mod:`pyro_flows.flows` refuses bad hyper-parameters with an error
naming the argument and the value given."""

from __future__ import annotations

import pyro.distributions as dist
import pytest
import torch
from torch import nn

from pyro_flows import flows

from ._cases import NAN, bad_positive_floats, bad_positive_ints, raises_naming

# every registered builder (the one registry: a new builder is fuzzed without an edit here)
VECTOR_BUILDERS = {name: flows.get_builder(name) for name in flows.builder_names(event="vector")}
IMAGE_BUILDERS = {name: flows.get_builder(name) for name in flows.builder_names(event="image")}


def _small(name: str) -> dict:
    """Small options every vector builder accepts (so a good call is fast)."""
    return {"num_transforms": 1, "hidden_dims": (4,)}


def _small_image(name: str) -> dict:
    if name == "mintnet":
        return {"num_transforms": 1, "hidden_per_channel": 1}
    return {"num_transforms": 1, "hidden_channels": 4}


@pytest.mark.parametrize("name", sorted(VECTOR_BUILDERS))
def test_good_call_builds(name):
    flow = VECTOR_BUILDERS[name](2, **_small(name))
    assert flow.input_dim == 2


@pytest.mark.parametrize("value, fragments", bad_positive_ints("input_dim"))
@pytest.mark.parametrize("name", sorted(VECTOR_BUILDERS))
def test_bad_input_dim(name, value, fragments):
    with raises_naming(fragments):
        VECTOR_BUILDERS[name](value, **_small(name))


@pytest.mark.parametrize("value, fragments", bad_positive_ints("num_transforms"))
@pytest.mark.parametrize("name", sorted(VECTOR_BUILDERS))
def test_bad_num_transforms(name, value, fragments):
    options = {**_small(name), "num_transforms": value}
    with raises_naming(fragments):
        VECTOR_BUILDERS[name](2, **options)


@pytest.mark.parametrize(
    "hidden, fragments",
    [
        pytest.param((0,), ("hidden_dims", "0"), id="zero"),
        pytest.param((-2,), ("hidden_dims", "-2"), id="negative"),
        pytest.param((2.5,), ("hidden_dims", "2.5"), id="float"),
        pytest.param((True,), ("hidden_dims", "True"), id="bool"),
        pytest.param("ab", ("hidden_dims",), id="str"),
    ],
)
@pytest.mark.parametrize("name", sorted(VECTOR_BUILDERS))
def test_bad_hidden_dims(name, hidden, fragments):
    # context_dim=2: planar and radial use hidden_dims only for their context networks
    options = {**_small(name), "hidden_dims": hidden}
    with raises_naming(fragments):
        VECTOR_BUILDERS[name](2, context_dim=2, **options)


@pytest.mark.parametrize("value, fragments", bad_positive_ints("context_dim"))
@pytest.mark.parametrize("name", sorted(VECTOR_BUILDERS))
def test_bad_context_dim(name, value, fragments):
    with raises_naming(fragments):
        VECTOR_BUILDERS[name](2, context_dim=value, **_small(name))


@pytest.mark.parametrize("num_transforms", [1, 2])
@pytest.mark.parametrize("name", ["nice", "realnvp", "maf", "iaf", "nsf"])
@pytest.mark.parametrize("value", ["shuffle", 3])
def test_bad_permutation(name, value, num_transforms):
    # refused whether or not the stack has a gap between layers to put a permutation in
    options = {**_small(name), "num_transforms": num_transforms}
    with raises_naming(("permutation", repr(value))):
        VECTOR_BUILDERS[name](3, permutation=value, **options)


@pytest.mark.parametrize("name", ["realnvp", "maf"])
def test_bad_normalization(name):
    with raises_naming(("normalization", "'layernorm'")):
        VECTOR_BUILDERS[name](3, normalization="layernorm", **_small(name))


@pytest.mark.parametrize("name", ["maf", "iaf"])
def test_bad_scale(name):
    with raises_naming(("scale", "'sigmoid'")):
        VECTOR_BUILDERS[name](3, scale="sigmoid", **_small(name))


@pytest.mark.parametrize("value, fragments", bad_positive_floats("log_scale_bound"))
@pytest.mark.parametrize("name", ["maf", "iaf"])
def test_bad_log_scale_bound(name, value, fragments):
    with raises_naming(fragments):
        VECTOR_BUILDERS[name](3, scale="exp", log_scale_bound=value, **_small(name))


@pytest.mark.parametrize("coupling", [False, True])
@pytest.mark.parametrize("value, fragments", bad_positive_ints("num_bins"))
def test_nsf_bad_num_bins(value, fragments, coupling):
    with raises_naming(fragments):
        flows.nsf(3, num_bins=value, coupling=coupling, **_small("nsf"))


@pytest.mark.parametrize("coupling", [False, True])
@pytest.mark.parametrize("value, fragments", bad_positive_floats("bound"))
def test_nsf_bad_bound(value, fragments, coupling):
    with raises_naming(fragments):
        flows.nsf(3, bound=value, coupling=coupling, **_small("nsf"))


def test_nsf_coupling_needs_two_dims():
    with raises_naming(("input_dim", "1")):
        flows.nsf(1, coupling=True, **_small("nsf"))


@pytest.mark.parametrize("name", ["nice", "realnvp"])
def test_activation_must_be_a_module_class(name):
    with raises_naming("activation"):
        VECTOR_BUILDERS[name](3, activation="relu", **_small(name))


@pytest.mark.parametrize("name", sorted(VECTOR_BUILDERS))
def test_base_of_wrong_event_size(name):
    base = dist.Normal(torch.zeros(4), 1.0).to_event(1)
    with raises_naming(("4", "3")):
        VECTOR_BUILDERS[name](3, base=base, **_small(name))


@pytest.mark.parametrize("name", sorted(VECTOR_BUILDERS))
def test_base_of_wrong_type(name):
    with raises_naming("base"):
        VECTOR_BUILDERS[name](3, base="normal", **_small(name))


# -- gaussianization --------------------------------------------------------------------------
@pytest.mark.parametrize("value, fragments", bad_positive_ints("num_components"))
def test_gaussianization_bad_num_components(value, fragments):
    with raises_naming(fragments):
        flows.gaussianization(2, num_transforms=1, num_components=value)


@pytest.mark.parametrize("option, value", [("kernel", "cauchy"), ("rotation", "svd")])
def test_gaussianization_bad_choice(option, value):
    with raises_naming((option, repr(value))):
        flows.gaussianization(2, num_transforms=1, num_components=4, **{option: value})


@pytest.mark.parametrize(
    "data, fragments",
    [
        pytest.param(torch.randn(20, 3), ("(rows, 2)", "(20, 3)"), id="wrong-columns"),
        pytest.param(torch.randn(20), ("(rows, 2)", "(20,)"), id="one-dim"),
        pytest.param(torch.tensor([[0.0, NAN]] * 20), ("non-finite",), id="nan"),
        pytest.param(torch.tensor([[0.0, float("inf")]] * 20), ("non-finite",), id="inf"),
        pytest.param(torch.zeros(0, 2), ("2 rows", "(0, 2)"), id="empty"),
        pytest.param(torch.zeros(1, 2), ("2 rows", "(1, 2)"), id="one-row"),
        pytest.param("data", ("data", "str"), id="str"),
    ],
)
def test_gaussianization_bad_data(data, fragments):
    with raises_naming(fragments):
        flows.gaussianization(2, num_transforms=1, num_components=4, data=data)


def test_gaussianization_numpy_data_same_as_tensor():
    data = torch.randn(200, 2, generator=torch.Generator().manual_seed(0))
    torch.manual_seed(0)
    a = flows.gaussianization(2, num_transforms=2, num_components=4, data=data)
    torch.manual_seed(0)
    b = flows.gaussianization(2, num_transforms=2, num_components=4, data=data.double().numpy())
    x = data[:5]
    assert torch.allclose(a.log_prob(x), b.log_prob(x), atol=1e-4)


def test_initialize_gaussianization_refuses_bad_options():
    from pyro_flows.flows_gaussianization import initialize_gaussianization

    flow = flows.gaussianization(2, num_transforms=1, num_components=4)
    data = torch.randn(50, 2)
    with raises_naming(("rotation_init", "'svd'")):
        initialize_gaussianization(flow, data, rotation_init="svd")
    with raises_naming(("bandwidth", "'scott'")):
        initialize_gaussianization(flow, data, bandwidth="scott")
    with raises_naming(("flow", "Linear")):
        initialize_gaussianization(nn.Linear(2, 2), data)  # type: ignore[arg-type]


def test_initialize_gaussianization_refusal_leaves_flow_unchanged():
    from pyro_flows.flows_gaussianization import initialize_gaussianization

    from ._cases import unchanged

    flow = flows.gaussianization(2, num_transforms=2, num_components=4)
    with unchanged(flow), raises_naming("bandwidth"):
        initialize_gaussianization(flow, torch.randn(50, 2), bandwidth="scott")


# -- cnf -------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "option, value, fragments",
    [
        ("time", 0.0, ("time", "0")),
        ("time", NAN, ("time", "nan")),
        ("rtol", -1.0, ("rtol", "-1")),
        ("atol", float("inf"), ("atol", "inf")),
        ("method", "euler2", ("method", "'euler2'")),
        ("trace", "exactly", ("trace", "'exactly'")),
        ("activation", "relu6", ("activation", "'relu6'")),
    ],
)
def test_cnf_bad_options(option, value, fragments):
    with raises_naming(fragments):
        flows.cnf(2, hidden_dims=(4,), **{option: value})


# -- image builders ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    "shape, fragments",
    [
        pytest.param((1, 8), ("shape", "(1, 8)"), id="two-entries"),
        pytest.param((0, 8, 8), ("shape", "0"), id="zero-channels"),
        pytest.param((1, -8, 8), ("shape", "-8"), id="negative-height"),
        pytest.param((1, 8.0, 8), ("shape", "8.0"), id="float-height"),
        pytest.param(8, ("shape", "int"), id="int"),
        pytest.param("1x8x8", ("shape", "str"), id="str"),
        pytest.param((1, 7, 8), ("(1, 7, 8)",), id="odd-height"),
    ],
)
@pytest.mark.parametrize("name", sorted(IMAGE_BUILDERS))
def test_image_bad_shape(name, shape, fragments):
    with raises_naming(fragments):
        IMAGE_BUILDERS[name](shape, **_small_image(name))


@pytest.mark.parametrize("value, fragments", bad_positive_ints("num_transforms"))
@pytest.mark.parametrize("name", sorted(IMAGE_BUILDERS))
def test_image_bad_num_transforms(name, value, fragments):
    options = {**_small_image(name), "num_transforms": value}
    with raises_naming(fragments):
        IMAGE_BUILDERS[name]((1, 4, 4), **options)


@pytest.mark.parametrize("name", sorted(IMAGE_BUILDERS))
@pytest.mark.parametrize(
    "value, fragments",
    [(3, ("num_scales=3", "(1, 4, 4)")), (0, ("num_scales", "0")), (True, ("num_scales", "True"))],
)
def test_image_bad_num_scales(name, value, fragments):
    with raises_naming(fragments):
        IMAGE_BUILDERS[name]((1, 4, 4), num_scales=value, **_small_image(name))


@pytest.mark.parametrize("value, fragments", bad_positive_ints("hidden_channels"))
@pytest.mark.parametrize("name", ["glow", "realnvp_image", "idf"])
def test_image_bad_hidden_channels(name, value, fragments):
    options = {**_small_image(name), "hidden_channels": value}
    with raises_naming(fragments):
        IMAGE_BUILDERS[name]((1, 4, 4), **options)


@pytest.mark.parametrize("name", ["glow", "realnvp_image", "idf"])
@pytest.mark.parametrize("value", [-1, 1.5, True])
def test_image_bad_num_blocks(name, value):
    with raises_naming(("num_blocks", str(value))):
        IMAGE_BUILDERS[name]((1, 4, 4), num_blocks=value, **_small_image(name))


@pytest.mark.parametrize("value, fragments", bad_positive_ints("context_dim"))
@pytest.mark.parametrize("name", ["glow", "realnvp_image"])
def test_image_bad_context_dim(name, value, fragments):
    with raises_naming(fragments):
        IMAGE_BUILDERS[name]((1, 4, 4), context_dim=value, **_small_image(name))


def test_glow_bad_parametrization():
    with raises_naming(("parametrization", "'svd'")):
        flows.glow((1, 4, 4), parametrization="svd", **_small_image("glow"))


def test_realnvp_image_bad_normalization():
    with raises_naming(("normalization", "'batchnorm'")):
        flows.realnvp_image((1, 4, 4), normalization="batchnorm", **_small_image("realnvp_image"))


@pytest.mark.parametrize(
    "option, value, fragments",
    [
        ("kernel_size", 2, ("kernel_size", "2")),
        ("kernel_size", 0, ("kernel_size", "0")),
        ("tol", 0.0, ("tol", "0")),
        ("tol", NAN, ("tol", "nan")),
        ("tol", float("inf"), ("tol", "inf")),
        ("max_iter", 0, ("max_iter", "0")),
        ("hidden_per_channel", 0, ("hidden_per_channel", "0")),
    ],
)
def test_mintnet_bad_options(option, value, fragments):
    options = {**_small_image("mintnet"), option: value}
    with raises_naming(fragments):
        flows.mintnet((1, 4, 4), **options)


@pytest.mark.parametrize(
    "value, fragments",
    [(1, ("num_levels", "1")), (0, ("num_levels", "0")), (2.5, ("num_levels", "2.5")),
     (True, ("num_levels", "True"))],
)
def test_idf_bad_num_levels(value, fragments):
    with raises_naming(fragments):
        flows.idf((1, 4, 4), num_levels=value, **_small_image("idf"))


@pytest.mark.parametrize(
    "context_dim, context, fragments",
    [
        pytest.param(None, torch.zeros(50, 1), ("unconditional",), id="context-unconditional"),
        pytest.param(1, None, ("context_dim=1",), id="context-missing"),
        pytest.param(1, torch.zeros(49, 1), ("(50, 1)", "(49, 1)"), id="context-rows"),
        pytest.param(1, torch.full((50, 1), NAN), ("non-finite",), id="context-nan"),
    ],
)
def test_initialize_gaussianization_bad_context_changes_nothing(context_dim, context, fragments):
    from pyro_flows.flows_gaussianization import initialize_gaussianization

    from ._cases import unchanged

    torch.manual_seed(0)
    flow = flows.gaussianization(
        2, num_transforms=2, hidden_dims=(4,), context_dim=context_dim, num_components=4
    )
    with unchanged(flow), raises_naming(fragments):
        initialize_gaussianization(flow, torch.randn(50, 2), context=context)
