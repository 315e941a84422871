"""Fuzz: flows, layers and targets on the ``meta`` device (shapes without data, as used to plan
memory): every call gives a result on ``meta`` with the right shape, or a clear error that says
``meta``; never a device-mismatch error or a crash deep inside torch."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch

from pyro_flows import flows
from pyro_flows.distributions import DiscretizedLogistic
from pyro_flows.targets import get_target

from ._cases import CLEAR, VECTOR_FLOWS

META = torch.device("meta")


def _meta_or_clear_refusal(call: Callable[[], Any]) -> Any | None:
    """``call()``'s result, or ``None`` when it refused with a clear error naming the meta
    device (``NotImplementedError`` allowed: the device cannot run the computation)."""
    try:
        return call()
    except (*CLEAR, NotImplementedError) as error:
        message = str(error)
        assert "meta" in message, f"refused without saying why: {message!r}"
        assert "Expected all tensors to be on the same device" not in message
        return None


def _on_meta(value: Any) -> bool:
    tensors = value if isinstance(value, tuple) else (value,)
    return all(isinstance(t, torch.Tensor) and t.device.type == "meta" for t in tensors)


@pytest.mark.parametrize("how", ["built-on-meta", "moved-to-meta"])
@pytest.mark.parametrize("name", sorted(VECTOR_FLOWS))
def test_vector_flow_log_prob_on_meta(name, how):
    if how == "built-on-meta":
        with torch.device(META):
            flow = VECTOR_FLOWS[name](3)
    else:
        flow = VECTOR_FLOWS[name](3).to(META)
    out = _meta_or_clear_refusal(lambda: flow.log_prob(torch.zeros(4, 3, device=META)))
    if out is not None:
        assert _on_meta(out) and out.shape == (4,)


@pytest.mark.parametrize("name", sorted(VECTOR_FLOWS))
def test_vector_flow_sample_on_meta(name):
    flow = VECTOR_FLOWS[name](3).to(META)
    out = _meta_or_clear_refusal(lambda: flow.sample((5,)))
    if out is not None:
        assert _on_meta(out) and out.shape == (5, 3)


@pytest.mark.parametrize("name", sorted(VECTOR_FLOWS))
def test_vector_flow_rsample_and_log_prob_on_meta(name):
    flow = VECTOR_FLOWS[name](3).to(META)
    out = _meta_or_clear_refusal(lambda: flow.rsample_and_log_prob((5,)))
    if out is not None:
        assert _on_meta(out) and out[0].shape == (5, 3) and out[1].shape == (5,)


@pytest.mark.parametrize("name", ["maf", "realnvp", "nsf"])
def test_conditional_flow_on_meta(name):
    flow = VECTOR_FLOWS[name](3, 2).to(META)
    out = _meta_or_clear_refusal(
        lambda: flow.log_prob(torch.zeros(4, 3, device=META), torch.zeros(4, 2, device=META))
    )
    if out is not None:
        assert _on_meta(out) and out.shape == (4,)


@pytest.mark.parametrize("name", sorted(VECTOR_FLOWS))
def test_cpu_data_for_a_meta_flow_is_a_clear_error(name):
    flow = VECTOR_FLOWS[name](3).to(META)
    try:
        flow.log_prob(torch.zeros(4, 3))
    except (*CLEAR, NotImplementedError) as error:
        assert "meta" in str(error) and "cpu" in str(error)
    else:
        raise AssertionError("a meta flow scored CPU data")


IMAGE_FLOWS = {
    "glow": lambda: flows.glow((1, 4, 4), 1, 4),
    "realnvp_image": lambda: flows.realnvp_image((1, 4, 4), 1, 4),
    "idf": lambda: flows.idf((1, 4, 4), 1, 4, num_levels=16),
}


@pytest.mark.parametrize("name", sorted(IMAGE_FLOWS))
def test_image_flow_on_meta(name):
    torch.manual_seed(0)
    flow = IMAGE_FLOWS[name]().eval().to(META)
    out = _meta_or_clear_refusal(lambda: flow.log_prob(torch.zeros(2, 1, 4, 4, device=META)))
    if out is not None:
        assert _on_meta(out) and out.shape == (2,)
    out = _meta_or_clear_refusal(lambda: flow.sample((3,)))
    if out is not None:
        assert _on_meta(out) and out.shape == (3, 1, 4, 4)


@pytest.mark.parametrize("name", ["banana", "funnel", "u1", "mixture"])
def test_target_on_meta(name):
    target = get_target(name).to(META)
    out = _meta_or_clear_refusal(lambda: target.log_prob(torch.zeros(4, target.dim, device=META)))
    if out is not None:
        assert _on_meta(out) and out.shape == (4,)


def test_discretized_logistic_on_meta():
    d = DiscretizedLogistic(torch.zeros(3, device=META), torch.ones(3, device=META))
    assert _on_meta(d.log_prob(torch.zeros(2, 3, device=META)))
    assert d.sample((2,)).shape == (2, 3) and _on_meta(d.sample((2,)))
