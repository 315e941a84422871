r"""Elementwise affine maps as pure functions, shared by coupling and autoregressive layers.

The scale is parametrised through a shifted softplus,

.. math::

    \sigma(s) = \mathrm{softplus}(s + c) + \epsilon, \qquad
    c = \log(e^{1 - \epsilon} - 1),

so that :math:`\sigma(0) = 1` exactly (a zero network output is the identity), the scale grows
only linearly for large ``s`` (no ``exp`` overflow in float32) and never falls below
:math:`\epsilon`. Log-determinants are sums of :math:`\log\sigma`, never logs of products.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

MIN_SCALE = 1e-3
_SHIFT = math.log(math.expm1(1.0 - MIN_SCALE))


def scale_from_raw(raw: Tensor) -> Tensor:
    """Map an unconstrained ``raw`` to a scale in ``(MIN_SCALE, inf)`` with ``scale(0) = 1``."""
    return F.softplus(raw + _SHIFT) + MIN_SCALE


def scale_and_log_scale(raw: Tensor) -> tuple[Tensor, Tensor]:
    """``(scale, log(scale))`` of :func:`scale_from_raw`."""
    scale = scale_from_raw(raw)
    return scale, torch.log(scale)


def affine_forward(x: Tensor, shift: Tensor, raw_scale: Tensor) -> tuple[Tensor, Tensor]:
    """``y = x * scale + shift``; returns ``y`` and ``log|dy/dx|`` summed over the last dim."""
    scale, log_scale = scale_and_log_scale(raw_scale)
    return x * scale + shift, log_scale.sum(-1)


def affine_inverse(y: Tensor, shift: Tensor, raw_scale: Tensor) -> tuple[Tensor, Tensor]:
    """``x = (y - shift) / scale``; returns ``x`` and ``log|dx/dy|`` summed over the last dim."""
    scale, log_scale = scale_and_log_scale(raw_scale)
    return (y - shift) * scale.reciprocal(), -log_scale.sum(-1)
