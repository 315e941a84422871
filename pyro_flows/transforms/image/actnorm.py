r"""Channel-wise activation normalisation (Glow) on images.

Each channel gets a positive scale and a bias shared by all its pixels,

.. math::

    y_{c,h,w} = \sigma_c\, x_{c,h,w} + b_c, \qquad \sigma_c = \mathrm{softplus}(r_c) > 0,
    \qquad \log\left|\det \frac{\partial y}{\partial x}\right| = H W \sum_c \log \sigma_c,

initialised from data so that the first batch seen in the density direction has zero mean and
unit variance per channel (Kingma & Dhariwal, 2018, Sec. 3.1).

References:

- D. P. Kingma, P. Dhariwal. *Glow: Generative Flow with Invertible 1x1 Convolutions.*
  NeurIPS, 2018. https://arxiv.org/abs/1807.03039
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..._numbers import has_values
from ..._validation import all_finite
from ..rescale import SOFTPLUS_INV_ONE, log_softplus, softplus_inverse
from .base import ImageShape, ImageTransform

__all__ = ["ChannelActNorm"]


class ChannelActNorm(ImageTransform):
    r"""Per-channel affine normalisation with data-dependent initialisation (Glow's ActNorm).

    .. math::

        y_{c,h,w} = \sigma_c\, x_{c,h,w} + b_c, \qquad
        \log\left|\det \frac{\partial y}{\partial x}\right| = H W \sum_{c=1}^{C} \log\sigma_c,

    with :math:`\sigma = \mathrm{softplus}(r)` (never an ``exp``), inverse
    :math:`x = (y - b)/\sigma` and inverse log-determinant minus the forward one.

    *Data-dependent initialisation.* The first inverse (data :math:`\to` base) call in training
    mode on at least 2 values per channel sets :math:`b_c` and :math:`\sigma_c` to the mean and
    standard deviation (population, floored at ``1e-6``) of channel :math:`c` over the batch and
    all pixels, so that this batch leaves the layer with zero mean and unit variance per channel.
    The ``initialized`` buffer records it (it survives ``state_dict`` round trips);
    :meth:`initialize` does it explicitly. A fresh layer is the identity.

    Cost: both directions are elementwise, :math:`O(CHW)` per image; the one-off initialisation
    is one pass over the batch.

    :param shape: event shape ``(C, H, W)``.

    Example:

    >>> t = ChannelActNorm((2, 4, 4))
    >>> data = 3.0 + 5.0 * torch.randn(100, 2, 4, 4)
    >>> z, log_det = t.inverse_and_log_det(data)  # first training-mode inverse: initialises
    >>> torch.allclose(z.mean((0, 2, 3)), torch.zeros(2), atol=1e-4), log_det.shape
    (True, torch.Size([100]))

    References:

    - D. P. Kingma, P. Dhariwal. *Glow: Generative Flow with Invertible 1x1 Convolutions.*
      NeurIPS, 2018. https://arxiv.org/abs/1807.03039
    """

    initialized: Tensor

    #: floor on the standard deviation used by the data-dependent initialisation
    min_std = 1e-6

    def __init__(self, shape: ImageShape) -> None:
        super().__init__(shape)
        c = self.channels
        self.raw_scale = nn.Parameter(torch.full((c,), SOFTPLUS_INV_ONE))
        self.bias = nn.Parameter(torch.zeros(c))
        self.register_buffer("initialized", torch.tensor(False))

    @property
    def scale(self) -> Tensor:
        r"""The positive per-channel scale :math:`\sigma = \mathrm{softplus}(r)`, shape ``(C,)``."""
        return F.softplus(self.raw_scale)

    def _affine(self) -> tuple[Tensor, Tensor]:
        return self.scale[:, None, None], self.bias[:, None, None]

    def _log_det(self, x: Tensor) -> Tensor:
        h, w = self.event_shape[1:]
        value = h * w * log_softplus(self.raw_scale).sum()
        return value.expand(x.shape[:-3]).clone()

    @torch.no_grad()
    def initialize(self, data: Tensor) -> None:
        """Set bias and scale from ``data`` (data side, shape ``(..., C, H, W)``) so that it maps
        to zero mean and unit variance per channel, and mark the layer initialised.

        :raises ValueError: on a wrong shape, fewer than 2 values per channel or non-finite
            values (the layer is then left as it was).
        """
        data, _ = self._prepare(data, None, "data")
        values = data.detach().to(self.bias).movedim(-3, 0).reshape(self.channels, -1)
        if values.shape[1] < 2:
            raise ValueError(
                "ChannelActNorm.initialize needs at least 2 values per channel, got data of "
                f"shape {tuple(data.shape)}"
            )
        if not all_finite(values):
            raise ValueError(
                "ChannelActNorm.initialize got non-finite values (NaN or inf) in data of shape "
                f"{tuple(data.shape)}: the mean and scale of the channels would be NaN"
            )
        mean = values.mean(1)
        std = values.var(1, unbiased=False).sqrt().clamp_min(self.min_std)
        self.bias.copy_(mean)
        self.raw_scale.copy_(softplus_inverse(std))
        self.initialized.fill_(True)

    def _initializes_on(self, y: Tensor) -> bool:
        """Whether this inverse call initialises: training mode, not yet initialised, at least
        2 values per channel, and values to read (not the meta device)."""
        if not (self.training and has_values(y) and has_values(self.initialized)):
            return False
        return not bool(self.initialized) and y[..., 0, :, :].numel() >= 2

    def forward_and_log_det(
        self, x: Tensor, context: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        """Base -> data: ``y = scale * x + bias`` per channel (never initialises)."""
        x, _ = self._prepare(x, context, "x")
        scale, bias = self._affine()
        return x * scale + bias, self._log_det(x)

    def inverse_and_log_det(
        self, y: Tensor, context: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        """Data -> base: ``x = (y - bias) / scale``; initialises first (see the class docs)."""
        y, _ = self._prepare(y, context, "y")
        if self._initializes_on(y):
            self.initialize(y)
        scale, bias = self._affine()
        return (y - bias) / scale, -self._log_det(y)
