r"""Elementwise affine maps as pure functions, shared by coupling and autoregressive layers.

The scale is parametrised through a shifted softplus,

.. math::

    \sigma(s) = \mathrm{softplus}(s + c) + \epsilon, \qquad
    c = \log(e^{1 - \epsilon} - 1),

so that :math:`\sigma(0) = 1` exactly (a zero network output is the identity), the scale grows
only linearly for large ``s`` (no ``exp`` overflow in float32) and never falls below
:math:`\epsilon`. Log-determinants are sums of :math:`\log\sigma`, never logs of products.

The autoregressive layers also offer ``scale="exp"``, a soft-clamped exponential,

.. math::

    \log\sigma(s) = b \tanh(s / b), \qquad b = 8,

also with :math:`\sigma(0) = 1`: the log-scale is (nearly) linear in the network output, so a
scale that must grow exponentially in an earlier coordinate (Neal's funnel,
:math:`\sigma = e^{x_0/2}`, the hierarchical models it stands for) is a *linear* function for
the network to learn, where the softplus needs a piecewise-linear fit of an exponential. The
bound keeps one layer's scale within :math:`e^{\pm 8}`.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

MIN_SCALE = 1e-3
_SHIFT = math.log(math.expm1(1.0 - MIN_SCALE))


EXP_LOG_SCALE_BOUND = 8.0
SCALE_KINDS = ("softplus", "exp")


def check_scale_kind(kind: object) -> str:
    """``kind`` if it is a known scale parametrisation, else a ``ValueError`` naming them."""
    if kind not in SCALE_KINDS:
        raise ValueError(f"scale must be one of {SCALE_KINDS}, got {kind!r}")
    return kind  # type: ignore[return-value]


def scale_from_raw(raw: Tensor, kind: str = "softplus") -> Tensor:
    """Map an unconstrained ``raw`` to a positive scale with ``scale(0) = 1``: the shifted
    softplus (in ``(MIN_SCALE, inf)``) or, for ``kind="exp"``, the soft-clamped exponential."""
    if kind == "exp":
        return torch.exp(_exp_log_scale(raw))
    return F.softplus(raw + _SHIFT) + MIN_SCALE


def _exp_log_scale(raw: Tensor) -> Tensor:
    return EXP_LOG_SCALE_BOUND * torch.tanh(raw / EXP_LOG_SCALE_BOUND)


def scale_and_log_scale(raw: Tensor, kind: str = "softplus") -> tuple[Tensor, Tensor]:
    """``(scale, log(scale))`` of :func:`scale_from_raw`."""
    if kind == "exp":
        log_scale = _exp_log_scale(raw)
        return torch.exp(log_scale), log_scale
    scale = scale_from_raw(raw)
    return scale, torch.log(scale)


def affine_forward(
    x: Tensor, shift: Tensor, raw_scale: Tensor, kind: str = "softplus"
) -> tuple[Tensor, Tensor]:
    """``y = x * scale + shift``; returns ``y`` and ``log|dy/dx|`` summed over the last dim."""
    scale, log_scale = scale_and_log_scale(raw_scale, kind)
    return x * scale + shift, log_scale.sum(-1)


def affine_inverse(
    y: Tensor, shift: Tensor, raw_scale: Tensor, kind: str = "softplus"
) -> tuple[Tensor, Tensor]:
    """``x = (y - shift) / scale``; returns ``x`` and ``log|dx/dy|`` summed over the last dim."""
    scale, log_scale = scale_and_log_scale(raw_scale, kind)
    return (y - shift) * scale.reciprocal(), -log_scale.sum(-1)
