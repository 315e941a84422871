"""Fuzz: the training loops (``fit``, ``evaluate_nll``, ``fit_target``, ``distill``,
``train_ebm``) on bad hyper-parameters, bad data and contexts, and corrupt, truncated, empty and
foreign checkpoints, after which the model must be exactly as it was."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from pyro_flows import flows
from pyro_flows.ebm import EnergyModel, make_objective, train_ebm
from pyro_flows.infer import distill, evaluate_nll, fit, fit_target
from pyro_flows.targets import get_target

from ._cases import (
    INF,
    NAN,
    NON_FINITE,
    bad_positive_floats,
    bad_positive_ints,
    raises_naming,
    unchanged,
)

QUIET = {"progress": False}


def _flow(context_dim: int | None = None, builder=flows.realnvp) -> nn.Module:
    torch.manual_seed(0)
    return builder(2, num_transforms=1, hidden_dims=(4,), context_dim=context_dim)


def _data(n: int = 40) -> torch.Tensor:
    return torch.randn(n, 2, generator=torch.Generator().manual_seed(0))


def _fit(model: nn.Module | None = None, data: object = None, **kwargs):
    options = {"epochs": 1, "batch_size": 16, "validation": None, **QUIET, **kwargs}
    return fit(_flow() if model is None else model, _data() if data is None else data, **options)


# -- fit: hyper-parameters ----------------------------------------------------------------------
FIT_BAD = [
    *[pytest.param("epochs", v, f, id=f"epochs-{i}") for i, (v, f) in enumerate(
        (p.values[0], p.values[1]) for p in bad_positive_ints("epochs"))],
    *[pytest.param("batch_size", v, f, id=f"batch_size-{i}") for i, (v, f) in enumerate(
        (p.values[0], p.values[1]) for p in bad_positive_ints("batch_size"))],
    *[pytest.param("lr", v, f, id=f"lr-{i}") for i, (v, f) in enumerate(
        (p.values[0], p.values[1]) for p in bad_positive_floats("lr"))],
    pytest.param("lr", True, ("lr", "True"), id="lr-bool"),
    pytest.param("weight_decay", -1.0, ("weight_decay", "-1"), id="wd-negative"),
    pytest.param("weight_decay", NAN, ("weight_decay", "nan"), id="wd-nan"),
    pytest.param("validation", 1.5, ("validation", "1.5"), id="validation-big"),
    pytest.param("validation", -0.1, ("validation", "-0.1"), id="validation-negative"),
    pytest.param("validation", NAN, ("validation", "nan"), id="validation-nan"),
    pytest.param("validation", 0.001, ("validation", "0 validation"), id="validation-no-rows"),
    pytest.param("validation", "0.1", ("validation", "str"), id="validation-str"),
    pytest.param("validation", True, ("validation", "bool"), id="validation-bool"),
    pytest.param("patience", 0, ("patience", "0"), id="patience-0"),
    pytest.param("patience", -2, ("patience", "-2"), id="patience-negative"),
    pytest.param("patience", 1.5, ("patience", "1.5"), id="patience-float"),
    pytest.param("lr_schedule", "linear", ("lr_schedule", "'linear'"), id="schedule"),
    pytest.param("clip_grad_norm", 0.0, ("clip_grad_norm", "0"), id="clip-0"),
    pytest.param("clip_grad_norm", -1.0, ("clip_grad_norm", "-1"), id="clip-negative"),
    pytest.param("clip_grad_norm", NAN, ("clip_grad_norm", "nan"), id="clip-nan"),
    pytest.param("clip_grad_norm", "10", ("clip_grad_norm", "str"), id="clip-str"),
    pytest.param("checkpoint_every", 0, ("checkpoint_every", "0"), id="ckpt-every-0"),
    pytest.param("checkpoint_every", -1, ("checkpoint_every", "-1"), id="ckpt-every-neg"),
    pytest.param("max_time", -1.0, ("max_time", "-1"), id="max-time-negative"),
    pytest.param("max_time", NAN, ("max_time", "nan"), id="max-time-nan"),
    pytest.param("max_time", "1", ("max_time", "str"), id="max-time-str"),
    pytest.param("seed", 1.5, ("seed", "1.5"), id="seed-float"),
    pytest.param("seed", "0", ("seed", "str"), id="seed-str"),
    pytest.param("seed", True, ("seed", "True"), id="seed-bool"),
    pytest.param("callback", 3, ("callback", "int"), id="callback"),
    pytest.param("resume", True, ("resume", "checkpoint"), id="resume-without-checkpoint"),
    pytest.param("device", "gpu9", ("device", "gpu9"), id="device"),
]


@pytest.mark.parametrize("option, value, fragments", FIT_BAD)
def test_fit_bad_option(option, value, fragments):
    model = _flow()
    with unchanged(model), raises_naming(fragments):
        _fit(model, **{option: value})


@pytest.mark.parametrize("model", [nn.Linear(2, 2), "realnvp", None])
def test_fit_bad_model(model):
    with raises_naming("model"):
        fit(model, _data(), epochs=1, **QUIET)


# -- fit: data and contexts ---------------------------------------------------------------------
def _with(value: float, row: int = 3) -> torch.Tensor:
    x = _data()
    x[row, 1] = value
    return x


FIT_BAD_DATA = [
    pytest.param(_with(NAN), (NON_FINITE, "[3]"), id="nan"),
    pytest.param(_with(INF), (NON_FINITE, "[3]"), id="inf"),
    pytest.param(torch.zeros(0, 2), ("empty", "(0, 2)"), id="empty"),
    pytest.param(torch.zeros(40, 3), ("input_dim", "(40, 3)"), id="columns"),
    pytest.param(torch.zeros(40), ("(rows, features)", "(40,)"), id="one-dim"),
    pytest.param(torch.tensor(1.0), ("(rows, features)", "()"), id="scalar"),
    pytest.param("data.csv", ("data", "str"), id="str"),
    pytest.param(torch.zeros(40, 2, dtype=torch.complex64), ("complex",), id="complex"),
    pytest.param(torch.zeros(40, 2, dtype=torch.bool), ("bool",), id="bool"),
]


@pytest.mark.parametrize("data, fragments", FIT_BAD_DATA)
def test_fit_bad_data(data, fragments):
    model = _flow()
    with unchanged(model), raises_naming(fragments):
        _fit(model, data)


@pytest.mark.parametrize("data, fragments", FIT_BAD_DATA)
def test_fit_bad_validation_data(data, fragments):
    model = _flow()
    with unchanged(model), raises_naming(fragments):
        _fit(model, validation=data)


def test_fit_numpy_same_as_tensor():
    a = _fit(_flow(), _data())
    b = _fit(_flow(), _data().double().numpy())
    assert np.allclose(a.train_nll, b.train_nll, atol=1e-5)


def test_fit_integer_data_trains():
    data = torch.randint(-2, 3, (40, 2), generator=torch.Generator().manual_seed(0))
    history = _fit(_flow(), data)
    assert np.isfinite(history.train_nll).all()


def _context(n: int = 40, width: int = 1) -> torch.Tensor:
    return torch.randn(n, width, generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize(
    "context, fragments",
    [
        pytest.param(None, ("context_dim=1", "context="), id="missing"),
        pytest.param(_context(39), ("39", "40"), id="rows"),
        pytest.param(_context(40, 2), ("context_dim", "2"), id="columns"),
        pytest.param(torch.full((40, 1), NAN), ("non-finite", "context"), id="nan"),
    ],
)
def test_fit_bad_context(context, fragments):
    model = _flow(context_dim=1)
    with unchanged(model), raises_naming(fragments):
        _fit(model, context=context)


def test_fit_context_for_unconditional_model():
    model = _flow()
    with unchanged(model), raises_naming("unconditional"):
        _fit(model, context=_context())


def test_fit_numpy_context_same_as_tensor():
    a = _fit(_flow(1), context=_context())
    b = _fit(_flow(1), context=_context().double().numpy())
    assert np.allclose(a.train_nll, b.train_nll, atol=1e-5)


# -- evaluate_nll -------------------------------------------------------------------------------
@pytest.mark.parametrize("value, fragments", bad_positive_ints("batch_size"))
def test_evaluate_nll_bad_batch_size(value, fragments):
    with raises_naming(fragments):
        evaluate_nll(_flow(), _data(), batch_size=value)


@pytest.mark.parametrize(
    "data, fragments",
    [
        pytest.param(_with(NAN), (NON_FINITE,), id="nan"),
        pytest.param(_with(INF), (NON_FINITE,), id="inf"),
        pytest.param(torch.zeros(0, 2), ("row", "(0, 2)"), id="empty"),
        pytest.param(torch.zeros(40, 3), ("2", "(40, 3)"), id="columns"),
        pytest.param(torch.zeros(40), ("2", "(40,)"), id="one-dim"),
        pytest.param(torch.tensor(1.0), ("()",), id="scalar"),
        pytest.param("data.csv", ("data", "str"), id="str"),
        pytest.param(torch.zeros(40, 2, dtype=torch.complex64), ("complex",), id="complex"),
    ],
)
def test_evaluate_nll_bad_data(data, fragments):
    with raises_naming(fragments):
        evaluate_nll(_flow(), data)


def test_evaluate_nll_numpy_same_as_tensor():
    flow = _flow()
    assert abs(evaluate_nll(flow, _data().numpy()) - evaluate_nll(flow, _data())) < 1e-5


# -- checkpoints --------------------------------------------------------------------------------
def _good_checkpoint(path, builder=flows.realnvp) -> None:
    _fit(_flow(builder=builder), checkpoint=path)


def _corrupt(path, kind: str) -> None:
    if kind == "garbage":
        path.write_bytes(b"\x00\x01this is not a checkpoint" * 20)
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "truncated":
        _good_checkpoint(path)
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    elif kind == "foreign-builder":
        _good_checkpoint(path, builder=flows.maf)
    elif kind == "foreign-dict":
        torch.save({"model": {"weight": torch.zeros(2)}, "epoch": 3}, path)
    elif kind == "tensor":
        torch.save(torch.zeros(3), path)
    elif kind == "text":
        path.write_text('{"epoch": 1}')
    else:
        raise AssertionError(kind)


CORRUPTIONS = ["garbage", "empty", "truncated", "foreign-builder", "foreign-dict", "tensor", "text"]


@pytest.mark.parametrize("kind", CORRUPTIONS)
def test_fit_refuses_bad_checkpoint_and_changes_nothing(tmp_path, kind):
    path = tmp_path / "ckpt.pt"
    _corrupt(path, kind)
    before = path.read_bytes()
    model = _flow()
    with unchanged(model), raises_naming(("checkpoint", "ckpt.pt")):
        _fit(model, checkpoint=path, resume=True)
    assert path.read_bytes() == before


def test_fit_refuses_a_directory_as_checkpoint(tmp_path):
    model = _flow()
    with unchanged(model), raises_naming(("checkpoint", str(tmp_path))):
        _fit(model, checkpoint=tmp_path, resume=True)


def test_fit_resume_of_missing_checkpoint_starts_fresh_or_refuses(tmp_path):
    path = tmp_path / "missing.pt"
    try:
        history = _fit(_flow(), checkpoint=path, resume=True)
    except (ValueError, FileNotFoundError) as error:
        assert "missing.pt" in str(error)
    else:
        assert history.epochs == 1 and path.exists()


def _fit_target(flow: nn.Module | None = None, target: object = None, **kwargs):
    options = {"steps": 2, "batch_size": 8, "eval_every": 0, **QUIET, **kwargs}
    return fit_target(
        _flow() if flow is None else flow, get_target("banana") if target is None else target,
        **options,
    )


@pytest.mark.parametrize("kind", CORRUPTIONS)
def test_fit_target_refuses_bad_checkpoint_and_changes_nothing(tmp_path, kind):
    path = tmp_path / "ckpt.pt"
    if kind == "truncated":
        _fit_target(checkpoint=path, checkpoint_every=1)
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    elif kind == "foreign-builder":
        _fit_target(_flow(builder=flows.maf), checkpoint=path, checkpoint_every=1)
    else:
        _corrupt(path, kind)
    model = _flow()
    with unchanged(model), raises_naming(("checkpoint", "ckpt.pt")):
        _fit_target(model, checkpoint=path, resume=True)


def test_fit_target_refuses_a_fit_checkpoint(tmp_path):
    path = tmp_path / "ckpt.pt"
    _good_checkpoint(path)
    model = _flow()
    with unchanged(model), raises_naming(("checkpoint", "ckpt.pt")):
        _fit_target(model, checkpoint=path, resume=True)


def test_fit_refuses_a_fit_target_checkpoint(tmp_path):
    path = tmp_path / "ckpt.pt"
    _fit_target(checkpoint=path, checkpoint_every=1)
    model = _flow()
    with unchanged(model), raises_naming(("checkpoint", "ckpt.pt")):
        _fit(model, checkpoint=path, resume=True)


# -- fit_target ---------------------------------------------------------------------------------
FIT_TARGET_BAD = [
    pytest.param("steps", 0, ("steps", "0"), id="steps-0"),
    pytest.param("steps", -3, ("steps", "-3"), id="steps-negative"),
    pytest.param("steps", 2.5, ("steps", "2.5"), id="steps-float"),
    pytest.param("batch_size", 0, ("batch_size", "0"), id="batch-0"),
    pytest.param("batch_size", True, ("batch_size", "True"), id="batch-bool"),
    pytest.param("lr", 0.0, ("lr", "0"), id="lr-0"),
    pytest.param("lr", INF, ("lr", "inf"), id="lr-inf"),
    pytest.param("lr", "1e-3", ("lr", "str"), id="lr-str"),
    pytest.param("anneal", 1.5, ("anneal", "1.5"), id="anneal-big"),
    pytest.param("anneal", -0.5, ("anneal", "-0.5"), id="anneal-negative"),
    pytest.param("anneal", NAN, ("anneal", "nan"), id="anneal-nan"),
    pytest.param("anneal", "half", ("anneal", "'half'"), id="anneal-str"),
    pytest.param("clip_grad_norm", 0.0, ("clip_grad_norm", "0"), id="clip-0"),
    pytest.param("eval_every", -1, ("eval_every", "-1"), id="eval-every-negative"),
    pytest.param("eval_every", 1.5, ("eval_every", "1.5"), id="eval-every-float"),
    pytest.param("eval_samples", 0, ("eval_samples", "0"), id="eval-samples-0"),
    pytest.param("checkpoint_every", 0, ("checkpoint_every", "0"), id="ckpt-every-0"),
    pytest.param("max_time", -1.0, ("max_time", "-1"), id="max-time"),
    pytest.param("seed", "1", ("seed", "str"), id="seed-str"),
    pytest.param("callback", "print", ("callback", "str"), id="callback"),
    pytest.param("resume", True, ("resume", "checkpoint"), id="resume-without-checkpoint"),
]


@pytest.mark.parametrize("option, value, fragments", FIT_TARGET_BAD)
def test_fit_target_bad_option(option, value, fragments):
    model = _flow()
    with unchanged(model), raises_naming(fragments):
        _fit_target(model, **{option: value})


@pytest.mark.parametrize("flow", [nn.Linear(2, 2), "realnvp", None])
def test_fit_target_bad_flow(flow):
    with raises_naming("flow"):
        fit_target(flow, get_target("banana"), steps=1, **QUIET)


def test_fit_target_target_of_wrong_dimension():
    model = _flow()
    with unchanged(model), raises_naming(("4", "2")):
        _fit_target(model, get_target("funnel", dim=4))


@pytest.mark.parametrize("target", [42, "no-such-target", None])
def test_fit_target_bad_target(target):
    model = _flow()
    with unchanged(model), raises_naming("target"):
        fit_target(model, target, steps=1, **QUIET)


def test_fit_target_nan_target_is_an_error():
    def log_prob(z):
        return z.sum(-1) * NAN

    model = _flow()
    with pytest.raises((ValueError, FloatingPointError), match="NaN|non-finite"):
        _fit_target(model, log_prob)


def test_fit_target_wrong_output_shape_is_an_error():
    model = _flow()
    with unchanged(model), raises_naming(("log_prob", "(8, 2)")):
        _fit_target(model, lambda z: -0.5 * z**2)


# -- distill ------------------------------------------------------------------------------------
def _distill(teacher=None, student=None, **kwargs):
    options = {"steps": 2, "batch_size": 8, "eval_every": 0, **QUIET, **kwargs}
    return distill(
        _flow() if teacher is None else teacher,
        _flow(builder=flows.maf) if student is None else student,
        **options,
    )


@pytest.mark.parametrize(
    "option, value, fragments",
    [
        pytest.param("steps", 0, ("steps", "0"), id="steps"),
        pytest.param("batch_size", -1, ("batch_size", "-1"), id="batch"),
        pytest.param("lr", NAN, ("lr", "nan"), id="lr"),
        pytest.param("objective", "mse", ("objective", "'mse'"), id="objective"),
        pytest.param("eval_every", -1, ("eval_every", "-1"), id="eval-every"),
        pytest.param("clip_grad_norm", -2.0, ("clip_grad_norm", "-2"), id="clip"),
        pytest.param("max_time", -1.0, ("max_time", "-1"), id="max-time"),
    ],
)
def test_distill_bad_option(option, value, fragments):
    student = _flow(builder=flows.maf)
    with unchanged(student), raises_naming(fragments):
        _distill(student=student, **{option: value})


def test_distill_dimension_mismatch():
    student = flows.maf(3, num_transforms=1, hidden_dims=(4,))
    with unchanged(student), raises_naming(("2", "3")):
        _distill(student=student)


def test_distill_context_mismatch():
    teacher, student = _flow(1), _flow(1, builder=flows.maf)
    with unchanged(student), raises_naming(("context",)):
        _distill(teacher, student)
    c = torch.full((8, 1), NAN)
    with unchanged(student), raises_naming(("non-finite", "context")):
        _distill(teacher, student, context=c)


# -- EBM training -------------------------------------------------------------------------------
def _energy() -> EnergyModel:
    torch.manual_seed(0)
    return EnergyModel(2, hidden_dims=(4,))


@pytest.mark.parametrize(
    "option, value, fragments",
    [
        pytest.param("steps", 0, ("steps", "0"), id="steps"),
        pytest.param("batch_size", 0, ("batch_size", "0"), id="batch"),
        pytest.param("lr", -1.0, ("lr", "-1"), id="lr"),
        pytest.param("lr", NAN, ("lr", "nan"), id="lr-nan"),
        pytest.param("seed", "s", ("seed", "str"), id="seed"),
        pytest.param("method", "gan", ("method", "'gan'"), id="method"),
        pytest.param("clip_grad_norm", 0.0, ("clip_grad_norm", "0"), id="clip"),
        pytest.param("sampler_steps", 0, ("sampler_steps", "0"), id="sampler-steps"),
        pytest.param("sampler_lr", -1.0, ("sampler_lr", "-1"), id="sampler-lr"),
    ],
)
def test_train_ebm_bad_option(option, value, fragments):
    energy = _energy()
    options = {"method": "sm", "steps": 2, "batch_size": 8, **QUIET, option: value}
    with unchanged(energy), raises_naming(fragments):
        train_ebm(energy, _data(), **options)


@pytest.mark.parametrize(
    "data, fragments",
    [
        pytest.param(_with(NAN), (NON_FINITE,), id="nan"),
        pytest.param(_with(INF), (NON_FINITE,), id="inf"),
        pytest.param(torch.zeros(0, 2), ("(0, 2)",), id="empty"),
        pytest.param(torch.zeros(40, 3), ("columns", "3"), id="columns"),
        pytest.param(torch.zeros(40), ("(40,)",), id="one-dim"),
    ],
)
def test_train_ebm_bad_data(data, fragments):
    energy = _energy()
    with unchanged(energy), raises_naming(fragments):
        train_ebm(energy, data, method="sm", steps=2, batch_size=8, **QUIET)


def test_train_ebm_numpy_same_as_tensor():
    a = train_ebm(_energy(), _data(), method="sm", steps=3, batch_size=8, **QUIET)
    b = train_ebm(_energy(), _data().numpy(), method="sm", steps=3, batch_size=8, **QUIET)
    assert np.allclose(a.loss, b.loss, atol=1e-5)


@pytest.mark.parametrize(
    "method, options, fragments",
    [
        ("ssm", {"n_projections": 0}, ("n_projections", "0")),
        ("nce", {"nu": 0.0}, ("nu", "0")),
        ("nce", {"nu": NAN}, ("nu", "nan")),
        ("cd", {"alpha": -1.0}, ("alpha", "-1")),
        ("sm", {"bogus": 1}, ("bogus",)),
    ],
)
def test_make_objective_bad_options(method, options, fragments):
    with raises_naming(fragments):
        make_objective(method, **options)


@pytest.mark.parametrize(
    "kwargs, fragments",
    [
        ({"input_dim": 0}, ("input_dim", "0")),
        ({"hidden_dims": (0,)}, ("hidden_dims", "0")),
        ({"prior_scale": 0.0}, ("prior_scale", "0")),
        ({"prior_scale": NAN}, ("prior_scale", "nan")),
        ({"prior_scale": "4"}, ("prior_scale", "str")),
        ({"activation": "silu"}, ("activation",)),
    ],
)
def test_energy_model_bad_options(kwargs, fragments):
    with raises_naming(fragments):
        EnergyModel(**{"input_dim": 2, **kwargs})


@pytest.mark.parametrize(
    "x, fragments",
    [
        pytest.param(torch.zeros(4, 3), ("(..., 2)", "(4, 3)"), id="shape"),
        pytest.param(torch.tensor([[NAN, 0.0]]), ("non-finite",), id="nan"),
    ],
)
def test_energy_model_bad_input(x, fragments):
    with raises_naming(fragments):
        _energy()(x)


def test_energy_model_numpy_same_as_tensor():
    energy, x = _energy(), _data(4)
    assert torch.allclose(energy(x.numpy()), energy(x), atol=1e-6)
