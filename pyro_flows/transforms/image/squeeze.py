r"""Squeeze (space to channels) and its inverse: the reshapes of the multi-scale architecture.

Squeezing trades resolution for channels: every :math:`2 \times 2` block of each channel becomes
four channels at half the resolution (Dinh et al., 2017, Fig. 3),

.. math::

    \mathrm{squeeze}(x)_{4c + 2i + j,\ h,\ w} = x_{c,\ 2h + i,\ 2w + j},
    \qquad (C, H, W) \mapsto (4C, H/2, W/2),\ i, j \in \{0, 1\}.

It is a permutation of the entries, so :math:`\log|\det J| = 0` and the inverse is exact.

References:

- L. Dinh, J. Sohl-Dickstein, S. Bengio. *Density estimation using Real NVP.* ICLR, 2017.
  https://arxiv.org/abs/1605.08803
- D. P. Kingma, P. Dhariwal. *Glow: Generative Flow with Invertible 1x1 Convolutions.*
  NeurIPS, 2018. https://arxiv.org/abs/1807.03039
"""

from __future__ import annotations

import torch
from torch import Tensor

from .base import ImageShape, ImageTransform, check_image_shape, zeros_image_log_det

__all__ = ["Squeeze", "Unsqueeze", "squeeze", "unsqueeze"]


def squeeze(x: Tensor, factor: int = 2) -> Tensor:
    r"""Space to channels: ``(*B, C, H, W) -> (*B, C f^2, H/f, W/f)`` (:math:`f` = ``factor``).

    Example:

    >>> x = torch.arange(16.0).reshape(1, 4, 4)
    >>> squeeze(x)[:, 0, 0]
    tensor([0., 1., 4., 5.])
    """
    *batch, c, h, w = x.shape
    x = x.reshape(*batch, c, h // factor, factor, w // factor, factor)
    n = len(batch)
    x = x.permute(*range(n), n, n + 2, n + 4, n + 1, n + 3)
    return x.reshape(*batch, c * factor * factor, h // factor, w // factor)


def unsqueeze(x: Tensor, factor: int = 2) -> Tensor:
    r"""Channels to space, the inverse of :func:`squeeze`: ``(*B, C f^2, H, W) -> (*B, C, H f,
    W f)``.

    Example:

    >>> x = torch.randn(2, 3, 4, 6)
    >>> torch.equal(unsqueeze(squeeze(x)), x)
    True
    """
    *batch, c, h, w = x.shape
    n = len(batch)
    x = x.reshape(*batch, c // (factor * factor), factor, factor, h, w)
    x = x.permute(*range(n), n, n + 3, n + 1, n + 4, n + 2)
    return x.reshape(*batch, c // (factor * factor), h * factor, w * factor)


class Squeeze(ImageTransform):
    r"""Space to channels, :math:`(C, H, W) \to (4C, H/2, W/2)` (base :math:`\to` data).

    .. math::

        y_{4c + 2i + j,\ h,\ w} = x_{c,\ 2h + i,\ 2w + j}, \qquad
        \log\left|\det \frac{\partial y}{\partial x}\right| = 0.

    ``event_shape`` is the input shape ``(C, H, W)`` and ``output_shape`` is ``(4C, H/2, W/2)``;
    the inverse maps back. Inside a :class:`~pyro_flows.Flow` every layer keeps one event shape,
    so squeezes are used inside :class:`~pyro_flows.transforms.image.multiscale.MultiScale`; on
    its own the layer works in Pyro's ``TransformedDistribution``.

    Cost: both directions are one reshape/permute copy, :math:`O(CHW)`, no parameters.

    :param shape: input shape ``(C, H, W)`` with ``H`` and ``W`` even.

    Example:

    >>> t = Squeeze((1, 4, 4))
    >>> y, log_det = t.forward_and_log_det(torch.randn(5, 1, 4, 4))
    >>> y.shape, log_det.shape, tuple(t.output_shape)
    (torch.Size([5, 4, 2, 2]), torch.Size([5]), (4, 2, 2))

    References:

    - L. Dinh, J. Sohl-Dickstein, S. Bengio. *Density estimation using Real NVP.* ICLR, 2017.
      https://arxiv.org/abs/1605.08803
    """

    def __init__(self, shape: ImageShape) -> None:
        c, h, w = check_image_shape(shape)
        if h % 2 or w % 2:
            raise ValueError(f"Squeeze needs an even height and width, got shape {(c, h, w)}")
        super().__init__((c, h, w))
        self.output_shape = torch.Size((4 * c, h // 2, w // 2))

    def forward_and_log_det(
        self, x: Tensor, context: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        x, _ = self._prepare(x, context, "x")
        return squeeze(x), zeros_image_log_det(x)

    def inverse_and_log_det(
        self, y: Tensor, context: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        y, _ = self._prepare(y, context, "y", self.output_shape)
        return unsqueeze(y), zeros_image_log_det(y)


class Unsqueeze(ImageTransform):
    r"""Channels to space, :math:`(C, H, W) \to (C/4, 2H, 2W)` (base :math:`\to` data): the
    inverse of :class:`Squeeze` as a layer of its own.

    .. math::

        y_{c,\ 2h + i,\ 2w + j} = x_{4c + 2i + j,\ h,\ w}, \qquad
        \log\left|\det \frac{\partial y}{\partial x}\right| = 0.

    Cost: both directions are one reshape/permute copy, :math:`O(CHW)`, no parameters.

    :param shape: input shape ``(C, H, W)`` with ``C`` divisible by 4.

    Example:

    >>> t = Unsqueeze((4, 2, 2))
    >>> t.forward_and_log_det(torch.randn(3, 4, 2, 2))[0].shape
    torch.Size([3, 1, 4, 4])

    References:

    - L. Dinh, J. Sohl-Dickstein, S. Bengio. *Density estimation using Real NVP.* ICLR, 2017.
      https://arxiv.org/abs/1605.08803
    """

    def __init__(self, shape: ImageShape) -> None:
        c, h, w = check_image_shape(shape)
        if c % 4:
            raise ValueError(
                f"Unsqueeze needs a channel count divisible by 4, got shape {(c, h, w)}"
            )
        super().__init__((c, h, w))
        self.output_shape = torch.Size((c // 4, 2 * h, 2 * w))

    def forward_and_log_det(
        self, x: Tensor, context: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        x, _ = self._prepare(x, context, "x")
        return unsqueeze(x), zeros_image_log_det(x)

    def inverse_and_log_det(
        self, y: Tensor, context: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        y, _ = self._prepare(y, context, "y", self.output_shape)
        return squeeze(y), zeros_image_log_det(y)
