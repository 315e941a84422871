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

import math
import numbers
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
    if t.shape[0] < 1:
        raise ValueError(f"{name} needs at least 1 chain, got shape {tuple(t.shape)}")
    if t.shape[1] < 4:
        raise ValueError(f"{name} needs at least 4 draws per chain, got {t.shape[1]}")
    if t.shape[2] < 1:
        raise ValueError(
            f"{name} needs at least 1 coordinate (dim >= 1), got shape {tuple(t.shape)}"
        )
    finite = torch.isfinite(t)
    if not bool(finite.all()):
        kinds = "NaN" if bool(torch.isnan(t).any()) else "inf"
        raise ValueError(
            f"{name} must be finite, got non-finite values ({kinds}) in "
            f"{int((~finite).sum())} of {t.numel()} entries (shape {tuple(t.shape)})"
        )
    return t.detach().cpu().to(torch.float64).numpy()


def _check_costs(wall_time: object, num_grad_evals: object) -> None:
    """``wall_time`` a finite number >= 0 and ``num_grad_evals`` an int >= 0 (or ``None``)."""
    if wall_time is not None:
        if not isinstance(wall_time, numbers.Real) or isinstance(wall_time, bool):
            raise TypeError(
                "wall_time must be None or a number of seconds >= 0, got "
                f"{type(wall_time).__name__} {wall_time!r}"
            )
        if not (math.isfinite(wall_time) and wall_time >= 0):
            raise ValueError(
                f"wall_time must be a finite number of seconds >= 0, got {wall_time!r}"
            )
    if num_grad_evals is not None:
        if not isinstance(num_grad_evals, numbers.Integral) or isinstance(num_grad_evals, bool):
            raise TypeError(
                "num_grad_evals must be None or an int >= 0, got "
                f"{type(num_grad_evals).__name__} {num_grad_evals!r}"
            )
        if num_grad_evals < 0:
            raise ValueError(f"num_grad_evals must be an int >= 0, got {num_grad_evals!r}")


def _constant_coordinates(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per coordinate of ``x`` ``(chains, draws, dim)``: whether it is one value in all draws of
    all chains, and whether every chain is constant but the chains differ (stuck apart)."""
    within = (x.max(axis=1) == x.min(axis=1)).all(axis=0)  # every chain constant
    first = x[:, 0, :]
    same = first.max(axis=0) == first.min(axis=0)
    return within & same, within & ~same


def _rhat(az: Any, ds: Any, x: np.ndarray, constant: np.ndarray, stuck: np.ndarray) -> np.ndarray:
    """Rank-normalised split R-hat per coordinate: ``nan`` with one chain or for a constant
    coordinate (undefined), ``inf`` for chains stuck at different values or any other
    undefined value (not converged)."""
    if x.shape[0] < 2:
        return np.full(x.shape[-1], np.nan)
    rhat = np.asarray(az.rhat(ds, method="rank")["z"].values, dtype=float).reshape(-1)
    rhat = np.where(np.isnan(rhat) | stuck, np.inf, rhat)
    return np.where(constant, np.nan, rhat)


def _defined_max(values: np.ndarray) -> float:
    """The largest value that is not ``nan`` (``inf`` included), ``nan`` when there is none."""
    defined = values[~np.isnan(values)]
    return float(defined.max()) if defined.size else math.nan


def _ess_min(ess: np.ndarray, constant: np.ndarray) -> float:
    """The smallest ESS; ``nan`` ESS of a non-constant coordinate counts as 0 (undefined: no
    effective draws), that of a constant one is left out."""
    values = np.where(np.isnan(ess) & ~constant, 0.0, ess)
    defined = values[~np.isnan(values)]
    return float(defined.min()) if defined.size else math.nan


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
        \hat R_{\max} = \max_{d:\ \hat R_d \text{ defined}} \hat R_d, \quad
        \frac{\mathrm{ESS}_{\min}}{\text{seconds}}, \quad
        \frac{\mathrm{ESS}_{\min}}{\#\nabla\log p}.

    Degenerate coordinates never hide a bad one:

    - a coordinate with one value in every draw of every chain (a fixed parameter) has no
      :math:`\hat R` (``nan``, as in ArviZ); it is listed in ``constant_coords`` and left out
      of ``rhat_max`` (and of the ESS minima);
    - a coordinate constant within each chain but different between chains (chains stuck
      apart), or any other coordinate whose :math:`\hat R` is undefined with two or more
      chains, has :math:`\hat R = \infty`: not converged;
    - ``rhat_max`` is the largest defined :math:`\hat R` (``inf`` included), ``nan`` only when
      none is (one chain, or every coordinate constant); an undefined ESS of a non-constant
      coordinate counts as 0.

    :param samples: draws of shape ``(num_chains, num_draws, dim)`` (or ``(chains, draws)``),
        at least 1 chain, 4 draws and 1 coordinate, all finite.
    :param wall_time: seconds the sampler took (warm-up included) for ``ess_per_second``, a
        finite number :math:`\ge 0`.
    :param num_grad_evals: gradient evaluations of the target for ``ess_per_grad``, an int
        :math:`\ge 0`.
    :returns: a dict with per-coordinate lists ``ess_bulk``, ``ess_tail``, ``rhat``,
        ``mcse_mean``, the list ``constant_coords`` (indices of the constant coordinates) and
        the floats ``ess_bulk_min``, ``ess_tail_min``, ``rhat_max``, ``ess_per_second``,
        ``ess_per_grad`` (``None`` when the cost is not given or zero).
    :raises ValueError: draws of a wrong shape (no chain, fewer than 4 draws, no coordinate)
        or not finite, a negative or non-finite ``wall_time``, a negative ``num_grad_evals``.
    :raises TypeError: draws that are not numbers, a ``wall_time`` that is not a number, a
        ``num_grad_evals`` that is not an int.

    Example:

    >>> import torch
    >>> g = torch.Generator().manual_seed(0)
    >>> d = mcmc_diagnostics(torch.randn(4, 500, 2, generator=g), wall_time=2.0)
    >>> d["rhat_max"] < 1.01, 1600 < d["ess_bulk_min"] < 2400, d["ess_per_grad"]
    (True, True, None)

    A fixed coordinate next to chains that disagree: it is named, and the bad one still shows:

    >>> apart = torch.randn(4, 200, 1, generator=g) + 5.0 * torch.arange(4.0)[:, None, None]
    >>> d = mcmc_diagnostics(torch.cat([apart, torch.ones(4, 200, 1)], -1))
    >>> d["rhat_max"] > 1.01, d["constant_coords"], d["rhat"][1]
    (True, [1], nan)

    References:

    - A. Vehtari, A. Gelman, D. Simpson, B. Carpenter, P.-C. Bürkner. *Rank-normalization,
      folding, and localization: An improved R-hat.* Bayesian Analysis 16, 2021.
    - M. D. Hoffman, P. Sountsov et al. *NeuTra-lizing Bad Geometry in Hamiltonian Monte Carlo
      Using Neural Transport.* 2019 (ESS per gradient evaluation).
    """
    _check_costs(wall_time, num_grad_evals)
    x = _chains_draws_dim(samples)
    az = _arviz()
    ds = az.convert_to_dataset({"z": x})
    constant, stuck = _constant_coordinates(x)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # constant coordinates give nan
        bulk = np.asarray(az.ess(ds, method="bulk")["z"].values, dtype=float).reshape(-1)
        tail = np.asarray(az.ess(ds, method="tail")["z"].values, dtype=float).reshape(-1)
        mcse = np.asarray(az.mcse(ds, method="mean")["z"].values, dtype=float).reshape(-1)
        rhat = _rhat(az, ds, x, constant, stuck)
    ess_min = _ess_min(bulk, constant)
    out: dict[str, Any] = {
        "ess_bulk": bulk.tolist(),
        "ess_tail": tail.tolist(),
        "rhat": rhat.tolist(),
        "mcse_mean": mcse.tolist(),
        "ess_bulk_min": ess_min,
        "ess_tail_min": _ess_min(tail, constant),
        "rhat_max": _defined_max(rhat),
        "constant_coords": np.flatnonzero(constant).tolist(),
        "ess_per_second": None,
        "ess_per_grad": None,
    }
    if wall_time is not None and wall_time > 0:
        out["ess_per_second"] = ess_min / float(wall_time)
    if num_grad_evals:
        out["ess_per_grad"] = ess_min / float(num_grad_evals)
    return out
