r"""NICE's final diagonal scaling layer, and the softplus helpers the elementwise layers share.

:class:`Rescale` multiplies each coordinate by a learnable positive scale. Dinh et al. (2015)
write the scale as :math:`\exp(s)`; following the project's numerics advice it is parametrised
here through a softplus, :math:`\mathrm{scale} = \mathrm{softplus}(r)`, initialised at 1, and the
log-determinant is a sum of logs (never the log of a product).

**Three elementwise affine layers.** :class:`~pyro_flows.transforms.rescale.Rescale`,
:class:`~pyro_flows.transforms.affine.ElementwiseAffine` and
:class:`~pyro_flows.transforms.normalization.ActNorm` are the same kind of map, one coordinate at
a time, with the same positive scale :math:`\sigma = \mathrm{softplus}(r)` (the ``raw_scale``
parameter :math:`r` that the other two inherit from ``Rescale``) and the same point-independent
log-determinant :math:`\sum_d \log\sigma_d`, costing :math:`O(D)` both ways. They differ only in
whether there is a shift and in how the parameters start: ``Rescale`` has no shift; an
``ElementwiseAffine`` shift (``loc``) and scale start at values you pass; an ``ActNorm`` shift
(``bias``) and scale start at the identity and are set once from the first training batch.
(:class:`~pyro_flows.transforms.image.ChannelActNorm` is ActNorm per channel of an image.)

.. list-table::
   :header-rows: 1

   * - layer
     - map (base :math:`\to` data)
     - initial values
     - data-dependent init
     - use it for
   * - ``Rescale``
     - :math:`y = \sigma \odot x`
     - :math:`\sigma = 1` (the identity)
     - no
     - a learnable per-dimension scale, e.g. NICE's last layer after volume-preserving
       additive couplings
   * - ``ElementwiseAffine``
     - :math:`y = \mu + \sigma \odot x`
     - ``loc``, ``scale`` arguments (default 0, 1); ``frozen`` stops their training
     - no
     - the first layer next to a standard-normal base, to start a flow (a guide) as a chosen
       diagonal Gaussian :math:`\mathcal N(\mu, \mathrm{diag}\,\sigma^2)`, as ``AutoFlow`` does
   * - ``ActNorm``
     - :math:`y = \sigma \odot x + b`
     - identity until initialised
     - yes: the first training-mode inverse sets :math:`b`, :math:`\sigma` to the batch's
       mean and std
     - between the layers of a density-estimation flow trained on data (Glow), to standardise
       each layer's input
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .base import FlowTransform

__all__ = ["Rescale"]

#: ``softplus_inverse(1.0)``: the raw value at which a softplus scale equals 1.
SOFTPLUS_INV_ONE = math.log(math.expm1(1.0))


def softplus_inverse(y: Tensor) -> Tensor:
    r"""Inverse of the softplus for ``y > 0``: :math:`\log(e^y - 1) = y + \log(1 - e^{-y})`.

    Stable for tiny ``y`` (``log(expm1(y)) ~ log y``) and for large ``y``.
    """
    return y + torch.log(-torch.expm1(-y))


def log_softplus(x: Tensor) -> Tensor:
    r""":math:`\log \mathrm{softplus}(x)`; ``x`` (not ``-inf``) where the softplus underflows."""
    return torch.where(x < -30.0, x, torch.log(F.softplus(x)))


def expand_log_det(value: Tensor, x: Tensor) -> Tensor:
    """A batch-independent log-det ``value`` (a tensor just computed by the caller) as a fresh
    tensor of shape ``x.shape[:-1]``: ``value`` itself when ``x`` has no batch dimensions (a
    single draw: no expand and copy in the graph), else an expanded copy."""
    if x.dim() == 1 and value.dim() == 0:
        return value
    return value.expand(x.shape[:-1]).clone()


class Rescale(FlowTransform):
    r"""Diagonal positive scaling (the last layer of NICE; Dinh et al., 2015).

    .. math::

        y = x \odot \sigma, \qquad \sigma = \mathrm{softplus}(r) > 0, \qquad
        \log\left|\det \frac{\partial y}{\partial x}\right| = \sum_{d=1}^{D} \log \sigma_d,

    and the inverse is :math:`x = y / \sigma` with log-determinant :math:`-\sum_d \log\sigma_d`.
    The log-determinant does not depend on :math:`x`; it is returned expanded to the batch shape
    ``x.shape[:-1]``. The raw parameter starts at :math:`r = \mathrm{softplus}^{-1}(1)`, so a fresh
    layer is the identity. NICE writes :math:`\sigma = \exp(s)`; the softplus keeps the scale from
    overflowing and its gradient bounded.
    :class:`~pyro_flows.transforms.affine.ElementwiseAffine` and
    :class:`~pyro_flows.transforms.normalization.ActNorm` subclass it and add a shift (the module
    docstring compares the three).

    Cost: forward and inverse are both :math:`O(D)` per sample (one elementwise product).

    :param input_dim: event size :math:`D`.

    Example:

    >>> import torch
    >>> from pyro_flows.transforms.rescale import Rescale
    >>> t = Rescale(3)
    >>> x = torch.randn(5, 3)
    >>> y, log_det = t.forward_and_log_det(x)
    >>> torch.allclose(y, x), log_det.shape
    (True, torch.Size([5]))
    >>> torch.allclose(t.inverse_and_log_det(y)[0], x)
    True

    References:

    - L. Dinh, D. Krueger, Y. Bengio. *NICE: Non-linear Independent Components Estimation.*
      ICLR workshop, 2015. https://arxiv.org/abs/1410.8516
    """

    def __init__(self, input_dim: int) -> None:
        super().__init__(input_dim)
        self.raw_scale = nn.Parameter(torch.full((self.input_dim,), SOFTPLUS_INV_ONE))

    @property
    def scale(self) -> Tensor:
        """The positive scale :math:`\\sigma = \\mathrm{softplus}(r)`, shape ``(input_dim,)``."""
        return F.softplus(self.raw_scale)

    def _log_scale_sum(self, x: Tensor) -> Tensor:
        return expand_log_det(log_softplus(self.raw_scale).sum(), x)

    def forward_and_log_det(
        self, x: Tensor, context: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        """Base -> data: ``y = x * scale``; returns ``(y, sum(log scale))``."""
        x, context = self._prepare(x, context, "x")
        return x * self.scale, self._log_scale_sum(x)

    def inverse_and_log_det(
        self, y: Tensor, context: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        """Data -> base: ``x = y / scale``; returns ``(x, -sum(log scale))``."""
        y, context = self._prepare(y, context, "y")
        return y / self.scale, -self._log_scale_sum(y)
