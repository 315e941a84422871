r"""Moment errors: how far the means and standard deviations estimated from draws (optionally
self-normalised importance-weighted) are from known ones, or from those of reference draws.

Per coordinate :math:`d`,

.. math::

    e^{\mu}_d = \frac{|\hat\mu_d - \mu_d|}{\sigma_d}, \qquad
    e^{\sigma}_d = \left|\frac{\hat\sigma_d}{\sigma_d} - 1\right|, \qquad
    \hat\mu = \sum_i \bar w_i x_i, \quad
    \hat\sigma^2 = \sum_i \bar w_i (x_i - \hat\mu)^2, \quad \bar w = \operatorname{softmax}(\log w),

with the unweighted mean and unbiased standard deviation when no weights are given. Inputs on
any device are copied to the CPU, where the errors are computed.

References:

- A. B. Owen. *Monte Carlo theory, methods and examples*, 2013, chapters 2 and 9.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor

from ._diagnostic_inputs import ArrayLike, _as_tensor
from .importance_weights import _log_weights

__all__ = ["moment_errors", "reference_moment_errors"]


def _flat_draws(samples: object, name: str) -> Tensor:
    t = _as_tensor(samples, name).to(torch.float64)
    if t.dim() == 0:
        raise ValueError(f"{name} must have shape (..., dim), got a scalar")
    return t.reshape(-1, t.shape[-1]) if t.dim() > 1 else t.reshape(-1, 1)


def _weighted_moments(x: Tensor, log_weights: object | None) -> tuple[Tensor, Tensor]:
    if log_weights is None:
        if x.shape[0] < 2:
            raise ValueError(f"moments need at least 2 draws, got {x.shape[0]}")
        return x.mean(0), x.std(0, unbiased=True)
    lw = _log_weights(_as_tensor(log_weights, "log_weights").reshape(-1))
    if lw.numel() != x.shape[0]:
        raise ValueError(
            f"log_weights must have one value per draw ({x.shape[0]}), got {lw.numel()}"
        )
    w = torch.softmax(lw, 0).unsqueeze(-1)
    mean = (w * x).sum(0)
    return mean, ((w * (x - mean) ** 2).sum(0)).sqrt()


def _vector(value: object, dim: int, name: str) -> Tensor:
    t = _as_tensor(value, name).to(torch.float64).reshape(-1)
    if t.numel() == 1:
        t = t.expand(dim)
    if t.numel() != dim:
        raise ValueError(f"{name} must have {dim} entries (one per coordinate), got {t.numel()}")
    if not bool(torch.isfinite(t).all()):
        raise ValueError(f"{name} must be finite, got {t.tolist()[:10]}")
    return t


def moment_errors(
    samples: Tensor | np.ndarray,
    mean: ArrayLike | float,
    std: ArrayLike | float,
    *,
    log_weights: ArrayLike | None = None,
) -> dict[str, Any]:
    r"""Errors of the estimated means and standard deviations against known ones.

    Per coordinate :math:`d`, from the (optionally self-normalised importance-weighted) draws:

    .. math::

        e^{\mu}_d = \frac{|\hat\mu_d - \mu_d|}{\sigma_d}, \qquad
        e^{\sigma}_d = \left|\frac{\hat\sigma_d}{\sigma_d} - 1\right|.

    :param samples: draws of shape ``(..., dim)`` (all leading dimensions are pooled).
    :param mean: the true means, shape ``(dim,)`` or a scalar.
    :param std: the true standard deviations (positive), shape ``(dim,)`` or a scalar.
    :param log_weights: optional log importance weights, one per draw.
    :returns: dict with per-coordinate lists ``mean_error``, ``std_error``, ``mean_hat``,
        ``std_hat`` and the floats ``mean_error_max``, ``std_error_max``.

    Example:

    >>> import torch
    >>> x = torch.tensor([[0.0, 1.0], [2.0, 3.0]])   # means (1, 2), sds (1.41, 1.41)
    >>> e = moment_errors(x, mean=[1.0, 1.0], std=2 ** 0.5)
    >>> e["mean_error"], round(e["std_error_max"], 6)
    ([0.0, 0.7071067811865475], 0.0)

    References: Owen, *Monte Carlo theory, methods and examples*, 2013, chapters 2 and 9.
    """
    x = _flat_draws(samples, "samples")
    dim = x.shape[-1]
    mu = _vector(mean, dim, "mean")
    sd = _vector(std, dim, "std")
    if not bool((sd > 0).all()):
        raise ValueError(f"std must be positive, got {sd.tolist()}")
    mean_hat, std_hat = _weighted_moments(x, log_weights)
    e_mu = (mean_hat - mu).abs() / sd
    e_sd = (std_hat / sd - 1.0).abs()
    return {
        "mean_error": e_mu.tolist(),
        "std_error": e_sd.tolist(),
        "mean_hat": mean_hat.tolist(),
        "std_hat": std_hat.tolist(),
        "mean_error_max": float(e_mu.max()),
        "std_error_max": float(e_sd.max()),
    }


def reference_moment_errors(
    samples: Tensor | np.ndarray,
    reference: Tensor | np.ndarray,
    *,
    log_weights: ArrayLike | None = None,
) -> dict[str, Any]:
    r""":func:`moment_errors` with the means and standard deviations of reference draws.

    .. math::

        e^{\mu}_d = \frac{|\hat\mu_d - \bar y_d|}{s_d(y)}, \qquad
        e^{\sigma}_d = \left|\frac{\hat\sigma_d}{s_d(y)} - 1\right|,

    where :math:`y` are trusted draws (a long NUTS run, exact samples). The reference's own Monte
    Carlo error adds to the error reported.

    :param samples: draws of shape ``(..., dim)``.
    :param reference: reference draws of shape ``(..., dim)``.
    :param log_weights: optional log importance weights of ``samples``.
    :returns: the dict of :func:`moment_errors`.

    Example:

    >>> import torch
    >>> ref = torch.tensor([[-1.0], [1.0]])
    >>> reference_moment_errors(torch.tensor([[-1.0], [1.0]]), ref)["mean_error_max"]
    0.0

    References: Owen, *Monte Carlo theory, methods and examples*, 2013, chapter 2.
    """
    ref = _flat_draws(reference, "reference")
    x = _flat_draws(samples, "samples")
    if ref.shape[-1] != x.shape[-1]:
        raise ValueError(
            f"reference draws have {ref.shape[-1]} coordinates but samples have {x.shape[-1]}"
        )
    mean, std = _weighted_moments(ref, None)
    return moment_errors(x, mean, std, log_weights=log_weights)
