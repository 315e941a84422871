"""How a user's target is read: one adapter (``as_target``) for the samplers, importance
sampling, NeuTra and ``fit_target``, and what every target's ``log_prob`` accepts."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import Tensor

from pyro_flows import flows
from pyro_flows.infer import (
    TargetError,
    fit_target,
    importance_sample,
    mala,
    neutra,
    nuts,
    random_walk_metropolis,
)
from pyro_flows.infer.results import (
    TargetOutputError,
    TargetOutputTypeError,
    as_target,
    target_dim,
)
from pyro_flows.targets import TARGETS, Funnel, ModelTarget, get_target


def mvn(dim: int) -> torch.distributions.MultivariateNormal:
    return torch.distributions.MultivariateNormal(torch.zeros(dim), torch.eye(dim))


def written_for_3d(z: Tensor) -> Tensor:
    """A user's target for D = 3 that does not say so."""
    return mvn(3).log_prob(z)


def small_flow(dim: int = 2):
    torch.manual_seed(0)
    return flows.realnvp(dim, num_transforms=1, hidden_dims=(8,))


def _chain(err: BaseException) -> str:
    parts = []
    while err is not None:
        parts.append(f"{type(err).__name__}: {err}")
        err = err.__cause__
    return " <- ".join(parts)


# -- a target written for another dimension -------------------------------------------------
@pytest.mark.parametrize(
    "run",
    [
        lambda t: random_walk_metropolis(t, dim=2, num_samples=5, warmup=5, progress=False),
        lambda t: mala(t, dim=2, num_samples=5, warmup=5, progress=False),
        lambda t: nuts(t, dim=2, num_samples=5, warmup=5, num_chains=1, progress=False),
        lambda t: importance_sample(mvn(2), t, dim=2, num_samples=20, seed=0),
        lambda t: neutra(small_flow(2), t, num_samples=5, warmup=5, progress=False),
    ],
    ids=["rwm", "mala", "nuts", "importance", "neutra"],
)
def test_a_callable_for_another_dimension_names_the_dimension_given(run):
    with pytest.raises(TargetOutputError) as info:
        run(written_for_3d)
    message = str(info.value)
    assert "first evaluation" in message and "dim=2" in message, message
    assert ", 2)" in message  # the shape of the points it was given
    assert isinstance(info.value.__cause__, (RuntimeError, ValueError))  # the original error


def test_fit_target_names_the_dimension_and_leaves_the_flow_alone():
    flow = small_flow(2)
    before = [p.detach().clone() for p in flow.parameters()]
    with pytest.raises(TargetError, match=r"first evaluation, at z of shape \(16, 2\) \(dim=2"):
        fit_target(flow, written_for_3d, steps=3, batch_size=16, progress=False)
    assert all(torch.equal(p, q) for p, q in zip(flow.parameters(), before, strict=True))


def test_a_target_that_states_another_dimension_is_refused_up_front():
    with pytest.raises(ValueError, match="dim=2 but the target has dimension 3"):
        random_walk_metropolis(mvn(3), dim=2, progress=False)
    with pytest.raises(ValueError, match="dim=2 but the target has dimension 3"):
        neutra(small_flow(2), Funnel(dim=3), progress=False)
    with pytest.raises(ValueError, match="dim=2 but the target has dimension 3"):
        as_target(as_target(Funnel(dim=3)), dim=2)
    with pytest.raises(ValueError, match="dimension 3 but the flow has input_dim 2"):
        fit_target(small_flow(2), Funnel(dim=3), steps=1, progress=False)


def test_outputs_are_checked_for_shape_and_dtype():
    with pytest.raises(TargetOutputError, match=r"returned shape \(2,\) for z of shape \(4, 2\)"):
        as_target(lambda z: -(z**2).sum(0), dim=2)(torch.zeros(4, 2))
    with pytest.raises(TypeError, match="real floating-point.*torch.int64"):
        as_target(lambda z: z.sum(-1).long(), dim=2)(torch.zeros(4, 2))
    with pytest.raises(TypeError, match="real floating-point.*torch.complex64"):
        as_target(lambda z: z.sum(-1) * 1j, dim=2)(torch.zeros(4, 2))
    with pytest.raises(TypeError, match="must return a Tensor.*got ndarray"):
        as_target(lambda z: np.zeros(4), dim=2)(torch.zeros(4, 2))
    assert issubclass(TargetOutputTypeError, TypeError)
    with pytest.raises(TargetError, match="real floating-point"):
        fit_target(small_flow(2), lambda z: z.sum(-1).long(), steps=1, progress=False)


def test_only_the_first_evaluation_is_reworded():
    calls = {"n": 0}

    def flaky(z: Tensor) -> Tensor:
        calls["n"] += 1
        if calls["n"] == 3:
            raise RuntimeError("the target's own failure")
        return -(z**2).sum(-1)

    density = as_target(flaky, dim=2)
    density(torch.zeros(3, 2))
    density(torch.zeros(3, 2))
    with pytest.raises(RuntimeError, match="^the target's own failure$"):
        density(torch.zeros(3, 2))
    assert density.num_log_prob_evals == 6


def test_target_dim_and_bad_targets():
    assert target_dim(Funnel(dim=4)) == 4
    assert target_dim(mvn(3)) == 3 and target_dim(written_for_3d) is None
    with pytest.raises(TypeError, match="log_prob.*got int"):
        target_dim(3)
    with pytest.raises(TypeError, match="dtype must be a floating torch.dtype"):
        as_target(written_for_3d, dim=3, dtype=torch.int64)


# -- what log_prob accepts ----------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(TARGETS))
def test_every_target_takes_numpy_arrays_and_lists(name):
    target = get_target(name)
    rng = np.random.default_rng(0)
    points = rng.normal(size=(5, target.dim)) * 0.5
    expected = target.log_prob(torch.as_tensor(points, dtype=target.dtype))
    for given in (points, points.astype(np.float32), points.tolist()):
        got = target.log_prob(given)
        assert got.dtype == target.dtype and got.device == target.device
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5, equal_nan=True)


def test_numpy_input_takes_the_targets_dtype_and_device():
    assert Funnel(dim=3).double().log_prob(np.zeros((2, 3), np.float32)).dtype == torch.float64
    out = Funnel(dim=3).to("meta").log_prob(np.zeros((2, 3)))
    assert out.device == torch.device("meta") and out.shape == (2,)
    assert Funnel(dim=2).log_prob([[0, 1], [2, 3]]).shape == (2,)  # ints become floats


def test_numpy_input_of_a_model_target():
    import pyro
    import pyro.distributions as dist

    def model(y):
        mu = pyro.sample("mu", dist.Normal(0.0, 1.0))
        with pyro.plate("data", len(y)):
            pyro.sample("y", dist.Normal(mu, 1.0), obs=y)

    target = ModelTarget(model, (torch.tensor([0.5, 1.5], dtype=torch.float64),))
    assert target.device == torch.device("cpu") and target.dtype == torch.float64
    torch.testing.assert_close(
        target.log_prob(np.array([[0.3]])), target.log_prob(torch.tensor([[0.3]]).double())
    )


def test_bad_inputs_are_type_and_value_errors():
    target = Funnel(dim=3)
    with pytest.raises(ValueError, match=r"expected z of shape \(\.\.\., 3\).*got shape \(2, 4\)"):
        target.log_prob(np.zeros((2, 4)))
    with pytest.raises(TypeError, match="NumPy array or list of numbers.*got dict"):
        target.log_prob({"z": 0.0})
    with pytest.raises(TypeError, match="ndarray of dtype bool"):
        target.log_prob(np.zeros((2, 3), dtype=bool))
    with pytest.raises(TypeError, match="ragged list"):
        target.log_prob([[0.0, 1.0, 2.0], [0.0]])
    with pytest.raises(TypeError, match="of dtype <U"):
        target.log_prob(["a", "b", "c"])
    with pytest.raises(TypeError, match="Funnel lives on cpu, but z is on meta"):
        target.log_prob(torch.zeros(2, 3, device="meta"))
