r"""MCMC convergence and efficiency: bulk and tail effective sample sizes, the rank-normalised
split :math:`\hat R` and the Monte Carlo standard error per coordinate, from draws shaped
``(num_chains, num_draws, dim)``, and ESS per second and per gradient evaluation,

.. math::

    \mathrm{ESS}_{\min} = \min_d \mathrm{ESS}^{\text{bulk}}_d, \qquad
    \hat R_{\max} = \max_d \hat R_d, \qquad
    \frac{\mathrm{ESS}_{\min}}{\text{seconds}}, \qquad
    \frac{\mathrm{ESS}_{\min}}{\#\nabla\log p},

computed by ArviZ (Vehtari et al., 2021), imported on first use. Draws on any device are copied
to the CPU, where the summaries are computed.

References:

- A. Vehtari, A. Gelman, D. Simpson, B. Carpenter, P.-C. Bürkner. *Rank-normalization,
  folding, and localization: An improved R-hat for assessing convergence of MCMC.* Bayesian
  Analysis 16, 2021. https://arxiv.org/abs/1903.08008
- M. D. Hoffman, P. Sountsov et al. *NeuTra-lizing Bad Geometry in Hamiltonian Monte Carlo
  Using Neural Transport.* 2019 (ESS per gradient evaluation).
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ._diagnostic_inputs import _arviz, _as_tensor

__all__ = ["mcmc_diagnostics"]


def _chains_draws_dim(samples: object, name: str = "samples") -> np.ndarray:
    t = _as_tensor(samples, name)
    if t.dim() == 2:
        t = t.unsqueeze(-1)
    if t.dim() != 3:
        raise ValueError(
            f"{name} must have shape (num_chains, num_draws, dim) or (num_chains, num_draws), "
            f"got {tuple(t.shape)}"
        )
    if t.shape[1] < 4:
        raise ValueError(f"{name} needs at least 4 draws per chain, got {t.shape[1]}")
    finite = torch.isfinite(t)
    if not bool(finite.all()):
        kinds = "NaN" if bool(torch.isnan(t).any()) else "inf"
        raise ValueError(
            f"{name} must be finite, got non-finite values ({kinds}) in "
            f"{int((~finite).sum())} of {t.numel()} entries (shape {tuple(t.shape)})"
        )
    return t.detach().cpu().to(torch.float64).numpy()


def mcmc_diagnostics(
    samples: Tensor | np.ndarray,
    *,
    wall_time: float | None = None,
    num_grad_evals: int | None = None,
) -> dict[str, Any]:
    r"""Bulk and tail ESS, rank-normalised split :math:`\hat R`, ESS per second and per gradient.

    Per coordinate :math:`d`, with ArviZ (Vehtari et al., 2021): the bulk ESS (of the
    rank-normalised draws), the tail ESS (the smaller ESS of the 5% and 95% quantile indicators)
    and the rank-normalised split :math:`\hat R` (the larger of the bulk and the folded
    :math:`\hat R`; ``nan`` with a single chain, which ArviZ does not split), and the Monte
    Carlo standard error of the mean, :math:`\operatorname{sd}_d / \sqrt{\mathrm{ESS}_d}`
    (ArviZ ``mcse``, which uses the bulk ESS of the raw draws). The summaries are

    .. math::

        \mathrm{ESS}_{\min} = \min_d \mathrm{ESS}^{\text{bulk}}_d, \quad
        \hat R_{\max} = \max_d \hat R_d, \quad
        \frac{\mathrm{ESS}_{\min}}{\text{seconds}}, \quad
        \frac{\mathrm{ESS}_{\min}}{\#\nabla\log p}.

    :param samples: draws of shape ``(num_chains, num_draws, dim)`` (or ``(chains, draws)``).
    :param wall_time: seconds the sampler took (warm-up included) for ``ess_per_second``.
    :param num_grad_evals: gradient evaluations of the target for ``ess_per_grad``.
    :returns: a dict with per-coordinate lists ``ess_bulk``, ``ess_tail``, ``rhat``,
        ``mcse_mean`` and the
        floats ``ess_bulk_min``, ``ess_tail_min``, ``rhat_max``, ``ess_per_second``,
        ``ess_per_grad`` (``None`` when the cost is not given or zero).

    Example:

    >>> import torch
    >>> g = torch.Generator().manual_seed(0)
    >>> d = mcmc_diagnostics(torch.randn(4, 500, 2, generator=g), wall_time=2.0)
    >>> d["rhat_max"] < 1.01, 1600 < d["ess_bulk_min"] < 2400, d["ess_per_grad"]
    (True, True, None)

    References:

    - A. Vehtari, A. Gelman, D. Simpson, B. Carpenter, P.-C. Bürkner. *Rank-normalization,
      folding, and localization: An improved R-hat.* Bayesian Analysis 16, 2021.
    - M. D. Hoffman, P. Sountsov et al. *NeuTra-lizing Bad Geometry in Hamiltonian Monte Carlo
      Using Neural Transport.* 2019 (ESS per gradient evaluation).
    """
    x = _chains_draws_dim(samples)
    az = _arviz()
    ds = az.convert_to_dataset({"z": x})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # constant coordinates give nan
        bulk = np.asarray(az.ess(ds, method="bulk")["z"].values, dtype=float).reshape(-1)
        tail = np.asarray(az.ess(ds, method="tail")["z"].values, dtype=float).reshape(-1)
        mcse = np.asarray(az.mcse(ds, method="mean")["z"].values, dtype=float).reshape(-1)
        if x.shape[0] >= 2:
            rhat = np.asarray(az.rhat(ds, method="rank")["z"].values, dtype=float).reshape(-1)
        else:
            rhat = np.full(x.shape[-1], np.nan)
    ess_min = float(np.min(bulk))
    out: dict[str, Any] = {
        "ess_bulk": bulk.tolist(),
        "ess_tail": tail.tolist(),
        "rhat": rhat.tolist(),
        "mcse_mean": mcse.tolist(),
        "ess_bulk_min": ess_min,
        "ess_tail_min": float(np.min(tail)),
        "rhat_max": float(np.max(rhat)),
        "ess_per_second": None,
        "ess_per_grad": None,
    }
    if wall_time is not None and wall_time > 0:
        out["ess_per_second"] = ess_min / float(wall_time)
    if num_grad_evals:
        out["ess_per_grad"] = ess_min / float(num_grad_evals)
    return out
