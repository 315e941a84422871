r"""Eight schools (Rubin, 1981), the one definition in the project: its data and both Pyro models.

The hierarchical model of :math:`J = 8` coaching-programme effects, with the priors of Gelman et
al. (2013, section 5.5) as used by Stan's and posteriordb's reference runs,

.. math::

    \mu \sim \mathcal N(0, 5), \quad \tau \sim \mathrm{HalfCauchy}(5), \quad
    \theta_j \mid \mu, \tau \sim \mathcal N(\mu, \tau), \quad
    y_j \mid \theta_j \sim \mathcal N(\theta_j, \sigma_j), \quad j = 1..8,

comes in two parametrisations of the same posterior over :math:`(\mu, \tau, \theta)`:

- :func:`eight_schools_centered` samples :math:`\theta_j` (site ``"theta"``) directly; its
  posterior has a funnel between :math:`\tau` and the :math:`\theta_j`, on which NUTS diverges.
- :func:`eight_schools_noncentered` samples :math:`\eta_j \sim \mathcal N(0, 1)` (site
  ``"eta"``) and sets :math:`\theta_j = \mu + \tau\eta_j`, which removes most of the funnel.

Both are plain Pyro programs whose data are their arguments (observed site ``"obs"``, plate
``"schools"``); :data:`EIGHT_SCHOOLS_Y` and :data:`EIGHT_SCHOOLS_SIGMA` are the standard data.
Turn one into a :class:`~pyro_flows.targets.Target` on its unconstrained space with
:func:`~pyro_flows.targets.model_target`. The prior parameters are Python floats, so sampled
latents take PyTorch's default dtype. Users: :mod:`pyro_flows.compare.bayesian` (flow guide vs
NUTS), ``examples/bayesian/`` and the tests.

Example:

>>> import torch
>>> from pyro_flows.targets import model_target
>>> y, sigma = torch.tensor(EIGHT_SCHOOLS_Y), torch.tensor(EIGHT_SCHOOLS_SIGMA)
>>> target = model_target(eight_schools_noncentered, y, sigma)
>>> target.site_names, target.dim
(('mu', 'tau', 'eta'), 10)

References:

- D. B. Rubin. *Estimation in parallel randomized experiments.* Journal of Educational
  Statistics 6(4), 1981.
- A. Gelman, J. B. Carlin, H. S. Stern, D. B. Dunson, A. Vehtari, D. B. Rubin. *Bayesian Data
  Analysis*, 3rd ed., CRC Press, 2013, section 5.5.
- M. Betancourt, M. Girolami. *Hamiltonian Monte Carlo for Hierarchical Models.* 2013
  (centred vs non-centred). https://arxiv.org/abs/1312.0906
"""

from __future__ import annotations

import pyro
import pyro.distributions as dist
from torch import Tensor

__all__ = [
    "EIGHT_SCHOOLS_Y",
    "EIGHT_SCHOOLS_SIGMA",
    "MU_PRIOR_SD",
    "TAU_PRIOR_SCALE",
    "eight_schools_centered",
    "eight_schools_noncentered",
]

#: The eight schools' estimated effects and their standard errors (Rubin, 1981).
EIGHT_SCHOOLS_Y: tuple[float, ...] = (28.0, 8.0, -3.0, 7.0, -1.0, 1.0, 18.0, 12.0)
EIGHT_SCHOOLS_SIGMA: tuple[float, ...] = (15.0, 10.0, 16.0, 11.0, 9.0, 11.0, 10.0, 18.0)
#: Prior standard deviation of :math:`\mu` and prior scale of :math:`\tau` (HalfCauchy).
MU_PRIOR_SD: float = 5.0
TAU_PRIOR_SCALE: float = 5.0


def eight_schools_centered(y: Tensor, sigma: Tensor) -> None:
    r"""Eight schools, centred parametrisation (latent sites ``mu``, ``tau``, ``theta``).

    .. math::

        \mu \sim \mathcal N(0, 5), \quad \tau \sim \mathrm{HalfCauchy}(5), \quad
        \theta_j \sim \mathcal N(\mu, \tau), \quad y_j \sim \mathcal N(\theta_j, \sigma_j),
        \quad j = 1..8.

    The posterior has a funnel between :math:`\tau` and the :math:`\theta_j`: NUTS on this
    parametrisation diverges and under-explores small :math:`\tau`.

    :param y: observed effects, shape ``(J,)`` (:data:`EIGHT_SCHOOLS_Y` as a tensor).
    :param sigma: their standard errors, shape ``(J,)``.

    Example:

    >>> import torch
    >>> y, sigma = torch.tensor(EIGHT_SCHOOLS_Y), torch.tensor(EIGHT_SCHOOLS_SIGMA)
    >>> tr = pyro.poutine.trace(eight_schools_centered).get_trace(y, sigma)
    >>> tr.nodes["theta"]["value"].shape, tr.nodes["obs"]["is_observed"]
    (torch.Size([8]), True)

    References: Rubin, 1981; Gelman et al., 2013, section 5.5.
    """
    mu = pyro.sample("mu", dist.Normal(0.0, MU_PRIOR_SD))
    tau = pyro.sample("tau", dist.HalfCauchy(TAU_PRIOR_SCALE))
    with pyro.plate("schools", y.shape[-1]):
        theta = pyro.sample("theta", dist.Normal(mu, tau))
        pyro.sample("obs", dist.Normal(theta, sigma), obs=y)


def eight_schools_noncentered(y: Tensor, sigma: Tensor) -> None:
    r"""Eight schools, non-centred (latent sites ``mu``, ``tau``, ``eta``; the same posterior).

    .. math::

        \mu \sim \mathcal N(0, 5), \quad \tau \sim \mathrm{HalfCauchy}(5), \quad
        \eta_j \sim \mathcal N(0, 1), \quad \theta_j = \mu + \tau \eta_j, \quad
        y_j \sim \mathcal N(\theta_j, \sigma_j).

    :math:`\theta` is not a sample site. Reference (a long Stan run): :math:`\mu = 4.41 \pm
    3.31`, :math:`\tau = 3.60 \pm 3.20` (median 2.75), :math:`\theta_1 = 6.15 \pm 5.62`.

    :param y: observed effects, shape ``(J,)`` (:data:`EIGHT_SCHOOLS_Y` as a tensor).
    :param sigma: their standard errors, shape ``(J,)``.

    Example:

    >>> import torch
    >>> y, sigma = torch.tensor(EIGHT_SCHOOLS_Y), torch.tensor(EIGHT_SCHOOLS_SIGMA)
    >>> tr = pyro.poutine.trace(eight_schools_noncentered).get_trace(y, sigma)
    >>> tr.nodes["eta"]["value"].shape, "theta" in tr.nodes, tr.nodes["obs"]["is_observed"]
    (torch.Size([8]), False, True)

    References: Rubin, 1981; Gelman et al., 2013, section 5.5.
    """
    mu = pyro.sample("mu", dist.Normal(0.0, MU_PRIOR_SD))
    tau = pyro.sample("tau", dist.HalfCauchy(TAU_PRIOR_SCALE))
    with pyro.plate("schools", y.shape[-1]):
        eta = pyro.sample("eta", dist.Normal(0.0, 1.0))
        pyro.sample("obs", dist.Normal(mu + tau * eta, sigma), obs=y)
