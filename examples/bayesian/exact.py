r"""Exact posteriors where they exist: eight schools (by 1-D quadrature) and Neal's funnel.

**Eight schools.** With :math:`\mu \sim \mathcal N(0, s_\mu^2)` (:math:`s_\mu = 5`),
:math:`\theta_j \mid \mu, \tau \sim \mathcal N(\mu, \tau^2)` and
:math:`y_j \mid \theta_j \sim \mathcal N(\theta_j, \sigma_j^2)`, both :math:`\theta` and
:math:`\mu` integrate out in closed form given :math:`\tau`. Writing :math:`V_j = \sigma_j^2 +
\tau^2`,

.. math::

    \mu \mid \tau, y &\sim \mathcal N(m, v), \quad v^{-1} = s_\mu^{-2} + \sum_j V_j^{-1},
    \quad m = v \sum_j y_j / V_j, \\
    \log p(y \mid \tau) &= -\tfrac12 \sum_j \big(\log 2\pi V_j + y_j^2 / V_j\big)
    - \log s_\mu + \tfrac12 \log v + \tfrac{m^2}{2 v}, \\
    \theta_j \mid \mu, \tau, y &\sim \mathcal N\big((1 - b_j) y_j + b_j \mu,\; c_j\big), \quad
    c_j = (\sigma_j^{-2} + \tau^{-2})^{-1}, \quad b_j = c_j / \tau^2,

so the posterior is a 1-D integral over :math:`u = \log\tau` of
:math:`p(\tau)\, p(y \mid \tau)\, \tau` (HalfCauchy(5) prior, Jacobian :math:`\tau`), done on a
uniform grid of 200,001 points over :math:`u \in [-12, 10]`. Means and sds of :math:`\mu, \tau,
\theta_j` follow from the laws of total expectation and variance; exact draws from the grid's
inverse CDF and the two Gaussian conditionals. (It reproduces REFERENCE.md's Stan run:
:math:`\mu = 4.40 \pm 3.32`, :math:`\tau = 3.60 \pm 3.22`, median :math:`\tau = 2.75`.)

**Funnel.** :math:`x_0 \sim \mathcal N(0, 3)`, :math:`x_i \mid x_0 \sim \mathcal N(0, e^{x_0/2})`:
means 0, :math:`\mathrm{sd}(x_0) = 3` and :math:`\mathrm{sd}(x_i) = \sqrt{E[e^{x_0}]} = e^{9/4}`.

Example:

>>> mean, sd = eight_schools_moments()
>>> round(float(mean[0]), 2), round(float(sd[1]), 2)   # mu's mean, tau's sd
(4.4, 3.22)

References:

- A. Gelman, J. B. Carlin, H. S. Stern, D. B. Dunson, A. Vehtari, D. B. Rubin. *Bayesian Data
  Analysis*, 3rd ed., 2013, section 5.4 (the marginal posterior of :math:`\tau`).
- R. M. Neal. *Slice sampling.* Annals of Statistics 31(3), 2003.
"""

from __future__ import annotations

import math
from functools import cache

import numpy as np

# the data and priors of the models in pyro_flows.targets.eight_schools (defined there once)
from pyro_flows.targets.eight_schools import (
    EIGHT_SCHOOLS_SIGMA,
    EIGHT_SCHOOLS_Y,
    MU_PRIOR_SD,
    TAU_PRIOR_SCALE,
)

FUNNEL_DIM = 10


@cache
def _tau_grid(points: int = 200_001) -> dict[str, np.ndarray]:
    """The grid in ``u = log tau`` with normalised posterior weights and conditionals."""
    y, s = np.array(EIGHT_SCHOOLS_Y), np.array(EIGHT_SCHOOLS_SIGMA)
    u = np.linspace(-12.0, 10.0, points)
    tau = np.exp(u)
    var = s**2 + tau[:, None] ** 2
    v = 1 / (MU_PRIOR_SD**-2 + (1 / var).sum(1))
    m = v * (y / var).sum(1)
    log_lik = (
        -0.5 * (np.log(2 * np.pi * var) + y**2 / var).sum(1)
        - math.log(MU_PRIOR_SD)
        + 0.5 * np.log(v)
        + 0.5 * m**2 / v
    )
    log_prior = np.log(2 / (np.pi * TAU_PRIOR_SCALE * (1 + (tau / TAU_PRIOR_SCALE) ** 2)))
    log_post = log_lik + log_prior + u
    w = np.exp(log_post - log_post.max())
    w /= w.sum()
    c = 1 / (1 / s**2 + 1 / tau[:, None] ** 2)
    b = c / tau[:, None] ** 2
    return {"u": u, "tau": tau, "w": w, "m": m, "v": v, "b": b, "c": c, "y": y}


def eight_schools_moments() -> tuple[np.ndarray, np.ndarray]:
    r"""Exact posterior means and sds of :math:`(\mu, \tau, \theta_1..\theta_8)`."""
    g = _tau_grid()
    w, tau, m, v, b, c, y = g["w"], g["tau"], g["m"], g["v"], g["b"], g["c"], g["y"]
    mean_mu = (w * m).sum()
    sd_mu = math.sqrt((w * (v + m**2)).sum() - mean_mu**2)
    mean_tau = (w * tau).sum()
    sd_tau = math.sqrt((w * tau**2).sum() - mean_tau**2)
    cond_mean = (1 - b) * y + b * m[:, None]
    cond_var = c + b**2 * v[:, None]
    mean_theta = (w[:, None] * cond_mean).sum(0)
    sd_theta = np.sqrt((w[:, None] * (cond_var + cond_mean**2)).sum(0) - mean_theta**2)
    return (
        np.concatenate([[mean_mu, mean_tau], mean_theta]),
        np.concatenate([[sd_mu, sd_tau], sd_theta]),
    )


def eight_schools_draws(num_draws: int, seed: int = 0) -> np.ndarray:
    r"""Exact independent posterior draws of :math:`(\mu, \tau, \theta_1..\theta_8)`.

    :math:`\log\tau` by inverse CDF on the grid (uniform within a cell), then
    :math:`\mu \mid \tau` and :math:`\theta \mid \mu, \tau`.

    >>> eight_schools_draws(5).shape
    (5, 10)
    """
    g = _tau_grid()
    rng = np.random.default_rng(seed)
    cdf = np.cumsum(g["w"])
    cell = np.minimum(np.searchsorted(cdf, rng.uniform(size=num_draws) * cdf[-1]), len(cdf) - 1)
    step = g["u"][1] - g["u"][0]
    tau = np.exp(g["u"][cell] + (rng.uniform(size=num_draws) - 0.5) * step)
    s = np.array(EIGHT_SCHOOLS_SIGMA)
    var = s**2 + tau[:, None] ** 2
    v = 1 / (MU_PRIOR_SD**-2 + (1 / var).sum(1))
    mu = v * (g["y"] / var).sum(1) + np.sqrt(v) * rng.standard_normal(num_draws)
    c = 1 / (1 / s**2 + 1 / tau[:, None] ** 2)
    b = c / tau[:, None] ** 2
    theta = (1 - b) * g["y"] + b * mu[:, None] + np.sqrt(c) * rng.standard_normal((num_draws, 8))
    return np.concatenate([mu[:, None], tau[:, None], theta], axis=1)


def funnel_moments(dim: int = FUNNEL_DIM) -> tuple[np.ndarray, np.ndarray]:
    r"""Exact means and sds of the funnel's coordinates: 0 and :math:`(3, e^{9/4}, \dots)`.

    >>> [round(float(v), 3) for v in funnel_moments()[1][:2]]
    [3.0, 9.488]
    """
    sd = np.full(dim, math.exp(9 / 4))
    sd[0] = 3.0
    return np.zeros(dim), sd


def funnel_draws(num_draws: int, seed: int = 0, dim: int = FUNNEL_DIM) -> np.ndarray:
    """Exact independent draws from Neal's funnel, shape ``(num_draws, dim)``, columns x0..x9.

    >>> funnel_draws(4).shape
    (4, 10)
    """
    rng = np.random.default_rng(seed)
    x0 = 3.0 * rng.standard_normal(num_draws)
    rest = np.exp(x0 / 2)[:, None] * rng.standard_normal((num_draws, dim - 1))
    return np.concatenate([x0[:, None], rest], axis=1)
