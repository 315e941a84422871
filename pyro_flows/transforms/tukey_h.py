r"""Tukey's h transformation: learnable power-law tails per coordinate and side.

Affine and spline flows on a Gaussian base are Lipschitz triangular maps, and such a map keeps
the base's Gaussian tails (Jaini et al., 2020): no amount of training gives an IAF guide the
polynomial tails of a Student-t posterior or the heavy right tail of a scale's logarithm, and
in one dimension an IAF is a fixed affine map, so the guide is exactly Gaussian there.

Tukey's h transformation (Tukey, 1977; Headrick et al., 2008) is an elementwise bijection
:math:`y = x\,e^{h x^2/2}`, :math:`h \ge 0`. From a standard-normal :math:`x`,
:math:`P(|y| > t)` falls like :math:`t^{-1/h}`, the tail of a Student-t with :math:`1/h`
degrees of freedom, and :math:`h = 0` is the identity. :class:`TukeyH` learns one :math:`h`
for each side of each coordinate, so it can give a skewed posterior one heavy tail and keep
the other Gaussian, and it starts exactly at the identity.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..nn.packed_state import pack_split_entries
from .base import FlowTransform

__all__ = ["TukeyH", "lambert_w"]

#: bound on each tail's :math:`h`: :math:`h < 1/2` keeps a standard-normal input's variance
#: finite (:math:`\mathrm{Var}\,y = (1 - 2h)^{-3/2}`)
H_MAX = 0.45

#: beyond :math:`|x| = c = 8` (a standard-normal draw's probability :math:`10^{-15}`) the map
#: continues linearly, so float32 stays finite for any input
LINEAR_FROM = 8.0


def lambert_w(z: Tensor, iterations: int = 8) -> Tensor:
    r"""The principal branch :math:`W(z)` of the Lambert W function (:math:`W e^W = z`) for
    :math:`z \ge 0`, by Halley's iteration from :math:`\log(1 + z)`.

    >>> import torch
    >>> w = lambert_w(torch.tensor([0.0, 1.0, 1e6], dtype=torch.float64))
    >>> bool(torch.allclose(w * w.exp(), torch.tensor([0.0, 1.0, 1e6], dtype=torch.float64)))
    True
    """
    w = torch.log1p(z)
    for _ in range(iterations):
        ew = torch.exp(w)
        f = w * ew - z
        wp1 = w + 1.0
        w = w - f / (ew * wp1 - (w + 2.0) * f / (2.0 * wp1))
    return w


class TukeyH(FlowTransform):
    r"""Elementwise Tukey h map with a learnable tail weight for each side of each coordinate.

    .. math::

        y_d = x_d \exp\!\big(\tfrac12 h_d(x_d)\, x_d^2\big), \qquad
        h_d(x) = \begin{cases} h_d^+ & x > 0 \\ h_d^- & x \le 0 \end{cases}, \qquad
        h_d^\pm = \min\big(\max(\rho_d^\pm, 0), h_\max\big),

    .. math::

        \log\left|\det\frac{\partial y}{\partial x}\right| = \sum_d \Big[
            \tfrac12 h_d x_d^2 + \log\big(1 + h_d x_d^2\big) \Big],

    with the inverse :math:`x_d = y_d\, e^{-W(h_d y_d^2)/2}` (:math:`W` the Lambert W function,
    :math:`W e^W = z`, so :math:`h_d x_d^2 = W(h_d y_d^2)`). Beyond :math:`|x| = c =`
    :data:`LINEAR_FROM` the map continues along its tangent, so that float32 stays finite
    (a standard-normal base draws there with probability :math:`10^{-15}`). From a standard-normal
    :math:`x`, the side with :math:`h > 0` has the power-law tail
    :math:`P(y > t) \sim t^{-1/h}`, as a Student-t's with :math:`1/h` degrees of freedom; the
    variance stays finite while :math:`h < 1/2`, and :math:`h_\max` = :data:`H_MAX`. The map
    is monotone and continuous with a continuous derivative (:math:`dy/dx = 1` at 0 on both
    sides). It starts at :math:`\rho = 0`, the identity; the clamp passes gradients at
    :math:`\rho = 0`, so the first steps can open a tail, and a tail pushed below zero stays
    Gaussian. Both sides' :math:`\rho` live in one parameter tensor, ``raw_h``, served as
    ``raw_h_pos`` and ``raw_h_neg``.

    Cost: the forward map is :math:`O(D)` per sample; the inverse takes a few Halley steps per
    element.

    :param input_dim: event size :math:`D`.

    Example:

    >>> import torch
    >>> from pyro_flows.transforms import TukeyH
    >>> t = TukeyH(2)
    >>> x = torch.tensor([[0.5, -3.0]])
    >>> bool(torch.allclose(t(x), x))  # the identity at initialisation
    True
    >>> with torch.no_grad():
    ...     _ = t.raw_h_pos.fill_(0.25)  # the right tails of a Student-t with 4 dof
    >>> y, log_det = t.forward_and_log_det(torch.tensor([[3.0, -3.0]]))
    >>> [round(v, 3) for v in y[0].tolist()]
    [9.241, -3.0]
    >>> bool(torch.allclose(t.inv(y), torch.tensor([[3.0, -3.0]])))
    True

    References:

    - J. W. Tukey. *Modern techniques in data analysis.* NSF-sponsored regional research
      conference, Southeastern Massachusetts University, 1977.
    - T. C. Headrick, R. K. Kowalchuk, Y. Sheng. *Parametric probability densities and
      distribution functions for Tukey g-and-h transformations and their use for fitting
      data.* Applied Mathematical Sciences 2(9), 2008.
    - P. Jaini, I. Kobyzev, Y. Yu, M. Brubaker. *Tails of Lipschitz Triangular Flows.* ICML,
      2020. https://arxiv.org/abs/1907.04481
    - T. Hickling, D. Prangle. *Flexible Tails for Normalizing Flows.* ICML, 2025.
      https://arxiv.org/abs/2406.16971
    """

    def __init__(self, input_dim: int) -> None:
        super().__init__(input_dim)
        #: rows :math:`(\rho^+, \rho^-)`: one tensor (a per-tensor optimiser steps one, not
        #: two; :mod:`pyro_flows.nn.packed_state`), served as :attr:`raw_h_pos`, :attr:`raw_h_neg`
        self.raw_h = nn.Parameter(torch.zeros(2, self.input_dim))

    @property
    def raw_h_pos(self) -> Tensor:
        r""":math:`\rho^+`, shape ``(input_dim,)``: a view of :attr:`raw_h` (writes through)."""
        return self.raw_h[0]

    @property
    def raw_h_neg(self) -> Tensor:
        r""":math:`\rho^-`, shape ``(input_dim,)``: a view of :attr:`raw_h` (writes through)."""
        return self.raw_h[1]

    def _load_from_state_dict(self, state_dict: dict, prefix: str, *args) -> None:
        """Also accept the separate ``raw_h_pos`` and ``raw_h_neg`` of earlier versions."""
        pack_split_entries(state_dict, prefix, "raw_h", ("raw_h_pos", "raw_h_neg"), torch.stack)
        super()._load_from_state_dict(state_dict, prefix, *args)

    def tail_weights(self) -> tuple[Tensor, Tensor]:
        r""":math:`(h^+, h^-)`, each of shape ``(input_dim,)`` and within :math:`[0, h_\max]`."""
        h_pos, h_neg = self.raw_h.clamp(0.0, H_MAX).unbind(0)
        return h_pos, h_neg

    def _h(self, v: Tensor) -> Tensor:
        h_pos, h_neg = self.tail_weights()
        return torch.where(v > 0, h_pos, h_neg)

    def forward_and_log_det(
        self, x: Tensor, context: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        """Base -> data: ``y = x exp(h x^2 / 2)`` (linear beyond ``|x| = c``) and
        ``log|det dy/dx|``."""
        x, context = self._prepare(x, context, "x")
        h = self._h(x)
        inner = torch.clamp(x, -LINEAR_FROM, LINEAR_FROM)
        hx2 = h * inner.square()  # h min(|x|, c)^2
        grow = torch.exp(0.5 * hx2)
        slope = (1.0 + hx2) * grow
        # y = x_c e^{h x_c^2 / 2} + (x - x_c) slope with x_c the clamped x: the map inside
        # |x| <= c (where x - x_c = 0), its tangent line beyond. The distance past c is capped at
        # the dtype's largest number, so an infinite input does not make the shared weights'
        # gradients NaN (0 * inf) when that row's own gradient is 0
        big = torch.finfo(x.dtype).max
        past = torch.clamp(x - inner, -big, big)
        y = torch.addcmul(inner * grow, past, slope)
        return y, (0.5 * hx2 + torch.log1p(hx2)).sum(-1)

    def inverse_and_log_det(
        self, y: Tensor, context: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        """Data -> base: ``x = y exp(-W(h y^2) / 2)`` (linear beyond ``|x| = c``) and
        ``log|det dx/dy|``."""
        y, context = self._prepare(y, context, "y")
        h = self._h(y)
        b = y.abs()
        hc2 = h * LINEAR_FROM**2
        y_c = LINEAR_FROM * torch.exp(0.5 * hc2)  # |y| where the linear continuation starts
        # h x^2 = W(h y^2): Halley's iteration without gradients, then one Newton step with
        # them (its derivative is W's, 1 / (e^W (1 + W)), at the fixed point)
        z = h * torch.minimum(b, y_c) ** 2
        w = lambert_w(z.detach())
        ew = torch.exp(w)
        w = w - (w * ew - z) / (ew * (1.0 + w))
        slope = (1.0 + hc2) * torch.exp(0.5 * hc2)
        outer = torch.sign(y) * (LINEAR_FROM + (b - y_c) / slope)
        inner = torch.maximum(torch.minimum(y, y_c), -y_c) * torch.exp(-0.5 * w)
        x = torch.where(b <= y_c, inner, outer)
        return x, -(0.5 * w + torch.log1p(w)).sum(-1)
