r"""Integer discrete flows (Hoogeboom et al., 2019): bijections of :math:`\mathbb{Z}^D`.

An additive coupling whose translation is *rounded* maps integers to integers and is exactly
invertible on them,

.. math::

    y_a = x_a, \qquad y_b = x_b + \lfloor t(x_a) \rceil, \qquad
    x_b = y_b - \lfloor t(y_a) \rceil,

so a flow of such layers with a discrete base distribution :math:`P_Z` on :math:`\mathbb{Z}^D`
gives an exact probability mass, with no Jacobian at all (a bijection between countable sets
keeps the mass of every point):

.. math::

    P(x) = P_Z\big(f^{-1}(x)\big).

Encoding :math:`x \mapsto f^{-1}(x)` and decoding are lossless (integer arithmetic, exact in
floating point below :math:`2^{24}` in float32 and :math:`2^{53}` in float64; a layer whose output
leaves that range raises ``OverflowError`` rather than silently losing an integer). Rounding
has zero derivative almost everywhere, so training uses the straight-through estimator (Bengio
et al., 2013): :func:`round_ste` rounds in the forward pass and passes the gradient through
unchanged. The log-determinant these layers report is 0 — the exact value for the map on
:math:`\mathbb{Z}^D` and, with the straight-through Jacobian (unit triangular), for the
relaxation too.

References:

- E. Hoogeboom, J. W. T. Peters, R. van den Berg, M. Welling. *Integer Discrete Flows and
  Lossless Compression.* NeurIPS, 2019. https://arxiv.org/abs/1905.07376
- Y. Bengio, N. Léonard, A. Courville. *Estimating or Propagating Gradients Through Stochastic
  Neurons for Conditional Computation.* 2013. https://arxiv.org/abs/1308.3432
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..._numbers import check_positive_number, has_values
from ...nn.conv import ConvResNet
from .base import (
    ImageShape,
    ImageTransform,
    as_batch_of_images,
    restore_batch,
    zeros_image_log_det,
)
from .coupling import MaskedSplit

__all__ = ["IntegerAdditiveCoupling", "round_ste"]


def round_ste(x: Tensor) -> Tensor:
    r"""Round to the nearest integer with a straight-through gradient:
    :math:`\lfloor x \rceil` forward, :math:`\partial/\partial x = 1` backward.

    Example:

    >>> x = torch.tensor([0.4, 1.6], requires_grad=True)
    >>> y = round_ste(x)
    >>> y.sum().backward()
    >>> y.detach(), x.grad
    (tensor([0., 2.]), tensor([1., 1.]))
    """
    return x + (torch.round(x) - x).detach()


class IntegerAdditiveCoupling(MaskedSplit, ImageTransform):
    r"""Additive coupling with a rounded translation: a bijection of integer images (IDF).

    .. math::

        y = x + (1 - m) \odot \big\lfloor \lambda_{\mathrm{out}}\, t(\lambda_{\mathrm{in}}\,
            m \odot x) \big\rceil, \qquad \log|\det J| = 0,

    with :math:`t` a :class:`~pyro_flows.nn.conv.ConvResNet` (zero-initialised last layer: the
    identity at the start), :math:`m` a channel or checkerboard mask (as
    :class:`~pyro_flows.transforms.image.coupling.ImageAffineCoupling`) and the rounding
    straight-through (:func:`round_ste`). Integers map to integers and back exactly; any real
    input is mapped bijectively as well (the translation only depends on the unchanged part).

    Cost: forward and inverse each one conditioner pass.

    :param shape: event shape ``(C, H, W)``.
    :param mask: ``"channel"`` (default, needs :math:`C \ge 2`) or ``"checkerboard"``.
    :param parity: 0 or 1, which half conditions.
    :param hidden_channels: width of the conditioner.
    :param num_blocks: residual blocks of the conditioner.
    :param input_scale: :math:`\lambda_{\mathrm{in}}`, multiplies the conditioner's input
        (e.g. :math:`2/K` for :math:`K`-level pixels).
    :param output_scale: :math:`\lambda_{\mathrm{out}}`, multiplies the translation before
        rounding (larger: faster-moving translations).

    Example:

    >>> _ = torch.manual_seed(0)
    >>> t = IntegerAdditiveCoupling((2, 4, 4), hidden_channels=8)
    >>> with torch.no_grad():
    ...     _ = t.conditioner.last.bias.fill_(2.7)  # translation 2.7 -> rounded to 3
    >>> x = torch.randint(0, 256, (5, 2, 4, 4)).float()
    >>> y, log_det = t.forward_and_log_det(x)
    >>> torch.equal(y, torch.round(y)), torch.equal(t.inverse_and_log_det(y)[0], x)
    (True, True)
    >>> float((y - x).detach().abs().max()), float(log_det.abs().max())
    (3.0, 0.0)

    References:

    - E. Hoogeboom, J. W. T. Peters, R. van den Berg, M. Welling. *Integer Discrete Flows and
      Lossless Compression.* NeurIPS, 2019. https://arxiv.org/abs/1905.07376
    """

    mask: Tensor

    def __init__(
        self,
        shape: ImageShape,
        mask: str = "channel",
        parity: int = 0,
        hidden_channels: int = 64,
        num_blocks: int = 1,
        input_scale: float = 1.0,
        output_scale: float = 1.0,
    ) -> None:
        super().__init__(shape)
        self.input_scale = check_positive_number(input_scale, "input_scale")
        self.output_scale = check_positive_number(output_scale, "output_scale")
        cond, out = self._init_split(mask, parity)
        self.conditioner = ConvResNet(cond, hidden_channels, out, num_blocks)

    def _translate(self, x: Tensor, sign: float) -> Tensor:
        flat, batch = as_batch_of_images(x)
        cond, free = self._parts(flat)
        t = round_ste(self.output_scale * self.conditioner(self.input_scale * cond))
        y = self._join(cond, free + sign * t)
        limit = 2.0 / torch.finfo(y.dtype).eps  # 2**24 in float32, 2**53 in float64
        if y.numel() and has_values(y) and float(y.detach().abs().max()) >= limit:
            raise OverflowError(
                f"{type(self).__name__} produced values beyond {limit:.0f}, where {y.dtype} no "
                "longer holds every integer exactly (the map would not be lossless): use "
                "float64 or smaller translations"
            )
        return restore_batch(y, batch)

    def forward_and_log_det(
        self, x: Tensor, context: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        """Base -> data: ``y_b = x_b + round(t(x_a))``; log-det 0."""
        x, _ = self._prepare(x, context, "x")
        return self._translate(x, 1.0), zeros_image_log_det(x)

    def inverse_and_log_det(
        self, y: Tensor, context: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        """Data -> base: ``x_b = y_b - round(t(y_a))``; log-det 0."""
        y, _ = self._prepare(y, context, "y")
        return self._translate(y, -1.0), zeros_image_log_det(y)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", mask={self.mask_type!r}, parity={self.parity}"
