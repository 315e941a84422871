"""Fuzz: the samplers (``nuts``, ``hmc``, ``mala``, ``ula``, ``langevin``,
``random_walk_metropolis``, ``importance_sample``, ``neutra``) and the diagnostics on bad
budgets, step sizes, starting points, targets and weights."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pyro_flows import flows
from pyro_flows.infer import (
    ess_fraction,
    flow_diagnostics,
    hmc,
    importance_log_Z,
    importance_sample,
    langevin,
    log_mean_exp,
    mala,
    mcmc_diagnostics,
    moment_errors,
    neutra,
    nuts,
    psis_khat,
    random_walk_metropolis,
    reference_moment_errors,
    systematic_resample,
    ula,
)
from pyro_flows.targets import get_target

from ._cases import EMPTY, INF, NAN, NON_FINITE, bad_positive_ints, raises_naming

MCMC = {
    "nuts": nuts,
    "hmc": hmc,
    "mala": mala,
    "ula": ula,
    "langevin": langevin,
    "rwm": random_walk_metropolis,
}
NAMES = sorted(MCMC)
TINY = {"num_samples": 4, "warmup": 2, "num_chains": 1, "progress": False, "seed": 0}


_BANANA = object()


def _run(name: str, target: object = _BANANA, **kwargs):
    options = {**TINY, **kwargs}
    return MCMC[name](get_target("banana") if target is _BANANA else target, **options)


@pytest.mark.parametrize("value, fragments", bad_positive_ints("num_samples"))
@pytest.mark.parametrize("name", NAMES)
def test_bad_num_samples(name, value, fragments):
    with raises_naming(fragments):
        _run(name, num_samples=value)


@pytest.mark.parametrize(
    "value, fragments", [(-1, ("warmup", "-1")), (1.5, ("warmup", "1.5")), ("5", ("warmup",))]
)
@pytest.mark.parametrize("name", NAMES)
def test_bad_warmup(name, value, fragments):
    with raises_naming(fragments):
        _run(name, warmup=value)


@pytest.mark.parametrize("value, fragments", bad_positive_ints("num_chains"))
@pytest.mark.parametrize("name", NAMES)
def test_bad_num_chains(name, value, fragments):
    with raises_naming(fragments):
        _run(name, num_chains=value)


@pytest.mark.parametrize(
    "value, fragments", [(0.0, ("target_accept", "0")), (1.0, ("target_accept", "1")),
                         (1.5, ("target_accept", "1.5")), (NAN, ("target_accept", "nan"))]
)
@pytest.mark.parametrize("name", ["nuts", "hmc", "mala", "rwm"])
def test_bad_target_accept(name, value, fragments):
    with raises_naming(fragments):
        _run(name, target_accept=value)


@pytest.mark.parametrize(
    "value, fragments", [(0.0, ("step_size", "0")), (-0.1, ("step_size", "-0.1")),
                         (NAN, ("step_size", "nan")), (INF, ("step_size", "inf"))]
)
@pytest.mark.parametrize("name", ["hmc", "mala", "ula", "rwm"])
def test_bad_step_size(name, value, fragments):
    with raises_naming(fragments):
        _run(name, step_size=value)


@pytest.mark.parametrize("seed, fragments", [("0", ("seed", "str")), (1.5, ("seed", "1.5"))])
@pytest.mark.parametrize("name", NAMES)
def test_bad_seed(name, seed, fragments):
    with raises_naming(fragments):
        _run(name, seed=seed)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize(
    "init, fragments",
    [
        pytest.param(torch.zeros(1, 3), ("(1, 2)", "(1, 3)"), id="wrong-dim"),
        pytest.param(torch.zeros(2, 2), ("(1, 2)", "(2, 2)"), id="wrong-chains"),
        pytest.param(torch.tensor([[NAN, 0.0]]), (NON_FINITE, "init"), id="nan"),
        pytest.param(torch.tensor([[INF, 0.0]]), (NON_FINITE, "init"), id="inf"),
        pytest.param("origin", ("init", "str"), id="str"),
    ],
)
def test_bad_init(name, init, fragments):
    with raises_naming(fragments):
        _run(name, init=init)


@pytest.mark.parametrize("name", NAMES)
def test_numpy_init_same_as_tensor(name):
    init = torch.tensor([[0.1, -0.2]])
    a = _run(name, init=init)
    b = _run(name, init=init.double().numpy())
    assert torch.allclose(a.samples.float(), b.samples.float(), atol=1e-5)


@pytest.mark.parametrize("name", NAMES)
def test_a_single_draw_is_a_valid_budget(name):
    result = _run(name, num_samples=1, warmup=2)
    assert result.samples.shape == (1, 1, 2) and torch.isfinite(result.samples).all()


@pytest.mark.parametrize("name", NAMES)
def test_dim_disagrees_with_target(name):
    with raises_naming(("dim=3", "2")):
        _run(name, dim=3)


@pytest.mark.parametrize("name", NAMES)
def test_user_target_of_the_wrong_dimension(name):
    weights = torch.ones(3)

    def log_prob(z):  # written for 3-D points
        return -0.5 * (z @ weights) ** 2

    with raises_naming(("target", "2")):
        _run(name, log_prob, dim=2)


@pytest.mark.parametrize("name", NAMES)
def test_user_target_of_the_wrong_output_shape(name):
    with raises_naming(("target", "(1, 2)")):
        _run(name, lambda z: -0.5 * z**2, dim=2)


@pytest.mark.parametrize("name", NAMES)
def test_user_target_nan_at_the_start(name):
    with raises_naming((NON_FINITE,)):
        _run(name, lambda z: z.sum(-1) * NAN, dim=2)


@pytest.mark.parametrize("name", NAMES)
def test_callable_target_needs_dim(name):
    with raises_naming("dim"):
        _run(name, lambda z: -0.5 * (z**2).sum(-1))


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("target", [42, "banana-ish", None])
def test_bad_target(name, target):
    with raises_naming("target"):
        _run(name, target, dim=2)


@pytest.mark.parametrize(
    "name, kwargs, fragments",
    [
        ("nuts", {"max_tree_depth": 0}, ("max_tree_depth", "0")),
        ("nuts", {"max_tree_depth": 2.5}, ("max_tree_depth", "2.5")),
        ("nuts", {"dense_mass": "yes"}, ("dense_mass", "str")),
        ("hmc", {"num_steps": 0}, ("num_steps", "0")),
        ("hmc", {"trajectory_length": -1.0}, ("trajectory_length", "-1")),
        ("hmc", {"trajectory_length": NAN}, ("trajectory_length", "nan")),
        ("hmc", {"adapt_step_size": "no"}, ("adapt_step_size", "str")),
        ("langevin", {"adjust": "yes"}, ("adjust", "str")),
        ("rwm", {"device": "tpu"}, ("device", "tpu")),
    ],
)
def test_sampler_specific_options(name, kwargs, fragments):
    with raises_naming(fragments):
        _run(name, **kwargs)


# -- importance sampling and NeuTra ---------------------------------------------------------------
def _flow(dim: int = 2):
    torch.manual_seed(0)
    return flows.realnvp(dim, num_transforms=1, hidden_dims=(4,))


@pytest.mark.parametrize(
    "kwargs, fragments",
    [
        *[pytest.param({"num_samples": p.values[0]}, p.values[1], id=f"n-{p.id}")
          for p in bad_positive_ints("num_samples")],
        pytest.param({"batch_size": 0}, ("batch_size", "0"), id="batch"),
        pytest.param({"resample": "yes"}, ("resample", "str"), id="resample"),
        pytest.param({"seed": "s"}, ("seed", "str"), id="seed"),
        pytest.param({"dim": 3}, ("3", "2"), id="dim"),
    ],
)
def test_importance_sample_bad_options(kwargs, fragments):
    options = {"num_samples": 16, **kwargs}
    with raises_naming(fragments):
        importance_sample(_flow(), get_target("banana"), **options)


def test_importance_sample_flow_of_wrong_dimension():
    with raises_naming(("3", "2")):
        importance_sample(_flow(3), get_target("banana"), num_samples=16)


def test_importance_sample_bad_proposal():
    with raises_naming(("proposal", "str")):
        importance_sample("normal", get_target("banana"), num_samples=16)


@pytest.mark.parametrize(
    "kwargs, fragments",
    [
        pytest.param({"training_grad_evals": -1}, ("training_grad_evals", "-1"), id="evals"),
        pytest.param({"num_samples": 0}, ("num_samples", "0"), id="samples"),
        pytest.param({"num_chains": 0}, ("num_chains", "0"), id="chains"),
        pytest.param({"target_accept": 2.0}, ("target_accept", "2"), id="accept"),
    ],
)
def test_neutra_bad_options(kwargs, fragments):
    options = {"num_samples": 3, "warmup": 2, "num_chains": 1, "progress": False, **kwargs}
    with raises_naming(fragments):
        neutra(_flow(), get_target("banana"), **options)


def test_neutra_flow_of_wrong_dimension():
    with raises_naming(("3", "2")):
        neutra(_flow(3), get_target("banana"), num_samples=3, warmup=2, num_chains=1,
               progress=False)


def test_neutra_conditional_flow_refused():
    torch.manual_seed(0)
    flow = flows.realnvp(2, num_transforms=1, hidden_dims=(4,), context_dim=1)
    with raises_naming("context"):
        neutra(flow, get_target("banana"), num_samples=3, warmup=2, num_chains=1,
               progress=False)


# -- resampling and diagnostics -----------------------------------------------------------------
def _generator() -> torch.Generator:
    return torch.Generator().manual_seed(0)


@pytest.mark.parametrize(
    "log_weights, num, fragments",
    [
        pytest.param(torch.zeros(4), 0, ("num", "0"), id="num-0"),
        pytest.param(torch.zeros(4), -1, ("num", "-1"), id="num-negative"),
        pytest.param(torch.tensor([0.0, NAN]), 3, ("NaN",), id="nan"),
        pytest.param(torch.full((3,), -INF), 3, ("-inf",), id="all-minus-inf"),
        pytest.param(torch.zeros(0), 3, ("empty", "(0,)"), id="empty"),
        pytest.param(torch.zeros(2, 2), 3, ("(2, 2)",), id="2d"),
    ],
)
def test_systematic_resample_bad(log_weights, num, fragments):
    with raises_naming(fragments):
        systematic_resample(log_weights, num, _generator())


DIAGNOSTICS = {
    "psis_khat": psis_khat,
    "ess_fraction": ess_fraction,
    "importance_log_Z": importance_log_Z,
}


@pytest.mark.parametrize("name", sorted(DIAGNOSTICS))
@pytest.mark.parametrize(
    "log_weights, fragments",
    [
        pytest.param(torch.zeros(0), (EMPTY,), id="empty"),
        pytest.param(torch.tensor([0.0, NAN, 1.0]), ("NaN",), id="nan"),
        pytest.param(torch.tensor([0.0, INF, 1.0]), ("inf",), id="plus-inf"),
        pytest.param(torch.full((5,), -INF), ("-inf",), id="all-minus-inf"),
        pytest.param("weights", ("str",), id="str"),
    ],
)
def test_weight_diagnostics_bad(name, log_weights, fragments):
    with raises_naming(fragments):
        DIAGNOSTICS[name](log_weights)


@pytest.mark.parametrize("name", sorted(DIAGNOSTICS))
def test_weight_diagnostics_numpy_and_list_same_as_tensor(name):
    lw = torch.randn(200, generator=_generator(), dtype=torch.float64)
    expected = DIAGNOSTICS[name](lw)
    for value in (lw.numpy(), lw.tolist()):
        got = DIAGNOSTICS[name](value)
        assert np.allclose(np.asarray(got, dtype=float), np.asarray(expected, dtype=float),
                           atol=1e-8)


@pytest.mark.parametrize(
    "x, dim, fragments",
    [
        pytest.param(torch.zeros(0), -1, (EMPTY,), id="empty"),
        pytest.param(torch.zeros(3), 2, ("dim", "2"), id="bad-dim"),
        pytest.param(torch.tensor([0.0, NAN]), -1, ("NaN",), id="nan"),
    ],
)
def test_log_mean_exp_bad(x, dim, fragments):
    with raises_naming(fragments):
        log_mean_exp(x, dim)


def test_log_mean_exp_minus_inf_is_minus_inf():
    assert log_mean_exp(torch.full((3,), -INF)).item() == -INF


@pytest.mark.parametrize(
    "samples, fragments",
    [
        pytest.param(torch.zeros(10, 2), ("draws", "2"), id="2d"),
        pytest.param(torch.zeros(2, 0, 2), ("draws", "0"), id="no-draws"),
        pytest.param(torch.full((2, 10, 2), NAN), ("NaN",), id="nan"),
        pytest.param("chains", ("str",), id="str"),
    ],
)
def test_mcmc_diagnostics_bad(samples, fragments):
    with raises_naming(fragments):
        mcmc_diagnostics(samples)


@pytest.mark.parametrize(
    "kwargs, fragments",
    [
        pytest.param({"mean": torch.zeros(3)}, ("mean", "2", "3"), id="mean-shape"),
        pytest.param({"std": torch.zeros(2)}, ("std", "0"), id="std-zero"),
        pytest.param({"std": -1.0}, ("std", "-1"), id="std-negative"),
        pytest.param({"mean": NAN}, ("mean", "nan"), id="mean-nan"),
        pytest.param({"log_weights": torch.zeros(7)}, ("7", "20"), id="weights-shape"),
    ],
)
def test_moment_errors_bad(kwargs, fragments):
    options = {"mean": 0.0, "std": 1.0, **kwargs}
    samples = torch.randn(2, 10, 2, generator=_generator())
    with raises_naming(fragments):
        moment_errors(samples, **options)


def test_reference_moment_errors_dim_mismatch():
    with raises_naming(("3", "2")):
        reference_moment_errors(torch.zeros(2, 10, 2), torch.randn(50, 3))


@pytest.mark.parametrize(
    "kwargs, fragments",
    [
        pytest.param({"num_samples": 0}, ("num_samples", "0"), id="samples"),
        pytest.param({"batch_size": -1}, ("batch_size", "-1"), id="batch"),
        pytest.param({"dim": 3}, ("3", "2"), id="dim"),
    ],
)
def test_flow_diagnostics_bad(kwargs, fragments):
    with raises_naming(fragments):
        flow_diagnostics(_flow(), get_target("banana"), **kwargs)
