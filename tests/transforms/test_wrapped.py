"""WrappedTransform: a foreign transform's tensors are module state (dtype, device, state_dict),
and its Jacobian sign is reported."""

from __future__ import annotations

import copy
import io

import pyro.distributions as dist
import pytest
import torch
from torch import nn
from torch.distributions.transforms import (
    AffineTransform,
    ComposeTransform,
    CumulativeDistributionTransform,
    ExpTransform,
    IndependentTransform,
    SigmoidTransform,
)

from pyro_flows import Flow
from pyro_flows.transforms import MaskedAutoregressive, WrappedTransform
from pyro_flows.transforms.wrapped import jacobian_sign


def affine(loc: float = 0.5, scale: float = 2.0) -> WrappedTransform:
    return WrappedTransform(AffineTransform(torch.full((3,), loc), torch.full((3,), scale)), 3)


def test_the_wrapped_tensors_are_buffers_in_the_state_dict():
    t = affine()
    assert sorted(t.state_dict()) == ["transform_loc", "transform_scale"]
    assert t.transform_scale is t.transform.scale
    assert list(t.parameters()) == []


def test_double_converts_the_wrapped_tensors_and_the_log_det():
    t = affine().double()
    assert t.transform.loc.dtype == t.transform.scale.dtype == torch.float64
    x = torch.randn(4, 3, dtype=torch.float64)
    y, log_det = t.forward_and_log_det(x)
    assert y.dtype == log_det.dtype == torch.float64
    torch.testing.assert_close(
        log_det, torch.full((4,), 3 * torch.log(torch.tensor(2.0)).item(), dtype=torch.float64)
    )
    x_back, inv_log_det = t.inverse_and_log_det(y)
    assert inv_log_det.dtype == torch.float64
    torch.testing.assert_close(x_back, x)


def test_to_meta_moves_the_wrapped_tensors():
    """``.to(device)`` reaches the wrapped transform (``meta``: nothing is computed)."""
    t = WrappedTransform(
        ComposeTransform([AffineTransform(torch.zeros(3), torch.ones(3)), ExpTransform()]), 3
    )
    flow = Flow([MaskedAutoregressive(3, (4,)), t]).to("meta")
    part = t.transform.parts[0]
    for tensor in (part.loc, part.scale, t.transform_parts_0_loc, t.transform_parts_0_scale):
        assert tensor.device.type == "meta"
    assert part.loc is t.transform_parts_0_loc
    assert all(p.device.type == "meta" for p in flow.parameters())


def test_state_dict_round_trip_reaches_the_wrapped_transform():
    source, target = affine(loc=1.0, scale=3.0), affine()
    target.load_state_dict(source.state_dict())
    x = torch.randn(5, 3)
    for a, b in zip(target.forward_and_log_det(x), source.forward_and_log_det(x), strict=True):
        torch.testing.assert_close(a, b)
    # assign=True replaces the buffers: the wrapped transform follows
    target.load_state_dict({k: 2 * v for k, v in source.state_dict().items()}, assign=True)
    assert target.transform.scale is target.transform_scale
    torch.testing.assert_close(target.transform.scale, torch.full((3,), 6.0))


def test_flow_with_a_wrapped_transform_round_trips_through_state_dict_and_double():
    def make(scale: float) -> Flow:
        torch.manual_seed(0)
        return Flow([MaskedAutoregressive(3, (4,)), AffineTransform(torch.ones(3), scale)])

    source, target = make(2.0), make(2.0)
    source.transforms[1].transform_loc.fill_(-1.0)
    assert "transforms.1.transform_loc" in source.state_dict()
    target.load_state_dict(source.state_dict())
    x = torch.randn(6, 3)
    torch.testing.assert_close(target.log_prob(x), source.log_prob(x))
    log_q = target.double().log_prob(x.double())
    assert log_q.dtype == torch.float64
    torch.testing.assert_close(log_q, source.log_prob(x).double(), rtol=1e-5, atol=1e-5)


def test_copies_keep_the_wrapped_tensors_and_buffers_one_object():
    t = affine()
    buffer = io.BytesIO()
    torch.save(t, buffer)
    buffer.seek(0)
    for other in (copy.deepcopy(t), torch.load(buffer, weights_only=False)):
        assert other.transform.scale is other.transform_scale
        other.double()
        assert other.transform.scale.dtype == torch.float64


def test_a_parameter_stays_a_parameter_and_a_shared_tensor_is_registered_once():
    scale = nn.Parameter(torch.ones(3))
    shared = torch.zeros(3)
    t = WrappedTransform(
        ComposeTransform([AffineTransform(shared, scale), AffineTransform(shared, 2.0)]), 3
    )
    assert [name for name, _ in t.named_parameters()] == ["transform_parts_0_scale"]
    assert sorted(t.state_dict()) == ["transform_parts_0_loc", "transform_parts_0_scale"]
    t.double()
    parts = t.transform.parts
    assert parts[0].loc is parts[1].loc is t.transform_parts_0_loc
    assert parts[0].loc.dtype == parts[0].scale.dtype == torch.float64
    assert isinstance(t.transform.parts[0].scale, nn.Parameter)


def test_tensors_of_an_inner_distribution_and_an_inverse_are_registered():
    normal = dist.Normal(torch.zeros(2), torch.ones(2))
    t = WrappedTransform(CumulativeDistributionTransform(normal), 2)
    assert sorted(t.state_dict()) == ["transform_distribution_loc", "transform_distribution_scale"]
    inverse = WrappedTransform(AffineTransform(torch.zeros(2), torch.ones(2)).inv, 2).double()
    assert inverse.transform.inv.scale.dtype == torch.float64


def test_a_wrapped_module_is_a_submodule():
    layer = MaskedAutoregressive(3, (4,))
    t = WrappedTransform(ComposeTransform([layer, ExpTransform()]), 3)
    assert any(p is next(layer.parameters()) for p in t.parameters())


@pytest.mark.parametrize(
    "transform, dim, expected",
    [
        (AffineTransform(0.0, -2.0), 3, -1),
        (AffineTransform(0.0, -2.0), 2, 1),
        (AffineTransform(torch.zeros(3), torch.tensor([1.0, -1.0, 2.0])), 3, -1),
        (
            AffineTransform(torch.zeros(3), torch.tensor([[1.0, -1.0, -2.0], [1.0, 1.0, -1.0]])),
            3,
            torch.tensor([1.0, -1.0]),
        ),
        (IndependentTransform(AffineTransform(0.0, -1.0), 1), 3, -1),
        (ComposeTransform([AffineTransform(0.0, -1.0), SigmoidTransform()]), 1, -1),
        (AffineTransform(0.0, -1.0).inv, 5, -1),
        (ExpTransform(), 4, 1),
    ],
)
def test_sign_is_the_sign_of_the_jacobian_determinant(transform, dim, expected):
    t = WrappedTransform(transform, dim)
    sign = t.sign
    if isinstance(expected, torch.Tensor):
        torch.testing.assert_close(sign, expected)
        return
    assert int(sign) == expected == jacobian_sign(transform, dim)
    x = torch.rand(dim, dtype=torch.float64) if dim == 1 else torch.randn(dim, dtype=torch.float64)
    jac = torch.autograd.functional.jacobian(lambda v: t.double().forward_and_log_det(v)[0], x)
    assert int(torch.linalg.slogdet(jac)[0]) == expected


def test_sign_of_a_transform_without_one_is_a_clear_error():
    class NoSign(AffineTransform):
        @property
        def sign(self):
            raise NotImplementedError

    with pytest.raises(NotImplementedError, match="NoSign defines no sign"):
        _ = WrappedTransform(NoSign(0.0, 2.0), 2).sign
