"""Layers whose log-determinant is zero everywhere (``zero_log_det``: permutations,
unit-triangular maps) are run without it by ``Flow``: the samples, log densities and gradients
are those of the pass that adds every layer's zeros."""

from __future__ import annotations

import pytest
import torch

from pyro_flows import Flow
from pyro_flows.transforms import ElementwiseAffine
from pyro_flows.transforms.autoregressive import InverseAutoregressive
from pyro_flows.transforms.permutation import Permute, Reverse
from pyro_flows.transforms.unit_lower import UnitLowerTriangular

D = 4


def layers(seed: int) -> list:
    torch.manual_seed(seed)
    lower = UnitLowerTriangular(D)
    with torch.no_grad():
        lower.lower.normal_()
    return [
        InverseAutoregressive(D, hidden_dims=(8,)), Reverse(D), lower,
        Permute(torch.randperm(D)), InverseAutoregressive(D, hidden_dims=(8,)),
        ElementwiseAffine(D, loc=0.5, scale=2.0),
    ]


def every_log_det(flow: Flow, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The base -> data pass adding every layer's log-det, zeros included."""
    log_q, x = flow._base_log_prob(z, None), z
    for t in flow.transforms:
        x, ld = t.forward_and_log_det(x)
        log_q = log_q - ld
    return x, log_q


def test_the_marked_layers_are_the_volume_preserving_ones():
    assert Permute(torch.tensor([1, 0, 2])).zero_log_det and Reverse(3).zero_log_det
    assert UnitLowerTriangular(3).zero_log_det
    assert not ElementwiseAffine(3).zero_log_det
    assert not InverseAutoregressive(3, hidden_dims=(4,)).zero_log_det


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_skipping_zero_log_dets_changes_no_number(seed):
    flow = Flow(layers(seed))
    with torch.no_grad():
        for t in flow.transforms:
            if not t.zero_log_det:
                for p in t.parameters():
                    p.add_(0.2 * torch.randn_like(p))
    torch.manual_seed(10 + seed)
    x, log_q = flow.rsample_and_log_prob((5,))
    torch.manual_seed(10 + seed)
    x_all, log_q_all = every_log_det(flow, flow.base_dist().rsample((5,)))
    torch.testing.assert_close(x, x_all, rtol=0, atol=0)
    torch.testing.assert_close(log_q, log_q_all, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(flow.log_prob(x), log_q, rtol=1e-4, atol=1e-4)
    grads = []
    for value in (log_q, log_q_all):
        grads.append(torch.autograd.grad(value.sum(), list(flow.parameters()), retain_graph=True,
                                         allow_unused=True))
    for a, b in zip(*grads, strict=True):
        if a is None or b is None:
            assert a is None and b is None
        else:
            torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("layer", [Reverse(D), Permute(torch.tensor([2, 0, 3, 1])),
                                   UnitLowerTriangular(D)], ids=lambda t: type(t).__name__)
def test_forward_without_log_det_is_the_forward_map(layer):
    torch.manual_seed(3)
    if isinstance(layer, UnitLowerTriangular):
        with torch.no_grad():
            layer.lower.normal_()
    x = torch.randn(6, D)
    y, log_det = layer.forward_and_log_det(x)
    assert torch.equal(layer.forward_without_log_det(x), y)
    assert torch.equal(log_det, torch.zeros(6))
    with pytest.raises(ValueError, match=r"of shape \(\.\.\., 4\)"):
        layer.forward_without_log_det(torch.randn(6, 3))
