"""Fuzz: :class:`~pyro_flows.Flow` (every vector builder) and its Pyro distribution on bad data,
contexts and sample shapes: a clear error naming expected and given, or the correct result."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ._cases import INF, NAN, VECTOR_FLOWS, raises_naming, result_or_refusal

NAMES = sorted(VECTOR_FLOWS)
D, C = 3, 2


def _flow(name: str, context_dim: int | None = None):
    return VECTOR_FLOWS[name](D, context_dim).eval()


def _x(*shape: int) -> torch.Tensor:
    return torch.randn(*shape, D, generator=torch.Generator().manual_seed(1)) * 0.5


def _c(*shape: int) -> torch.Tensor:
    return torch.randn(*shape, C, generator=torch.Generator().manual_seed(2))


# -- data of the wrong shape or with non-finite values ------------------------------------------
@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize(
    "shape, fragments",
    [
        pytest.param((4, 5), ("(..., 3)", "(4, 5)"), id="wrong-event"),
        pytest.param((), ("(..., 3)", "()"), id="scalar"),
        pytest.param((4, 1), ("(..., 3)", "(4, 1)"), id="event-1"),
    ],
)
def test_log_prob_wrong_shape(name, shape, fragments):
    flow = _flow(name)
    with raises_naming(fragments):
        flow.log_prob(torch.zeros(shape))


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("bad", [NAN, INF, -INF], ids=["nan", "inf", "-inf"])
def test_log_prob_non_finite(name, bad):
    flow = _flow(name)
    x = _x(4)
    x[2, 1] = bad
    with raises_naming(("non-finite", "x")):
        flow.log_prob(x)


@pytest.mark.parametrize("name", NAMES)
def test_log_prob_distribution_non_finite(name):
    x = _x(4)
    x[0, 0] = NAN
    with raises_naming("non-finite"):
        _flow(name)().log_prob(x)


# -- dtypes and array input ---------------------------------------------------------------------
@pytest.mark.parametrize("name", NAMES)
def test_log_prob_numpy_same_as_tensor(name):
    flow, x = _flow(name), _x(4)
    expected = flow.log_prob(x)
    got = flow.log_prob(x.double().numpy())
    assert isinstance(got, torch.Tensor) and got.dtype == expected.dtype
    assert torch.allclose(got, expected, atol=1e-5)


@pytest.mark.parametrize("name", NAMES)
def test_log_prob_list_same_as_tensor(name):
    flow, x = _flow(name), _x(2)
    assert torch.allclose(flow.log_prob(x.tolist()), flow.log_prob(x), atol=1e-5)


@pytest.mark.parametrize("name", NAMES)
def test_log_prob_integer_tensor_same_as_float(name):
    flow = _flow(name)
    x = torch.tensor([[0, 1, -1], [1, 0, 0]])
    assert torch.allclose(flow.log_prob(x), flow.log_prob(x.float()), atol=1e-5)


@pytest.mark.parametrize("name", NAMES)
def test_log_prob_bool_tensor_refused_or_as_numbers(name):
    flow = _flow(name)
    x = torch.tensor([[True, False, True]])
    got = result_or_refusal(lambda: flow.log_prob(x), ("bool",))
    if got is not None:
        assert torch.allclose(got, flow.log_prob(x.float()), atol=1e-5)


@pytest.mark.parametrize("name", NAMES)
def test_log_prob_complex_refused(name):
    flow = _flow(name)
    x = torch.zeros(2, D, dtype=torch.complex64)
    x[0, 0] = 1j
    with raises_naming("complex"):
        flow.log_prob(x)


@pytest.mark.parametrize("name", NAMES)
def test_log_prob_float64_on_float32_flow(name):
    flow, x = _flow(name), _x(3)
    got = result_or_refusal(lambda: flow.log_prob(x.double()), ("float64", "float32"))
    if got is not None:
        assert torch.allclose(got.float(), flow.log_prob(x), atol=1e-5)


@pytest.mark.parametrize("name", NAMES)
def test_log_prob_float64_flow(name):
    flow, x = _flow(name), _x(3)
    expected = flow.log_prob(x)
    flow = flow.double()
    got = flow.log_prob(x.double())
    assert got.dtype == torch.float64
    assert torch.allclose(got.float(), expected, atol=1e-4)


@pytest.mark.parametrize("name", NAMES)
def test_log_prob_string_refused(name):
    with raises_naming(("x", "str")):
        _flow(name).log_prob("data")


# -- unusual but valid batch shapes -------------------------------------------------------------
@pytest.mark.parametrize("name", NAMES)
def test_log_prob_empty_batch(name):
    log_q = _flow(name).log_prob(torch.zeros(0, D))
    assert log_q.shape == (0,)


@pytest.mark.parametrize("name", NAMES)
def test_log_prob_extra_batch_dims(name):
    flow, x = _flow(name), _x(2, 3)
    got = flow.log_prob(x)
    assert got.shape == (2, 3)
    assert torch.allclose(got.reshape(-1), flow.log_prob(x.reshape(-1, D)), atol=1e-5)


@pytest.mark.parametrize("name", NAMES)
def test_log_prob_single_vector(name):
    flow, x = _flow(name), _x(2)
    assert torch.allclose(flow.log_prob(x[0]), flow.log_prob(x)[0], atol=1e-5)


# -- sample shapes ------------------------------------------------------------------------------
@pytest.mark.parametrize("method", ["sample", "rsample", "rsample_and_log_prob"])
@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize(
    "shape, fragments, exc",
    [
        pytest.param(-1, ("sample_shape", "-1"), ValueError, id="negative"),
        pytest.param((2, -3), ("sample_shape", "-3"), ValueError, id="negative-entry"),
        pytest.param(2.5, ("sample_shape", "2.5"), TypeError, id="float"),
        pytest.param("3", ("sample_shape", "'3'"), TypeError, id="str"),
    ],
)
def test_bad_sample_shape(name, method, shape, fragments, exc):
    flow = _flow(name)
    with raises_naming(fragments, exc):
        getattr(flow, method)(shape)


@pytest.mark.parametrize("name", NAMES)
def test_sample_zero(name):
    assert _flow(name).sample(0).shape == (0, D)


@pytest.mark.parametrize("name", NAMES)
def test_sample_numpy_int_shape(name):
    assert _flow(name).sample(np.int64(2)).shape == (2, D)


@pytest.mark.parametrize("name", NAMES)
def test_distribution_sample_bad_shape(name):
    with raises_naming(("sample_shape", "-1")):
        _flow(name)().sample((-1,))


# -- contexts -----------------------------------------------------------------------------------
@pytest.mark.parametrize("name", NAMES)
def test_missing_context(name):
    flow = _flow(name, C)
    with raises_naming(("context_dim=2", "None")):
        flow.log_prob(_x(4))
    with raises_naming(("context_dim=2", "None")):
        flow.sample((2,))


@pytest.mark.parametrize("name", NAMES)
def test_context_on_unconditional_flow(name):
    with raises_naming(("unconditional", "(4, 2)")):
        _flow(name).log_prob(_x(4), _c(4))


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize(
    "shape, fragments",
    [
        pytest.param((4, 5), ("(..., 2)", "(4, 5)"), id="wrong-size"),
        pytest.param((), ("(..., 2)", "()"), id="scalar"),
    ],
)
def test_context_wrong_shape(name, shape, fragments):
    flow = _flow(name, C)
    with raises_naming(fragments):
        flow.log_prob(_x(4), torch.zeros(shape))
    with raises_naming(fragments):
        flow.sample((2,), torch.zeros(shape))


@pytest.mark.parametrize("name", NAMES)
def test_context_batch_mismatch(name):
    flow = _flow(name, C)
    with raises_naming(("(4,)", "(5,)")):
        flow.log_prob(_x(4), _c(5))


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("bad", [NAN, INF], ids=["nan", "inf"])
@pytest.mark.parametrize("method", ["log_prob", "sample", "rsample_and_log_prob", "distribution"])
def test_context_non_finite(name, bad, method):
    flow = _flow(name, C)
    c = _c(4)
    c[1, 0] = bad
    with raises_naming(("non-finite", "context")):
        if method == "log_prob":
            flow.log_prob(_x(4), c)
        elif method == "distribution":
            flow(c)
        else:
            getattr(flow, method)((), c)


@pytest.mark.parametrize("name", NAMES)
def test_context_numpy_same_as_tensor(name):
    flow, x, c = _flow(name, C), _x(4), _c(4)
    expected = flow.log_prob(x, c)
    assert torch.allclose(flow.log_prob(x, c.double().numpy()), expected, atol=1e-5)


@pytest.mark.parametrize("name", NAMES)
def test_context_integer_same_as_float(name):
    flow, x = _flow(name, C), _x(2)
    c = torch.tensor([[1, 0], [0, -1]])
    assert torch.allclose(flow.log_prob(x, c), flow.log_prob(x, c.float()), atol=1e-5)


@pytest.mark.parametrize("name", NAMES)
def test_context_complex_refused(name):
    c = torch.zeros(2, C, dtype=torch.complex64)
    with raises_naming("complex"):
        _flow(name, C).log_prob(_x(2), c)


@pytest.mark.parametrize("name", NAMES)
def test_context_broadcasts(name):
    flow, x, c = _flow(name, C), _x(4), _c(1)
    got = flow.log_prob(x, c)
    assert got.shape == (4,)
    assert torch.allclose(got, flow.log_prob(x, c.expand(4, C)), atol=1e-5)


@pytest.mark.parametrize("name", NAMES)
def test_conditional_sample_shapes(name):
    flow = _flow(name, C)
    assert flow.sample((2,), _c(5)).shape == (2, 5, D)
    assert flow.sample((), _c(0)).shape == (0, D)
