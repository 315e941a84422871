"""Fuzz: :mod:`pyro_flows.distributions` (the discretised logistic and its learnable base)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pyro_flows.distributions import DiscretizedLogistic, DiscretizedLogisticBase

from ._cases import INF, NAN, raises_naming, unchanged


@pytest.mark.parametrize(
    "loc, scale, fragments",
    [
        pytest.param(0.0, 0.0, ("scale", "0"), id="scale-0"),
        pytest.param(0.0, -1.0, ("scale", "-1"), id="scale-negative"),
        pytest.param(0.0, NAN, ("scale", "nan"), id="scale-nan"),
        pytest.param(0.0, INF, ("scale", "inf"), id="scale-inf"),
        pytest.param(NAN, 1.0, ("loc", "nan"), id="loc-nan"),
        pytest.param(INF, 1.0, ("loc", "inf"), id="loc-inf"),
        pytest.param(torch.zeros(3), torch.ones(2), ("(3,)", "(2,)"), id="shapes"),
        pytest.param("0", 1.0, ("loc", "str"), id="loc-str"),
        pytest.param(torch.zeros(2, dtype=torch.complex64), 1.0, ("loc", "complex"), id="complex"),
    ],
)
def test_discretized_logistic_bad_parameters(loc, scale, fragments):
    with raises_naming(fragments):
        DiscretizedLogistic(torch.as_tensor(loc) if not isinstance(loc, str) else loc,
                            torch.as_tensor(scale))


def test_discretized_logistic_numbers_and_lists():
    d = DiscretizedLogistic([0.0, 1.0], 2.0)
    expected = DiscretizedLogistic(torch.tensor([0.0, 1.0]), torch.tensor([2.0, 2.0]))
    z = torch.tensor([0.0, 3.0])
    assert torch.allclose(d.log_prob(z), expected.log_prob(z), atol=1e-6)


@pytest.mark.parametrize(
    "z, fragments",
    [
        pytest.param(torch.tensor([0.5, 1.0, 2.0]), ("integer", "0.5"), id="fraction"),
        pytest.param(torch.tensor([NAN, 1.0, 2.0]), ("integer", "nan"), id="nan"),
        pytest.param(torch.tensor([INF, 1.0, 2.0]), ("integer", "inf"), id="inf"),
        pytest.param(torch.zeros(4), ("(3,)", "(4,)"), id="shape"),
        pytest.param("1", ("str",), id="str"),
    ],
)
def test_discretized_logistic_bad_values(z, fragments):
    with raises_naming(fragments):
        DiscretizedLogistic(torch.zeros(3), torch.ones(3)).log_prob(z)


def test_discretized_logistic_integer_and_numpy_values():
    d = DiscretizedLogistic(torch.zeros(3), torch.ones(3))
    expected = d.log_prob(torch.tensor([0.0, 1.0, -2.0]))
    assert torch.allclose(d.log_prob(torch.tensor([0, 1, -2])), expected)
    assert torch.allclose(d.log_prob(np.array([0, 1, -2])), expected)


def test_discretized_logistic_far_tail_is_finite():
    d = DiscretizedLogistic(torch.zeros(2), torch.ones(2))
    lp = d.log_prob(torch.tensor([1e6, -1e6]))
    assert torch.isfinite(lp).all() and (lp < -1e5).all()


@pytest.mark.parametrize("shape", [-1, (2, -1), 1.5])
def test_discretized_logistic_bad_sample_shape(shape):
    with raises_naming("sample_shape"):
        DiscretizedLogistic(torch.zeros(3), torch.ones(3)).sample(shape)


def test_discretized_logistic_empty_sample():
    assert DiscretizedLogistic(torch.zeros(3), torch.ones(3)).sample((0,)).shape == (0, 3)


# -- the learnable base -------------------------------------------------------------------------
@pytest.mark.parametrize(
    "kwargs, fragments",
    [
        pytest.param({"shape": (0, 2)}, ("shape[0]", "0"), id="shape-zero"),
        pytest.param({"shape": (2.5,)}, ("shape[0]", "2.5"), id="shape-float"),
        pytest.param({"shape": "ab"}, ("shape",), id="shape-str"),
        pytest.param({"shape": ()}, ("shape", "()"), id="shape-empty"),
        pytest.param({"shape": (2,), "scale": 0.0}, ("scale", "0"), id="scale-0"),
        pytest.param({"shape": (2,), "scale": NAN}, ("scale", "nan"), id="scale-nan"),
        pytest.param({"shape": (2,), "scale": INF}, ("scale", "inf"), id="scale-inf"),
        pytest.param({"shape": (2,), "scale": True}, ("scale", "True"), id="scale-bool"),
        pytest.param({"shape": (2,), "loc": NAN}, ("loc", "nan"), id="loc-nan"),
        pytest.param({"shape": (2,), "loc": INF}, ("loc", "inf"), id="loc-inf"),
        pytest.param({"shape": (2,), "loc": "7"}, ("loc", "str"), id="loc-str"),
    ],
)
def test_base_bad_options(kwargs, fragments):
    with raises_naming(fragments):
        DiscretizedLogisticBase(**kwargs)


@pytest.mark.parametrize(
    "z, fragments",
    [
        pytest.param(torch.zeros(3, 1, 2, 3), ("(..., 1, 2, 2)", "(3, 1, 2, 3)"), id="shape"),
        pytest.param(torch.full((3, 1, 2, 2), 0.5), ("integer", "0.5"), id="fraction"),
        pytest.param(torch.full((3, 1, 2, 2), NAN), ("integer", "nan"), id="nan"),
    ],
)
def test_base_log_prob_bad_values(z, fragments):
    base = DiscretizedLogisticBase((1, 2, 2), loc=7.5, scale=3.0)
    with unchanged(base), raises_naming(fragments):
        base.log_prob(z)


def test_base_initialize_needs_two_samples():
    base = DiscretizedLogisticBase((2,))
    with unchanged(base), raises_naming(("2 samples", "(1, 2)")):
        base.initialize(torch.zeros(1, 2))


def test_base_initialize_refuses_non_finite():
    base = DiscretizedLogisticBase((2,))
    z = torch.zeros(4, 2)
    z[1, 1] = INF
    with unchanged(base), raises_naming("non-finite"):
        base.initialize(z)


def test_base_empty_batch():
    base = DiscretizedLogisticBase((2,)).train()
    assert base.log_prob(torch.zeros(0, 2)).shape == (0,)
    assert not bool(base.initialized)
