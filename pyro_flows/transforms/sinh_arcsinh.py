r"""The sinh-arcsinh layer: learnable tail weight and skew per coordinate.

Flows built from affine and spline layers on a standard-normal base keep Gaussian tails in every
direction that no earlier coordinate rescales: the first coordinate of an IAF, or any coordinate
of a coupling flow whose splines are the identity outside their box. Many posteriors have heavier
tails there, such as the log-scale :math:`\log\tau` of a hierarchical model, whose left tail
decays only exponentially (:math:`p(\log\tau) \propto \tau` near :math:`\tau = 0`). A guide with
lighter tails than its target gives heavy-tailed importance weights: a large PSIS
:math:`\hat k`.

:class:`SinhArcsinh` (Jones & Pewsey, 2009) is an elementwise bijection whose power-law growth
sets the tails. Placed next to the base it turns :math:`\mathcal N(0, I)` into a product of
sinh-arcsinh distributions, which the rest of the flow then transforms. The tails are heavier
than Gaussian where :math:`\tau_d > 1` (exponential at :math:`\tau_d = 2`) and lighter where
:math:`\tau_d < 1`. That is the tail-adaptive base of Jaini et al. (2020) and Laszkiewicz et
al. (2022), here as an ordinary layer.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from ..nn.packed_state import pack_split_entries
from ._affine import _exp_log_scale
from .base import FlowTransform

__all__ = ["SinhArcsinh", "sinh_arcsinh_and_log_det"]

#: bound on :math:`|\log\tau|`: the tail power stays within :math:`(e^{-3}, e^3)`
LOG_TAIL_BOUND = 3.0


def log_cosh(u: Tensor) -> Tensor:
    r""":math:`\log\cosh u`, without overflow for large :math:`|u|`."""
    a = u.abs()
    return a + torch.log1p(torch.exp(-2.0 * a)) - math.log(2.0)


def sinh_arcsinh_and_log_det(
    v: Tensor, log_tail: Tensor, skew: Tensor
) -> tuple[Tensor, Tensor]:
    r""":math:`\sinh(\tau \operatorname{asinh}(v) + s)` with :math:`\tau = e^{\log\tau}`, and
    its log-determinant :math:`\sum [\log\cosh(\tau \operatorname{asinh} v + s) + \log\tau -
    \log\cosh\operatorname{asinh} v]` over the last dimension. Both directions of
    :class:`SinhArcsinh` are this map: the inverse of :math:`(\tau, s)` is
    :math:`(1/\tau, -s/\tau)`."""
    a = torch.asinh(v)
    u = torch.exp(log_tail) * a + skew
    # log cosh asinh v = log sqrt(1 + v^2) = log hypot(v, 1): two operations instead of
    # log_cosh's six, finite for every finite v (hypot does not overflow where v^2 would)
    log_det = log_cosh(u) + log_tail - torch.log(torch.hypot(v, v.new_ones(())))
    return torch.sinh(u), log_det.sum(-1)


class SinhArcsinh(FlowTransform):
    r"""Elementwise sinh-arcsinh map with learnable tail power and skew per coordinate.

    .. math::

        y_d = \sinh\!\big(\tau_d \operatorname{asinh}(x_d) + s_d\big), \qquad
        \tau_d = e^{b \tanh(\rho_d / b)} \ (b = 3),

    .. math::

        \log\left|\det\frac{\partial y}{\partial x}\right| = \sum_d \Big[
            \log\cosh\!\big(\tau_d \operatorname{asinh}(x_d) + s_d\big) + \log\tau_d
            - \log\cosh\operatorname{asinh}(x_d) \Big],

    with :math:`\log\cosh\operatorname{asinh}(x) = \tfrac12\log(1 + x^2)`, and the inverse
    :math:`x_d = \sinh\big((\operatorname{asinh}(y_d) - s_d)/\tau_d\big)`. For large
    :math:`|x|`, :math:`|y| \approx \tfrac12 (2|x|)^{\tau} e^{\pm s}`: the tail power
    :math:`\tau` sets both tails' weight and the skew :math:`s` their relative scale. From a
    standard-normal :math:`x`, :math:`\tau = 2` gives exponential tails and :math:`\tau = 1`
    keeps Gaussian ones. The layer starts at :math:`\rho = s = 0`, the identity. Both live in
    one parameter tensor, ``tail_and_skew``, served as ``raw_tail`` and ``skew``.

    Cost: forward and inverse are both :math:`O(D)` per sample (elementwise).

    :param input_dim: event size :math:`D`.

    Example:

    >>> import torch
    >>> from pyro_flows.transforms import SinhArcsinh
    >>> t = SinhArcsinh(2)
    >>> x = torch.tensor([[0.5, -3.0]])
    >>> bool(torch.allclose(t(x), x))  # the identity at initialisation
    True
    >>> with torch.no_grad():
    ...     _ = t.raw_tail.fill_(0.7)  # tail power e^{3 tanh(0.7/3)} = 1.98: heavier tails
    >>> y, log_det = t.forward_and_log_det(x)
    >>> bool((y.abs() > x.abs()).all()), bool(torch.allclose(t.inv(y), x, atol=1e-5))
    (True, True)

    References:

    - M. C. Jones, A. Pewsey. *Sinh-arcsinh distributions.* Biometrika 96(4), 2009.
      https://doi.org/10.1093/biomet/asp053
    - P. Jaini, I. Kobyzev, Y. Yu, M. Brubaker. *Tails of Lipschitz Triangular Flows.* ICML,
      2020. https://arxiv.org/abs/1907.04481
    - M. Laszkiewicz, J. Lederer, A. Fischer. *Marginal Tail-Adaptive Normalizing Flows.* ICML,
      2022. https://arxiv.org/abs/2206.10311
    """

    def __init__(self, input_dim: int) -> None:
        super().__init__(input_dim)
        #: rows :math:`(\rho, s)`: one tensor (a per-tensor optimiser steps one, not two;
        #: :mod:`pyro_flows.nn.packed_state`), served as :attr:`raw_tail` and :attr:`skew`
        self.tail_and_skew = nn.Parameter(torch.zeros(2, self.input_dim))

    @property
    def raw_tail(self) -> Tensor:
        r""":math:`\rho`, shape ``(input_dim,)``: a view of :attr:`tail_and_skew` (writes
        through)."""
        return self.tail_and_skew[0]

    @property
    def skew(self) -> Tensor:
        """:math:`s`, shape ``(input_dim,)``: a view of :attr:`tail_and_skew`."""
        return self.tail_and_skew[1]

    def _load_from_state_dict(self, state_dict: dict, prefix: str, *args) -> None:
        """Also accept the separate ``raw_tail`` and ``skew`` of earlier versions."""
        pack_split_entries(state_dict, prefix, "tail_and_skew", ("raw_tail", "skew"), torch.stack)
        super()._load_from_state_dict(state_dict, prefix, *args)

    @property
    def log_tail(self) -> Tensor:
        r""":math:`\log\tau`, shape ``(input_dim,)``, within :math:`\pm 3`."""
        return _exp_log_scale(self.raw_tail, LOG_TAIL_BOUND)

    def forward_and_log_det(
        self, x: Tensor, context: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        """Base -> data: ``y = sinh(tau asinh(x) + s)`` and ``log|det dy/dx|``."""
        x, context = self._prepare(x, context, "x")
        return sinh_arcsinh_and_log_det(x, self.log_tail, self.skew)

    def inverse_and_log_det(
        self, y: Tensor, context: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        """Data -> base: ``x = sinh((asinh(y) - s) / tau)`` and ``log|det dx/dy|``: the same
        map with tail power :math:`1/\tau` and skew :math:`-s/\tau`."""
        y, context = self._prepare(y, context, "y")
        log_tail = self.log_tail
        return sinh_arcsinh_and_log_det(y, -log_tail, -self.skew * torch.exp(-log_tail))
