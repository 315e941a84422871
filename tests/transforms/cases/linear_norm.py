"""Harness cases: invertible linear maps, permutations, ActNorm, BatchNorm, Rescale,
ElementwiseAffine."""

from __future__ import annotations

import torch
from torch import Tensor

from pyro_flows.transforms.affine import ElementwiseAffine
from pyro_flows.transforms.base import FlowTransform
from pyro_flows.transforms.linear import InvertibleLinear
from pyro_flows.transforms.normalization import ActNorm, BatchNorm
from pyro_flows.transforms.permutation import Permute, Reverse
from pyro_flows.transforms.rescale import Rescale

from . import Case


def _initialize(transform: FlowTransform, data: Tensor) -> None:
    """ActNorm's data init, then a fixed perturbation: the layer is then neither the identity nor
    already the maximum-likelihood fit of the harness's data (so training can still improve it)."""
    assert isinstance(transform, ActNorm)
    transform.initialize(data)
    g = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for p in transform.parameters():
            p.add_(0.3 * torch.randn(p.shape, generator=g, dtype=torch.float64).to(p))


CASES: list[Case] = [
    Case("linear-lu-d1", lambda: InvertibleLinear(1), 1),
    Case("linear-lu-d2", lambda: InvertibleLinear(2), 2),
    Case("linear-lu-d5", lambda: InvertibleLinear(5), 5),
    Case("linear-lu-bias-d3", lambda: InvertibleLinear(3, bias=True), 3),
    Case("linear-qr-d1", lambda: InvertibleLinear(1, parametrization="qr"), 1),
    Case("linear-qr-d2", lambda: InvertibleLinear(2, parametrization="qr"), 2),
    Case("linear-qr-d4", lambda: InvertibleLinear(4, parametrization="qr"), 4),
    Case("permute-d5", lambda: Permute([3, 0, 4, 1, 2]), 5),
    Case("reverse-d3", lambda: Reverse(3), 3),
    Case("actnorm-d3", lambda: ActNorm(3), 3, prepare=_initialize),
    Case("actnorm-d2", lambda: ActNorm(2), 2, prepare=_initialize),
    Case("batchnorm-d3", lambda: BatchNorm(3), 3, batch_statistics=True),
    Case("batchnorm-d2", lambda: BatchNorm(2, momentum=0.5), 2, batch_statistics=True),
    Case("rescale-d3", lambda: Rescale(3), 3),
    Case("rescale-d1", lambda: Rescale(1), 1),
    Case("affine-d3", lambda: ElementwiseAffine(3, loc=[0.5, -1.0, 2.0], scale=0.3), 3),
]
