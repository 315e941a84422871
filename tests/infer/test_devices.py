"""Every sampler / inference entry point works on the device of its target, flow or data.

There is no GPU here, so two stand-ins catch the mistakes a GPU would:

- **A default device of ``meta``** (``with torch.device("meta")``) around a run on a CPU target:
  any tensor the library makes without naming a device lands on ``meta`` and then either
  clashes with the target's CPU tensors or comes back in the result, where the tests look. Only
  entry points free of third-party tensor creation are run so (Pyro models make their own).
- **A target on ``meta``**: the library must build its points there; the run may stop only
  where meta tensors cannot compute (``Tensor.item()`` / copying data out), never on a device
  mismatch.
"""

from __future__ import annotations

import math
import warnings

import pytest
import torch
from torch import Tensor, nn

from pyro_flows import flows
from pyro_flows.infer import (
    TargetError,
    fit_target,
    flow_diagnostics,
    hmc,
    importance_sample,
    mala,
    neutra,
    nuts,
    random_walk_metropolis,
    ula,
)
from pyro_flows.infer.importance import systematic_resample
from pyro_flows.infer.results import SampleResult, TargetOutputError, as_target
from pyro_flows.targets import Funnel

META = torch.device("meta")
CPU = torch.device("cpu")
# what meta tensors cannot do: read a value or copy data out
META_LIMITS = ("cannot be called on meta tensors", "Cannot copy out of meta tensor")
MISMATCH = ("expected device", "same device", "is not on the expected device", "lives on")


class Recording(nn.Module):
    """A Gaussian target with a buffer (so it has a device) that records the devices and
    dtypes of the points it is given."""

    def __init__(self, dim: int = 3) -> None:
        super().__init__()
        self.dim = dim
        self.register_buffer("scale", torch.ones(dim))
        self.seen: list[tuple[torch.device, torch.dtype]] = []

    def log_prob(self, z: Tensor) -> Tensor:
        self.seen.append((z.device, z.dtype))
        return -0.5 * ((z / self.scale) ** 2).sum(-1)


def _small_flow(dim: int = 3) -> nn.Module:
    torch.manual_seed(0)
    return flows.realnvp(dim, num_transforms=1, hidden_dims=(8,))


def _tensors(result: SampleResult) -> list[Tensor]:
    found = [result.samples]
    found += [t for t in (result.step_size, result.log_weights) if isinstance(t, Tensor)]
    found += [v for v in result.extra.values() if isinstance(v, Tensor)]
    return found


def _all_on(tensors: list[Tensor], device: torch.device) -> None:
    wrong = [(tuple(t.shape), t.device) for t in tensors if t.device != device]
    assert not wrong, f"tensors not on {device}: {wrong}"


# -- tensors made inside the library carry the target's device -----------------------------
SAMPLERS = {
    "random_walk_metropolis": random_walk_metropolis,
    "mala": mala,
    "ula": ula,
    "nuts": nuts,
    "hmc": hmc,
}


@pytest.mark.parametrize("name", sorted(SAMPLERS))
@pytest.mark.parametrize("init", [False, True], ids=["drawn-init", "given-init"])
def test_samplers_name_the_device_of_every_tensor_they_make(name, init):
    target = Funnel(dim=3)
    start = torch.zeros(2, 3) if init else None
    with torch.device("meta"):
        result = SAMPLERS[name](
            target, num_samples=6, warmup=6, num_chains=2, init=start, progress=False, seed=0
        )
        summary = result.diagnostics()
    _all_on(_tensors(result), CPU)
    assert result.samples.shape == (2, 6, 3)
    assert math.isfinite(summary["ess"])


def test_a_callable_target_runs_where_its_init_is():
    with torch.device("meta"):
        result = random_walk_metropolis(
            lambda z: -(z**2).sum(-1), dim=2, init=torch.zeros(2, device="cpu"),
            num_samples=5, warmup=5, progress=False, seed=0,
        )
    _all_on(_tensors(result), CPU)


def test_importance_sampling_and_flow_diagnostics_name_their_devices():
    flow, target = _small_flow(), Funnel(dim=3)
    proposal = torch.distributions.MultivariateNormal(torch.zeros(3), torch.eye(3))
    with torch.device("meta"):
        for q in (flow, proposal):
            result = importance_sample(q, target, num_samples=40, seed=0)
            _all_on(_tensors(result), CPU)
            assert math.isfinite(result.diagnostics()["ess"])
        report = flow_diagnostics(flow, target, num_samples=40)
    assert math.isfinite(report["elbo"])


def test_neutra_and_fit_target_name_their_devices():
    flow, target = _small_flow(), Funnel(dim=3)
    with torch.device("meta"):
        history = fit_target(flow, target, steps=2, batch_size=8, eval_samples=16, progress=False)
        result = neutra(flow, target, num_samples=4, warmup=4, num_chains=1, progress=False)
    assert len(history.elbo) == 2
    _all_on(_tensors(result), CPU)


def test_systematic_resampling_follows_the_weights_device():
    idx = systematic_resample(torch.zeros(5, device=META), 4, torch.Generator().manual_seed(0))
    assert idx.device == META and idx.shape == (4,)
    with torch.device("meta"):
        idx = systematic_resample(torch.zeros(5, device=CPU), 4, torch.Generator().manual_seed(0))
    assert idx.device == CPU and idx.shape == (4,)


# -- a target on another device: points are made there ------------------------------------
def _fails_only_for_meta(call) -> None:
    with pytest.raises((RuntimeError, NotImplementedError, ValueError)) as info:
        call()
    chain, err = [], info.value
    while err is not None:
        chain.append(str(err))
        err = err.__cause__
    text = " | ".join(chain)
    assert any(limit in text for limit in META_LIMITS), text
    assert not any(word in text for word in MISMATCH), text


@pytest.mark.parametrize("name", sorted(SAMPLERS))
def test_samplers_make_their_initial_points_on_the_targets_device(name):
    target = Recording().to(META)
    _fails_only_for_meta(
        lambda: SAMPLERS[name](target, num_samples=3, warmup=3, num_chains=2, progress=False)
    )
    assert target.seen and all(device == META for device, _ in target.seen)


def test_an_explicit_device_puts_a_callable_target_there():
    seen: list[torch.device] = []

    def log_prob(z: Tensor) -> Tensor:
        seen.append(z.device)
        return -(z**2).sum(-1)

    _fails_only_for_meta(
        lambda: mala(log_prob, dim=2, device="meta", num_samples=3, warmup=3, progress=False)
    )
    assert seen and set(seen) == {META}


def test_importance_sampling_and_neutra_on_a_meta_flow_and_target():
    target, flow = Recording().to(META), _small_flow().to(META)
    _fails_only_for_meta(lambda: importance_sample(flow, target, num_samples=20, seed=0))
    assert target.seen and {d for d, _ in target.seen} == {META}
    target.seen.clear()
    _fails_only_for_meta(
        lambda: neutra(flow, target, num_samples=3, warmup=3, num_chains=1, progress=False)
    )
    assert target.seen and {d for d, _ in target.seen} == {META}


def test_the_target_dtype_is_the_draws_dtype():
    result = random_walk_metropolis(
        Recording().double(), num_samples=5, warmup=5, progress=False, seed=0
    )
    assert result.samples.dtype == torch.float64
    assert as_target(Funnel(dim=2).double()).dtype == torch.float64


# -- how a target tells its device ----------------------------------------------------------
def test_how_the_device_of_a_target_is_found():
    mvn = torch.distributions.MultivariateNormal(
        torch.zeros(2, device=META), torch.eye(2, device=META), validate_args=False
    )
    flow = _small_flow(2)
    assert as_target(Funnel(dim=2)).device == CPU  # a Target's device attribute
    assert as_target(Funnel(dim=2).to(META)).device == META
    assert as_target(mvn).device == META  # a distribution's parameters
    assert as_target(flow).device == CPU  # a module's parameters
    assert as_target(flow.log_prob, dim=2).device == CPU  # the object of a bound method
    assert as_target(lambda z: -(z**2).sum(-1), dim=2).device is None  # unknown
    assert as_target(lambda z: -(z**2).sum(-1), dim=2, device="meta").device == META


def test_device_arguments_are_checked():
    with pytest.raises(ValueError, match=r"lives on cpu but device='meta' was asked for"):
        as_target(Funnel(dim=2), device="meta")
    with pytest.raises(ValueError, match=r"lives on cpu but device='meta' was asked for"):
        nuts(Funnel(dim=2), device="meta", progress=False)
    with pytest.raises(TypeError, match="device must be a torch.device.*got int"):
        random_walk_metropolis(Funnel(dim=2), device=0, progress=False)
    with pytest.raises(ValueError, match="not a device torch knows"):
        random_walk_metropolis(Funnel(dim=2), device="gpu7", progress=False)


def test_points_on_another_device_than_the_target_are_a_clear_error():
    density = as_target(Recording().to(META))
    with pytest.raises(TargetOutputError, match="lives on meta but was given points on cpu"):
        density(torch.zeros(4, 3))
    flow = _small_flow()
    with pytest.raises(ValueError, match="lives on meta but was given points on cpu"):
        importance_sample(flow, Recording().to(META), num_samples=20, seed=0)
    with pytest.raises(ValueError, match="the target lives on meta but the flow on cpu"):
        neutra(flow, Recording().to(META), progress=False)
    before = [p.detach().clone() for p in flow.parameters()]
    with pytest.raises(TargetError, match="lives on meta but was given points on cpu"):
        fit_target(flow, Recording().to(META), steps=2, batch_size=8, progress=False)
    assert all(torch.equal(p, q) for p, q in zip(flow.parameters(), before, strict=True))


def test_seeded_runs_leave_the_global_rng_alone_on_a_generator_device():
    flow = _small_flow()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        before = torch.get_rng_state()
        importance_sample(flow, Funnel(dim=3), num_samples=20, seed=3)
        nuts(Funnel(dim=2), num_samples=4, warmup=4, num_chains=1, progress=False, seed=3)
    assert torch.equal(torch.get_rng_state(), before)


def test_a_forked_rng_seeds_the_cpu_stream_and_puts_it_back():
    """``_forked_rng(seed)`` draws what ``torch.manual_seed(seed)`` would, and the global
    stream goes on afterwards as if nothing had been drawn (it seeds only the generators the
    fork restores)."""
    from pyro_flows.infer.results import _forked_rng

    torch.manual_seed(7)
    expected_next = torch.rand(4)
    torch.manual_seed(3)
    expected_inside = torch.rand(4)
    torch.manual_seed(7)
    with _forked_rng(3, [torch.device("cpu"), None]):
        inside = torch.rand(4)
    assert torch.equal(inside, expected_inside)
    assert torch.equal(torch.rand(4), expected_next)
    with _forked_rng(None):  # no seed: no fork
        assert not torch.equal(torch.rand(4), expected_inside)
