r"""``gp_pois_regr-gp_regr``: a Gaussian process regression with hyperparameters to infer
(Stan benchmark).

.. math::

    \rho \sim \mathrm{Gamma}(25, 4), \quad \alpha \sim \mathcal{N}^+(0, 2), \quad
    \sigma \sim \mathcal{N}^+(0, 1),

    K_{ij} = \alpha^2 \exp\Big(-\frac{(x_i - x_j)^2}{2\rho^2}\Big) + \sigma\,\delta_{ij},
    \qquad y \sim \mathcal{N}(0, K).

Note that the Stan program adds :math:`\sigma` (not :math:`\sigma^2`) to the diagonal; so does
this translation. Where the Cholesky factorisation fails (Stan rejects the draw) the log
density is :math:`-\infty`. Only three parameters, but :math:`\alpha` and :math:`\sigma` trade
off against each other and the posterior is skewed.

Example:

>>> from pyro_flows.targets.posteriordb import load_posterior
>>> spec = load_posterior("gp_pois_regr-gp_regr")
>>> spec.dim, spec.kind
(3, 'gp')

References:

- C. E. Rasmussen, C. K. I. Williams. *Gaussian Processes for Machine Learning.* MIT Press,
  2006.
- M. Magnusson et al. *posteriordb.* arXiv:2407.04967, 2024.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import pyro
import pyro.distributions as dist
import torch
from torch import Tensor

__all__ = ["exp_quad_cov", "gp_regr"]


def exp_quad_cov(x: Tensor, alpha: Tensor, rho: Tensor) -> Tensor:
    r"""Stan's ``gp_exp_quad_cov``: :math:`\alpha^2 \exp(-(x_i - x_j)^2 / (2\rho^2))`, shape
    ``(*batch, N, N)`` for ``alpha``, ``rho`` of batch shape ``batch``.

    >>> exp_quad_cov(torch.tensor([0.0, 1.0]), torch.tensor(2.0), torch.tensor(1.0))
    tensor([[4.0000, 2.4261],
            [2.4261, 4.0000]])
    """
    d2 = (x[:, None] - x[None, :]) ** 2
    a, r = alpha[..., None, None], rho[..., None, None]
    return a**2 * torch.exp(-0.5 * d2 / r**2)


def gp_regr(data: Mapping[str, Any], tensor: Callable[[Any], Tensor]) -> Callable[[], None]:
    """The model of ``gp_pois_regr-gp_regr`` for the posteriordb data (``N``, ``x``, ``y``)."""
    x, y = tensor(data["x"]), tensor(data["y"])
    zero = y.new_zeros(())
    eye = torch.eye(len(y), dtype=y.dtype, device=y.device)

    def model() -> None:
        rho = pyro.sample("rho", dist.Gamma(zero + 25.0, 4.0))
        alpha = pyro.sample("alpha", dist.HalfNormal(zero + 2.0))
        sigma = pyro.sample("sigma", dist.HalfNormal(zero + 1.0))
        cov = exp_quad_cov(x, alpha, rho) + sigma[..., None, None] * eye
        chol, info = torch.linalg.cholesky_ex(cov)
        failed = info > 0
        chol = torch.where(failed[..., None, None], eye, chol)
        pyro.factor("cholesky_failed", torch.where(failed, -torch.inf, 0.0).to(y))
        pyro.sample("y", dist.MultivariateNormal(torch.zeros_like(y), scale_tril=chol), obs=y)

    return model
