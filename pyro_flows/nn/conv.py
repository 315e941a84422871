r"""A small convolutional ResNet: the conditioner of image coupling layers (Glow, RealNVP).

.. math::

    h_0 = \mathrm{conv}_{3\times3}([x, c]), \qquad
    h_{k} = h_{k-1} + \mathrm{conv}_{1\times1}\big(\mathrm{ReLU}(\mathrm{conv}_{3\times3}(
    \mathrm{ReLU}(h_{k-1})))\big), \qquad
    \mathrm{out} = \mathrm{conv}_{3\times3}(\mathrm{ReLU}(h_K)),

where a context vector :math:`c` (if any) is broadcast over the pixels as extra input channels.
Spatial size is preserved (zero padding). The last convolution is initialised at zero (Glow,
Sec. 3.3), so a coupling layer built on it starts as the identity; the gradient reaches the
earlier layers from the first optimiser step on.

References:

- K. He, X. Zhang, S. Ren, J. Sun. *Deep Residual Learning for Image Recognition.* CVPR, 2016.
  https://arxiv.org/abs/1512.03385
- D. P. Kingma, P. Dhariwal. *Glow: Generative Flow with Invertible 1x1 Convolutions.*
  NeurIPS, 2018. https://arxiv.org/abs/1807.03039
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .._numbers import check_finite_number
from .._validation import check_positive_int

__all__ = ["ConvResNet"]


class _Block(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.conv2 = nn.Conv2d(channels, channels, 1)

    def forward(self, h: Tensor) -> Tensor:
        return h + self.conv2(torch.relu(self.conv1(torch.relu(h))))


class ConvResNet(nn.Module):
    r"""Convolutional ResNet ``(N, in_channels, H, W) -> (N, out_channels, H, W)``.

    .. math::

        \mathrm{out} = \mathrm{conv}_{3\times3}\circ\mathrm{ReLU}\circ
        (\mathrm{id} + \mathrm{block})^{K} \circ \mathrm{conv}_{3\times3}([x, c])

    :param in_channels: channels of the input image.
    :param hidden_channels: channels of the hidden layers.
    :param out_channels: channels of the output.
    :param num_blocks: residual blocks :math:`K \ge 0` (each a 3x3 and a 1x1 convolution).
    :param context_dim: size of an optional context vector, added as constant channels.
    :param out_scale: scale of the last layer's initial weights (0, the default, gives an exact
        zero output at initialisation, as in Glow).

    Cost: :math:`O(HW \cdot \mathrm{hidden}^2)` per image and block.

    Example:

    >>> net = ConvResNet(2, 16, 4, num_blocks=1, context_dim=3)
    >>> out = net(torch.randn(5, 2, 8, 8), torch.randn(5, 3))
    >>> out.shape, bool(out.abs().max() == 0)  # zero-initialised last layer
    (torch.Size([5, 4, 8, 8]), True)

    References:

    - K. He, X. Zhang, S. Ren, J. Sun. *Deep Residual Learning for Image Recognition.* CVPR,
      2016. https://arxiv.org/abs/1512.03385
    """

    def __init__(
        self,
        in_channels: int,
        hidden_channels: int,
        out_channels: int,
        num_blocks: int = 1,
        context_dim: int | None = None,
        out_scale: float = 0.0,
    ) -> None:
        super().__init__()
        check_positive_int(in_channels, "in_channels", minimum=0)
        check_positive_int(hidden_channels, "hidden_channels")
        check_positive_int(out_channels, "out_channels")
        check_positive_int(num_blocks, "num_blocks", minimum=0)
        if context_dim is not None:
            check_positive_int(context_dim, "context_dim")
        out_scale = check_finite_number(out_scale, "out_scale")
        first = in_channels + (context_dim or 0)
        if first == 0:
            raise ValueError(
                "ConvResNet needs in_channels + context_dim >= 1, got in_channels=0 and "
                f"context_dim={context_dim}"
            )
        self.in_channels = in_channels
        self.context_dim = context_dim
        self.first = nn.Conv2d(first, hidden_channels, 3, padding=1)
        self.blocks = nn.Sequential(*(_Block(hidden_channels) for _ in range(num_blocks)))
        self.last = nn.Conv2d(hidden_channels, out_channels, 3, padding=1)
        with torch.no_grad():
            self.last.weight.mul_(out_scale)
            self.last.bias.zero_()

    def _check_inputs(self, x: Tensor, context: Tensor | None) -> None:
        """``ValueError`` naming the expected and the given shapes."""
        if not isinstance(x, Tensor):
            raise TypeError(f"ConvResNet expected x as a torch.Tensor, got {type(x).__name__}")
        if x.dim() != 4 or (self.in_channels and x.shape[1] != self.in_channels):
            raise ValueError(
                f"ConvResNet expected x of shape (N, {self.in_channels}, H, W) "
                f"({self.in_channels} channels), got {tuple(x.shape)}"
            )
        if self.context_dim is None:
            if context is not None:
                raise ValueError(
                    "ConvResNet was built without a context (context_dim=None) but got a context "
                    f"of shape {tuple(context.shape)}"
                )
            return
        if context is None:
            raise ValueError(
                f"ConvResNet was built with context_dim={self.context_dim} and needs a "
                "context of shape (N, context_dim), got None"
            )
        if context.dim() != 2 or context.shape != (x.shape[0], self.context_dim):
            raise ValueError(
                f"ConvResNet expected a context of shape (N, {self.context_dim}) with N = "
                f"{x.shape[0]} (one row per image), got {tuple(context.shape)}"
            )

    def forward(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        """``x``: ``(N, in_channels, H, W)``; ``context``: ``(N, context_dim)`` or ``None``.

        :raises ValueError: naming the expected and the given shapes.
        """
        self._check_inputs(x, context)
        if context is not None:
            planes = context[:, :, None, None].expand(-1, -1, *x.shape[-2:])
            x = planes if self.in_channels == 0 else torch.cat([x, planes], 1)
        h = self.blocks(self.first(x))
        return self.last(torch.relu(h))
