r"""The multi-scale architecture (RealNVP, Glow) as one bijection on ``(C, H, W)`` images.

At each scale the image is squeezed to :math:`(4C, H/2, W/2)`, transformed by the steps of that
scale, and half of its channels are *factored out*: they go straight to the base distribution
while the other half continues through the next (coarser) scale. Written data :math:`\to` base
(the density direction), one level is

.. math::

    s = \mathrm{squeeze}(x), \quad h = g^{-1}(s), \quad (z_1, h_2) = \mathrm{split}(h), \quad
    z_2 = F_{\mathrm{inner}}^{-1}(h_2), \quad z = \mathrm{unsqueeze}([z_1, z_2]),

so :math:`z` again has shape :math:`(C, H, W)` and

.. math::

    \log\left|\det \frac{\partial z}{\partial x}\right|
    = \log\left|\det \frac{\partial h}{\partial s}\right|
    + \log\left|\det \frac{\partial z_2}{\partial h_2}\right|,

because squeeze, split and concatenation are permutations. With a standard Normal base on
:math:`z`, the factored-out :math:`z_1` are scored by the base exactly as in the papers, where
they leave the network early: keeping them in one tensor changes nothing but the bookkeeping,
and every layer of a :class:`~pyro_flows.Flow` keeps the same event shape ``(C, H, W)``.

References:

- L. Dinh, J. Sohl-Dickstein, S. Bengio. *Density estimation using Real NVP.* ICLR, 2017.
  https://arxiv.org/abs/1605.08803
- D. P. Kingma, P. Dhariwal. *Glow: Generative Flow with Invertible 1x1 Convolutions.*
  NeurIPS, 2018. https://arxiv.org/abs/1807.03039
"""

from __future__ import annotations

import torch
from torch import Tensor

from .base import ImageShape, ImageTransform, check_image_shape
from .squeeze import squeeze, unsqueeze

__all__ = ["MultiScale"]


class MultiScale(ImageTransform):
    r"""One scale of the multi-scale architecture: squeeze, steps, factor out, recurse.

    Base :math:`\to` data (sampling), for :math:`z` of shape :math:`(C, H, W)`:

    .. math::

        (z_1, z_2) = \mathrm{split}(\mathrm{squeeze}(z)), \qquad
        x = \mathrm{unsqueeze}\big(g([z_1, F_{\mathrm{inner}}(z_2)])\big),

    where :math:`z_1` has ``4C - keep_channels`` channels (factored out: modelled by the base),
    :math:`z_2` the remaining ``keep_channels`` (default :math:`2C`, half) and :math:`g` are the
    ``steps`` on the squeezed shape :math:`(4C, H/2, W/2)`. The log-determinant is the sum of
    those of :math:`g` and :math:`F_{\mathrm{inner}}`; the inverse runs the same pieces backwards.
    Nest a ``MultiScale`` as ``inner`` for more scales.

    Cost: the cost of ``steps`` plus that of ``inner``, in each direction, plus reshapes.

    :param shape: event shape ``(C, H, W)`` with even ``H`` and ``W``.
    :param steps: an :class:`ImageTransform` on ``(4C, H/2, W/2)`` (e.g. an
        :class:`~pyro_flows.transforms.image.compose.ImageSequential` of Glow steps), or ``None``.
    :param inner: an :class:`ImageTransform` on ``(keep_channels, H/2, W/2)`` (the next scale),
        or ``None`` (the kept channels pass unchanged).
    :param keep_channels: channels that continue to ``inner`` (default :math:`2C`).

    Example:

    >>> from pyro_flows.transforms.image import ChannelActNorm
    >>> t = MultiScale((1, 4, 4), steps=ChannelActNorm((4, 2, 2)), inner=ChannelActNorm((2, 2, 2)))
    >>> x = torch.randn(3, 1, 4, 4)
    >>> z, log_det = t.inverse_and_log_det(x)
    >>> z.shape, log_det.shape
    (torch.Size([3, 1, 4, 4]), torch.Size([3]))

    References:

    - L. Dinh, J. Sohl-Dickstein, S. Bengio. *Density estimation using Real NVP.* ICLR, 2017.
      https://arxiv.org/abs/1605.08803
    - D. P. Kingma, P. Dhariwal. *Glow: Generative Flow with Invertible 1x1 Convolutions.*
      NeurIPS, 2018. https://arxiv.org/abs/1807.03039
    """

    @property
    def sign(self) -> int:
        """The product of the steps' and the inner level's Jacobian signs (the squeeze and the
        unsqueeze are the same reordering both ways, and cancel)."""
        sign = 1
        for t in (self.steps, self.inner):
            if t is not None:
                sign *= t.sign
        return sign

    def __init__(
        self,
        shape: ImageShape,
        steps: ImageTransform | None = None,
        inner: ImageTransform | None = None,
        keep_channels: int | None = None,
    ) -> None:
        c, h, w = check_image_shape(shape)
        if h % 2 or w % 2:
            raise ValueError(
                f"MultiScale squeezes its input and needs an even height and width, got shape "
                f"{(c, h, w)}"
            )
        keep = 2 * c if keep_channels is None else keep_channels
        if isinstance(keep, bool) or not isinstance(keep, int) or not 1 <= keep <= 4 * c:
            raise ValueError(f"keep_channels must be an int in [1, {4 * c}], got {keep!r}")
        squeezed = torch.Size((4 * c, h // 2, w // 2))
        kept = torch.Size((keep, h // 2, w // 2))
        for name, t, expected in (("steps", steps, squeezed), ("inner", inner, kept)):
            if t is None:
                continue
            if not isinstance(t, ImageTransform):
                raise TypeError(f"{name} must be an ImageTransform or None, got {type(t).__name__}")
            if t.event_shape != expected or t.output_shape != expected:
                raise ValueError(
                    f"{name} must act on shape {tuple(expected)}, got a transform on "
                    f"{tuple(t.event_shape)} -> {tuple(t.output_shape)}"
                )
        dims = {t.context_dim for t in (steps, inner) if t is not None and t.context_dim}
        if len(dims) > 1:
            raise ValueError(f"steps and inner disagree on context_dim: {sorted(dims)}")
        super().__init__((c, h, w), dims.pop() if dims else None)
        self.steps = steps
        self.inner = inner
        self.keep_channels = keep

    @property
    def forward_is_iterative(self) -> bool:  # type: ignore[override]
        return any(t is not None and t.forward_is_iterative for t in (self.steps, self.inner))

    def _split(self, s: Tensor) -> tuple[Tensor, Tensor]:
        cut = s.shape[-3] - self.keep_channels
        return s[..., :cut, :, :], s[..., cut:, :, :]

    @staticmethod
    def _ctx(t: ImageTransform, context: Tensor | None) -> Tensor | None:
        return context if t.context_dim else None

    def forward_and_log_det(
        self, x: Tensor, context: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        """Base -> data: split the squeezed input, run ``inner`` then ``steps`` forward."""
        x, context = self._prepare(x, context, "x")
        out, keep = self._split(squeeze(x))
        log_det = torch.zeros(x.shape[:-3], dtype=x.dtype, device=x.device)
        if self.inner is not None:
            keep, ld = self.inner.forward_and_log_det(keep, self._ctx(self.inner, context))
            log_det = log_det + ld
        h = torch.cat([out, keep], -3)
        if self.steps is not None:
            h, ld = self.steps.forward_and_log_det(h, self._ctx(self.steps, context))
            log_det = log_det + ld
        return unsqueeze(h), log_det

    def forward_without_log_det(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        x, context = self._prepare(x, context, "x")
        out, keep = self._split(squeeze(x))
        if self.inner is not None:
            keep = self.inner.forward_without_log_det(keep, self._ctx(self.inner, context))
        h = torch.cat([out, keep], -3)
        if self.steps is not None:
            h = self.steps.forward_without_log_det(h, self._ctx(self.steps, context))
        return unsqueeze(h)

    def inverse_and_log_det(
        self, y: Tensor, context: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        """Data -> base: squeeze, ``steps`` inverse, factor out, ``inner`` inverse."""
        y, context = self._prepare(y, context, "y")
        h = squeeze(y)
        log_det = torch.zeros(y.shape[:-3], dtype=y.dtype, device=y.device)
        if self.steps is not None:
            h, ld = self.steps.inverse_and_log_det(h, self._ctx(self.steps, context))
            log_det = log_det + ld
        out, keep = self._split(h)
        if self.inner is not None:
            keep, ld = self.inner.inverse_and_log_det(keep, self._ctx(self.inner, context))
            log_det = log_det + ld
        return unsqueeze(torch.cat([out, keep], -3)), log_det

    def forward_log_det(self, x: Tensor, y: Tensor, context: Tensor | None = None) -> Tensor:
        """From the data side when a member's forward pass is iterative (MintNet)."""
        if self.forward_is_iterative:
            return -self.inverse_and_log_det(y, context)[1]
        return self.forward_and_log_det(x, context)[1]

    def extra_repr(self) -> str:
        return super().extra_repr() + f", keep_channels={self.keep_channels}"
