"""Fuzz: every vector layer of :mod:`pyro_flows.transforms` on bad hyper-parameters, inputs of the
wrong shape and bad contexts."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from torch.distributions import ExpTransform

from pyro_flows import transforms as T

from ._cases import INF, NAN, bad_positive_ints, raises_naming, result_or_refusal

D, C = 3, 2

#: name -> (factory (input_dim, context_dim) -> layer, takes a context)
LAYERS: dict[str, tuple[Callable[..., T.FlowTransform], bool]] = {
    "ActNorm": (lambda d, c=None: T.ActNorm(d), False),
    "BatchNorm": (lambda d, c=None: T.BatchNorm(d), False),
    "Rescale": (lambda d, c=None: T.Rescale(d), False),
    "ElementwiseAffine": (lambda d, c=None: T.ElementwiseAffine(d), False),
    "Reverse": (lambda d, c=None: T.Reverse(d), False),
    "SinhArcsinh": (lambda d, c=None: T.SinhArcsinh(d), False),
    "TukeyH": (lambda d, c=None: T.TukeyH(d), False),
    "UnitLowerTriangular": (lambda d, c=None: T.UnitLowerTriangular(d), False),
    "InvertibleLinear": (lambda d, c=None: T.InvertibleLinear(d), False),
    "Logit": (lambda d, c=None: T.Logit(d), False),
    "AdditiveCoupling": (lambda d, c=None: T.AdditiveCoupling(d, (4,), context_dim=c), True),
    "AffineCoupling": (lambda d, c=None: T.AffineCoupling(d, (4,), context_dim=c), True),
    "SplineCoupling": (
        lambda d, c=None: T.SplineCoupling(d, (4,), num_bins=3, context_dim=c),
        True,
    ),
    "MaskedAutoregressive": (
        lambda d, c=None: T.MaskedAutoregressive(d, (4,), context_dim=c),
        True,
    ),
    "InverseAutoregressive": (
        lambda d, c=None: T.InverseAutoregressive(d, (4,), context_dim=c),
        True,
    ),
    "SplineAutoregressive": (
        lambda d, c=None: T.SplineAutoregressive(d, (4,), num_bins=3, context_dim=c),
        True,
    ),
    "InverseSplineAutoregressive": (
        lambda d, c=None: T.InverseSplineAutoregressive(d, (4,), num_bins=3, context_dim=c),
        True,
    ),
    "Planar": (lambda d, c=None: T.Planar(d, context_dim=c, hidden_dims=(4,)), True),
    "Radial": (lambda d, c=None: T.Radial(d, context_dim=c, hidden_dims=(4,)), True),
    "MarginalGaussianization": (
        lambda d, c=None: T.MarginalGaussianization(d, 4, context_dim=c, hidden_dims=(4,)),
        True,
    ),
    "ContinuousFlow": (
        lambda d, c=None: T.ContinuousFlow(d, (4,), context_dim=c, rtol=1e-3, atol=1e-3),
        True,
    ),
}
NAMES = sorted(LAYERS)
CONDITIONAL = sorted(n for n, (_, cond) in LAYERS.items() if cond)
#: layers whose constructor takes input_dim first (Permute takes a permutation)
WITH_INPUT_DIM = NAMES


def _layer(name: str, context_dim: int | None = None) -> T.FlowTransform:
    torch.manual_seed(0)
    return LAYERS[name][0](D, context_dim).eval()


def _inside(n: int = 4) -> torch.Tensor:
    """Points inside every layer's domain (Logit's is about (-0.06, 1.06))."""
    return torch.rand(n, D, generator=torch.Generator().manual_seed(0)) * 0.8 + 0.1


@pytest.mark.parametrize("value, fragments", bad_positive_ints("input_dim"))
@pytest.mark.parametrize("name", WITH_INPUT_DIM)
def test_bad_input_dim(name, value, fragments):
    with raises_naming(fragments):
        LAYERS[name][0](value)


@pytest.mark.parametrize("value, fragments", bad_positive_ints("context_dim"))
@pytest.mark.parametrize("name", CONDITIONAL)
def test_bad_context_dim(name, value, fragments):
    with raises_naming(fragments):
        LAYERS[name][0](D, value)


@pytest.mark.parametrize("direction", ["forward_and_log_det", "inverse_and_log_det"])
@pytest.mark.parametrize("name", NAMES)
def test_wrong_event_size(name, direction):
    with raises_naming(("(..., 3)", "(4, 5)")):
        getattr(_layer(name), direction)(torch.zeros(4, 5))


@pytest.mark.parametrize("name", NAMES)
def test_call_wrong_event_size(name):
    with raises_naming(("(..., 3)", "(4, 2)")):
        _layer(name)(torch.zeros(4, 2))


@pytest.mark.parametrize("name", NAMES)
def test_numpy_input_refused_or_correct(name):
    layer, x = _layer(name), _inside()
    got = result_or_refusal(lambda: layer.inverse_and_log_det(x.numpy()), ("ndarray",))
    if got is not None:
        expected = layer.inverse_and_log_det(x)
        assert torch.allclose(got[0], expected[0], atol=1e-5)
        assert torch.allclose(got[1], expected[1], atol=1e-5)


@pytest.mark.parametrize("name", NAMES)
def test_empty_batch(name):
    y, log_det = _layer(name).inverse_and_log_det(torch.zeros(0, D))
    assert y.shape == (0, D) and log_det.shape == (0,)


@pytest.mark.parametrize("direction", ["forward_and_log_det", "inverse_and_log_det"])
@pytest.mark.parametrize("name", CONDITIONAL)
def test_missing_context(name, direction):
    with raises_naming(("context_dim=2", "None")):
        getattr(_layer(name, C), direction)(_inside())


@pytest.mark.parametrize("name", CONDITIONAL)
def test_unbound_call_of_conditional_layer(name):
    with raises_naming(("context_dim=2", "condition")):
        _layer(name, C)(_inside())


@pytest.mark.parametrize("name", CONDITIONAL)
def test_wrong_context_size(name):
    with raises_naming(("(..., 2)", "(4, 3)")):
        _layer(name, C).inverse_and_log_det(_inside(), torch.zeros(4, 3))
    with raises_naming(("(..., 2)", "(4, 3)")):
        _layer(name, C).condition(torch.zeros(4, 3))


@pytest.mark.parametrize("bad", [NAN, INF])
@pytest.mark.parametrize("name", CONDITIONAL)
def test_non_finite_context(name, bad):
    c = torch.zeros(4, C)
    c[0, 1] = bad
    with raises_naming(("non-finite", "context")):
        _layer(name, C).inverse_and_log_det(_inside(), c)


@pytest.mark.parametrize("name", CONDITIONAL)
def test_context_on_unconditional_layer(name):
    with raises_naming("unconditional"):
        _layer(name).inverse_and_log_det(_inside(), torch.zeros(4, C))


# -- layer-specific hyper-parameters ------------------------------------------------------------
@pytest.mark.parametrize(
    "make, fragments",
    [
        pytest.param(lambda: T.BatchNorm(3, momentum=0.0), ("momentum", "0"), id="bn-momentum-0"),
        pytest.param(lambda: T.BatchNorm(3, momentum=1.5), ("momentum", "1.5"), id="bn-momentum"),
        pytest.param(lambda: T.BatchNorm(3, momentum=NAN), ("momentum", "nan"), id="bn-mom-nan"),
        pytest.param(lambda: T.BatchNorm(3, eps=0.0), ("eps", "0"), id="bn-eps-0"),
        pytest.param(lambda: T.BatchNorm(3, eps=NAN), ("eps", "nan"), id="bn-eps-nan"),
        pytest.param(lambda: T.BatchNorm(3, eps="a"), ("eps", "a"), id="bn-eps-str"),
        pytest.param(lambda: T.Logit(3, alpha=0.5), ("alpha", "0.5"), id="logit-alpha-half"),
        pytest.param(lambda: T.Logit(3, alpha=-0.1), ("alpha", "-0.1"), id="logit-alpha-neg"),
        pytest.param(lambda: T.Logit(3, alpha=NAN), ("alpha", "nan"), id="logit-alpha-nan"),
        pytest.param(lambda: T.Logit(3, alpha=True), ("alpha", "bool"), id="logit-alpha-bool"),
        pytest.param(lambda: T.Logit(3, alpha="0.1"), ("alpha", "str"), id="logit-alpha-str"),
        pytest.param(lambda: T.ElementwiseAffine(3, scale=0.0), ("scale", "0"), id="ea-scale-0"),
        pytest.param(lambda: T.ElementwiseAffine(3, scale=-1.0), ("scale", "-1"), id="ea-scale"),
        pytest.param(lambda: T.ElementwiseAffine(3, scale=NAN), ("scale", "nan"), id="ea-s-nan"),
        pytest.param(lambda: T.ElementwiseAffine(3, loc=NAN), ("loc", "nan"), id="ea-loc-nan"),
        pytest.param(
            lambda: T.ElementwiseAffine(3, loc=torch.zeros(4)), ("loc", "(4,)"), id="ea-loc-shape"
        ),
        pytest.param(lambda: T.Permute([0, 0, 1]), ("permutation", "[0, 0, 1]"), id="perm-dup"),
        pytest.param(lambda: T.Permute([0, 2]), ("permutation", "[0, 2]"), id="perm-range"),
        pytest.param(lambda: T.Permute([[0, 1]]), ("permutation",), id="perm-2d"),
        pytest.param(lambda: T.Permute([]), ("permutation",), id="perm-empty"),
        pytest.param(lambda: T.Permute([0.0, 1.0]), ("permutation",), id="perm-float"),
        pytest.param(
            lambda: T.InvertibleLinear(3, parametrization="svd"),
            ("parametrization", "'svd'"),
            id="linear-param",
        ),
        pytest.param(
            lambda: T.MarginalGaussianization(3, kernel="cauchy"), ("kernel", "'cauchy'"),
            id="mg-kernel",
        ),
        pytest.param(
            lambda: T.MarginalGaussianization(3, min_scale=0.0), ("min_scale", "0"), id="mg-min"
        ),
        pytest.param(
            lambda: T.MarginalGaussianization(3, min_scale=NAN), ("min_scale", "nan"),
            id="mg-min-nan",
        ),
        pytest.param(
            lambda: T.MarginalGaussianization(3, max_iter=0), ("max_iter", "0"), id="mg-iter"
        ),
        pytest.param(
            lambda: T.MarginalGaussianization(3, num_components=0), ("num_components", "0"),
            id="mg-components",
        ),
        pytest.param(lambda: T.AffineCoupling(3, split_dim=0), ("split_dim", "0"), id="split-0"),
        pytest.param(lambda: T.AffineCoupling(3, split_dim=3), ("split_dim", "3"), id="split-D"),
        pytest.param(lambda: T.AffineCoupling(1), ("input_dim", "1"), id="coupling-1d"),
        pytest.param(
            lambda: T.SplineCoupling(3, num_bins=0), ("num_bins", "0"), id="spline-bins-0"
        ),
        pytest.param(
            lambda: T.SplineAutoregressive(3, bound=-1.0), ("bound", "-1"), id="spline-bound"
        ),
        pytest.param(
            lambda: T.SplineAutoregressive(3, bound=NAN), ("bound", "nan"), id="spline-nan"
        ),
        pytest.param(
            lambda: T.MaskedAutoregressive(3, input_order=[0, 0, 1]),
            ("input_order", "[0, 0, 1]"),
            id="maf-order-dup",
        ),
        pytest.param(
            lambda: T.MaskedAutoregressive(3, input_order=[0, 1]),
            ("input_order", "[0, 1]"),
            id="maf-order-short",
        ),
        pytest.param(
            lambda: T.WrappedTransform("exp", 3), ("transform", "str"), id="wrapped-not-transform"
        ),
        pytest.param(
            lambda: T.WrappedTransform(ExpTransform(), 0), ("input_dim", "0"), id="wrapped-dim"
        ),
    ],
)
def test_bad_layer_option(make, fragments):
    with raises_naming(fragments):
        make()


# -- Logit's domain -----------------------------------------------------------------------------
@pytest.mark.parametrize(
    "value, fragments",
    [
        pytest.param(1.5, ("open interval", "1.5"), id="above"),
        pytest.param(-0.5, ("open interval", "-0.5"), id="below"),
        pytest.param(NAN, ("open interval", "non-finite"), id="nan"),
        pytest.param(INF, ("open interval", "non-finite"), id="inf"),
    ],
)
def test_logit_inverse_outside_domain(value, fragments):
    y = torch.full((2, 3), 0.5)
    y[1, 2] = value
    with raises_naming(fragments):
        T.Logit(3).inverse_and_log_det(y)


def test_logit_alpha_zero_boundary():
    with raises_naming(("open interval", "1")):
        T.Logit(3, alpha=0.0).inverse_and_log_det(torch.tensor([[0.5, 0.5, 1.0]]))


def test_logit_float64_far_tail_finite():
    t = T.Logit(3, alpha=1e-6)
    # |x| = 12: the distance of y to the boundary, sigmoid(-12) ~ 6e-6, keeps ~10 digits
    x = torch.tensor([[-12.0, 0.0, 12.0]], dtype=torch.float64)
    y, log_det = t.forward_and_log_det(x)
    back, inv_log_det = t.inverse_and_log_det(y)
    assert torch.isfinite(log_det).all() and torch.isfinite(inv_log_det).all()
    assert torch.allclose(back, x, atol=1e-6)
