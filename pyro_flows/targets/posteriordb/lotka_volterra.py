r"""``hudson_lynx_hare-lotka_volterra``: the Lotka-Volterra predator-prey ODE fitted to the
Hudson's Bay Company lynx and hare pelts, 1900-1920 (Carpenter's Stan case study).

.. math::

    \frac{du}{dt} = (\alpha - \beta v)\,u, \qquad \frac{dv}{dt} = (-\gamma + \delta u)\,v,
    \qquad (u, v)(0) = z^{\mathrm{init}},

    \alpha, \gamma \sim \mathcal{N}^+(1, 0.5), \quad \beta, \delta \sim \mathcal{N}^+(0.05, 0.05),
    \quad \sigma_k \sim \log\mathcal{N}(-1, 1), \quad z^{\mathrm{init}}_k \sim \log\mathcal{N}(\log
    10, 1),

    y^{\mathrm{init}}_k \sim \log\mathcal{N}(\log z^{\mathrm{init}}_k, \sigma_k), \qquad
    y_{nk} \sim \log\mathcal{N}(\log z_k(t_n), \sigma_k),

with :math:`\theta = (\alpha, \beta, \gamma, \delta)` (all :math:`> 0`; the normal priors are
truncated at 0, a constant). The solution :math:`z(t_n)`, :math:`t_n = 1..20`, is recorded as
the deterministic site ``z`` (Stan's transformed parameter). Stan integrates with RK45 at
relative tolerance :math:`10^{-5}`; here fixed-step RK4 (:func:`~.ode.rk4`) with
:math:`h = 0.1` years (200 steps): at the reference means its relative error in :math:`z` is
:math:`1.3 \cdot 10^{-6}`, at the worst of the 64 corners of the reference's 5 %/95 % box
:math:`2 \cdot 10^{-5}` (against dopri5 at tolerance :math:`10^{-11}`; tested), while the noise
scale :math:`\sigma \approx 0.25` is on the log scale: the error in :math:`\log z` is below
:math:`10^{-4}\sigma`. The posterior is well identified but strongly correlated
(:math:`\alpha` with :math:`\beta`, :math:`\gamma` with :math:`\delta`) and every density
evaluation solves the ODE.

Example:

>>> from pyro_flows.targets.posteriordb import load_posterior
>>> spec = load_posterior("hudson_lynx_hare-lotka_volterra")
>>> spec.dim, spec.kind
(8, 'ode')

References:

- B. Carpenter. *Predator-Prey Population Dynamics: the Lotka-Volterra model in Stan.* Stan case
  study, 2018.
- A. J. Lotka. *Elements of Physical Biology.* Williams & Wilkins, 1925; V. Volterra.
  *Fluctuations in the abundance of a species considered mathematically.* Nature 118, 1926.
- M. Magnusson et al. *posteriordb.* arXiv:2407.04967, 2024.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import pyro
import pyro.distributions as dist
import torch
from pyro.distributions import constraints
from torch import Tensor

from .common import flat
from .ode import rk4

__all__ = ["STEP", "lotka_volterra", "lotka_volterra_solution"]

#: The RK4 step (years).
STEP = 0.1


def lotka_volterra_solution(
    theta: Tensor, z_init: Tensor, times: list[float], step: float = STEP
) -> Tensor:
    r"""The populations :math:`z(t_n)` (shape ``(*batch, N, 2)``) for parameters ``theta``
    (shape ``(*batch, 4)``: :math:`\alpha, \beta, \gamma, \delta`) and initial populations
    ``z_init`` (shape ``(*batch, 2)``), by RK4 from :math:`t = 0`.

    >>> z = lotka_volterra_solution(torch.tensor([0.55, 0.028, 0.8, 0.024]),
    ...                             torch.tensor([34.0, 5.9]), [1.0, 2.0])
    >>> z.shape
    torch.Size([2, 2])
    """
    a, b, g, d = (theta[..., i, None] for i in range(4))

    def f(t: float, z: Tensor) -> Tensor:
        u, v = z[..., 0:1], z[..., 1:2]
        return torch.cat([(a - b * v) * u, (d * u - g) * v], dim=-1)

    batch = torch.broadcast_shapes(theta.shape[:-1], z_init.shape[:-1])
    return rk4(f, z_init.expand(batch + (2,)), 0.0, times, step)


def lotka_volterra(
    data: Mapping[str, Any], tensor: Callable[[Any], Tensor]
) -> Callable[[], None]:
    """The model of ``hudson_lynx_hare-lotka_volterra`` for the posteriordb data (``N``,
    ``ts``, ``y_init``, ``y``)."""
    times = [float(t) for t in data["ts"]]
    y_init, y = tensor(data["y_init"]), tensor(data["y"])
    zero = y.new_zeros(())
    prior = dist.Normal(tensor([1.0, 0.05, 1.0, 0.05]), tensor([0.5, 0.05, 0.5, 0.05]))
    ten = tensor(10.0)

    def model() -> None:
        theta = pyro.sample("theta", flat(zero, (4,), constraints.positive))
        z_init = pyro.sample("z_init", dist.LogNormal(torch.log(ten), 1.0).expand([2]).to_event(1))
        sigma = pyro.sample("sigma", dist.LogNormal(zero - 1.0, 1.0).expand([2]).to_event(1))
        pyro.factor("theta_prior", prior.log_prob(theta).sum(-1))
        z = pyro.deterministic("z", lotka_volterra_solution(theta, z_init, times), event_dim=2)
        # Stan rejects a draw whose solution is not positive (log of a non-positive number)
        ok = ((z > 0) & torch.isfinite(z)).all(-1).all(-1)
        pyro.factor("rejected", torch.where(ok, 0.0, -torch.inf).to(y))
        log_z = torch.log(torch.where(ok[..., None, None], z, 1.0))
        pyro.sample("y_init", dist.LogNormal(torch.log(z_init), sigma).to_event(1), obs=y_init)
        pyro.sample("y", dist.LogNormal(log_z, sigma[..., None, :]).to_event(2), obs=y)

    return model
