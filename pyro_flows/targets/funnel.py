r"""Neal's funnel: a scale parameter and the variables it scales, the classic hard geometry
for HMC (step sizes that suit the neck fail in the mouth) and the standard NeuTra benchmark.

.. math::

    x_0 \sim \mathcal{N}(0, \sigma^2), \qquad
    x_i \mid x_0 \sim \mathcal{N}\big(0, (e^{x_0/2})^2\big), \quad i = 1, \dots, D - 1,

with :math:`\sigma = 3` and :math:`D = 10` by default (REFERENCE.md). The density is normalised,
so :math:`\log Z = 0`, and every fact is exact: all means are 0, :math:`\mathrm{sd}(x_0) =
\sigma` and, since :math:`\mathrm{Var}(x_i) = \mathbb{E}[e^{x_0}] = e^{\sigma^2/2}`,
:math:`\mathrm{sd}(x_i) = e^{\sigma^2/4}` (:math:`e^{9/4} = 9.488` for :math:`\sigma = 3`).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .._validation import check_positive_int
from .base import Target

__all__ = ["Funnel"]

_LOG_SQRT_2PI = 0.5 * math.log(2.0 * math.pi)


class Funnel(Target):
    r"""Neal's funnel in :math:`D` dimensions (normalised, exact samples).

    .. math::

        \log p(x) = \log \mathcal{N}(x_0; 0, \sigma^2)
        + \sum_{i=1}^{D-1} \Big(-\tfrac12 x_i^2 e^{-x_0} - \tfrac{x_0}{2}
        - \tfrac12 \log 2\pi\Big), \qquad \log Z = 0,

    means 0, :math:`\mathrm{sd}(x_0) = \sigma`, :math:`\mathrm{sd}(x_{i \ge 1}) =
    e^{\sigma^2/4}`. Exact samples: :math:`x_0 = \sigma\varepsilon_0`, :math:`x_i =
    e^{x_0/2}\varepsilon_i`. The ``bounds`` (for plots of :math:`(x_0, x_1)`) are
    :math:`\pm 2.5\sigma` and :math:`\pm 2 e^{\sigma^2/4}`.

    Cost: ``log_prob`` and ``sample`` are :math:`O(D)` per point.

    :param dim: :math:`D \ge 2` (default 10).
    :param scale: :math:`\sigma`, the standard deviation of :math:`x_0` (default 3).

    Example:

    >>> target = Funnel()
    >>> target.dim, target.log_Z, round(target.std[1].item(), 3)
    (10, 0.0, 9.488)
    >>> target.sample((2, 5)).shape
    torch.Size([2, 5, 10])

    References:

    - R. M. Neal. *Slice sampling.* Annals of Statistics 31(3), 2003, section 8.
    - M. Hoffman, P. Sountsov, J. V. Dillon, I. Langmore, D. Tran, S. Vasudevan. *NeuTra-lizing
      Bad Geometry in Hamiltonian Monte Carlo Using Neural Transport.* 2019.
      https://arxiv.org/abs/1903.03704
    """

    name = "funnel"
    has_exact_samples = True

    def __init__(self, dim: int = 10, scale: float = 3.0) -> None:
        check_positive_int(dim, "dim", minimum=2)
        if isinstance(scale, bool) or not isinstance(scale, int | float):
            raise TypeError(f"scale must be a positive float, got {type(scale).__name__}")
        if not (math.isfinite(scale) and scale > 0):
            raise ValueError(f"scale must be a positive finite float, got {scale}")
        super().__init__(dim)
        self.scale = float(scale)
        self.log_Z = 0.0
        sd_rest = math.exp(self.scale**2 / 4)
        self.mean = torch.zeros(dim)
        self.std = torch.tensor([self.scale] + [sd_rest] * (dim - 1))
        edge = round(2 * sd_rest, 1)
        self.bounds = ((-2.5 * self.scale, 2.5 * self.scale), (-edge, edge))

    def _log_prob(self, z: Tensor) -> Tensor:
        x0, rest = z[..., 0], z[..., 1:]
        lp0 = -0.5 * (x0 / self.scale) ** 2 - math.log(self.scale) - _LOG_SQRT_2PI
        k = self.dim - 1
        quad = (rest**2).sum(-1) * torch.exp(-x0)
        return lp0 - 0.5 * quad - k * (0.5 * x0 + _LOG_SQRT_2PI)

    def _sample(self, n: int) -> Tensor:
        x0 = self.scale * torch.randn(n, 1, dtype=torch.float64)
        rest = torch.exp(0.5 * x0) * torch.randn(n, self.dim - 1, dtype=torch.float64)
        return torch.cat([x0, rest], -1)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, scale={self.scale}"
