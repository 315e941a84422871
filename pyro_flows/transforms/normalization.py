r"""Normalisation layers as bijections: :class:`ActNorm` (Glow), :class:`BatchNorm` (RealNVP/MAF).

Both are elementwise affine maps, so their log-determinants do not depend on the point; they are
returned expanded to the batch shape ``x.shape[:-1]``. Both are written so that the *inverse*
(data -> base, the density direction) normalises the data. :class:`BatchNorm` normalises
with the statistics of every batch (running averages in eval mode); :class:`ActNorm` uses the
first batch once, then learns its parameters.

**Three elementwise affine layers.** :class:`~pyro_flows.transforms.rescale.Rescale`,
:class:`~pyro_flows.transforms.affine.ElementwiseAffine` and
:class:`~pyro_flows.transforms.normalization.ActNorm` are one map, one coordinate at a
time, with the same softplus scale and log-determinant; they differ in the shift and in how
the parameters start. :mod:`pyro_flows.transforms.rescale` has the table that says which
to use when.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .base import FlowTransform
from .rescale import SOFTPLUS_INV_ONE, Rescale, expand_log_det, log_softplus, softplus_inverse

__all__ = ["ActNorm", "BatchNorm"]


def _rows(y: Tensor) -> Tensor:
    """``y`` with all batch dims flattened: shape ``(N, D)``."""
    return y.reshape(-1, y.shape[-1])


class ActNorm(Rescale):
    r"""Activation normalisation with data-dependent initialisation (Glow; Kingma & Dhariwal, 2018).

    .. math::

        y = x \odot \sigma + b, \qquad \sigma = \mathrm{softplus}(r) > 0, \qquad
        \log\left|\det \frac{\partial y}{\partial x}\right| = \sum_d \log \sigma_d,

    with inverse :math:`x = (y - b) / \sigma` and log-determinant :math:`-\sum_d \log\sigma_d`.

    *Data-dependent initialisation.* The first inverse (data -> base) call in training mode on a
    batch of at least 2 rows sets :math:`b = \mathrm{mean}(y)` and
    :math:`\sigma = \mathrm{std}(y)` per dimension (population standard deviation over all batch
    dims, floored at ``1e-6``), so that this batch's base-side output has zero mean and unit
    variance, and then proceeds with the new parameters. The ``initialized`` buffer records this,
    so a ``state_dict`` round trip keeps an initialised layer initialised. Forward (sampling) calls
    never initialise; :meth:`initialize` does it explicitly. Before initialisation the layer is
    the identity (:math:`\sigma = 1`, :math:`b = 0`).
    It is the same map as :class:`~pyro_flows.transforms.affine.ElementwiseAffine` (``bias`` is its
    ``loc``), which instead starts at values passed to it (the module docstring compares the two
    with :class:`~pyro_flows.transforms.rescale.Rescale`).

    Cost: forward and inverse are :math:`O(D)` per sample (elementwise); the one-off
    initialisation is one pass over the batch.

    :param input_dim: event size :math:`D`.

    Example:

    >>> import torch
    >>> from pyro_flows.transforms.normalization import ActNorm
    >>> t = ActNorm(2)
    >>> data = 3.0 + 5.0 * torch.randn(1000, 2)
    >>> z, log_det = t.inverse_and_log_det(data)  # first training-mode inverse: initialises
    >>> bool(t.initialized)
    True
    >>> torch.allclose(z.mean(0), torch.zeros(2), atol=1e-4)
    True
    >>> torch.allclose(z.std(0, unbiased=False), torch.ones(2), atol=1e-4)
    True

    References:

    - D. P. Kingma, P. Dhariwal. *Glow: Generative Flow with Invertible 1x1 Convolutions.*
      NeurIPS, 2018. https://arxiv.org/abs/1807.03039
    """

    initialized: Tensor

    #: floor on the standard deviation used by the data-dependent initialisation
    min_std = 1e-6

    def __init__(self, input_dim: int) -> None:
        super().__init__(input_dim)  # Rescale: the positive scale softplus(raw_scale), init 1
        self.bias = nn.Parameter(torch.zeros(self.input_dim))
        self.register_buffer("initialized", torch.tensor(False))

    @torch.no_grad()
    def initialize(self, data: Tensor) -> None:
        """Set the parameters so that ``data`` (shape ``(..., input_dim)``, data side) maps to
        zero mean and unit variance per dimension on the base side, and mark the layer initialised.

        :raises ValueError: if ``data`` has the wrong event size or fewer than 2 rows.
        """
        data, _ = self._prepare(data, None, "data")
        rows = _rows(data.detach()).to(self.bias)
        if rows.shape[0] < 2:
            raise ValueError(
                f"ActNorm.initialize needs at least 2 rows of data, got shape {tuple(data.shape)}"
            )
        mean = rows.mean(0)
        std = rows.var(0, unbiased=False).sqrt().clamp_min(self.min_std)
        self.bias.copy_(mean)
        self.raw_scale.copy_(softplus_inverse(std))
        self.initialized.fill_(True)

    def forward_and_log_det(
        self, x: Tensor, context: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        """Base -> data: ``y = x * scale + bias`` (never initialises)."""
        x, context = self._prepare(x, context, "x")
        return x * self.scale + self.bias, self._log_scale_sum(x)

    def inverse_and_log_det(
        self, y: Tensor, context: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        """Data -> base: ``x = (y - bias) / scale``; initialises first (see the class docs)."""
        y, context = self._prepare(y, context, "y")
        if self.training and not bool(self.initialized) and y[..., 0].numel() >= 2:
            self.initialize(y)
        return (y - self.bias) / self.scale, -self._log_scale_sum(y)


class BatchNorm(FlowTransform):
    r"""Batch normalisation as a bijection (Dinh et al., 2017; Papamakarios et al., 2017).

    The inverse (data -> base, density direction) normalises the data:

    .. math::

        x = \frac{y - \mu}{\sqrt{v + \epsilon}} \odot \gamma + \beta, \qquad
        \log\left|\det \frac{\partial x}{\partial y}\right|
        = \sum_d \Big(\log \gamma_d - \tfrac12 \log(v_d + \epsilon)\Big),

    with :math:`\gamma = \mathrm{softplus}(r) > 0` (initialised at 1) and :math:`\beta` learnable
    (initialised at 0). The statistics :math:`(\mu, v)` are

    - in training mode, the statistics of the batch :math:`y` (over all batch dims; the biased
      variance, as ``nn.BatchNorm`` normalises with), and the running buffers are updated:
      ``running = (1 - momentum) * running + momentum * batch`` with the *unbiased* batch
      variance, as ``nn.BatchNorm`` does;
    - in eval mode, ``running_mean`` and ``running_var``.

    As in the papers, the statistics are treated as constants in the log-determinant (it is the
    log-det of the elementwise affine map they define, not of the map through the batch), while the
    gradient flows through them in the output, as in ``nn.BatchNorm``.

    The forward (base -> data, sampling) direction always uses the running statistics,

    .. math::

        y = \frac{x - \beta}{\gamma} \odot \sqrt{v_{\mathrm{run}} + \epsilon} + \mu_{\mathrm{run}},

    because a forward call has no data batch to take statistics from (its input is a base-side
    sample). In eval mode forward and inverse therefore use the same statistics and are exact
    inverses of each other; in training mode the inverse is the batch-dependent map of the papers.
    In training mode :meth:`forward_log_det` (Pyro's ``log_abs_det_jacobian``) returns minus the
    inverse's log-determinant computed from the batch statistics of ``y`` (without updating the
    buffers), so that Pyro's ``TransformedDistribution.log_prob`` path agrees with
    :meth:`inverse_and_log_det`.

    Cost: forward and inverse are :math:`O(D)` per sample; a training-mode inverse also computes
    the batch mean and variance (one pass over the batch).

    :param input_dim: event size :math:`D`.
    :param momentum: weight of the new batch in the running statistics, in ``(0, 1]``.
    :param eps: added to the variance, ``> 0``.

    Example:

    >>> import torch
    >>> from pyro_flows.transforms.normalization import BatchNorm
    >>> t = BatchNorm(2, momentum=1.0)
    >>> data = 3.0 + 5.0 * torch.randn(500, 2)
    >>> z, log_det = t.inverse_and_log_det(data)  # training mode: batch statistics
    >>> torch.allclose(z.mean(0), torch.zeros(2), atol=1e-4)
    True
    >>> _ = t.eval()
    >>> x = torch.randn(4, 2)
    >>> torch.allclose(t.inverse_and_log_det(t.forward_and_log_det(x)[0])[0], x, atol=1e-6)
    True

    References:

    - S. Ioffe, C. Szegedy. *Batch Normalization: Accelerating Deep Network Training by Reducing
      Internal Covariate Shift.* ICML, 2015. https://arxiv.org/abs/1502.03167
    - L. Dinh, J. Sohl-Dickstein, S. Bengio. *Density estimation using Real NVP.* ICLR, 2017.
      https://arxiv.org/abs/1605.08803
    - G. Papamakarios, T. Pavlakou, I. Murray. *Masked Autoregressive Flow for Density
      Estimation.* NeurIPS, 2017. https://arxiv.org/abs/1705.07057
    """

    running_mean: Tensor
    running_var: Tensor

    def __init__(self, input_dim: int, momentum: float = 0.1, eps: float = 1e-5) -> None:
        super().__init__(input_dim)
        for name, value in (("momentum", momentum), ("eps", eps)):
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise TypeError(f"{name} must be a number, got {type(value).__name__} ({value!r})")
        momentum, eps = float(momentum), float(eps)
        if not 0.0 < momentum <= 1.0:
            raise ValueError(f"momentum must be in (0, 1], got {momentum}")
        if not (eps > 0.0 and math.isfinite(eps)):
            raise ValueError(f"eps must be a positive finite number, got {eps}")
        self.momentum = momentum
        self.eps = eps
        self.raw_gamma = nn.Parameter(torch.full((self.input_dim,), SOFTPLUS_INV_ONE))
        self.beta = nn.Parameter(torch.zeros(self.input_dim))
        self.register_buffer("running_mean", torch.zeros(self.input_dim))
        self.register_buffer("running_var", torch.ones(self.input_dim))

    @property
    def gamma(self) -> Tensor:
        """The positive scale :math:`\\gamma = \\mathrm{softplus}(r)`, shape ``(input_dim,)``."""
        return F.softplus(self.raw_gamma)

    def _batch_stats(self, y: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """``(mean, biased var, unbiased var)`` over all batch dims of ``y``."""
        rows = _rows(y)
        n = rows.shape[0]
        if n < 2:
            raise ValueError(
                "BatchNorm in training mode needs at least 2 rows to compute batch statistics, "
                f"got y of shape {tuple(y.shape)}; call .eval() to use the running statistics"
            )
        mean = rows.mean(0)
        var = (rows - mean).square().mean(0)
        return mean, var, var * (n / (n - 1))

    def _inverse_log_det(self, var: Tensor, y: Tensor) -> Tensor:
        value = (log_softplus(self.raw_gamma) - 0.5 * torch.log(var + self.eps)).sum()
        return expand_log_det(value, y)

    def forward_and_log_det(
        self, x: Tensor, context: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        """Base -> data with the running statistics (see the class docs)."""
        x, context = self._prepare(x, context, "x")
        std = torch.sqrt(self.running_var + self.eps)
        y = (x - self.beta) / self.gamma * std + self.running_mean
        return y, -self._inverse_log_det(self.running_var, x)

    def inverse_and_log_det(
        self, y: Tensor, context: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        """Data -> base: batch statistics in training mode (updating the running ones), else
        running statistics."""
        y, context = self._prepare(y, context, "y")
        if self.training:
            mean, var, unbiased_var = self._batch_stats(y)
            with torch.no_grad():
                self.running_mean.lerp_(mean.detach().to(self.running_mean), self.momentum)
                self.running_var.lerp_(unbiased_var.detach().to(self.running_var), self.momentum)
        else:
            mean, var = self.running_mean, self.running_var
        x = (y - mean) * torch.rsqrt(var + self.eps) * self.gamma + self.beta
        return x, self._inverse_log_det(var, y)

    def forward_log_det(self, x: Tensor, y: Tensor, context: Tensor | None = None) -> Tensor:
        """``log|det dy/dx|`` for the pair ``(x, y)``: in training mode, minus the inverse's
        log-det from the batch statistics of ``y`` (buffers untouched); in eval mode, the running
        statistics' value."""
        if not self.training:
            return super().forward_log_det(x, y, context)
        y, context = self._prepare(y, context, "y")
        _, var, _ = self._batch_stats(y)
        return -self._inverse_log_det(var, y)

    def extra_repr(self) -> str:
        return f"input_dim={self.input_dim}, momentum={self.momentum}, eps={self.eps}"
