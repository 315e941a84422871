r"""The banana: Haario et al.'s twisted Gaussian, a curved ridge with a unit Jacobian.

Take :math:`y \sim \mathcal{N}(0, \mathrm{diag}(a^2, 1, \dots, 1))` and bend the second
coordinate along a parabola in the first:

.. math::

    x_1 = y_1, \qquad x_2 = y_2 + b\,(y_1^2 - a^2), \qquad x_i = y_i \ (i \ge 3).

The map :math:`y \mapsto x` has Jacobian determinant 1, so
:math:`p(x) = \mathcal{N}(x_1; 0, a^2)\, \mathcal{N}(x_2 - b(x_1^2 - a^2); 0, 1)
\prod_{i \ge 3} \mathcal{N}(x_i; 0, 1)` is normalised (:math:`\log Z = 0`) and exact samples are
the twisted Gaussian draws. The moments are exact: all means are 0
(:math:`\mathbb{E}[x_2] = b(\mathbb{E}[y_1^2] - a^2) = 0`), :math:`\mathrm{sd}(x_1) = a`,
:math:`\mathrm{Var}(x_2) = 1 + b^2 \mathrm{Var}(y_1^2) = 1 + 2 b^2 a^4`, the others 1.

Haario et al. write the twist as :math:`x_2 + b x_1^2 - 100 b` with :math:`a^2 = 100`, i.e. the
mirror image :math:`x_2 \to -x_2` of the form here (which is the form in the project's issue);
the shape and every moment but the sign of the skew of :math:`x_2` are the same. The default
:math:`b = 0.03` is the strongly twisted case used by Sejdinovic et al. (2014); the defaults give
:math:`\mathrm{sd}(x_2) = \sqrt{19}`.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .._validation import check_positive_int
from .base import Target

__all__ = ["Banana"]

_LOG_SQRT_2PI = 0.5 * math.log(2.0 * math.pi)


def _check_float(value: object, name: str, positive: bool) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{name} must be a float, got {type(value).__name__}")
    if not math.isfinite(value) or (positive and value <= 0):
        kind = "a positive finite" if positive else "a finite"
        raise ValueError(f"{name} must be {kind} float, got {value}")
    return float(value)


class Banana(Target):
    r"""Haario et al.'s twisted Gaussian (a banana) in :math:`D \ge 2` dimensions.

    .. math::

        \log p(x) = -\frac{x_1^2}{2a^2} - \log a
        - \tfrac12\big(x_2 - b(x_1^2 - a^2)\big)^2 - \tfrac12 \sum_{i \ge 3} x_i^2
        - \tfrac{D}{2}\log 2\pi, \qquad \log Z = 0,

    means 0, :math:`\mathrm{sd}(x_1) = a`, :math:`\mathrm{sd}(x_2) = \sqrt{1 + 2b^2a^4}`, the
    others 1; exact samples. ``bounds`` cover :math:`x_1 \in \pm 2.5a` and the parabola there.

    Cost: ``log_prob`` and ``sample`` are :math:`O(D)` per point.

    :param dim: :math:`D` (default 2).
    :param curvature: :math:`b` (default 0.03).
    :param scale: :math:`a`, the standard deviation of :math:`x_1` (default 10).

    Example:

    >>> target = Banana()
    >>> target.log_Z, target.std
    (0.0, tensor([10.0000,  4.3589]))
    >>> target.log_prob(torch.tensor([0.0, -3.0])) > target.log_prob(torch.tensor([0.0, 0.0]))
    tensor(True)

    References:

    - H. Haario, E. Saksman, J. Tamminen. *Adaptive proposal distribution for random walk
      Metropolis algorithm.* Computational Statistics 14, 375-395, 1999.
    - D. Sejdinovic, H. Strathmann, M. Lomeli Garcia, C. Andrieu, A. Gretton. *Kernel Adaptive
      Metropolis-Hastings.* ICML 2014. https://arxiv.org/abs/1307.5302
    """

    name = "banana"
    has_exact_samples = True

    def __init__(self, dim: int = 2, curvature: float = 0.03, scale: float = 10.0) -> None:
        check_positive_int(dim, "dim", minimum=2)
        curvature = _check_float(curvature, "curvature", positive=False)
        scale = _check_float(scale, "scale", positive=True)
        super().__init__(dim)
        self.curvature, self.scale = curvature, scale
        self.log_Z = 0.0
        b, a = self.curvature, self.scale
        self.mean = torch.zeros(dim)
        self.std = torch.tensor([a, math.sqrt(1 + 2 * b**2 * a**4)] + [1.0] * (dim - 2))
        x1 = 2.5 * a
        ends = (-b * a**2, b * (x1**2 - a**2))
        self.bounds = ((-x1, x1), (min(ends) - 3.0, max(ends) + 3.0))

    def _log_prob(self, z: Tensor) -> Tensor:
        a, b = self.scale, self.curvature
        x1 = z[..., 0]
        y2 = z[..., 1] - b * (x1**2 - a**2)
        quad = (x1 / a) ** 2 + y2**2 + (z[..., 2:] ** 2).sum(-1)
        return -0.5 * quad - math.log(a) - self.dim * _LOG_SQRT_2PI

    def _initial_point(self) -> Tensor:
        z = torch.zeros(self.dim, dtype=self._anchor.dtype, device=self._anchor.device)
        z[1] = -self.curvature * self.scale**2  # the mode: x1 = 0 on the parabola
        return z

    def _sample(self, n: int) -> Tensor:
        a, b = self.scale, self.curvature
        y = torch.randn(n, self.dim, dtype=torch.float64)
        y[:, 0] *= a
        y[:, 1] += b * (y[:, 0] ** 2 - a**2)
        return y

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, curvature={self.curvature}, scale={self.scale}"
