r"""A fixed permutation of the channels of an image.

.. math::

    y_{c,h,w} = x_{\pi(c),h,w}, \qquad \log\left|\det\frac{\partial y}{\partial x}\right| = 0,

the channel analogue of :class:`~pyro_flows.transforms.Permute` (RealNVP's alternation of
coupling halves; integer discrete flows, where a learned 1x1 convolution would not map integers
to integers).

References:

- L. Dinh, J. Sohl-Dickstein, S. Bengio. *Density estimation using Real NVP.* ICLR, 2017.
  https://arxiv.org/abs/1605.08803
- E. Hoogeboom, J. W. T. Peters, R. van den Berg, M. Welling. *Integer Discrete Flows and
  Lossless Compression.* NeurIPS, 2019. https://arxiv.org/abs/1905.07376
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from ..permutation import permutation_sign
from .base import ImageShape, ImageTransform, zeros_image_log_det

__all__ = ["ChannelPermute"]


def _as_indices(permutation: object) -> Tensor:
    """``permutation`` as a long tensor, refusing non-integer entries (which a cast to
    ``long`` would silently truncate)."""
    try:
        perm = torch.as_tensor(permutation).cpu()
    except (TypeError, ValueError, RuntimeError):
        raise TypeError(
            f"permutation must be a sequence of ints, got {type(permutation).__name__} "
            f"({permutation!r})"
        ) from None
    if perm.dtype == torch.bool or perm.is_floating_point() or perm.is_complex():
        raise TypeError(f"permutation must hold ints, got {perm.tolist()} (dtype {perm.dtype})")
    return perm.long()


class ChannelPermute(ImageTransform):
    r"""Fixed channel permutation :math:`y_{c} = x_{\pi(c)}` (a buffer), exact both ways.

    .. math::

        y_{c,h,w} = x_{\pi(c),h,w}, \qquad x_{c,h,w} = y_{\pi^{-1}(c),h,w}, \qquad
        \log|\det J| = 0.

    Cost: one gather of the channels, :math:`O(CHW)`, in each direction.

    :param shape: event shape ``(C, H, W)``.
    :param permutation: a permutation of ``range(C)``; default: reversed channels.

    Example:

    >>> t = ChannelPermute((3, 2, 2), [2, 0, 1])
    >>> x = torch.arange(12.0).reshape(3, 2, 2)
    >>> t.forward_and_log_det(x)[0][:, 0, 0]
    tensor([8., 0., 4.])

    References:

    - L. Dinh, J. Sohl-Dickstein, S. Bengio. *Density estimation using Real NVP.* ICLR, 2017.
      https://arxiv.org/abs/1605.08803
    """

    permutation: Tensor
    inverse_permutation: Tensor

    @property
    def sign(self) -> int:
        """The sign of the Jacobian determinant: the channel permutation's, once per pixel."""
        h, w = self.event_shape[1], self.event_shape[2]
        return permutation_sign(self.permutation) ** (h * w)

    def __init__(
        self, shape: ImageShape, permutation: Sequence[int] | Tensor | None = None
    ) -> None:
        super().__init__(shape)
        c = self.channels
        perm = torch.arange(c - 1, -1, -1) if permutation is None else _as_indices(permutation)
        if perm.dim() != 1 or not torch.equal(torch.sort(perm).values, torch.arange(c)):
            raise ValueError(
                f"permutation must be a permutation of range({c}), got {perm.tolist()}"
            )
        self.register_buffer("permutation", perm)
        self.register_buffer("inverse_permutation", torch.argsort(perm))

    def forward_and_log_det(
        self, x: Tensor, context: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        x, _ = self._prepare(x, context, "x")
        return x[..., self.permutation, :, :], zeros_image_log_det(x)

    def inverse_and_log_det(
        self, y: Tensor, context: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        y, _ = self._prepare(y, context, "y")
        return y[..., self.inverse_permutation, :, :], zeros_image_log_det(y)
