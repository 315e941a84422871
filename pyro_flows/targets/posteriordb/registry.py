r"""The fifteen posteriordb posteriors by name (:data:`POSTERIORS`), :func:`load_posterior` and
:func:`reference_errors`, the comparison of a sampler's or a guide's draws with posteriordb's
reference.

For every reference element :math:`j` (Stan's naming, e.g. ``beta[2]``), with draws
:math:`x^{(1..S)}_j`, reference mean :math:`m_j` and sd :math:`s_j`:

.. math::

    \text{mean error}_j = \frac{|\bar x_j - m_j|}{s_j}, \qquad
    \text{sd ratio}_j = \frac{\operatorname{sd}(x_j)}{s_j}.

Example:

>>> from pyro_flows.targets.posteriordb import POSTERIORS, reference_errors
>>> len(POSTERIORS), POSTERIORS["arma-arma11"].kind
(15, 'time series')

References:

- M. Magnusson, J. Torgander, P.-C. Bürkner, L. Zhang, B. Carpenter, A. Vehtari.
  *posteriordb: Testing, benchmarking and developing Bayesian inference algorithms.*
  arXiv:2407.04967, 2024.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
from pyro import poutine
from torch import Tensor

from . import arma, gp, hmm, lotka_volterra, pharmacokinetics, regression
from .spec import ModelBuilder, PosteriorSpec

__all__ = ["POSTERIORS", "load_posterior", "reference_errors"]

_LINEAR = "correlated coefficients (uncentred covariates)"


def _spec(
    name: str,
    kind: str,
    difficulty: str,
    dim: int,
    parameters: dict[str, tuple[int, ...]],
    builder: ModelBuilder,
) -> PosteriorSpec:
    return PosteriorSpec(name, kind, difficulty, dim, parameters, builder)


_B2 = {"beta": (2,), "sigma": ()}
_B7 = {"beta": (7,), "sigma": ()}

#: The posteriors by posteriordb name; each a :class:`~.spec.PosteriorSpec` whose model binds
#: its data as tensors of torch's default dtype (see :meth:`~.spec.PosteriorSpec.to`).
POSTERIORS: dict[str, PosteriorSpec] = {
    s.name: s
    for s in [
        _spec("kidiq-kidscore_momhs", "regression", "easy: 3-D, near Gaussian", 3, _B2,
              regression.kidscore_momhs),
        _spec("kidiq-kidscore_momiq", "regression", _LINEAR, 3, _B2, regression.kidscore_momiq),
        _spec("kidiq-kidscore_interaction", "regression", _LINEAR + ", interaction term", 5,
              {"beta": (4,), "sigma": ()}, regression.kidscore_interaction),
        _spec("earnings-logearn_height", "regression", _LINEAR + ", flat priors", 3, _B2,
              regression.logearn_height),
        _spec("earnings-log10earn_height", "regression", _LINEAR + ", flat priors", 3, _B2,
              regression.log10earn_height),
        _spec("mesquite-logmesquite", "regression", "7 collinear log covariates, N = 46", 8, _B7,
              regression.logmesquite),
        _spec("mesquite-logmesquite_logvas", "regression",
              "7 collinear log covariates, N = 46", 8, _B7, regression.logmesquite_logvas),
        _spec("nes1996-nes", "regression", "10-D, dummies and ordinal covariates", 10,
              {"beta": (9,), "sigma": ()}, regression.nes),
        _spec("kilpisjarvi_mod-kilpisjarvi", "regression",
              "alpha-beta correlation -0.9999 (years not centred)", 3,
              {"alpha": (), "beta": (), "sigma": ()}, regression.kilpisjarvi),
        _spec("sblrc-blr", "regression", "tiny posterior sds (1e-3) next to sigma ~ 1", 6,
              {"beta": (5,), "sigma": ()}, regression.blr),
        _spec("arma-arma11", "time series", "recursive errors, phi near the unit root", 4,
              {"mu": (), "phi": (), "theta": (), "sigma": ()}, arma.arma11),
        _spec("gp_pois_regr-gp_regr", "gp", "alpha-sigma trade-off, skewed", 3,
              {"rho": (), "alpha": (), "sigma": ()}, gp.gp_regr),
        _spec("hudson_lynx_hare-lotka_volterra", "ode",
              "ODE solve per evaluation, correlated rates", 8,
              {"theta": (4,), "z_init": (2,), "sigma": (2,)}, lotka_volterra.lotka_volterra),
        _spec("one_comp_mm_elim_abs-one_comp_mm_elim_abs", "ode",
              "ODE solve per evaluation, heavy-tailed K_m", 4,
              {"k_a": (), "K_m": (), "V_m": (), "sigma": ()},
              pharmacokinetics.one_comp_mm_elim_abs),
        _spec("bball_drive_event_0-hmm_drive_0", "hmm",
              "416-step forward algorithm, simplex and ordered parameters, multimodal", 6,
              {"theta1": (2,), "theta2": (2,), "phi": (2,), "lambda": (2,)}, hmm.hmm_drive),
    ]
}


def load_posterior(
    name: str, dtype: torch.dtype | None = None, device: torch.device | str | None = None
) -> PosteriorSpec:
    r"""The posterior called ``name`` (posteriordb's ``"<data>-<model>"``): a
    :class:`~.spec.PosteriorSpec` whose ``model`` (no arguments) has log joint
    :math:`\log p(\theta, y)` equal to the Stan program's ``target`` up to a constant.

    :param dtype: the dtype of the bound data (default: torch's default dtype, float32).
    :param device: the device of the bound data (default: CPU).
    :raises ValueError: for an unknown name (the message lists the valid ones).

    >>> spec = load_posterior("sblrc-blr", dtype=torch.float64)
    >>> spec.dim, spec.reference_point()["beta"].dtype
    (6, torch.float64)
    """
    if not isinstance(name, str):
        raise TypeError(f"posterior name must be a str, got {type(name).__name__}")
    if name not in POSTERIORS:
        raise ValueError(f"unknown posterior {name!r}; valid names: {', '.join(POSTERIORS)}")
    spec = POSTERIORS[name]
    if dtype is None and device is None:
        return spec
    return spec.to(dtype=dtype, device=device)


#: a reference element is heavy tailed when its sd exceeds this multiple of (q95 - q05) / 3.29
HEAVY_TAIL_RATIO = 1.5
NORMAL_90_WIDTH = 3.2897  # q95 - q05 of the standard normal


def reference_errors(
    name: str | PosteriorSpec, samples: Mapping[str, Tensor] | poutine.Trace
) -> dict[str, Any]:
    r"""Compare draws with posteriordb's reference: per element the mean error in reference sds,
    :math:`|\bar x_j - m_j| / s_j`, and the sd ratio :math:`\operatorname{sd}(x_j) / s_j`.

    ``samples`` maps Stan parameter names to draws of shape ``(*batch, *shape)`` (e.g.
    ``MCMC.get_samples()``; any leading dims are pooled), or is a trace of a vectorised model
    run. Returns a dict with ``mean_error`` and ``sd_ratio`` (element -> float),
    ``worst_mean_error`` (the largest), ``worst_sd_ratio`` (the ratio farthest from 1 on the
    log scale), ``sd_ratio_range`` ``(min, max)``, ``quantile_error`` (element ->
    :math:`\max_q |\hat F(r_q) - q|` over the reference quantiles :math:`r_q`,
    :math:`q \in \{0.05, 0.5, 0.95\}`: a check that does not need finite variance),
    ``heavy_tailed`` (the elements whose reference sd exceeds ``HEAVY_TAIL_RATIO`` times the sd
    a normal with the same 90% interval would have: their means and sds converge slowly, judge
    them by ``quantile_error``) and ``n_draws``.

    :raises ValueError: for an unknown name, samples lacking a reference parameter or with the
        wrong shape, or fewer than two draws.

    >>> spec = load_posterior("kidiq-kidscore_momhs")
    >>> g = torch.Generator().manual_seed(0)
    >>> draws = {n: torch.tensor([spec.reference[e]["mean"] for e in es])
    ...          + torch.tensor([spec.reference[e]["sd"] for e in es])
    ...          * torch.randn(4000, len(es), generator=g)
    ...          for n, es in [("beta", ["beta[1]", "beta[2]"]), ("sigma", ["sigma"])]}
    >>> draws["sigma"] = draws["sigma"][:, 0]
    >>> errors = reference_errors("kidiq-kidscore_momhs", draws)
    >>> errors["worst_mean_error"] < 0.1, 0.9 < errors["sd_ratio"]["sigma"] < 1.1
    (True, True)
    """
    spec = name if isinstance(name, PosteriorSpec) else load_posterior(name)
    draws = spec.reference_draws(samples)
    n = min(d.shape[0] for d in draws.values())
    if n < 2:
        raise ValueError(f"reference_errors needs at least 2 draws, got {n}")
    mean_error, sd_ratio, quantile_error, heavy = {}, {}, {}, []
    for element, x in draws.items():
        ref = spec.reference[element]
        x = x.detach().double()
        mean_error[element] = abs(float(x.mean()) - ref["mean"]) / ref["sd"]
        sd_ratio[element] = float(x.std()) / ref["sd"]
        quantile_error[element] = max(
            abs(float((x <= ref[key]).double().mean()) - level)
            for key, level in (("q05", 0.05), ("q50", 0.5), ("q95", 0.95))
        )
        if ref["sd"] > HEAVY_TAIL_RATIO * (ref["q95"] - ref["q05"]) / NORMAL_90_WIDTH:
            heavy.append(element)

    def log_distance(r: float) -> float:
        return abs(math.log(r)) if r > 0 else math.inf

    worst_ratio = max(sd_ratio.values(), key=log_distance)
    return {
        "mean_error": mean_error,
        "sd_ratio": sd_ratio,
        "worst_mean_error": max(mean_error.values()),
        "worst_sd_ratio": worst_ratio,
        "sd_ratio_range": (min(sd_ratio.values()), max(sd_ratio.values())),
        "quantile_error": quantile_error,
        "heavy_tailed": heavy,
        "n_draws": n,
    }
