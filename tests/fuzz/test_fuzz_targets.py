"""Fuzz: :mod:`pyro_flows.targets` (``get_target``, every target, ``model_target``) on bad
names, options, points, dtypes and sample shapes."""

from __future__ import annotations

import math

import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch

from pyro_flows.targets import (
    TARGETS,
    U2,
    Banana,
    Funnel,
    GaussianMixture,
    IllConditionedGaussian,
    Ring,
    get_target,
    model_target,
)

from ._cases import INF, NAN, NON_FINITE, raises_naming, result_or_refusal

#: small versions of every registered target
SMALL = {"funnel": {"dim": 3}, "gaussian100": {"dim": 4}}
NAMES = sorted(TARGETS)


def _target(name: str):
    return get_target(name, **SMALL.get(name, {}))


def _points(target, n: int = 5) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    return (torch.rand(n, target.dim, generator=g) * 2 - 1).to(target.dtype)


@pytest.mark.parametrize(
    "name, kwargs, fragments",
    [
        ("no-such-target", {}, ("'no-such-target'", "funnel")),
        (3, {}, ("name", "int")),
        (None, {}, ("name", "NoneType")),
        ("funnel", {"bogus": 1}, ("funnel", "bogus")),
    ],
)
def test_get_target_bad(name, kwargs, fragments):
    with raises_naming(fragments):
        get_target(name, **kwargs)


@pytest.mark.parametrize(
    "make, fragments",
    [
        pytest.param(lambda: Funnel(dim=1), ("dim", "1"), id="funnel-dim"),
        pytest.param(lambda: Funnel(scale=0.0), ("scale", "0"), id="funnel-scale"),
        pytest.param(lambda: Funnel(scale=NAN), ("scale", "nan"), id="funnel-nan"),
        pytest.param(lambda: Banana(curvature=NAN), ("curvature", "nan"), id="banana-curv"),
        pytest.param(lambda: Banana(scale=-1.0), ("scale", "-1"), id="banana-scale"),
        pytest.param(lambda: Ring(radius=0.0), ("radius", "0"), id="ring-radius"),
        pytest.param(lambda: Ring(width=INF), ("width", "inf"), id="ring-width"),
        pytest.param(lambda: GaussianMixture(num_modes=0), ("num_modes", "0"), id="mix-modes"),
        pytest.param(lambda: GaussianMixture(weights=[0.5, 0.5]), ("weights", "2", "4"),
                     id="mix-weights-len"),
        pytest.param(lambda: GaussianMixture(weights=[1.0, -1.0, 0.5, 0.5]), ("weights", "-1"),
                     id="mix-weights-neg"),
        pytest.param(lambda: GaussianMixture(weights=[NAN, 1.0, 1.0, 1.0]), ("weights", "nan"),
                     id="mix-weights-nan"),
        pytest.param(lambda: GaussianMixture(centres=torch.zeros(4, 3)), ("centres", "(4, 3)"),
                     id="mix-centres"),
        pytest.param(lambda: IllConditionedGaussian(dim=4, condition_number=0.5),
                     ("condition_number", "0.5"), id="gauss-cond"),
        pytest.param(lambda: IllConditionedGaussian(dim=4, seed="x"), ("seed", "str"),
                     id="gauss-seed"),
        pytest.param(lambda: U2(boundary="wall"), ("boundary", "'wall'"), id="u2-boundary"),
        pytest.param(lambda: U2(box=0.0), ("box", "0"), id="u2-box"),
    ],
)
def test_bad_target_options(make, fragments):
    with raises_naming(fragments):
        make()


# -- points -------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", NAMES)
def test_log_prob_wrong_event_size(name):
    target = _target(name)
    d = target.dim
    with raises_naming((f"(..., {d})", f"(4, {d + 1})")):
        target.log_prob(torch.zeros(4, d + 1))
    with raises_naming((f"(..., {d})", "()")):
        target.log_prob(torch.tensor(0.0))


@pytest.mark.parametrize("name", NAMES)
def test_log_prob_nan_is_never_a_number(name):
    """NaN in gives NaN (or -inf, outside a box target's support) out for that row, never a
    number (as torch.distributions do: Pyro's HMC/NUTS evaluate
    the potential at the NaN positions of a diverged trajectory and treat them as divergences,
    so refusing would crash the samplers); the other rows keep their values."""
    target = _target(name)
    z = _points(target)
    clean = target.log_prob(z)
    z[2, 0] = NAN
    out = target.log_prob(z)
    assert torch.isnan(out[2]) or out[2] == -math.inf
    keep = torch.arange(out.shape[0]) != 2
    assert torch.allclose(out[keep], clean[keep], equal_nan=True)


@pytest.mark.parametrize("name", NAMES)
def test_log_prob_at_infinity_is_minus_inf_or_refused(name):
    target = _target(name)
    z = _points(target)
    z[2, 0] = INF
    got = result_or_refusal(lambda: target.log_prob(z), (NON_FINITE,))
    if got is not None:
        assert got[2] == -INF and torch.isfinite(got[[0, 1, 3, 4]]).all()


@pytest.mark.parametrize("name", NAMES)
def test_log_prob_numpy_and_list_same_as_tensor(name):
    target = _target(name)
    z = _points(target)
    expected = target.log_prob(z)
    assert torch.allclose(target.log_prob(z.double().numpy()), expected, atol=1e-5)
    assert torch.allclose(target.log_prob(z.tolist()), expected, atol=1e-5)


@pytest.mark.parametrize("name", NAMES)
def test_log_prob_integer_points(name):
    target = _target(name)
    z = torch.zeros(2, target.dim, dtype=torch.int64)
    got = result_or_refusal(lambda: target.log_prob(z), ("dtype", "int64"))
    if got is not None:
        assert torch.allclose(got, target.log_prob(z.to(target.dtype)))


@pytest.mark.parametrize("name", NAMES)
def test_log_prob_complex_and_strings_refused(name):
    target = _target(name)
    with raises_naming("complex"):
        target.log_prob(torch.zeros(2, target.dim, dtype=torch.complex64))
    with raises_naming("str"):
        target.log_prob("origin")
    with raises_naming("dtype"):
        target.log_prob(np.array([["a"] * target.dim]))


@pytest.mark.parametrize("name", NAMES)
def test_log_prob_empty_and_batched(name):
    target = _target(name)
    assert target.log_prob(torch.zeros(0, target.dim)).shape == (0,)
    z = _points(target, 6)
    got = target.log_prob(z.reshape(2, 3, target.dim))
    assert got.shape == (2, 3)
    assert torch.allclose(got.reshape(-1), target.log_prob(z), atol=1e-5)


@pytest.mark.parametrize("name", NAMES)
def test_log_prob_float64_points(name):
    target = _target(name)
    z = _points(target)
    got = result_or_refusal(lambda: target.log_prob(z.double()), ("float64",))
    if got is not None:
        assert torch.allclose(got.to(target.dtype), target.log_prob(z), atol=1e-4)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize(
    "shape, fragments, exc",
    [
        pytest.param(-1, ("sample_shape", "-1"), ValueError, id="negative"),
        pytest.param((2, -1), ("sample_shape", "-1"), ValueError, id="negative-entry"),
        pytest.param(2.5, ("sample_shape", "2.5"), TypeError, id="float"),
        pytest.param("3", ("sample_shape", "'3'"), TypeError, id="str"),
    ],
)
def test_sample_bad_shape(name, shape, fragments, exc):
    with raises_naming(fragments, exc):
        _target(name).sample(shape)


@pytest.mark.parametrize("name", NAMES)
def test_sample_zero_and_numpy_int(name):
    target = _target(name)
    assert target.sample(0).shape == (0, target.dim)
    assert target.sample(np.int64(2)).shape == (2, target.dim)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("params", [{"x": torch.zeros(2)}, torch.zeros(2), None])
def test_potential_fn_bad_params(name, params):
    with raises_naming("'z'"):
        _target(name).potential_fn(params)


# -- Pyro models --------------------------------------------------------------------------------
def test_model_target_discrete_site_refused():
    def model():
        pyro.sample("k", dist.Categorical(torch.ones(3)))
        pyro.sample("x", dist.Normal(0.0, 1.0))

    with raises_naming(("'k'", "discrete")):
        model_target(model)


def test_model_target_without_latents_refused():
    def model(y):
        pyro.sample("y", dist.Normal(0.0, 1.0), obs=y)

    with raises_naming("latent"):
        model_target(model, torch.tensor(0.5))


def test_model_target_not_callable():
    with raises_naming(("model", "str")):
        model_target("model")


def test_model_target_points():
    def model(y):
        mu = pyro.sample("mu", dist.Normal(0.0, 1.0))
        with pyro.plate("data", len(y)):
            pyro.sample("y", dist.Normal(mu, 1.0), obs=y)

    target = model_target(model, torch.tensor([0.1, -0.3]))
    with raises_naming(("(..., 1)", "(3, 2)")):
        target.log_prob(torch.zeros(3, 2))
    with raises_naming((NON_FINITE,)):
        target.log_prob(torch.tensor([[NAN]]))
    expected = target.log_prob(torch.tensor([[0.2], [0.4]]))
    assert torch.allclose(target.log_prob(np.array([[0.2], [0.4]])), expected, atol=1e-5)
