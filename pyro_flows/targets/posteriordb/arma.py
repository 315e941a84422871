r"""``arma-arma11``: an ARMA(1, 1) time series model (Stan benchmark).

.. math::

    \mu \sim \mathcal{N}(0, 10), \quad \phi \sim \mathcal{N}(0, 2), \quad
    \theta \sim \mathcal{N}(0, 2), \quad \sigma \sim \mathrm{Cauchy}^+(0, 2.5),

    \nu_1 = \mu + \phi\mu, \qquad \nu_t = \mu + \phi y_{t-1} + \theta\,\varepsilon_{t-1},
    \qquad \varepsilon_t = y_t - \nu_t, \qquad \varepsilon_t \sim \mathcal{N}(0, \sigma).

The errors follow the linear recursion :math:`\varepsilon_t = c_t - \theta\varepsilon_{t-1}`
(:math:`\varepsilon_0 = 0`) with :math:`c_1 = y_1 - \mu - \phi\mu` and
:math:`c_t = y_t - \mu - \phi y_{t-1}`, so
:math:`\varepsilon_t = \sum_{s \le t} (-\theta)^{t-s} c_s`; :func:`arma_errors` evaluates it as a
parallel prefix scan (:math:`\lceil \log_2 T \rceil` vectorised steps instead of a loop of
:math:`T`), the same sums in another order. The map :math:`y \mapsto \varepsilon` has unit
Jacobian, so ``err ~ normal(0, sigma)`` is a ``pyro.factor``. The posterior is unimodal but
:math:`\phi` sits near the unit root (:math:`0.96 \pm 0.02`).

Example:

>>> y = torch.tensor([1.0, 2.0, 0.5])
>>> arma_errors(y, torch.tensor(0.0), torch.tensor(0.5), torch.tensor(0.2))
tensor([ 1.0000,  1.3000, -0.7600])

References:

- G. E. P. Box, G. M. Jenkins. *Time Series Analysis: Forecasting and Control.* Holden-Day,
  1970.
- M. Magnusson et al. *posteriordb.* arXiv:2407.04967, 2024.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import pyro
import pyro.distributions as dist
import torch
from torch import Tensor

__all__ = ["arma11", "arma_errors"]


def arma_errors(y: Tensor, mu: Tensor, phi: Tensor, theta: Tensor) -> Tensor:
    r"""The ARMA(1, 1) one-step errors :math:`\varepsilon_{1..T}` (shape ``(*batch, T)``) for
    parameters of batch shape ``batch``, by a Hillis-Steele prefix scan of
    :math:`\varepsilon_t = c_t + a\,\varepsilon_{t-1}`, :math:`a = -\theta`.

    >>> y = torch.tensor([0.3, -0.1, 0.4, 0.2])
    >>> e = arma_errors(y, torch.tensor(0.1), torch.tensor(0.8), torch.tensor(-0.3))
    >>> e2 = y[1] - 0.1 - 0.8 * y[0] + 0.3 * e[0]
    >>> bool(torch.isclose(e[1], e2))
    True
    """
    mu, phi, a = mu[..., None], phi[..., None], -theta[..., None]
    c = torch.cat([y[:1] - mu - phi * mu, y[1:] - mu - phi * y[:-1]], dim=-1)
    c = c.expand(torch.broadcast_shapes(c.shape, a.shape))
    power = a  # a ** offset
    offset = 1
    t = c.shape[-1]
    while offset < t:
        shifted = torch.nn.functional.pad(c[..., : t - offset], (offset, 0))
        c = c + power * shifted
        power = power * power
        offset *= 2
    return c


def arma11(data: Mapping[str, Any], tensor: Callable[[Any], Tensor]) -> Callable[[], None]:
    """The model of ``arma-arma11`` for the posteriordb data (``T``, ``y``)."""
    y = tensor(data["y"])
    zero = y.new_zeros(())

    def model() -> None:
        mu = pyro.sample("mu", dist.Normal(zero, 10.0))
        phi = pyro.sample("phi", dist.Normal(zero, 2.0))
        theta = pyro.sample("theta", dist.Normal(zero, 2.0))
        sigma = pyro.sample("sigma", dist.HalfCauchy(zero + 2.5))
        err = arma_errors(y, mu, phi, theta)
        pyro.factor("err", dist.Normal(zero, sigma[..., None]).log_prob(err).sum(-1))

    return model
