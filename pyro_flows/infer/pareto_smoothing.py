r"""Pareto-smoothed importance sampling (PSIS) of one vector of log weights, in NumPy.

Given log importance ratios :math:`\log r_s`, :math:`s = 1, \dots, n`, PSIS (Vehtari et al.)
fits a generalised Pareto distribution

.. math::

    F(x) = 1 - \left(1 + \frac{k x}{\sigma}\right)^{-1/k}, \qquad x \ge 0,

to the largest :math:`M = \lceil \min(n / 5, 3 \sqrt{n / r_\mathrm{eff}}) \rceil` ratios
(the excesses :math:`r_s - r_\mathrm{cut}` over the :math:`(M + 1)`-th largest), by Zhang and
Stephens' empirical-Bayes estimate with a weakly informative prior that pulls :math:`\hat k`
towards 0.5 with the weight of 10 draws, :math:`\hat k = (M \hat k_\mathrm{ZS} + 5) / (M + 10)`.
The tail ratios are then replaced, in their order, by the fitted distribution's quantiles at
:math:`(i - 1/2) / M`, truncated at the largest raw ratio, and the log weights normalised.
:math:`\hat k` is the diagnostic: above 0.7 the ratios' variance is so large (or infinite) that
importance-sampling estimates are unreliable.

This is the algorithm of ArviZ's ``psislw`` (and of the ``loo`` R package before its 2022
update), written here so that :func:`~pyro_flows.infer.fit_guide`'s final check does not import
ArviZ (one to two seconds on every first call); ``tests/infer/test_pareto_smoothing.py``
checks it against ArviZ to :math:`10^{-10}`.

References:

- A. Vehtari, D. Simpson, A. Gelman, Y. Yao, J. Gabry. *Pareto smoothed importance sampling.*
  JMLR 25(72), 2024 (arXiv:1507.02646).
- J. Zhang, M. A. Stephens. *A new and efficient estimation method for the generalized Pareto
  distribution.* Technometrics 51(3), 2009.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["pareto_smooth_log_weights", "tail_length"]

#: Zhang and Stephens' prior: the scale of the grid of :math:`b = -k/\sigma` values
_PRIOR_BS = 3.0
#: the weight (in draws) of the prior that pulls :math:`\hat k` towards 0.5
_PRIOR_K = 10.0


def tail_length(n: int, reff: float = 1.0) -> int:
    r"""The number of largest ratios PSIS fits, :math:`\lceil\min(n/5, 3\sqrt{n/r_\mathrm{eff}})
    \rceil`.

    >>> tail_length(4000)
    190
    """
    return int(math.ceil(min(n / 5.0, 3.0 * math.sqrt(n / reff))))


def _fit_generalized_pareto(excess: np.ndarray) -> tuple[float, float]:
    r"""Zhang and Stephens' estimate :math:`(\hat k, \hat\sigma)` from sorted positive
    ``excess`` values, with the prior on :math:`k` of the module docstring."""
    n = len(excess)
    grid = 30 + int(n**0.5)
    b = 1.0 - np.sqrt(grid / (np.arange(1, grid + 1, dtype=float) - 0.5))
    b /= _PRIOR_BS * excess[int(n / 4 + 0.5) - 1]
    b += 1.0 / excess[-1]
    k = np.log1p(-b[:, None] * excess).mean(axis=1)
    profile = n * (np.log(-(b / k)) - k - 1.0)
    weights = 1.0 / np.exp(profile - profile[:, None]).sum(axis=1)
    kept = weights >= 10 * np.finfo(float).eps
    weights, b = weights[kept], b[kept]
    weights /= weights.sum()
    b_post = float(np.sum(b * weights))
    k_post = float(np.log1p(-b_post * excess).mean())
    sigma = -k_post / b_post
    return (n * k_post + _PRIOR_K * 0.5) / (n + _PRIOR_K), sigma


def _generalized_pareto_quantiles(probs: np.ndarray, k: float, sigma: float) -> np.ndarray:
    """Quantiles of the generalised Pareto distribution at ``probs`` in (0, 1)."""
    if sigma <= 0:
        return np.full_like(probs, np.nan)
    if abs(k) < np.finfo(float).eps:
        return -sigma * np.log1p(-probs)
    return sigma * np.expm1(-k * np.log1p(-probs)) / k


def pareto_smooth_log_weights(
    log_weights: np.ndarray, reff: float = 1.0
) -> tuple[np.ndarray, float]:
    r"""Pareto-smoothed, normalised log weights (``logsumexp`` 0) and :math:`\hat k` of one
    vector of log importance ratios (the module docstring's algorithm). ``-inf`` entries
    (zero weights) stay ``-inf``; with at most 4 ratios above the cut-off :math:`\hat k` is
    ``inf`` and nothing is smoothed.

    :param log_weights: shape ``(n,)``, float64, at least one finite entry.
    :param reff: the relative efficiency of the draws (1 for independent draws).
    :returns: ``(smoothed log weights, k_hat)``.

    Example (ratios of a Student-t proposal for a normal target: light tails, small
    :math:`\hat k`):

    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> x = rng.standard_t(5, size=4000)
    >>> lw = -0.5 * x**2 + 3.0 * np.log1p(x**2 / 5)
    >>> smoothed, k = pareto_smooth_log_weights(lw)
    >>> bool(k < 0.5), bool(abs(np.logaddexp.reduce(smoothed)) < 1e-9)  # normalised
    (True, True)
    """
    x = np.array(log_weights, dtype=np.float64).reshape(-1)
    n = len(x)
    top = np.max(x)
    x -= top
    order = np.argsort(x)
    cutoff = max(x[order[-tail_length(n, reff) - 1]], math.log(np.finfo(float).tiny))
    (tail,) = np.nonzero(x > cutoff)
    k = math.inf
    if len(tail) > 4:
        tail_order = np.argsort(x[tail])
        excess = np.exp(x[tail]) - math.exp(cutoff)
        k, sigma = _fit_generalized_pareto(excess[tail_order])
        if math.isfinite(k):
            probs = np.arange(0.5, len(tail)) / len(tail)
            quantiles = _generalized_pareto_quantiles(probs, k, sigma)
            x[tail[tail_order]] = np.log(quantiles + math.exp(cutoff))
            x[x > 0] = 0.0  # truncated at the largest raw ratio
    finite = x[np.isfinite(x)]
    shift = finite.max()
    x -= shift + math.log(np.exp(finite - shift).sum())
    return x, float(k)
