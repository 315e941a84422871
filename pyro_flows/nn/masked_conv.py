r"""Masked convolutions whose Jacobian is triangular: the building block of MintNet layers.

Flatten a ``(C, H, W)`` image channel-major, :math:`d(c, h, w) = cHW + hW + w`. A convolution
from ``in_channels`` to ``out_channels`` with input channel :math:`i` in *group*
:math:`\lfloor i / g_{\mathrm{in}} \rfloor` and output channel :math:`o` in group
:math:`\lfloor o / g_{\mathrm{out}} \rfloor` is made causal in that order by the mask

.. math::

    M_{o,i,a,b} = \begin{cases}
        1 & \mathrm{group}(i) < \mathrm{group}(o), \\
        1 & \mathrm{group}(i) = \mathrm{group}(o)
            \text{ and } (a, b) \preceq (\lfloor K/2 \rfloor, \lfloor K/2 \rfloor), \\
        0 & \text{otherwise,}
    \end{cases}

with :math:`\preceq` the raster order of the :math:`K \times K` kernel (rows first): output
:math:`(o, h, w)` then depends only on inputs of earlier groups, or of its own group at raster
positions up to and including its own pixel. Composing such convolutions (with elementwise
maps in between) keeps the Jacobian lower triangular, and its diagonal collects only the centre
taps of the own group (the *diagonal taps*), which :class:`MaskedConv2d` can keep positive.
``reverse=True`` mirrors both orders (upper triangular).

References:

- Y. Song, C. Meng, S. Ermon. *MintNet: Building Invertible Neural Networks with Masked
  Convolutions.* NeurIPS, 2019. https://arxiv.org/abs/1907.07945
- A. van den Oord, N. Kalchbrenner, K. Kavukcuoglu. *Pixel Recurrent Neural Networks.* ICML,
  2016. https://arxiv.org/abs/1601.06759
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .._numbers import check_bool, check_finite_number, check_positive_number
from .._validation import check_positive_int

__all__ = ["MaskedConv2d", "triangular_masks"]


def triangular_masks(
    in_channels: int,
    out_channels: int,
    kernel_size: int,
    in_group: int = 1,
    out_group: int = 1,
    reverse: bool = False,
) -> tuple[Tensor, Tensor]:
    r"""The causal mask :math:`M` of the module docs and the mask of the diagonal taps.

    :returns: ``(mask, diagonal)``, both ``(out_channels, in_channels, K, K)`` floats in
        :math:`\{0, 1\}`; ``diagonal`` marks the centre taps between equal groups.

    Example:

    >>> mask, diagonal = triangular_masks(1, 1, 3)
    >>> mask[0, 0]
    tensor([[1., 1., 1.],
            [1., 1., 0.],
            [0., 0., 0.]])
    >>> int(diagonal.sum())
    1
    """
    check_positive_int(in_channels, "in_channels")
    check_positive_int(out_channels, "out_channels")
    check_positive_int(kernel_size, "kernel_size")
    check_positive_int(in_group, "in_group")
    check_positive_int(out_group, "out_group")
    check_bool(reverse, "reverse")
    if kernel_size % 2 == 0:
        raise ValueError(f"kernel_size must be odd (a centre tap), got {kernel_size}")
    if in_channels % in_group or out_channels % out_group:
        raise ValueError(
            f"channels must be whole groups: in_channels={in_channels} / in_group={in_group}, "
            f"out_channels={out_channels} / out_group={out_group}"
        )
    gi = torch.arange(in_channels) // in_group
    go = torch.arange(out_channels) // out_group
    k = kernel_size
    raster = torch.arange(k * k).reshape(k, k)
    centre = (k // 2) * k + k // 2
    if reverse:
        earlier = gi[None, :] > go[:, None]
        causal = raster >= centre
    else:
        earlier = gi[None, :] < go[:, None]
        causal = raster <= centre
    same = gi[None, :] == go[:, None]
    mask = earlier[:, :, None, None] | (same[:, :, None, None] & causal[None, None])
    diagonal = same[:, :, None, None] & (raster == centre)[None, None]
    return mask.float(), diagonal.float()


class MaskedConv2d(nn.Module):
    r"""A 2-D convolution with a fixed mask and positive diagonal taps.

    .. math::

        W = M \odot \big(D \odot \mathrm{softplus}(V) + (1 - D) \odot V\big),

    with :math:`M` and :math:`D` from :func:`triangular_masks` (buffers) and :math:`V` the free
    parameter; zero padding keeps the spatial size.

    :param in_channels: input channels.
    :param out_channels: output channels.
    :param kernel_size: odd kernel size :math:`K`.
    :param in_group: input channels per group.
    :param out_group: output channels per group (the groups must be equally many).
    :param reverse: mirror the order (upper triangular).
    :param bias: add a learnable bias.
    :param scale: initial scale of the free taps (PyTorch's default init times ``scale``).
    :param diagonal_init: initial value of the positive diagonal taps.

    Cost: one convolution, :math:`O(\mathrm{in} \cdot \mathrm{out} \cdot K^2 HW)` per image.

    Example:

    >>> conv = MaskedConv2d(2, 8, 3, in_group=1, out_group=4)
    >>> conv(torch.randn(5, 2, 6, 6)).shape
    torch.Size([5, 8, 6, 6])
    >>> bool((conv.diagonal_taps() > 0).all())
    True

    References:

    - Y. Song, C. Meng, S. Ermon. *MintNet: Building Invertible Neural Networks with Masked
      Convolutions.* NeurIPS, 2019. https://arxiv.org/abs/1907.07945
    """

    mask: Tensor
    diagonal: Tensor

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        in_group: int = 1,
        out_group: int = 1,
        reverse: bool = False,
        bias: bool = True,
        scale: float = 1.0,
        diagonal_init: float = 1.0,
    ) -> None:
        super().__init__()
        check_positive_int(in_channels, "in_channels")
        check_positive_int(out_channels, "out_channels")
        check_positive_int(in_group, "in_group")
        check_positive_int(out_group, "out_group")
        check_bool(bias, "bias")
        scale = check_finite_number(scale, "scale")
        diagonal_init = check_positive_number(diagonal_init, "diagonal_init")
        if in_channels // in_group != out_channels // out_group:
            raise ValueError(
                f"in and out need the same number of groups, got {in_channels // in_group} and "
                f"{out_channels // out_group}"
            )
        mask, diagonal = triangular_masks(
            in_channels, out_channels, kernel_size, in_group, out_group, reverse
        )
        self.register_buffer("mask", mask)
        self.register_buffer("diagonal", diagonal)
        conv = nn.Conv2d(in_channels, out_channels, kernel_size)
        raw = conv.weight.detach() * scale
        diag_raw = torch.log(torch.expm1(torch.tensor(float(diagonal_init))))
        raw = torch.where(diagonal.bool(), diag_raw, raw)
        self.weight = nn.Parameter(raw)
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None
        self.padding = kernel_size // 2
        self.in_group, self.out_group = in_group, out_group

    def masked_weight(self) -> Tensor:
        """The effective kernel :math:`W` (masked, diagonal taps positive)."""
        d = self.diagonal.to(self.weight)
        w = d * F.softplus(self.weight) + (1 - d) * self.weight
        return w * self.mask.to(w)

    def diagonal_taps(self) -> Tensor:
        r"""The positive diagonal taps as a ``(out_channels,)`` vector: output channel
        :math:`o`'s centre weight on the matching input channel of its own group (for
        ``in_group == 1``; in general the sum over the group's centre taps)."""
        w = self.masked_weight() * self.diagonal.to(self.weight)
        return w.sum((1, 2, 3))

    def forward(self, x: Tensor) -> Tensor:
        """``x``: ``(N, in_channels, H, W)`` (``ValueError`` naming the shape otherwise)."""
        in_channels = self.weight.shape[1]
        if not isinstance(x, Tensor) or x.dim() != 4 or x.shape[1] != in_channels:
            shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
            raise ValueError(
                f"MaskedConv2d expected x of shape (N, {in_channels}, H, W) ({in_channels} "
                f"channels), got {shape}"
            )
        return F.conv2d(x, self.masked_weight(), self.bias, padding=self.padding)
