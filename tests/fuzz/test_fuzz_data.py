"""Fuzz: :mod:`pyro_flows.data` (toys, dequantization, image datasets) on bad sizes, values,
dtypes and options."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pyro_flows import flows
from pyro_flows.data import (
    TOY_DENSITIES,
    TOYS,
    DequantizedModel,
    UniformDequantization,
    VariationalDequantization,
    bits_per_dim_to_nats,
    check_discrete,
    get_toy,
    load_digits_dataset,
    load_mnist5k,
    nats_to_bits_per_dim,
)
from pyro_flows.transforms import Logit

from ._cases import INF, NAN, bad_positive_ints, raises_naming, result_or_refusal, unchanged

TOY_NAMES = sorted(TOYS)


def _seeded() -> torch.Generator:
    return torch.Generator().manual_seed(0)


# -- toy samplers -------------------------------------------------------------------------------
@pytest.mark.parametrize("n, fragments", bad_positive_ints("n"))
@pytest.mark.parametrize("name", TOY_NAMES)
def test_toy_sampler_bad_n(name, n, fragments):
    with raises_naming(fragments):
        TOYS[name](n, generator=_seeded())


@pytest.mark.parametrize("name", TOY_NAMES)
def test_toy_sampler_numpy_int(name):
    assert TOYS[name](np.int64(3), generator=_seeded()).shape == (3, 2)


@pytest.mark.parametrize("name", TOY_NAMES)
def test_toy_sampler_bad_generator(name):
    with raises_naming(("generator", "int")):
        TOYS[name](3, generator=0)


@pytest.mark.parametrize("noise", [-0.1, NAN, INF, "0.1"])
def test_two_moons_bad_noise(noise):
    with raises_naming("noise"):
        TOYS["moons"](3, noise=noise)


# -- toy densities ------------------------------------------------------------------------------
def _points(n: int = 5) -> torch.Tensor:
    return torch.randn(n, 2, generator=_seeded())


@pytest.mark.parametrize("name", TOY_NAMES)
@pytest.mark.parametrize(
    "shape, fragments",
    [
        pytest.param((4, 3), ("(..., 2)", "(4, 3)"), id="three-columns"),
        pytest.param((), ("(..., 2)", "()"), id="scalar"),
        pytest.param((2, 1), ("(..., 2)", "(2, 1)"), id="one-column"),
    ],
)
def test_toy_log_prob_wrong_shape(name, shape, fragments):
    with raises_naming(fragments):
        TOY_DENSITIES[name].log_prob(torch.zeros(shape))


@pytest.mark.parametrize("name", TOY_NAMES)
@pytest.mark.parametrize("bad", [NAN, INF, -INF])
def test_toy_log_prob_non_finite(name, bad):
    x = _points()
    x[3, 1] = bad
    with raises_naming(("non-finite", "[3]")):
        TOY_DENSITIES[name].log_prob(x)


@pytest.mark.parametrize("name", TOY_NAMES)
def test_toy_log_prob_numpy_same_as_tensor(name):
    toy, x = TOY_DENSITIES[name], _points().double()
    got = toy.log_prob(x.numpy())
    assert got.dtype == torch.float64
    assert torch.allclose(got, toy.log_prob(x), atol=1e-9, equal_nan=False)


@pytest.mark.parametrize("name", TOY_NAMES)
def test_toy_log_prob_list_and_int(name):
    toy = TOY_DENSITIES[name]
    expected = toy.log_prob(torch.tensor([[0.0, 1.0], [1.0, 0.0]]))
    assert torch.allclose(toy.log_prob([[0, 1], [1, 0]]), expected, atol=1e-6)
    assert torch.allclose(toy.log_prob(torch.tensor([[0, 1], [1, 0]])), expected, atol=1e-6)


@pytest.mark.parametrize("name", TOY_NAMES)
def test_toy_log_prob_complex_refused(name):
    with raises_naming("complex"):
        TOY_DENSITIES[name].log_prob(torch.zeros(2, 2, dtype=torch.complex64))


@pytest.mark.parametrize("name", TOY_NAMES)
def test_toy_log_prob_string_refused(name):
    with raises_naming(("x", "str")):
        TOY_DENSITIES[name].log_prob("points")


@pytest.mark.parametrize("name", TOY_NAMES)
def test_toy_log_prob_bool_refused_or_numbers(name):
    toy, x = TOY_DENSITIES[name], torch.tensor([[True, False]])
    got = result_or_refusal(lambda: toy.log_prob(x), ("bool",))
    if got is not None:
        assert torch.allclose(got, toy.log_prob(x.float()), atol=1e-6)


@pytest.mark.parametrize("name", TOY_NAMES)
def test_toy_log_prob_empty_and_batched(name):
    toy, x = TOY_DENSITIES[name], _points(6)
    assert toy.log_prob(torch.zeros(0, 2)).shape == (0,)
    got = toy.log_prob(x.reshape(2, 3, 2))
    assert got.shape == (2, 3)
    assert torch.allclose(got.reshape(-1), toy.log_prob(x), atol=1e-6)


@pytest.mark.parametrize("name", TOY_NAMES)
def test_toy_log_prob_far_away_is_finite_or_minus_inf(name):
    lp = TOY_DENSITIES[name].log_prob(torch.tensor([[1e3, -1e3], [1e30, 0.0]]))
    assert not torch.isnan(lp).any() and (lp < -100).all()


@pytest.mark.parametrize("name", [3, None, ["moons"], "no-such-toy"])
def test_get_toy_bad_name(name):
    with raises_naming(("toy", "moons", repr(name))):
        get_toy(name)


# -- bits per dimension -------------------------------------------------------------------------
@pytest.mark.parametrize("fn", [nats_to_bits_per_dim, bits_per_dim_to_nats])
@pytest.mark.parametrize("dim, fragments", bad_positive_ints("dim"))
def test_bpd_bad_dim(fn, dim, fragments):
    with raises_naming(fragments):
        fn(1.0, dim)


@pytest.mark.parametrize("fn", [nats_to_bits_per_dim, bits_per_dim_to_nats])
@pytest.mark.parametrize(
    "value, fragments",
    [(NAN, ("nan",)), (torch.tensor([1.0, NAN]), ("NaN",)), ("1.0", ("str",)), (None, ("None",))],
)
def test_bpd_bad_value(fn, value, fragments):
    with raises_naming(fragments):
        fn(value, 4)


@pytest.mark.parametrize("fn", [nats_to_bits_per_dim, bits_per_dim_to_nats])
def test_bpd_numpy_and_inf(fn):
    got = fn(np.array([1.0, 2.0]), 4)
    assert np.allclose(np.asarray(got), [fn(1.0, 4), fn(2.0, 4)])
    assert fn(INF, 4) == INF


# -- check_discrete -----------------------------------------------------------------------------
@pytest.mark.parametrize(
    "x, fragments",
    [
        pytest.param(torch.tensor([[0.5, 1.0]]), ("integer", "0.5"), id="fraction"),
        pytest.param(torch.tensor([[0.0, 4.0]]), ("[0, 3]", "4"), id="too-big"),
        pytest.param(torch.tensor([[-1.0, 0.0]]), ("[0, 3]", "-1"), id="negative"),
        pytest.param(torch.tensor([[NAN, 0.0]]), ("integer", "nan"), id="nan"),
        pytest.param(torch.tensor([[INF, 0.0]]), ("integer", "inf"), id="inf"),
        pytest.param(torch.tensor([[True, False]]), ("integer", "bool"), id="bool"),
        pytest.param(torch.zeros(1, 2, dtype=torch.complex64), ("complex",), id="complex"),
        pytest.param(torch.zeros(2, 3), ("(..., 2)", "(2, 3)"), id="columns"),
        pytest.param(torch.tensor(1.0), ("(..., 2)", "()"), id="scalar"),
        pytest.param("pixels", ("str",), id="str"),
        pytest.param([[0, 1]], ("list",), id="list"),
    ],
)
def test_check_discrete_refuses(x, fragments):
    with raises_naming(fragments):
        check_discrete(x, num_levels=4, input_dim=2)


@pytest.mark.parametrize("levels, fragments", [(1, ("num_levels", "1")), (2.5, ("num_levels",))])
def test_check_discrete_bad_num_levels(levels, fragments):
    with raises_naming(fragments):
        check_discrete(torch.zeros(1, 2), num_levels=levels)


def test_check_discrete_numpy_and_int():
    expected = torch.tensor([[0.0, 3.0]])
    assert torch.equal(check_discrete(np.array([[0, 3]]), num_levels=4), expected)
    assert torch.equal(check_discrete(torch.tensor([[0, 3]]), num_levels=4), expected)


def test_check_discrete_empty():
    assert check_discrete(torch.zeros(0, 2), num_levels=4, input_dim=2).shape == (0, 2)


# -- dequantizers -------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "make, fragments",
    [
        pytest.param(lambda: UniformDequantization(1), ("num_levels", "1"), id="u-levels-1"),
        pytest.param(lambda: UniformDequantization(2.5), ("num_levels", "2.5"), id="u-float"),
        pytest.param(lambda: UniformDequantization(True), ("num_levels", "True"), id="u-bool"),
        pytest.param(lambda: UniformDequantization(4, 0), ("input_dim", "0"), id="u-dim"),
        pytest.param(lambda: VariationalDequantization(0, 4), ("input_dim", "0"), id="v-dim"),
        pytest.param(lambda: VariationalDequantization(2, 1), ("num_levels", "1"), id="v-levels"),
        pytest.param(
            lambda: VariationalDequantization(2, 4, num_transforms=0), ("num_transforms", "0"),
            id="v-transforms",
        ),
        pytest.param(
            lambda: VariationalDequantization(2, 4, hidden_dims=(0,)), ("hidden_dims", "0"),
            id="v-hidden",
        ),
        pytest.param(
            lambda: VariationalDequantization(2, 4, flows.realnvp(2, 1, (4,))),
            ("context_dim=2", "context_dim=None"), id="v-unconditional-flow",
        ),
        pytest.param(
            lambda: VariationalDequantization(2, 4, flows.realnvp(3, 1, (4,), context_dim=2)),
            ("input_dim=2", "input_dim=3"), id="v-flow-dim",
        ),
        pytest.param(
            lambda: VariationalDequantization(2, 4, torch.nn.Linear(2, 2)),
            ("flow", "input_dim=None"), id="v-not-a-flow",
        ),
    ],
)
def test_bad_dequantizer(make, fragments):
    with raises_naming(fragments):
        make()


@pytest.mark.parametrize("deq", ["uniform", "variational"])
@pytest.mark.parametrize(
    "x, fragments",
    [
        pytest.param(torch.tensor([[0.5, 1.0]]), ("integer", "0.5"), id="fraction"),
        pytest.param(torch.tensor([[0.0, 4.0]]), ("[0, 3]", "4"), id="too-big"),
        pytest.param(torch.tensor([[NAN, 0.0]]), ("integer", "nan"), id="nan"),
        pytest.param(torch.zeros(2, 3), ("(..., 2)", "(2, 3)"), id="columns"),
    ],
)
def test_dequantizer_bad_data(deq, x, fragments):
    torch.manual_seed(0)
    module = UniformDequantization(4, 2) if deq == "uniform" else VariationalDequantization(
        2, 4, num_transforms=1, hidden_dims=(4,)
    )
    with raises_naming(fragments):
        module(x)


def test_uniform_dequantization_bad_generator():
    with raises_naming(("generator", "int")):
        UniformDequantization(4)(torch.zeros(1, 2), generator=1)


@pytest.mark.parametrize("deq", ["uniform", "variational"])
def test_dequantizer_numpy_and_empty(deq):
    torch.manual_seed(0)
    module = UniformDequantization(4, 2) if deq == "uniform" else VariationalDequantization(
        2, 4, num_transforms=1, hidden_dims=(4,)
    )
    x = np.array([[0, 3], [1, 2]])
    torch.manual_seed(1)
    y_np, log_q_np = module(x)
    torch.manual_seed(1)
    y, log_q = module(torch.tensor(x, dtype=torch.float32))
    assert torch.allclose(y_np, y, atol=1e-6) and torch.allclose(log_q_np, log_q, atol=1e-5)
    y0, log_q0 = module(torch.zeros(0, 2))
    assert y0.shape == (0, 2) and log_q0.shape == (0,)


@pytest.mark.parametrize(
    "u, fragments",
    [
        pytest.param(torch.tensor([[0.0, 0.5]]), ("(0, 1)", "0"), id="zero"),
        pytest.param(torch.tensor([[1.5, 0.5]]), ("(0, 1)", "1.5"), id="above"),
        pytest.param(torch.tensor([[NAN, 0.5]]), ("(0, 1)", "nan"), id="nan"),
        pytest.param(torch.full((1, 3), 0.5), ("(1, 2)", "(1, 3)"), id="u-shape"),
    ],
)
def test_noise_log_prob_bad_noise(u, fragments):
    torch.manual_seed(0)
    deq = VariationalDequantization(2, 4, num_transforms=1, hidden_dims=(4,))
    with raises_naming(fragments):
        deq.noise_log_prob(u, torch.tensor([[0.0, 1.0]]))


# -- DequantizedModel ---------------------------------------------------------------------------
def _model(logit: object = 0.05) -> DequantizedModel:
    torch.manual_seed(0)
    return DequantizedModel(flows.realnvp(2, 1, (4,)), UniformDequantization(4), logit=logit)


@pytest.mark.parametrize(
    "make, fragments",
    [
        pytest.param(
            lambda: DequantizedModel(torch.nn.Linear(2, 2), UniformDequantization(4)),
            ("flow", "Linear"), id="flow-type",
        ),
        pytest.param(
            lambda: DequantizedModel(flows.realnvp(2, 1, (4,)), torch.nn.Identity()),
            ("dequantizer", "Identity"), id="deq-type",
        ),
        pytest.param(
            lambda: DequantizedModel(flows.realnvp(2, 1, (4,)), UniformDequantization(4, 3)),
            ("input_dim=3", "input_dim=2"), id="deq-dim",
        ),
        pytest.param(lambda: _model(0.5), ("alpha", "0.5"), id="logit-half"),
        pytest.param(lambda: _model(0.0), ("alpha", "0"), id="logit-zero"),
        pytest.param(lambda: _model(NAN), ("alpha", "nan"), id="logit-nan"),
        pytest.param(lambda: _model(True), ("logit", "bool"), id="logit-bool"),
        pytest.param(lambda: _model("0.05"), ("logit", "str"), id="logit-str"),
        pytest.param(lambda: _model(Logit(3)), ("input_dim=3", "input_dim=2"), id="logit-dim"),
    ],
)
def test_bad_dequantized_model(make, fragments):
    with raises_naming(fragments):
        make()


@pytest.mark.parametrize("value, fragments", bad_positive_ints("num_samples"))
def test_dequantized_model_bad_num_samples(value, fragments):
    with raises_naming(fragments):
        _model().log_prob(torch.zeros(2, 2), num_samples=value)


@pytest.mark.parametrize(
    "x, fragments",
    [
        pytest.param(torch.tensor([[0.5, 1.0]]), ("integer", "0.5"), id="fraction"),
        pytest.param(torch.tensor([[0.0, 7.0]]), ("[0, 3]", "7"), id="range"),
        pytest.param(torch.tensor([[INF, 0.0]]), ("integer", "inf"), id="inf"),
        pytest.param(torch.zeros(2, 5), ("(..., 2)", "(2, 5)"), id="columns"),
        pytest.param(torch.tensor([[0.25, 0.5]]), ("integer", "scaled"), id="already-scaled"),
    ],
)
def test_dequantized_model_bad_data(x, fragments):
    model = _model()
    with unchanged(model), raises_naming(fragments):
        model.log_prob(x)


def test_dequantized_model_numpy_same_as_tensor():
    model, x = _model(), torch.tensor([[0.0, 3.0], [1.0, 2.0]])
    torch.manual_seed(5)
    expected = model.log_prob(x)
    torch.manual_seed(5)
    got = model.log_prob(x.numpy().astype(np.int64))
    assert torch.allclose(got, expected, atol=1e-5)


def test_dequantized_model_empty_and_importance_weighted():
    model = _model()
    assert model.log_prob(torch.zeros(0, 2)).shape == (0,)
    assert model.log_prob(torch.zeros(3, 2), num_samples=4).shape == (3,)


def test_dequantized_model_context_on_unconditional():
    with raises_naming("unconditional"):
        _model().log_prob(torch.zeros(2, 2), context=torch.zeros(2, 1))


def test_dequantized_model_sample_shapes():
    model = _model()
    with raises_naming(("sample_shape", "-1")):
        model.sample(-1)
    x = model.sample((3,))
    assert x.shape == (3, 2) and bool(((x >= 0) & (x <= 3) & (x == x.round())).all())


# -- image datasets -----------------------------------------------------------------------------
@pytest.mark.parametrize("loader", [load_digits_dataset, load_mnist5k])
@pytest.mark.parametrize(
    "kwargs, fragments",
    [
        ({"dtype": torch.int64}, ("dtype", "torch.int64")),
        ({"dtype": "float32"}, ("dtype", "'float32'")),
        ({"seed": -1}, ("seed", "-1")),
        ({"seed": 1.5}, ("seed", "1.5")),
        ({"seed": True}, ("seed", "True")),
        ({"flatten": "yes"}, ("flatten", "str")),
    ],
)
def test_dataset_bad_options(loader, kwargs, fragments):
    with raises_naming(fragments):
        loader(**kwargs)


def test_dataset_shape_helpers_refuse_wrong_shapes():
    data = load_digits_dataset()
    with raises_naming(("(..., 64)", "(..., 1, 8, 8)", "(3, 63)")):
        data.images(torch.zeros(3, 63))
    with raises_naming(("(..., 64)", "(3, 2, 8, 8)")):
        data.flat(torch.zeros(3, 2, 8, 8))
    assert data.images(data.test[:2]).shape == (2, 1, 8, 8)
    assert data.flat(data.images(data.test[:2])).shape == (2, 64)


# -- image flows and the noise density ----------------------------------------------------------
def _image_model() -> DequantizedModel:
    torch.manual_seed(0)
    return DequantizedModel(flows.glow((1, 4, 4), 1, 4), UniformDequantization(16))


def test_dequantized_image_model_layouts():
    model = _image_model()
    x = torch.randint(0, 16, (3, 1, 4, 4), generator=_seeded()).float()
    torch.manual_seed(1)
    expected = model.log_prob(x)
    for layout in (x.reshape(3, 16), x.numpy()):
        torch.manual_seed(1)
        assert torch.allclose(model.log_prob(layout), expected, atol=1e-4)
    with raises_naming(("(..., 1, 4, 4)", "(..., 16)", "(3, 1, 4, 5)")):
        model.log_prob(torch.zeros(3, 1, 4, 5))
    assert model.sample((2,)).shape == (2, 1, 4, 4)


def test_noise_log_prob_numpy_and_shapes():
    torch.manual_seed(0)
    deq = VariationalDequantization(2, 4, num_transforms=1, hidden_dims=(4,))
    u, x = torch.full((1, 2), 0.3), torch.tensor([[0.0, 1.0]])
    expected = deq.noise_log_prob(u, x)
    assert torch.allclose(deq.noise_log_prob(u.double().numpy(), x.numpy()), expected, atol=1e-5)
    with raises_naming(("(1, 2)", "(3, 2)")):
        deq.noise_log_prob(torch.full((3, 2), 0.3), x)
