r"""Diagnostics for samplers and flows, as pure functions with known answers.

**Importance sampling** with a proposal :math:`q` (a flow, a guide) and an unnormalised target
:math:`\tilde p = Z p` uses the log weights :math:`\log w_i = \log\tilde p(x_i) - \log q(x_i)`,
:math:`x_i \sim q`:

.. math::

    \hat Z = \frac1n \sum_{i=1}^n w_i, \qquad
    \operatorname{se}(\log \hat Z) \approx \frac{\operatorname{sd}(w)}{\sqrt n\, \bar w}
    \ \text{(delta method)}, \qquad
    \mathrm{ELBO} = \frac1n \sum_i \log w_i \le \log Z,

    \mathrm{ESS} = \frac{(\sum_i w_i)^2}{\sum_i w_i^2} \ \text{(Kish)}, \qquad
    \log Z - \mathrm{ELBO} \to \mathrm{KL}(q \,\|\, p).

The Pareto :math:`\hat k` of the largest weights (PSIS, Vehtari et al.) says whether the weights
have a finite variance: :math:`\hat k < 0.5` good, :math:`0.5`-:math:`0.7` usable, :math:`> 0.7`
unreliable (Yao et al., 2018).

**MCMC**: bulk and tail effective sample sizes and the rank-normalised split :math:`\hat R` of
Vehtari et al. (2021), computed by ArviZ; ESS per second and per gradient evaluation.

**Moments**: errors of estimated means (in units of the true standard deviation) and relative
errors of standard deviations, against known moments or reference draws.

ArviZ is imported on first use (it takes a second or two to import). Inputs on any device (a
GPU's draws or log weights) are copied to the CPU, where the summaries are computed.

References:

- A. Vehtari, D. Simpson, A. Gelman, Y. Yao, J. Gabry. *Pareto Smoothed Importance Sampling.*
  JMLR 25, 2024. https://arxiv.org/abs/1507.02646
- Y. Yao, A. Vehtari, D. Simpson, A. Gelman. *Yes, but Did It Work?: Evaluating Variational
  Inference.* ICML 2018. https://arxiv.org/abs/1802.02538
- A. Vehtari, A. Gelman, D. Simpson, B. Carpenter, P.-C. Bürkner. *Rank-normalization,
  folding, and localization: An improved R-hat for assessing convergence of MCMC.* Bayesian
  Analysis 16, 2021. https://arxiv.org/abs/1903.08008
- L. Kish. *Survey Sampling.* Wiley, 1965 (effective sample size of weighted samples).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

__all__ = [
    "ess_fraction",
    "flow_diagnostics",
    "guide_psis_khat",
    "importance_log_Z",
    "log_mean_exp",
    "mcmc_diagnostics",
    "moment_errors",
    "psis_khat",
    "reference_moment_errors",
]

ArrayLike = Tensor | np.ndarray | Sequence[float]

#: log weights whose spread is below this many units in the last place of their dtype (at their
#: magnitude) are rounding noise around one constant: :func:`psis_khat` reports ``-inf``.
_EQUAL_ULPS = 1000.0


def _arviz() -> Any:
    """Import ArviZ lazily, without its import-time ``FutureWarning`` about its refactor."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        import arviz

    return arviz


def _as_tensor(value: object, name: str) -> Tensor:
    """``value`` as a detached CPU tensor (floating): diagnostics reduce draws to a few numbers,
    which ArviZ and NumPy compute on the CPU, whatever device the draws were made on."""
    if isinstance(value, Tensor):
        t = value.detach().cpu()
    else:
        try:
            t = torch.as_tensor(np.asarray(value, dtype=np.float64))
        except (TypeError, ValueError):
            raise TypeError(
                f"{name} must be a tensor or an array of numbers, got {type(value).__name__}"
            ) from None
    return t.to(torch.float64) if not t.is_floating_point() else t


def _log_weights(log_weights: object, name: str = "log_weights") -> Tensor:
    """A 1-D float64 tensor of log weights: NaN and +inf refused, -inf (zero weight) allowed."""
    lw = _as_tensor(log_weights, name).to(torch.float64)
    if lw.dim() != 1:
        raise ValueError(f"{name} must be 1-D (one per draw), got shape {tuple(lw.shape)}")
    if lw.numel() < 2:
        raise ValueError(f"{name} needs at least 2 values, got {lw.numel()}")
    bad = torch.isnan(lw) | (lw == math.inf)
    if bool(bad.any()):
        idx = bad.nonzero().flatten()
        raise ValueError(
            f"{name} must be finite or -inf (zero weight), got NaN/+inf at {idx.numel()} "
            f"index(es) {idx[:10].tolist()}"
        )
    if not bool(torch.isfinite(lw).any()):
        raise ValueError(f"{name} are all -inf: every weight is zero")
    return lw


def log_mean_exp(x: Tensor, dim: int = -1) -> Tensor:
    r"""Stable :math:`\log \frac1n \sum_{i=1}^n e^{x_i}` along ``dim``.

    .. math::

        \operatorname{logmeanexp}(x) = m + \log \frac1n \sum_i e^{x_i - m}, \qquad m = \max_i x_i.

    :param x: a tensor.
    :param dim: the dimension to average over.
    :returns: ``x`` reduced along ``dim``.
    :raises ValueError: when ``x`` has no entries along ``dim``.

    Example:

    >>> import torch
    >>> log_mean_exp(torch.tensor([1000.0, 1000.0 + torch.log(torch.tensor(3.0))]))
    tensor(1000.6931)

    References: the log-sum-exp trick; e.g. Murphy, *Probabilistic Machine Learning*, 2022,
    section 2.5.4.
    """
    if not isinstance(x, Tensor):
        raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
    if isinstance(dim, bool) or not isinstance(dim, int):
        raise TypeError(f"dim must be an int, got {type(dim).__name__} {dim!r}")
    ndim = max(x.dim(), 1)
    if not -ndim <= dim < ndim:
        raise ValueError(
            f"dim must be in [{-ndim}, {ndim - 1}] for x of shape {tuple(x.shape)}, got dim={dim}"
        )
    n = x.shape[dim] if x.dim() else 1
    if bool(torch.isnan(x).any()):
        raise ValueError(
            f"log_mean_exp got NaN in {int(torch.isnan(x).sum())} of {x.numel()} values of x "
            f"(shape {tuple(x.shape)}); -inf (zero weight) is fine, NaN is undefined"
        )
    if n == 0:
        raise ValueError(
            f"log_mean_exp needs at least one value along dim {dim}, got shape {tuple(x.shape)}"
        )
    return torch.logsumexp(x, dim=dim) - math.log(n)


def importance_log_Z(log_weights: ArrayLike) -> tuple[float, float]:
    r"""Importance-sampling estimate of :math:`\log Z` and its delta-method standard error.

    .. math::

        \log \hat Z = \log \frac1n \sum_i w_i, \qquad
        \operatorname{se}(\log\hat Z) = \frac{\operatorname{sd}(w)}{\sqrt n \; \bar w},

    with the unbiased sample standard deviation. :math:`\hat Z` is unbiased for :math:`Z`;
    :math:`\log \hat Z` is biased low by about :math:`\operatorname{se}^2/2` (Jensen).

    :param log_weights: ``log p~(x_i) - log q(x_i)`` for ``x_i ~ q``, shape ``(n,)``.
    :returns: ``(log_Z_hat, stderr)`` as floats.

    Example:

    >>> import math
    >>> est, se = importance_log_Z([math.log(1.0), math.log(2.0), math.log(3.0)])
    >>> round(math.exp(est), 6), round(se, 6)   # mean 2, sd 1: se = 1 / (2 sqrt 3)
    (2.0, 0.288675)

    References:

    - A. B. Owen. *Monte Carlo theory, methods and examples*, 2013, chapter 9.
    """
    lw = _log_weights(log_weights)
    m = lw.max()
    w = torch.exp(lw - m)
    mean = w.mean()
    est = float(m + mean.log())
    se = float(w.std(unbiased=True) / (mean * math.sqrt(lw.numel())))
    return est, se


def ess_fraction(log_weights: ArrayLike) -> float:
    r"""Kish's effective sample size of importance weights, as a fraction of :math:`n`.

    .. math::

        \frac{\mathrm{ESS}}{n} = \frac{\left(\sum_i w_i\right)^2}{n \sum_i w_i^2} \in
        \left[\tfrac1n, 1\right],

    equal to 1 exactly when all weights are equal (the proposal is the target) and to
    :math:`1/n` when one weight dominates.

    :param log_weights: log importance weights, shape ``(n,)``.
    :returns: the fraction, a float.

    Example:

    >>> ess_fraction([0.0, 0.0, 0.0, 0.0]), round(ess_fraction([0.0, -1e9, -1e9, -1e9]), 6)
    (1.0, 0.25)

    References:

    - L. Kish. *Survey Sampling.* Wiley, 1965.
    - A. B. Owen. *Monte Carlo theory, methods and examples*, 2013, section 9.3.
    """
    lw = _log_weights(log_weights)
    w = torch.exp(lw - lw.max())
    return float(w.sum() ** 2 / (lw.numel() * (w**2).sum()))


def psis_khat(log_weights: ArrayLike, reff: float = 1.0) -> float:
    r"""Pareto-smoothed importance sampling shape estimate :math:`\hat k` of the weights' tail.

    The :math:`M = \lceil\min(n/5,\, 3\sqrt{n / r_{\mathrm{eff}}})\rceil` largest weights, minus
    the threshold :math:`u`, are fitted by a generalised Pareto distribution

    .. math::

        p(y \mid k, \sigma) = \frac1\sigma\Bigl(1 + k\frac{y}{\sigma}\Bigr)^{-1/k - 1},

    whose shape :math:`k` is the tail index: the weights have :math:`1/k` finite moments, so
    :math:`k < 1/2` means a finite variance. The fit is ArviZ's ``psislw`` (Zhang & Stephens's
    estimator with a weak prior pulling :math:`\hat k` towards 0.5); with an ArviZ that has no
    ``psislw`` Pyro's ``fit_generalized_pareto`` fits the same tail. When all the weights are
    equal (the proposal is the target up to a constant) the ratios are bounded and ``-inf`` is
    returned (ArviZ itself would report ``inf`` for lack of a tail); "equal" allows a spread of
    1000 units in the last place of the input's dtype, i.e. rounding noise, whose fitted tail
    would be meaningless. :math:`\hat k` is noisy for small :math:`n` (a few hundred draws give
    :math:`\pm 0.2`); use thousands of draws where the decision matters.

    :param log_weights: log importance ratios, shape ``(n,)``, ``n >= 10``.
    :param reff: relative efficiency of the draws (1 for independent draws).
    :returns: :math:`\hat k` as a float.

    Example:

    >>> import torch
    >>> u = torch.rand(20000, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    >>> k = psis_khat(-0.7 * u.log())  # w = u^(-0.7): a Pareto tail with k = 0.7
    >>> abs(k - 0.7) < 0.1
    True

    References:

    - A. Vehtari, D. Simpson, A. Gelman, Y. Yao, J. Gabry. *Pareto Smoothed Importance
      Sampling.* JMLR 25, 2024. https://arxiv.org/abs/1507.02646
    - J. Zhang, M. A. Stephens. *A new and efficient estimation method for the generalized
      Pareto distribution.* Technometrics 51, 2009.
    """
    given = log_weights.dtype if isinstance(log_weights, Tensor) else torch.float64
    eps = torch.finfo(given).eps if given.is_floating_point else torch.finfo(torch.float64).eps
    lw = _log_weights(log_weights)
    if lw.numel() < 10:
        raise ValueError(f"psis_khat needs at least 10 log weights, got {lw.numel()}")
    if not (isinstance(reff, int | float) and reff > 0):
        raise ValueError(f"reff must be a positive number, got {reff!r}")
    finite = lw[torch.isfinite(lw)]
    spread = float(finite.max() - finite.min())
    if spread <= _EQUAL_ULPS * eps * max(1.0, float(finite.abs().max())):
        return -math.inf  # bounded ratios: the weights are 0 or equal up to rounding
    az = _arviz()
    psislw = getattr(az, "psislw", None)
    if psislw is not None:
        result = psislw(lw.detach().cpu().numpy().copy(), reff=reff)
        khat = result[1] if isinstance(result, tuple) else result.pareto_shape
        return float(np.asarray(khat).reshape(()))
    return _pyro_khat(lw, reff)  # pragma: no cover - only with an ArviZ without psislw


def _pyro_khat(lw: Tensor, reff: float) -> float:
    """The same tail fit with Pyro's generalised-Pareto estimator (no prior regularisation)."""
    from pyro.ops.stats import fit_generalized_pareto

    n = lw.numel()
    x = torch.sort(lw - lw.max()).values
    cutoff = x[-int(math.ceil(min(n / 5.0, 3.0 * math.sqrt(n / reff)))) - 1]
    cutoff = max(float(cutoff), math.log(np.finfo(float).tiny))
    tail = x[x > cutoff]
    if tail.numel() <= 4:
        return math.inf
    k, _ = fit_generalized_pareto(tail.exp() - math.exp(cutoff))
    return float(k)


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


def flow_diagnostics(
    flow: Any,
    target: Any,
    num_samples: int = 4096,
    *,
    dim: int | None = None,
    batch_size: int = 4096,
    seed: int | None = 0,
) -> dict[str, Any]:
    r"""How well a flow :math:`q` matches a target :math:`\tilde p = Zp`: ELBO, :math:`\log\hat Z`,
    ESS, :math:`\hat k`.

    From :math:`n` draws of the flow (one base -> data pass, no inverse):

    .. math::

        \mathrm{ELBO} = \frac1n\sum_i \log\frac{\tilde p(x_i)}{q(x_i)}, \quad
        \log\hat Z = \log\frac1n\sum_i \frac{\tilde p(x_i)}{q(x_i)}, \quad
        \mathrm{KL}(q\|p) \approx \log Z - \mathrm{ELBO}.

    :param flow: a :class:`~pyro_flows.Flow` (anything with ``rsample_and_log_prob``) or a
        distribution with ``sample`` and ``log_prob``.
    :param target: an object with ``log_prob(z)`` (and ``dim``, optional ``log_Z``) or a
        callable ``log_prob(z)`` with ``dim=``.
    :param num_samples: draws of the flow.
    :param dim: the event size when ``target`` does not say it.
    :param batch_size: draws per forward pass.
    :param seed: seeds the draws (``None``: a seed drawn from the global RNG).
    :returns: dict with ``elbo``, ``log_Z_hat``, ``log_Z_stderr``, ``ess``, ``ess_fraction``,
        ``khat`` and, when the target knows its ``log_Z``, ``log_Z``, ``log_Z_error``
        (:math:`\log\hat Z - \log Z`) and ``kl_q_p`` (:math:`\log Z - \mathrm{ELBO}`).

    Example:

    >>> import torch
    >>> from pyro_flows import Flow
    >>> from pyro_flows.transforms.rescale import Rescale
    >>> flow = Flow([Rescale(2)])  # identity at initialisation: q = N(0, I)
    >>> target = torch.distributions.MultivariateNormal(torch.zeros(2), torch.eye(2))
    >>> d = flow_diagnostics(flow, target, num_samples=1000)
    >>> abs(d["elbo"]) < 1e-5, abs(d["ess_fraction"] - 1) < 1e-6, d["khat"]
    (True, True, -inf)

    References:

    - G. Papamakarios, E. Nalisnick, D. J. Rezende, S. Mohamed, B. Lakshminarayanan.
      *Normalizing Flows for Probabilistic Modeling and Inference.* JMLR 22, 2021.
    - Y. Yao, A. Vehtari, D. Simpson, A. Gelman. *Yes, but Did It Work?* ICML 2018.
    """
    from .importance import importance_sample

    result = importance_sample(
        flow,
        target,
        dim=dim,
        num_samples=num_samples,
        batch_size=batch_size,
        resample=False,
        seed=seed,
    )
    keys = ("elbo", "log_Z_hat", "log_Z_stderr", "ess", "ess_fraction", "khat")
    out = {k: result.extra[k] for k in keys}
    for k in ("log_Z", "log_Z_error", "kl_q_p"):
        if k in result.extra:
            out[k] = result.extra[k]
    return out


def _max_plate_nesting(model: Callable, guide: Callable, args: tuple, kwargs: dict) -> int:
    import pyro.poutine as poutine

    depth = 0
    with poutine.block():
        guide_trace = poutine.trace(guide).get_trace(*args, **kwargs)
        model_trace = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(
            *args, **kwargs
        )
    for tr in (guide_trace, model_trace):
        for site in tr.nodes.values():
            if site["type"] == "sample":
                depth = max(depth, len(site["cond_indep_stack"]))
    return depth


def _sequential_log_weights(
    model: Callable, guide: Callable, num_samples: int, args: tuple, kwargs: dict
) -> Tensor:
    import pyro.poutine as poutine

    out = []
    for _ in range(num_samples):
        guide_trace = poutine.trace(guide).get_trace(*args, **kwargs)
        model_trace = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(
            *args, **kwargs
        )
        out.append(model_trace.log_prob_sum() - guide_trace.log_prob_sum())
    return torch.stack(out)


@torch.no_grad()
def guide_psis_khat(
    model: Callable,
    guide: Callable,
    *args: Any,
    num_samples: int = 1000,
    max_plate_nesting: int | None = None,
    batch_size: int | None = None,
    vectorize: bool = True,
    **kwargs: Any,
) -> float:
    r"""PSIS :math:`\hat k` of a Pyro guide against its model (Yao et al., 2018).

    With :math:`z_i \sim q(z)` drawn by the guide and :math:`x` the model's observations, the log
    importance ratios are

    .. math::

        \log r_i = \log p(x, z_i) - \log q(z_i),

    and :func:`psis_khat` fits the tail of :math:`r`: :math:`\hat k < 0.5` means the guide is
    close enough for importance sampling to correct it, :math:`\hat k > 0.7` means it misses
    posterior mass (it is too narrow or misplaced). The ratios come from Pyro's
    ``pyro.infer.importance.vectorized_importance_weights`` (all draws in one vectorised run of
    the model and guide, in chunks of ``batch_size``); ``vectorize=False`` instead traces the
    guide and replays the model once per draw, for models that cannot be vectorised. The fit is
    ArviZ's ``psislw`` (see :func:`psis_khat`), which shrinks :math:`\hat k` slightly towards 0.5,
    unlike Pyro's own ``psis_diagnostic``.

    :param model: a Pyro model.
    :param guide: a Pyro guide for it (e.g. an ``AutoGuide`` or :class:`AutoFlow`).
    :param args: positional arguments for the model and guide.
    :param num_samples: number of guide draws.
    :param max_plate_nesting: the model's plate depth (default: found by tracing once).
    :param batch_size: draws per vectorised run (default: all at once).
    :param vectorize: use the vectorised estimator (default) or a loop.
    :param kwargs: keyword arguments for the model and guide.
    :returns: :math:`\hat k`, a float.

    Example:

    >>> import pyro, pyro.distributions as dist, torch
    >>> def model(x):
    ...     z = pyro.sample("z", dist.Normal(0.0, 1.0))
    ...     with pyro.plate("data", len(x)):
    ...         pyro.sample("x", dist.Normal(z, 1.0), obs=x)
    >>> def too_narrow(x):
    ...     pyro.sample("z", dist.Normal(x.sum() / (len(x) + 1), 0.05))
    >>> pyro.set_rng_seed(0)
    >>> guide_psis_khat(model, too_narrow, torch.tensor([0.5, 1.5])) > 0.7
    True

    References:

    - Y. Yao, A. Vehtari, D. Simpson, A. Gelman. *Yes, but Did It Work?: Evaluating
      Variational Inference.* ICML 2018. https://arxiv.org/abs/1802.02538
    - A. Vehtari et al. *Pareto Smoothed Importance Sampling.* JMLR 25, 2024.
    """
    if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 10:
        raise ValueError(f"num_samples must be an int >= 10, got {num_samples!r}")
    if batch_size is not None and (
        isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1
    ):
        raise ValueError(f"batch_size must be a positive int or None, got {batch_size!r}")
    if not isinstance(vectorize, bool):
        raise TypeError(
            f"vectorize must be a bool (True or False), got {type(vectorize).__name__} "
            f"{vectorize!r}"
        )
    if not vectorize:
        return psis_khat(_sequential_log_weights(model, guide, num_samples, args, kwargs))
    from pyro.infer.importance import vectorized_importance_weights

    if max_plate_nesting is None:
        max_plate_nesting = _max_plate_nesting(model, guide, args, kwargs)
    chunk = num_samples if batch_size is None else min(batch_size, num_samples)
    parts, done = [], 0
    while done < num_samples:
        n = min(chunk, num_samples - done)
        lw, _, _ = vectorized_importance_weights(
            model,
            guide,
            *args,
            num_samples=n,
            max_plate_nesting=max_plate_nesting,
            normalized=False,
            **kwargs,
        )
        parts.append(lw.reshape(-1) if n > 1 else lw.reshape(1))
        done += n
    return psis_khat(torch.cat(parts))
