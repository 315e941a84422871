r"""The logit pre-processing of bounded data (RealNVP), as an exact bijection.

Data in :math:`[0, 1]^D` (dequantized pixels) are modelled in logit space. Read in the sampling
direction (base :math:`\to` data), the layer squashes with a rescaled sigmoid,

.. math::

    y = \frac{\sigma(x) - \alpha}{1 - 2\alpha}, \qquad
    \log\left|\det\frac{\partial y}{\partial x}\right|
    = \sum_i \left[\log\sigma(x_i) + \log\sigma(-x_i)\right] - D \log(1 - 2\alpha),

and its inverse (data :math:`\to` base) is the usual pre-processing
:math:`x = \operatorname{logit}(\alpha + (1 - 2\alpha) y)`, with
:math:`\log|\det \partial x/\partial y| = \sum_i [\log(1 - 2\alpha) - \log p_i - \log(1 - p_i)]`,
:math:`p_i = \alpha + (1 - 2\alpha) y_i`. Putting the layer last in a flow keeps every reported
density in the data space (the log-det of the pre-processing is counted), so numbers stay
comparable with models that do not pre-process.

The inverse's domain is the open interval :math:`(-\alpha/(1 - 2\alpha),
(1 - \alpha)/(1 - 2\alpha))` in each coordinate, which contains :math:`[0, 1]` when
:math:`\alpha > 0`; the forward map's image is that interval. Both ends are computed from the
nearer boundary (:math:`1 - p` is formed as :math:`(1 - 2\alpha)(\mathrm{hi} - y)`), so values
next to a boundary keep their precision.

References:

- Dinh, Sohl-Dickstein, Bengio, *Density estimation using Real NVP*, ICLR 2017 (Sec. 4.1: logit
  of :math:`\alpha + (1 - \alpha) x`, :math:`\alpha = 0.05`).
- Papamakarios, Pavlakou, Murray, *Masked Autoregressive Flow for Density Estimation*, NeurIPS
  2017 (the symmetric form used here, :math:`\lambda = 10^{-6}`).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.distributions import constraints

from .._numbers import has_values
from .base import FlowTransform


class Logit(FlowTransform):
    r"""Rescaled sigmoid (base :math:`\to` data), i.e. logit pre-processing (data :math:`\to`
    base) of data in :math:`[0, 1]^D`:

    .. math::

        y = \frac{\sigma(x) - \alpha}{1 - 2\alpha}, \qquad
        x = \operatorname{logit}\big(\alpha + (1 - 2\alpha)\, y\big).

    :param input_dim: event size :math:`D`.
    :param alpha: boundary margin :math:`\alpha \in [0, 1/2)`: data 0 and 1 map to
        :math:`\mp\operatorname{logit}(1 - \alpha)` (:math:`\pm 2.94` for the default 0.05,
        RealNVP's value; MAF uses :math:`10^{-6}`). With :math:`\alpha = 0` the data must lie in
        the open interval :math:`(0, 1)`.

    Cost: both directions elementwise, no parameters. The inverse raises ``ValueError`` for data
    outside :math:`(-\alpha/(1 - 2\alpha), (1 - \alpha)/(1 - 2\alpha))`.

    Example::

        >>> t = Logit(3, alpha=0.05)
        >>> y = torch.tensor([[0.0, 0.5, 1.0]])
        >>> x, log_det = t.inverse_and_log_det(y)
        >>> x
        tensor([[-2.9444,  0.0000,  2.9444]])
        >>> torch.allclose(t(x), y, atol=1e-6)
        True

    References: Dinh et al. 2017 (RealNVP), Papamakarios et al. 2017 (MAF); see the module.
    """

    def __init__(self, input_dim: int, alpha: float = 0.05) -> None:
        super().__init__(input_dim)
        if isinstance(alpha, bool) or not isinstance(alpha, int | float):
            raise TypeError(f"alpha must be a float, got {type(alpha).__name__}")
        if not 0.0 <= alpha < 0.5:
            raise ValueError(f"alpha must be in [0, 0.5), got {alpha}")
        self.alpha = float(alpha)
        self._scale = 1.0 - 2.0 * self.alpha
        self._log_scale = math.log(self._scale)
        lo, hi = self.bounds
        self.codomain = constraints.independent(constraints.interval(lo, hi), 1)

    @property
    def bounds(self) -> tuple[float, float]:
        r"""The open interval :math:`(\mathrm{lo}, \mathrm{hi})` of valid data values
        (the inverse's domain, the forward map's image)."""
        return 0.0 - self.alpha / self._scale, (1.0 - self.alpha) / self._scale

    def forward_and_log_det(
        self, x: Tensor, context: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        x, _ = self._prepare(x, context, "x")
        lo, hi = self.bounds
        # from the nearer end: sigma(x) for x < 0, 1 - sigma(-x) for x >= 0
        y = torch.where(
            x < 0, lo + torch.sigmoid(x) / self._scale, hi - torch.sigmoid(-x) / self._scale
        )
        log_det = (F.logsigmoid(x) + F.logsigmoid(-x) - self._log_scale).sum(-1)
        return y, log_det

    def inverse_and_log_det(
        self, y: Tensor, context: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        y, _ = self._prepare(y, context, "y")
        self._check_domain(y)
        lo, hi = self.bounds
        p = self._scale * (y - lo)  # alpha + (1 - 2 alpha) y
        q = self._scale * (hi - y)  # 1 - p, without cancellation near 1
        log_p, log_q = torch.log(p), torch.log(q)
        x = log_p - log_q
        log_det = (self._log_scale - log_p - log_q).sum(-1)
        return x, log_det

    def _check_domain(self, y: Tensor) -> None:
        if not has_values(y):
            return
        lo, hi = self.bounds
        with torch.no_grad():
            bad = ~((y > lo) & (y < hi))
            if bool(bad.any()):
                values = y[bad]
                raise ValueError(
                    f"Logit(alpha={self.alpha}) expects data in the open interval "
                    f"({lo:.6g}, {hi:.6g}) (it contains [0, 1] when alpha > 0), got "
                    f"{int(bad.sum())} value(s) outside it, ranging over "
                    f"[{values.min().item():.6g}, {values.max().item():.6g}]"
                    + (" (non-finite values included)" if not bool(values.isfinite().all()) else "")
                )

    def extra_repr(self) -> str:
        return f"input_dim={self.input_dim}, alpha={self.alpha}"
