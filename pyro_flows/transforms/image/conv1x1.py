r"""Glow's invertible 1x1 convolution: one learned invertible channel mixing per pixel.

The same :math:`C \times C` matrix acts on the channel vector of every pixel,

.. math::

    y_{:,h,w} = W x_{:,h,w}, \qquad
    \log\left|\det \frac{\partial y}{\partial x}\right| = H W \log|\det W|,

with :math:`W = P L (U + \mathrm{diag}(s))` (LU parametrisation, so :math:`\log|\det W| =
\sum_c \log|s_c|` costs :math:`O(C)`) or :math:`W = QR` (Householder QR). The matrix and its
parametrisations live in :class:`~pyro_flows.transforms.linear.InvertibleLinear`; this layer
applies it along the channel axis.

References:

- D. P. Kingma, P. Dhariwal. *Glow: Generative Flow with Invertible 1x1 Convolutions.*
  NeurIPS, 2018. https://arxiv.org/abs/1807.03039
- E. Hoogeboom, R. van den Berg, M. Welling. *Emerging Convolutions for Generative Normalizing
  Flows.* ICML, 2019. https://arxiv.org/abs/1901.11137
"""

from __future__ import annotations

from typing import Literal

from torch import Tensor

from ..linear import InvertibleLinear
from .base import ImageShape, ImageTransform

__all__ = ["InvertibleConv1x1"]


class InvertibleConv1x1(ImageTransform):
    r"""Invertible 1x1 convolution (Glow), LU-parametrised by default.

    .. math::

        y_{:,h,w} = W x_{:,h,w}, \quad W = P L (U + \mathrm{diag}(s)), \quad
        \log\left|\det \frac{\partial y}{\partial x}\right| = H W \sum_{c} \log |s_c|,

    :math:`P` a fixed permutation, :math:`L` unit lower triangular, :math:`U` strictly upper
    triangular, :math:`|s| = \mathrm{softplus}(r)` with fixed signs; initialised at a random
    rotation (as Glow). The inverse solves two triangular systems per pixel (no matrix inverse is
    formed) and its log-determinant is minus the forward one. ``parametrization="qr"`` uses
    :math:`W = QR` instead.

    Cost: building :math:`W` is :math:`O(C^3)` per call; each direction is then
    :math:`O(C^2 HW)` per image (a matmul forward, two triangular solves inverse).

    :param shape: event shape ``(C, H, W)``.
    :param parametrization: ``"lu"`` (default, Glow) or ``"qr"``.

    Example:

    >>> import torch
    >>> _ = torch.manual_seed(0)
    >>> t = InvertibleConv1x1((3, 4, 4))
    >>> x = torch.randn(2, 3, 4, 4)
    >>> y, log_det = t.forward_and_log_det(x)
    >>> torch.allclose(t.inverse_and_log_det(y)[0], x, atol=1e-5)
    True
    >>> torch.allclose(log_det, 16 * torch.linalg.slogdet(t.weight)[1], atol=1e-5)
    True

    References:

    - D. P. Kingma, P. Dhariwal. *Glow: Generative Flow with Invertible 1x1 Convolutions.*
      NeurIPS, 2018. https://arxiv.org/abs/1807.03039
    """

    @property
    def sign(self) -> int:
        """The sign of the Jacobian determinant: the channel matrix's, once per pixel."""
        h, w = self.event_shape[1], self.event_shape[2]
        return self.linear.sign ** (h * w)

    def __init__(self, shape: ImageShape, parametrization: Literal["lu", "qr"] = "lu") -> None:
        super().__init__(shape)
        self.linear = InvertibleLinear(self.channels, parametrization=parametrization)

    @property
    def weight(self) -> Tensor:
        """The channel-mixing matrix :math:`W` (``(C, C)``), rebuilt from the parameters."""
        return self.linear.weight

    def _pixels(self) -> int:
        return self.event_shape[1] * self.event_shape[2]

    def forward_and_log_det(
        self, x: Tensor, context: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        """Base -> data: ``y = W x`` at every pixel; log-det ``H W log|det W|``."""
        x, _ = self._prepare(x, context, "x")
        y, log_det = self.linear.forward_and_log_det(x.movedim(-3, -1))
        return y.movedim(-1, -3), log_det.sum((-2, -1))

    def inverse_and_log_det(
        self, y: Tensor, context: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        """Data -> base: ``x = W^{-1} y`` by triangular solves; log-det ``-H W log|det W|``."""
        y, _ = self._prepare(y, context, "y")
        x, log_det = self.linear.inverse_and_log_det(y.movedim(-3, -1))
        return x.movedim(-1, -3), log_det.sum((-2, -1))

    def extra_repr(self) -> str:
        return super().extra_repr() + f", parametrization={self.linear.parametrization!r}"
