r"""The many-well target of Midgley et al. (2023): :math:`D/2` independent copies of a 2-D
double well, :math:`2^{D/2}` modes (65,536 at the default :math:`D = 32`).

.. math::

    \log \tilde p(x) = \sum_{i=1}^{D/2} \Big[g(x_{2i-1}) - \tfrac12 x_{2i}^2\Big], \qquad
    g(x_1) = -x_1^4 + 6 x_1^2 + \tfrac12 x_1,

(coordinates paired as :math:`(x_0, x_1), (x_2, x_3), \dots` in 0-based indexing, the first of
each pair the double-well one), so that

.. math::

    \log Z = \frac{D}{2}\Big[\log Z_1 + \tfrac12 \log 2\pi\Big], \qquad
    Z_1 = \int_{-\infty}^{\infty} e^{g(x)}\, dx = 11784.509265\ldots

:math:`Z_1` (and every other fact of the 1-D factor) comes from composite Gauss-Legendre
quadrature in float64 (:func:`double_well_facts`), split at the barrier, to about
:math:`10^{-15}` relative accuracy; fab-torch quotes :math:`Z_1 = 11784.50927`. The wells are
the maxima of :math:`g`, the roots of :math:`g'(x) = -4x^3 + 12x + \tfrac12`: a shallow one at
:math:`x_1 = -1.7108`, a deep one at :math:`1.7525`, and the barrier between them at
:math:`x^* = -0.04169`. The tilt :math:`\tfrac12 x_1` puts 84.43% of each factor's mass right
of the barrier and 15.57% left of it, so a mode with :math:`k` of the :math:`D/2` first
coordinates in the right well has mass :math:`r^k l^{D/2 - k}`.

Exact samples: :math:`x_{2i}` standard normal; :math:`x_{2i-1}` by rejection from a
piecewise-constant envelope on :math:`[-4, 4]` (2048 cells; on each the maximum of :math:`g`,
found at a cell end or a root of :math:`g'` inside it), exact up to the mass beyond
:math:`|x_1| = 4`, below :math:`10^{-70}`; about 1.008 proposals per draw (acceptance 99.25%).
"""

from __future__ import annotations

import functools
import math
from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor

from .._validation import check_positive_int
from ._numerics import gauss_legendre
from .base import Target

__all__ = ["DoubleWellFacts", "ManyWell", "double_well_facts", "double_well_log_density"]

_F64 = torch.float64
_LOG_2PI = math.log(2.0 * math.pi)
#: quadrature range of the 1-D factor (g(6) = -1077: e^g is 0 in float64 beyond it)
_QUAD_EDGE = 6.0
#: the sampler's envelope range and cells (mass beyond |x| = 4 is below 1e-70)
_ENVELOPE_EDGE = 4.0
_ENVELOPE_CELLS = 2048


def double_well_log_density(x: Tensor) -> Tensor:
    r""":math:`g(x) = -x^4 + 6x^2 + \tfrac12 x`, the unnormalised log density of one double-well
    coordinate, elementwise; evaluated as :math:`x(\tfrac12 + x(6 - x^2))`, so that
    :math:`g(\pm\infty) = -\infty` (not NaN).

    >>> double_well_log_density(torch.tensor([0.0, 1.0, float("inf")]))
    tensor([0.0000, 5.5000,   -inf])

    References:

    - L. I. Midgley, V. Stimper, G. N. C. Simm, B. Schölkopf, J. M. Hernández-Lobato. *Flow
      Annealed Importance Sampling Bootstrap.* ICLR 2023. https://arxiv.org/abs/2208.01893
    """
    return x * (0.5 + x * (6.0 - x * x))


def _critical_points() -> tuple[float, float, float]:
    """The three real roots of :math:`g'(x) = -4x^3 + 12x + 1/2`, ascending (Newton-polished)."""
    roots = np.sort(np.roots([-4.0, 0.0, 12.0, 0.5]).real)
    for _ in range(3):
        roots = roots - (-4.0 * roots**3 + 12.0 * roots + 0.5) / (-12.0 * roots**2 + 12.0)
    return float(roots[0]), float(roots[1]), float(roots[2])


class DoubleWellFacts(NamedTuple):
    """The exact facts of the 1-D factor :math:`e^{g(x)}` (see :func:`double_well_facts`)."""

    log_Z1: float
    left_well: float
    barrier: float
    right_well: float
    mass_left: float
    mass_right: float
    mean: float
    std: float


@functools.cache
def double_well_facts(panels: int = 200) -> DoubleWellFacts:
    r"""Normaliser, wells, well masses and moments of :math:`e^{g(x)}`,
    :math:`g(x) = -x^4 + 6x^2 + \tfrac12 x`, by composite Gauss-Legendre quadrature (16 nodes
    on each of ``panels`` panels, float64) on :math:`[-6, x^*]` and :math:`[x^*, 6]`:

    .. math::

        Z_1 = \int e^{g}, \qquad
        m_\mathrm{left} = \frac{1}{Z_1}\int_{-\infty}^{x^*} e^{g}, \qquad
        m_\mathrm{right} = 1 - m_\mathrm{left}, \qquad
        \mathbb{E}[x], \ \mathrm{sd}[x],

    with :math:`x^*` the barrier (the local minimum of :math:`g` between its two maxima). The
    integrand is analytic, so the rule converges geometrically; the results do not change in the
    15th digit between 50 and 400 panels. Cached.

    >>> facts = double_well_facts()
    >>> round(math.exp(facts.log_Z1), 6), round(facts.mass_right, 6)
    (11784.509265, 0.844311)

    References:

    - L. I. Midgley et al. *Flow Annealed Importance Sampling Bootstrap.* ICLR 2023
      (:math:`Z_1 = 11784.50927` in fab-torch's ``double_well.py``).
    - P. J. Davis, P. Rabinowitz. *Methods of Numerical Integration.* 2nd ed., Academic Press,
      1984 (composite Gauss-Legendre rules).
    """
    panels = check_positive_int(panels, "panels")
    left_well, barrier, right_well = _critical_points()
    parts = []
    for low, high in ((-_QUAD_EDGE, barrier), (barrier, _QUAD_EDGE)):
        x, w = gauss_legendre(low, high, panels)
        parts.append((x, double_well_log_density(x) + torch.log(w)))
    log_sides = torch.stack([torch.logsumexp(lf, 0) for _, lf in parts])
    log_z1 = torch.logsumexp(log_sides, 0)
    x = torch.cat([p[0] for p in parts])
    p = torch.exp(torch.cat([p[1] for p in parts]) - log_z1)  # normalised quadrature weights
    mean = (p * x).sum()
    var = (p * (x - mean) ** 2).sum()
    mass_left = torch.exp(log_sides[0] - log_z1).item()
    return DoubleWellFacts(
        log_Z1=log_z1.item(),
        left_well=left_well,
        barrier=barrier,
        right_well=right_well,
        mass_left=mass_left,
        mass_right=torch.exp(log_sides[1] - log_z1).item(),
        mean=mean.item(),
        std=math.sqrt(var.item()),
    )


@functools.cache
def _envelope() -> tuple[Tensor, float, Tensor]:
    """Cell low edges, cell width and :math:`\\max_{cell} g` of the rejection envelope."""
    edges = torch.linspace(-_ENVELOPE_EDGE, _ENVELOPE_EDGE, _ENVELOPE_CELLS + 1, dtype=_F64)
    low, high = edges[:-1], edges[1:]
    log_max = torch.maximum(double_well_log_density(low), double_well_log_density(high))
    for r in _critical_points():
        inside = (low <= r) & (r <= high)
        g_r = double_well_log_density(torch.tensor(r, dtype=_F64))
        log_max = torch.where(inside, torch.maximum(log_max, g_r), log_max)
    # a margin far above float64 rounding of g keeps the bound a bound
    return low, 2.0 * _ENVELOPE_EDGE / _ENVELOPE_CELLS, log_max + 1e-9


def sample_double_well(n: int) -> Tensor:
    r"""``n`` exact draws (float64) of :math:`p(x) \propto e^{g(x)}` from torch's global RNG:
    a cell with probability :math:`\propto \max_\text{cell} e^{g}`, a uniform point in it,
    accepted with probability :math:`e^{g(x) - \max_\text{cell} g}`."""
    low, width, log_max = _envelope()
    probs = torch.exp(log_max - log_max.max())
    out: list[Tensor] = []
    remaining = n
    while remaining > 0:
        m = max(remaining + remaining // 8, 64)
        cell = torch.multinomial(probs, m, replacement=True)
        x = low[cell] + width * torch.rand(m, dtype=_F64)
        accept = torch.log(torch.rand(m, dtype=_F64)) < double_well_log_density(x) - log_max[cell]
        x = x[accept][:remaining]
        out.append(x)
        remaining -= x.numel()
    return torch.cat(out)


class ManyWell(Target):
    r"""The many-well target: :math:`D/2` independent 2-D double wells, unnormalised, with exact
    :math:`\log Z`, moments, well masses and samples.

    .. math::

        \log \tilde p(x) = \sum_{i=1}^{D/2} \Big[-x_{2i-1}^4 + 6x_{2i-1}^2
        + \tfrac12 x_{2i-1} - \tfrac12 x_{2i}^2\Big], \qquad
        \log Z = \tfrac{D}{2}\big[\log Z_1 + \tfrac12\log 2\pi\big],

    :math:`\log Z = 164.695675` at :math:`D = 32`. ``mean``/``std`` alternate between the
    double-well coordinate (:math:`1.1880`, :math:`1.2444`, by quadrature) and the Gaussian one
    (0, 1). ``well_masses`` is :math:`(m_\mathrm{left}, m_\mathrm{right}) = (0.1557, 0.8443)`,
    the exact mass of each well of one factor (split at the barrier :math:`x^* = -0.0417`).

    A mode is a choice of well for each of the :math:`D/2` pairs. As :math:`2^{D/2}` modes are too
    many to list (``modes`` and ``true_mode_weights`` stay ``None``), the checks are per pair and
    in total:

    - :meth:`mode_masses`: the fraction of a sample in each well of each pair, shape
      ``(D/2, 2)``, to compare row by row with ``well_masses``;
    - :meth:`modes_visited`: the number of distinct modes a sample visits, to compare with
      :meth:`expected_modes_visited`, its exact expectation for :math:`n` exact draws.

    MCMC starts in the deepest mode, :math:`x_{2i-1} = 1.7525`, :math:`x_{2i} = 0`.

    Cost: ``log_prob`` :math:`O(D)` per point; ``sample`` about 1.008 proposals per double-well
    coordinate; the quadrature at construction is done once per process (cached).

    :param dim: :math:`D`, even (default 32).
    :raises ValueError: for an odd ``dim`` (or one below 2), naming what was expected.

    Example:

    >>> target = ManyWell(dim=4)
    >>> round(target.log_Z, 6), target.well_masses
    (20.586959, tensor([0.1557, 0.8443]))
    >>> _ = torch.manual_seed(0)
    >>> x = target.sample(20000)
    >>> bool((target.mode_masses(x) - target.well_masses).abs().max() < 0.01)
    True
    >>> target.modes_visited(x), round(target.expected_modes_visited(20000), 3)
    (4, 4.0)

    References:

    - L. I. Midgley, V. Stimper, G. N. C. Simm, B. Schölkopf, J. M. Hernández-Lobato. *Flow
      Annealed Importance Sampling Bootstrap.* ICLR 2023 (the 32-D many-well problem, Section
      4.2). https://arxiv.org/abs/2208.01893
    - H. Wu, J. Köhler, F. Noé. *Stochastic Normalizing Flows.* NeurIPS 2020 (the double-well
      energy). https://arxiv.org/abs/2002.06707
    """

    name = "many_well"
    has_exact_samples = True

    def __init__(self, dim: int = 32) -> None:
        if isinstance(dim, bool) or not isinstance(dim, int):
            raise TypeError(f"dim must be an int, got {type(dim).__name__} ({dim!r})")
        if dim < 2 or dim % 2:
            raise ValueError(
                "ManyWell dim must be even (the coordinates pair up as (x1, x2) double wells): "
                f"expected an even int >= 2, got {dim}"
            )
        super().__init__(dim)
        facts = double_well_facts()
        self.num_pairs = dim // 2
        self.facts = facts
        self.barrier = facts.barrier
        self.log_Z = self.num_pairs * (facts.log_Z1 + 0.5 * _LOG_2PI)
        self.mean = torch.tensor([facts.mean, 0.0] * self.num_pairs)
        self.std = torch.tensor([facts.std, 1.0] * self.num_pairs)
        self.register_buffer("well_masses", torch.tensor([facts.mass_left, facts.mass_right]))
        self.bounds = ((-3.0, 3.0), (-3.0, 3.0))

    def _log_prob(self, z: Tensor) -> Tensor:
        x1, x2 = z[..., 0::2], z[..., 1::2]
        return (double_well_log_density(x1) - 0.5 * x2 * x2).sum(-1)

    def _sample(self, n: int) -> Tensor:
        x = torch.empty(n, self.num_pairs, 2, dtype=_F64)
        x[..., 0] = sample_double_well(n * self.num_pairs).reshape(n, self.num_pairs)
        x[..., 1] = torch.randn(n, self.num_pairs, dtype=_F64)
        return x.reshape(n, self.dim)

    def _initial_point(self) -> Tensor:
        z = torch.zeros(self.dim, dtype=self._anchor.dtype, device=self._anchor.device)
        z[0::2] = self.facts.right_well
        return z

    # -- modes -------------------------------------------------------------------------------
    def wells(self, samples: Tensor) -> Tensor:
        r"""Which well each pair of each sample is in: ``True`` right of the barrier
        (:math:`x_{2i-1} > x^*`), shape ``(*samples.shape[:-1], D/2)`` (bool). A row is the
        sample's mode."""
        samples = self._check(samples)
        return samples[..., 0::2] > self.barrier

    def mode_masses(self, samples: Tensor, weights: Tensor | None = None) -> Tensor:
        r"""The fraction of ``samples`` in the left and right well of each pair, shape
        ``(D/2, 2)``, each row summing to 1:

        .. math::

            \hat m_{i,\mathrm{right}} = \frac{\sum_n v_n [x_{n,2i-1} > x^*]}{\sum_n v_n},
            \qquad \hat m_{i,\mathrm{left}} = 1 - \hat m_{i,\mathrm{right}},

        with :math:`v_n = 1` or the (non-negative, e.g. importance) ``weights`` of shape
        ``samples.shape[:-1]``. Every row of the exact answer is ``well_masses``.
        """
        right = self.wells(samples).reshape(-1, self.num_pairs)
        if right.shape[0] == 0:
            raise ValueError("mode_masses needs at least one sample, got an empty tensor")
        dtype = self.well_masses.dtype
        if weights is None:
            v = torch.ones(right.shape[0], dtype=dtype, device=right.device)
        else:
            if not isinstance(weights, Tensor):
                raise TypeError(f"weights must be a torch.Tensor, got {type(weights).__name__}")
            if weights.shape != samples.shape[:-1]:
                raise ValueError(
                    f"weights must have the batch shape of samples {tuple(samples.shape[:-1])}, "
                    f"got {tuple(weights.shape)}"
                )
            v = weights.reshape(-1).to(dtype)
            if not (torch.isfinite(v).all() and (v >= 0).all() and v.sum() > 0):
                raise ValueError("weights must be finite, non-negative and not all zero")
        m_right = (v[:, None] * right.to(dtype)).sum(0) / v.sum()
        return torch.stack([1.0 - m_right, m_right], -1)

    def modes_visited(self, samples: Tensor) -> int:
        """The number of distinct modes (rows of :meth:`wells`) among ``samples``."""
        rows = self.wells(samples).reshape(-1, self.num_pairs)
        return int(torch.unique(rows, dim=0).shape[0]) if rows.shape[0] else 0

    def expected_modes_visited(self, n: int) -> float:
        r"""The exact expected number of distinct modes among ``n`` exact draws:

        .. math::

            \mathbb{E}[\#\text{modes}] = \sum_{k=0}^{D/2} \binom{D/2}{k}
            \Big[1 - \big(1 - r^k l^{D/2-k}\big)^n\Big],

        :math:`(l, r)` = ``well_masses`` (a mode with :math:`k` pairs in the right well has mass
        :math:`r^k l^{D/2-k}`)."""
        n = check_positive_int(n, "n", minimum=0)
        m = self.num_pairs
        log_l, log_r = math.log(self.facts.mass_left), math.log(self.facts.mass_right)
        total = 0.0
        for k in range(m + 1):
            p = math.exp(k * log_r + (m - k) * log_l)
            total += math.comb(m, k) * -math.expm1(n * math.log1p(-p))
        return total

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, pairs={self.num_pairs}"
