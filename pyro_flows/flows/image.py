r"""Builders of image flows: Glow, RealNVP's multi-scale model, MintNet and integer discrete flows.

Each builder takes the event shape ``(C, H, W)`` first and returns a :class:`~pyro_flows.Flow`
whose events are images (``flow.event_shape == (C, H, W)``). All four use the multi-scale
architecture (:class:`~pyro_flows.transforms.image.multiscale.MultiScale`): at each of
``num_scales`` scales the image is squeezed to :math:`(4C, H/2, W/2)`, transformed by
``num_transforms`` steps, and half of the channels are factored out to the base; ``H`` and ``W``
must be divisible by :math:`2^{\mathrm{num\_scales}}` (the default is the largest number of
scales, at most 3, that the shape allows). A continuous flow of dequantized pixels is trained
through :class:`~pyro_flows.data.DequantizedModel`, an integer discrete flow directly on the
integer pixels.

.. math::

    \log q(x) = \log p_Z(f^{-1}(x)) + \log\left|\det \frac{\partial f^{-1}}{\partial x}\right|
    \quad\text{(continuous)}, \qquad
    \log P(x) = \log P_Z(f^{-1}(x)) \quad\text{(integer flows)}.

References:

- D. P. Kingma, P. Dhariwal. *Glow: Generative Flow with Invertible 1x1 Convolutions.*
  NeurIPS, 2018. https://arxiv.org/abs/1807.03039
- L. Dinh, J. Sohl-Dickstein, S. Bengio. *Density estimation using Real NVP.* ICLR, 2017.
  https://arxiv.org/abs/1605.08803
- Y. Song, C. Meng, S. Ermon. *MintNet: Building Invertible Neural Networks with Masked
  Convolutions.* NeurIPS, 2019. https://arxiv.org/abs/1907.07945
- E. Hoogeboom, J. W. T. Peters, R. van den Berg, M. Welling. *Integer Discrete Flows and
  Lossless Compression.* NeurIPS, 2019. https://arxiv.org/abs/1905.07376
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

from .._validation import check_positive_int
from ..distributions.discretized_logistic import DiscretizedLogisticBase
from ..flow import Flow
from ..transforms.image import (
    ChannelActNorm,
    ChannelPermute,
    ImageAffineCoupling,
    ImageSequential,
    ImageTransform,
    IntegerAdditiveCoupling,
    InvertibleConv1x1,
    MintNetLayer,
    MultiScale,
)
from ..transforms.image.base import check_image_shape

__all__ = ["glow", "idf", "mintnet", "realnvp_image"]

Shape = tuple[int, int, int]
#: makes the steps of one scale, given the (squeezed) shape at that scale
StepMaker = Callable[[Shape], list[ImageTransform]]


def _num_scales(shape: Shape, num_scales: int | None, owner: str) -> int:
    c, h, w = shape
    possible = 0
    while h % 2 == 0 and w % 2 == 0 and possible < 8:
        possible, h, w = possible + 1, h // 2, w // 2
    if num_scales is None:
        if possible == 0:
            raise ValueError(
                f"{owner} squeezes the image and needs an even height and width, got shape "
                f"{shape}: pad or crop the images"
            )
        return min(possible, 3)
    check_positive_int(num_scales, "num_scales")
    if num_scales > possible:
        raise ValueError(
            f"{owner}: num_scales={num_scales} needs height and width divisible by "
            f"{2**num_scales}, got shape {shape} (at most {possible} scale(s))"
        )
    return num_scales


def _multiscale(
    shape: Shape, num_scales: int, steps: StepMaker, before: StepMaker | None = None
) -> list[ImageTransform]:
    """The layers of a multi-scale flow on ``shape`` (outermost scale first): per scale
    ``before(shape)`` (optional), then squeeze, ``steps`` and the factoring-out of half of the
    channels, recursing on the kept half."""
    c, h, w = shape
    squeezed = (4 * c, h // 2, w // 2)
    kept = (2 * c, h // 2, w // 2)
    inner: ImageTransform | None = None
    if num_scales > 1:
        inner_layers = _multiscale(kept, num_scales - 1, steps, before)
        inner = inner_layers[0] if len(inner_layers) == 1 else ImageSequential(inner_layers)
    layers = list(before(shape)) if before is not None else []
    layers.append(MultiScale(shape, ImageSequential(steps(squeezed)), inner))
    return layers


def glow(
    shape: Sequence[int],
    num_transforms: int = 4,
    hidden_channels: int = 64,
    context_dim: int | None = None,
    *,
    num_scales: int | None = None,
    num_blocks: int = 1,
    parametrization: str = "lu",
    base: Any = None,
) -> Flow:
    r"""Glow (Kingma & Dhariwal, 2018): multi-scale, each step ActNorm, invertible 1x1
    convolution, affine coupling.

    One step of flow on the squeezed image (data :math:`\to` base order reversed):

    .. math::

        x \mapsto \mathrm{coupling}\big(W \cdot (\sigma \odot x + b)\big), \qquad
        \log|\det J| = HW\Big(\sum_c \log\sigma_c + \log|\det W|\Big)
            + \sum \log \sigma_{\mathrm{coupling}},

    ``num_transforms`` steps per scale, ``num_scales`` scales (half of the channels factored out
    after each). The couplings use channel masks and a
    :class:`~pyro_flows.nn.conv.ConvResNet` conditioner with ``hidden_channels`` channels
    (context, if any, enters as constant channels).

    Cost: sampling and density each one pass through every step: ``num_transforms *
    num_scales`` conditioner passes and 1x1 convolutions (an :math:`O(C^3)` LU rebuild each).

    :param shape: event shape ``(C, H, W)``.
    :param num_transforms: steps per scale :math:`K`.
    :param hidden_channels: width of the coupling conditioners.
    :param context_dim: context size for a conditional flow.
    :param num_scales: scales :math:`L` (default: as many as the shape allows, at most 3).
    :param num_blocks: residual blocks per conditioner.
    :param parametrization: ``"lu"`` or ``"qr"`` for the 1x1 convolutions.
    :param base: base distribution or module (default standard Normal on ``(C, H, W)``).

    Example:

    >>> flow = glow((1, 8, 8), num_transforms=2, hidden_channels=8)
    >>> x = torch.randn(3, 1, 8, 8)
    >>> flow.log_prob(x).shape, flow.sample((2,)).shape
    (torch.Size([3]), torch.Size([2, 1, 8, 8]))

    References:

    - D. P. Kingma, P. Dhariwal. *Glow: Generative Flow with Invertible 1x1 Convolutions.*
      NeurIPS, 2018. https://arxiv.org/abs/1807.03039
    """
    shape_t = check_image_shape(shape)
    check_positive_int(num_transforms, "num_transforms")
    scales = _num_scales(shape_t, num_scales, "glow")

    def steps(s: Shape) -> list[ImageTransform]:
        layers: list[ImageTransform] = []
        for _ in range(num_transforms):
            layers.append(ChannelActNorm(s))
            layers.append(InvertibleConv1x1(s, parametrization=parametrization))  # type: ignore[arg-type]
            layers.append(
                ImageAffineCoupling(
                    s, "channel", 0, hidden_channels, num_blocks, context_dim=context_dim
                )
            )
        return layers

    return Flow(_multiscale(shape_t, scales, steps), base=base, context_dim=context_dim)


def realnvp_image(
    shape: Sequence[int],
    num_transforms: int = 3,
    hidden_channels: int = 64,
    context_dim: int | None = None,
    *,
    num_scales: int | None = None,
    num_blocks: int = 1,
    normalization: str | None = "actnorm",
    base: Any = None,
) -> Flow:
    r"""RealNVP's multi-scale image model (Dinh et al., 2017): checkerboard couplings, squeeze,
    channel couplings, factor out half.

    At each scale: ``num_transforms`` affine couplings with alternating checkerboard masks on
    :math:`(C, H, W)`, a squeeze, ``num_transforms`` couplings with alternating channel masks on
    :math:`(4C, H/2, W/2)`, then half of the channels leave for the base; each coupling is

    .. math::

        y = m \odot x + (1 - m) \odot \big(x \odot \sigma(m \odot x) + \mu(m \odot x)\big).

    ``normalization="actnorm"`` (default) puts a channel-wise ActNorm before every coupling
    (RealNVP used batch normalisation; ActNorm is its batch-independent successor).

    Cost: sampling and density each one conditioner pass per coupling,
    ``2 * num_transforms * num_scales`` in all.

    :param shape: event shape ``(C, H, W)``.
    :param num_transforms: couplings per mask type and scale.
    :param hidden_channels: width of the conditioners.
    :param context_dim: context size for a conditional flow.
    :param num_scales: scales (default: as many as the shape allows, at most 3).
    :param num_blocks: residual blocks per conditioner.
    :param normalization: ``"actnorm"`` or ``None``.
    :param base: base distribution or module.

    Example:

    >>> flow = realnvp_image((1, 8, 8), num_transforms=2, hidden_channels=8, num_scales=2)
    >>> flow.log_prob(torch.randn(4, 1, 8, 8)).shape
    torch.Size([4])

    References:

    - L. Dinh, J. Sohl-Dickstein, S. Bengio. *Density estimation using Real NVP.* ICLR, 2017.
      https://arxiv.org/abs/1605.08803
    """
    shape_t = check_image_shape(shape)
    check_positive_int(num_transforms, "num_transforms")
    if normalization not in ("actnorm", None):
        raise ValueError(f"normalization must be 'actnorm' or None, got {normalization!r}")
    scales = _num_scales(shape_t, num_scales, "realnvp_image")

    def couplings(mask: str) -> StepMaker:
        def make(s: Shape) -> list[ImageTransform]:
            layers: list[ImageTransform] = []
            for k in range(num_transforms):
                if normalization == "actnorm":
                    layers.append(ChannelActNorm(s))
                layers.append(
                    ImageAffineCoupling(
                        s, mask, k % 2, hidden_channels, num_blocks, context_dim=context_dim
                    )
                )
            return layers

        return make

    layers = _multiscale(shape_t, scales, couplings("channel"), couplings("checkerboard"))
    return Flow(layers, base=base, context_dim=context_dim)


def mintnet(
    shape: Sequence[int],
    num_transforms: int = 4,
    hidden_per_channel: int = 8,
    *,
    num_scales: int | None = None,
    kernel_size: int = 3,
    tol: float = 1e-6,
    max_iter: int = 500,
    base: Any = None,
) -> Flow:
    r"""MintNet (Song et al., 2019): multi-scale stacks of masked-convolution layers with a
    triangular Jacobian, alternating lower and upper triangular orders.

    Each step is a channel-wise ActNorm and a
    :class:`~pyro_flows.transforms.image.mintnet.MintNetLayer`,

    .. math::

        x = s \odot y + L_2 \tanh(L_1 y + b_1) + b_2 \quad\text{(data} \to \text{base)},
        \qquad \log|\det J| = \sum \log \mathrm{diag}(J),

    whose inverse (sampling) is a fixed-point iteration to the tolerance ``tol``.

    Cost: density one pass per layer (``num_transforms * num_scales`` masked networks);
    sampling iterates each layer to the tolerance (typically 10-60 passes per layer).

    :param shape: event shape ``(C, H, W)``.
    :param num_transforms: MintNet layers per scale.
    :param hidden_per_channel: hidden channels per input channel of each layer.
    :param num_scales: scales (default: as many as the shape allows, at most 3).
    :param kernel_size: odd kernel size of the masked convolutions.
    :param tol: relative tolerance of the fixed-point inverse.
    :param max_iter: iteration cap of the fixed-point inverse.
    :param base: base distribution or module.

    Example:

    >>> flow = mintnet((1, 8, 8), num_transforms=2, hidden_per_channel=2)
    >>> x = flow.sample((2,))  # fixed-point iterations
    >>> flow.log_prob(x).shape  # one pass per layer
    torch.Size([2])

    References:

    - Y. Song, C. Meng, S. Ermon. *MintNet: Building Invertible Neural Networks with Masked
      Convolutions.* NeurIPS, 2019. https://arxiv.org/abs/1907.07945
    """
    shape_t = check_image_shape(shape)
    check_positive_int(num_transforms, "num_transforms")
    scales = _num_scales(shape_t, num_scales, "mintnet")

    def steps(s: Shape) -> list[ImageTransform]:
        layers: list[ImageTransform] = []
        for k in range(num_transforms):
            layers.append(ChannelActNorm(s))
            layers.append(
                MintNetLayer(s, hidden_per_channel, kernel_size, k % 2 == 1, tol, max_iter)
            )
        return layers

    return Flow(_multiscale(shape_t, scales, steps), base=base)


def idf(
    shape: Sequence[int],
    num_transforms: int = 4,
    hidden_channels: int = 64,
    *,
    num_levels: int = 256,
    num_scales: int | None = None,
    num_blocks: int = 1,
    base: Any = None,
) -> Flow:
    r"""Integer discrete flow (Hoogeboom et al., 2019) for integer images with ``num_levels``
    levels: an exact log probability *mass*, lossless on integers.

    Each step is an :class:`~pyro_flows.transforms.image.discrete.IntegerAdditiveCoupling`
    (channel mask, alternating halves, straight-through rounding) followed by a fixed random
    channel permutation; the base is a learnable
    :class:`~pyro_flows.distributions.DiscretizedLogisticBase` centred at the middle level, so

    .. math::

        \log P(x) = \sum_i \log\Big[\sigma\big(\tfrac{z_i + 1/2 - \mu_i}{s_i}\big) -
            \sigma\big(\tfrac{z_i - 1/2 - \mu_i}{s_i}\big)\Big], \qquad z = f^{-1}(x) \in
            \mathbb{Z}^D,

    a mass on all of :math:`\mathbb{Z}^D` (hence at most 1 in total on
    :math:`\{0, \dots, K-1\}^D`), with no dequantization bound. ``flow.sample`` returns integers;
    ``flow.rsample`` is unavailable (discrete base). The conditioner input is scaled by
    :math:`2/K` and its output by :math:`\max(1, K/16)` before rounding.

    Cost: density and sampling each ``num_transforms * num_scales`` conditioner passes.

    :param shape: event shape ``(C, H, W)``.
    :param num_transforms: couplings per scale.
    :param hidden_channels: width of the conditioners.
    :param num_levels: pixel levels :math:`K` (sets the base's initial location and scale and
        the conditioners' scales).
    :param num_scales: scales (default: as many as the shape allows, at most 3).
    :param num_blocks: residual blocks per conditioner.
    :param base: base module (default: the discretised logistic above).

    Example:

    >>> flow = idf((1, 8, 8), num_transforms=2, hidden_channels=8, num_levels=17)
    >>> x = torch.randint(0, 17, (4, 1, 8, 8)).float()
    >>> z = flow.transforms[0].inverse_and_log_det(x)[0]  # encode: integers to integers
    >>> torch.equal(z, z.round()), torch.equal(flow.transforms[0](z), x)  # lossless
    (True, True)
    >>> flow.log_prob(x).shape, bool((flow.sample((2,)) % 1 == 0).all())
    (torch.Size([4]), True)

    References:

    - E. Hoogeboom, J. W. T. Peters, R. van den Berg, M. Welling. *Integer Discrete Flows and
      Lossless Compression.* NeurIPS, 2019. https://arxiv.org/abs/1905.07376
    """
    shape_t = check_image_shape(shape)
    check_positive_int(num_transforms, "num_transforms")
    check_positive_int(num_levels, "num_levels", minimum=2)
    scales = _num_scales(shape_t, num_scales, "idf")
    in_scale = 2.0 / num_levels
    out_scale = max(1.0, num_levels / 16)

    def steps(s: Shape) -> list[ImageTransform]:
        layers: list[ImageTransform] = []
        for k in range(num_transforms):
            layers.append(
                IntegerAdditiveCoupling(
                    s, "channel", k % 2, hidden_channels, num_blocks, in_scale, out_scale
                )
            )
            if k < num_transforms - 1:
                layers.append(ChannelPermute(s, torch.randperm(s[0])))
        return layers

    if base is None:
        base = DiscretizedLogisticBase(shape_t, loc=(num_levels - 1) / 2, scale=num_levels / 8)
    return Flow(_multiscale(shape_t, scales, steps), base=base)
