r"""The linear regressions of posteriordb: ten Stan programs of the form

.. math::

    y_n \sim \mathcal{N}\Big(\sum_{k=1}^{K} \beta_k x_{nk},\ \sigma\Big), \quad n = 1..N,

with a design :math:`x` built from the data in Stan's ``transformed data`` block (logs,
interactions, age dummies) and the priors of each program:

- ``kidiq-kidscore_*`` (Gelman & Hill, ch. 3): :math:`\beta` flat,
  :math:`\sigma \sim \mathrm{Cauchy}^+(0, 2.5)`; designs :math:`(1, \text{mom\_hs})`,
  :math:`(1, \text{mom\_iq})`, :math:`(1, \text{mom\_hs}, \text{mom\_iq},
  \text{mom\_hs}\cdot\text{mom\_iq})`.
- ``earnings-logearn_height`` / ``-log10earn_height``: :math:`\log` (or :math:`\log_{10}`) of
  earnings on :math:`(1, \text{height})`, :math:`\beta` and :math:`\sigma > 0` flat.
- ``mesquite-logmesquite`` / ``-logmesquite_logvas``: log weight on seven log-size covariates,
  flat priors.
- ``nes1996-nes``: party identification on nine covariates (three age dummies), flat priors.
- ``kilpisjarvi_mod-kilpisjarvi``: temperature on year, :math:`\alpha \sim
  \mathcal{N}(\mu_\alpha, s_\alpha)`, :math:`\beta \sim \mathcal{N}(\mu_\beta, s_\beta)`,
  :math:`\sigma` flat; the years are not centred, so :math:`(\alpha, \beta)` correlate at
  :math:`-0.9999`.
- ``sblrc-blr``: :math:`\beta \sim \mathcal{N}(0, 10)`, :math:`\sigma \sim \mathcal{N}^+(0, 10)`,
  :math:`y \sim \mathcal{N}(X\beta, \sigma)`.

Flat priors are ``ImproperUniform`` sites on the parameter's support (Stan's implicit prior).
Parameter batch dims broadcast on the left (no plates), so vectorised guides work.

Example:

>>> from pyro import poutine
>>> from pyro_flows.targets.posteriordb import load_posterior
>>> model = load_posterior("kidiq-kidscore_momhs").model
>>> values = {"beta": torch.tensor([78.0, 12.0]), "sigma": torch.tensor(20.0)}
>>> trace = poutine.trace(poutine.condition(model, values)).get_trace()
>>> trace.nodes["kid_score"]["value"].shape
torch.Size([434])

References:

- A. Gelman, J. Hill. *Data Analysis Using Regression and Multilevel/Hierarchical Models.*
  Cambridge University Press, 2007 (kidiq, earnings, mesquite, nes).
- M. Magnusson et al. *posteriordb.* arXiv:2407.04967, 2024.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import pyro
import pyro.distributions as dist
import torch
from pyro.distributions import constraints
from torch import Tensor

from .common import flat

__all__ = [
    "blr",
    "kidscore_interaction",
    "kidscore_momhs",
    "kidscore_momiq",
    "kilpisjarvi",
    "linear_predictor",
    "log10earn_height",
    "logearn_height",
    "logmesquite",
    "logmesquite_logvas",
    "nes",
]

Model = Callable[[], None]
ToTensor = Callable[[Any], Tensor]


def linear_predictor(beta: Tensor, columns: Sequence[Tensor | float]) -> Tensor:
    r""":math:`\sum_k \beta_k x_{\cdot k}` for ``beta`` of shape ``(*batch, K)`` and ``K``
    columns (tensors of shape ``(N,)`` or the constant 1): a tensor of shape ``(*batch, N)``.

    >>> linear_predictor(torch.tensor([1.0, 2.0]), [1.0, torch.tensor([0.0, 1.0, 2.0])])
    tensor([1., 3., 5.])
    """
    if beta.shape[-1] != len(columns):
        raise ValueError(
            f"beta has {beta.shape[-1]} coefficients but the design has {len(columns)} columns"
        )
    total: Tensor | float = 0.0
    for k, column in enumerate(columns):
        b = beta[..., k, None]
        total = total + (b if isinstance(column, float) else b * column)
    assert isinstance(total, Tensor)
    return total


def _regression(
    y_name: str,
    y: Tensor,
    columns: Sequence[Tensor | float],
    sigma_prior: Callable[[Tensor], dist.TorchDistribution] | None,
    beta_prior: Callable[[Tensor], dist.TorchDistribution] | None = None,
) -> Model:
    """``y ~ normal(X beta, sigma)`` with the given priors (``None``: Stan's flat prior)."""
    zero = y.new_zeros(())
    k = len(columns)

    def model() -> None:
        if beta_prior is None:
            beta = pyro.sample("beta", flat(zero, (k,)))
        else:
            beta = pyro.sample("beta", beta_prior(zero).expand([k]).to_event(1))
        if sigma_prior is None:
            sigma = pyro.sample("sigma", flat(zero, support=constraints.positive))
        else:
            sigma = pyro.sample("sigma", sigma_prior(zero))
        mean = linear_predictor(beta, columns)
        pyro.sample(y_name, dist.Normal(mean, sigma[..., None]).to_event(1), obs=y)

    return model


def _half_cauchy_2_5(zero: Tensor) -> dist.TorchDistribution:
    return dist.HalfCauchy(zero + 2.5)


def kidscore_momhs(data: Mapping[str, Any], tensor: ToTensor) -> Model:
    """``kid_score ~ normal(beta[1] + beta[2] * mom_hs, sigma)``, ``sigma ~ cauchy(0, 2.5)``."""
    return _regression(
        "kid_score", tensor(data["kid_score"]), [1.0, tensor(data["mom_hs"])], _half_cauchy_2_5
    )


def kidscore_momiq(data: Mapping[str, Any], tensor: ToTensor) -> Model:
    """``kid_score ~ normal(beta[1] + beta[2] * mom_iq, sigma)``, ``sigma ~ cauchy(0, 2.5)``."""
    return _regression(
        "kid_score", tensor(data["kid_score"]), [1.0, tensor(data["mom_iq"])], _half_cauchy_2_5
    )


def kidscore_interaction(data: Mapping[str, Any], tensor: ToTensor) -> Model:
    """``kid_score ~ normal(beta[1] + beta[2] mom_hs + beta[3] mom_iq + beta[4] mom_hs .*
    mom_iq, sigma)``, ``sigma ~ cauchy(0, 2.5)``."""
    hs, iq = tensor(data["mom_hs"]), tensor(data["mom_iq"])
    return _regression(
        "kid_score", tensor(data["kid_score"]), [1.0, hs, iq, hs * iq], _half_cauchy_2_5
    )


def logearn_height(data: Mapping[str, Any], tensor: ToTensor) -> Model:
    """``log(earn) ~ normal(beta[1] + beta[2] * height, sigma)``, flat priors."""
    y = torch.log(tensor(data["earn"]))
    return _regression("log_earn", y, [1.0, tensor(data["height"])], None)


def log10earn_height(data: Mapping[str, Any], tensor: ToTensor) -> Model:
    """``log10(earn) ~ normal(beta[1] + beta[2] * height, sigma)``, flat priors."""
    y = torch.log10(tensor(data["earn"]))
    return _regression("log10_earn", y, [1.0, tensor(data["height"])], None)


def logmesquite(data: Mapping[str, Any], tensor: ToTensor) -> Model:
    """``log(weight)`` on the logs of diam1, diam2, canopy_height, total_height, density and on
    group, flat priors."""
    logs = [
        torch.log(tensor(data[k]))
        for k in ("diam1", "diam2", "canopy_height", "total_height", "density")
    ]
    y = torch.log(tensor(data["weight"]))
    return _regression("log_weight", y, [1.0, *logs, tensor(data["group"])], None)


def logmesquite_logvas(data: Mapping[str, Any], tensor: ToTensor) -> Model:
    """``log(weight)`` on log canopy volume, area and shape, log total height, log density and
    group, flat priors."""
    d1, d2, ch = tensor(data["diam1"]), tensor(data["diam2"]), tensor(data["canopy_height"])
    columns = [
        1.0,
        torch.log(d1 * d2 * ch),
        torch.log(d1 * d2),
        torch.log(d1 / d2),
        torch.log(tensor(data["total_height"])),
        torch.log(tensor(data["density"])),
        tensor(data["group"]),
    ]
    return _regression("log_weight", torch.log(tensor(data["weight"])), columns, None)


def nes(data: Mapping[str, Any], tensor: ToTensor) -> Model:
    """``partyid7`` on real_ideo, race_adj, three age dummies (``age_discrete`` 2, 3, 4),
    educ1, gender and income, flat priors."""
    age = torch.as_tensor(data["age_discrete"])
    columns = [
        1.0,
        tensor(data["real_ideo"]),
        tensor(data["race_adj"]),
        tensor(age == 2),
        tensor(age == 3),
        tensor(age == 4),
        tensor(data["educ1"]),
        tensor(data["gender"]),
        tensor(data["income"]),
    ]
    return _regression("partyid7", tensor(data["partyid7"]), columns, None)


def blr(data: Mapping[str, Any], tensor: ToTensor) -> Model:
    """``target += normal_lpdf(beta | 0, 10) + normal_lpdf(sigma | 0, 10)
    + normal_lpdf(y | X * beta, sigma)``."""
    x = tensor(data["X"])
    columns = list(x.unbind(-1))
    return _regression(
        "y",
        tensor(data["y"]),
        columns,
        lambda zero: dist.HalfNormal(zero + 10.0),
        lambda zero: dist.Normal(zero, 10.0),
    )


def kilpisjarvi(data: Mapping[str, Any], tensor: ToTensor) -> Model:
    """``alpha ~ normal(pmualpha, psalpha)``, ``beta ~ normal(pmubeta, psbeta)``, ``sigma``
    flat on :math:`(0, \\infty)`, ``y ~ normal(alpha + beta * x, sigma)``."""
    x, y = tensor(data["x"]), tensor(data["y"])
    prior = {k: tensor(data[k]) for k in ("pmualpha", "psalpha", "pmubeta", "psbeta")}

    def model() -> None:
        alpha = pyro.sample("alpha", dist.Normal(prior["pmualpha"], prior["psalpha"]))
        beta = pyro.sample("beta", dist.Normal(prior["pmubeta"], prior["psbeta"]))
        sigma = pyro.sample("sigma", flat(y, support=constraints.positive))
        mean = alpha[..., None] + beta[..., None] * x
        pyro.sample("y", dist.Normal(mean, sigma[..., None]).to_event(1), obs=y)

    return model
