"""The interface every registered target shares: shapes, dtypes, gradients, errors, samples,
potential_fn for Pyro's NUTS, the registry."""

from __future__ import annotations

import pytest
import torch
from pyro.infer import MCMC, NUTS
from torch.distributions import constraints

from pyro_flows.targets.base import Target, check_sample_shape
from pyro_flows.targets.registry import TARGETS, get_target

NAMES = sorted(TARGETS)


@pytest.fixture(scope="module")
def targets() -> dict[str, Target]:
    return {name: get_target(name) for name in NAMES}


def test_registry_names_and_defaults(targets):
    assert set(NAMES) == {
        "u1", "u2", "u3", "u4", "funnel", "banana", "ring", "mixture", "gaussian100", "gmm40",
        "many_well",
    }  # fmt: skip
    for name, target in targets.items():
        assert isinstance(target, Target) and target.name == name
    assert targets["funnel"].dim == 10 and targets["gaussian100"].dim == 100
    assert get_target("Funnel", dim=3).dim == 3  # case-insensitive, options passed on


def test_registry_errors():
    with pytest.raises(ValueError, match="unknown target 'donut'; valid names: u1, u2"):
        get_target("donut")
    with pytest.raises(TypeError, match="target 'ring' does not take these options"):
        get_target("ring", curvature=0.1)
    with pytest.raises(TypeError, match="target name must be a str"):
        get_target(3)


@pytest.mark.parametrize("name", NAMES)
def test_facts_are_declared(targets, name):
    t = targets[name]
    assert isinstance(t.log_Z, float) and t.has_exact_samples
    assert t.mean.shape == t.std.shape == (t.dim,)
    assert (t.std > 0).all() and torch.isfinite(t.mean).all()
    assert 1 <= len(t.bounds) <= 2 and all(lo < hi for lo, hi in t.bounds)
    assert isinstance(t.support, constraints.Constraint)
    assert "log_Z=" in repr(t)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("batch", [(), (3,), (2, 4)], ids=str)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_log_prob_shapes_dtypes_and_gradients(targets, name, batch, dtype):
    t = targets[name]
    torch.manual_seed(0)
    z = t.sample(batch).to(dtype).requires_grad_(True)
    lp = t.log_prob(z)
    assert lp.shape == batch and lp.dtype == dtype
    assert torch.isfinite(lp).all()
    lp.sum().backward()
    assert torch.isfinite(z.grad).all()
    torch.testing.assert_close(t(z), lp)  # the module call is log_prob


@pytest.mark.parametrize("name", NAMES)
def test_bad_inputs_name_what_was_expected(targets, name):
    t = targets[name]
    d = t.dim
    expected = rf"expected z of shape \(\.\.\., {d}\).*got shape \(5, {d + 1}\)"
    with pytest.raises(ValueError, match=expected):
        t.log_prob(torch.zeros(5, d + 1))
    with pytest.raises(ValueError, match=r"got shape \(\)"):
        t.log_prob(torch.tensor(0.0))
    with pytest.raises(ValueError, match="floating-point tensor.*got dtype torch.int64"):
        t.log_prob(torch.zeros(2, d, dtype=torch.long))
    with pytest.raises(TypeError, match="expected a torch.Tensor, NumPy array.*got str"):
        t.log_prob("0.0")
    with pytest.raises(ValueError, match=rf"expected z of shape \(\.\.\., {d}\)"):
        t.log_prob([0.0] * (d + 1))  # lists are taken, but must have the event size


@pytest.mark.parametrize("name", NAMES)
def test_samples_shapes_support_and_seed(targets, name):
    t = targets[name]
    torch.manual_seed(5)
    x = t.sample((2, 3))
    assert x.shape == (2, 3, t.dim) and x.dtype == torch.get_default_dtype()
    assert t.sample().shape == (t.dim,) and t.sample(0).shape == (0, t.dim)
    assert t.support.check(x).all()
    torch.manual_seed(5)
    torch.testing.assert_close(t.sample((2, 3)), x)


@pytest.mark.parametrize("name", NAMES)
def test_bounds_cover_most_samples(targets, name):
    t = targets[name]
    torch.manual_seed(6)
    x = t.sample(4000)
    inside = torch.ones(4000, dtype=torch.bool)
    for d, (lo, hi) in enumerate(t.bounds):
        inside &= (x[:, d] >= lo) & (x[:, d] <= hi)
    assert inside.double().mean() > 0.9


@pytest.mark.parametrize("name", NAMES)
def test_potential_fn_and_initial_params(targets, name):
    t = targets[name]
    params = t.initial_params()
    assert set(params) == {"z"} and params["z"].shape == (t.dim,)
    u = t.potential_fn(params)
    assert u.shape == () and torch.isfinite(u)
    torch.testing.assert_close(u, -t.log_prob(params["z"]))
    # the start is a point of high density: above the median density of exact samples
    torch.manual_seed(7)
    assert -u > t.log_prob(t.sample(501)).median()
    with pytest.raises(ValueError, match="expects a dict with the key 'z', got \\['x'\\]"):
        t.potential_fn({"x": params["z"]})


def test_to_double_moves_buffers_and_samples():
    t = get_target("mixture").double()
    assert t.modes.dtype == t.mean.dtype == torch.float64
    assert t.sample(3).dtype == torch.float64
    z = torch.randn(4, 2, dtype=torch.float64)
    assert t.log_prob(z).dtype == torch.float64
    # a float32 target scores float64 points in float64 as well
    assert get_target("mixture").log_prob(z).dtype == torch.float64


def test_normalized_log_prob():
    t = get_target("u1")
    z = torch.randn(3, 2)
    torch.testing.assert_close(t.normalized_log_prob(z), t.log_prob(z) - t.log_Z)


def test_check_sample_shape():
    assert check_sample_shape(torch.Size([2])) == (2,)
    with pytest.raises(ValueError, match="negative"):
        check_sample_shape((2, -1))
    with pytest.raises(TypeError, match="sequence of ints"):
        check_sample_shape(2.5)
    with pytest.raises(TypeError, match="entry of type float"):
        check_sample_shape((2.0,))


def test_nuts_runs_on_potential_fn():
    """Pyro's NUTS takes ``potential_fn`` and ``initial_params`` as they are."""
    torch.manual_seed(0)
    t = get_target("gaussian100", dim=3, condition_number=4.0)
    kernel = NUTS(potential_fn=t.potential_fn)
    mcmc = MCMC(kernel, num_samples=200, warmup_steps=100, initial_params=t.initial_params(),
                disable_progbar=True)  # fmt: skip
    mcmc.run()
    z = mcmc.get_samples()["z"]
    assert z.shape == (200, 3) and torch.isfinite(z).all()
    # 200 correlated draws of a Gaussian with sds in [0.7, 1.4]: the mean is within 0.5
    assert (z.mean(0) - t.mean).abs().max() < 0.5
