r"""Importance weights and how far to trust them: :math:`\log\hat Z`, Kish's ESS, the PSIS
:math:`\hat k` (of any weights, or of a Pyro guide against its model), as pure functions with
known answers.

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

Inputs on any device are copied to the CPU, where the summaries are computed; the PSIS fit is
:mod:`pyro_flows.infer.pareto_smoothing` (ArviZ's algorithm, without importing ArviZ).

References:

- A. Vehtari, D. Simpson, A. Gelman, Y. Yao, J. Gabry. *Pareto Smoothed Importance Sampling.*
  JMLR 25, 2024. https://arxiv.org/abs/1507.02646
- Y. Yao, A. Vehtari, D. Simpson, A. Gelman. *Yes, but Did It Work?: Evaluating Variational
  Inference.* ICML 2018. https://arxiv.org/abs/1802.02538
- L. Kish. *Survey Sampling.* Wiley, 1965 (effective sample size of weighted samples).
- A. B. Owen. *Monte Carlo theory, methods and examples*, 2013, chapter 9.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from ._diagnostic_inputs import ArrayLike, _as_tensor
from .pareto_smoothing import pareto_smooth_log_weights

__all__ = [
    "ess_fraction",
    "guide_psis_khat",
    "importance_log_Z",
    "log_mean_exp",
    "psis_khat",
]

#: log weights whose spread is below this many units in the last place of their dtype (at their
#: magnitude) are rounding noise around one constant: :func:`psis_khat` reports ``-inf``.
_EQUAL_ULPS = 1000.0


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
    :math:`k < 1/2` means a finite variance. The fit is ArviZ's ``psislw`` algorithm (Zhang &
    Stephens's estimator with a weak prior pulling :math:`\hat k` towards 0.5), computed by
    :func:`~pyro_flows.infer.pareto_smoothing.pareto_smooth_log_weights`. When all the weights are
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
    return psis_smooth(log_weights, reff)[1]


def psis_smooth(log_weights: ArrayLike, reff: float = 1.0) -> tuple[Tensor, float]:
    r"""The Pareto-smoothed log weights (float64, shape ``(n,)``) and :math:`\hat k` of
    :func:`psis_khat`, from one tail fit
    (:func:`~pyro_flows.infer.pareto_smoothing.pareto_smooth_log_weights`; normalised to
    ``logsumexp`` 0). Where the ratios are bounded (``-inf``), the log weights come back
    unsmoothed.

    >>> import torch
    >>> smoothed, k = psis_smooth(torch.zeros(20))
    >>> smoothed.shape, k
    (torch.Size([20]), -inf)
    """
    given = log_weights.dtype if isinstance(log_weights, Tensor) else torch.float64
    eps = torch.finfo(given).eps if given.is_floating_point else torch.finfo(torch.float64).eps
    lw = _log_weights(log_weights)
    if lw.numel() < 10:
        raise ValueError(f"psis_khat needs at least 10 log weights, got {lw.numel()}")
    if not (isinstance(reff, int | float) and reff > 0):
        raise ValueError(f"reff must be a positive number, got {reff!r}")
    plain = lw.detach().double().cpu().reshape(-1)
    finite = lw[torch.isfinite(lw)]
    spread = float(finite.max() - finite.min())
    if spread <= _EQUAL_ULPS * eps * max(1.0, float(finite.abs().max())):
        return plain, -math.inf  # bounded ratios: the weights are 0 or equal up to rounding
    smoothed, khat = pareto_smooth_log_weights(plain.numpy(), reff=reff)
    return torch.from_numpy(smoothed), khat

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


def _latent_values(trace: Any, num_samples: int) -> dict[str, Tensor]:
    """``name -> (num_samples, size)`` draws of the guide's latent sites (auxiliary sites, such as
    an autoguide's joint latent vector, are left out: their parts are the sites)."""
    out = {}
    for name, site in trace.nodes.items():
        if site["type"] != "sample" or site.get("is_observed", False):
            continue
        if site.get("infer", {}).get("is_auxiliary", False):
            continue
        value = site["value"]
        if not (isinstance(value, Tensor) and value.is_floating_point()):
            continue
        if value.dim() == 0 or value.shape[0] != num_samples:
            value = value.expand(num_samples, *value.shape)
        out[name] = value.detach().reshape(num_samples, -1)
    return out


def guide_draws(
    model: Callable,
    guide: Callable,
    args: tuple,
    kwargs: dict,
    num_samples: int,
    max_plate_nesting: int | None,
    batch_size: int | None,
    vectorize: bool,
) -> tuple[Tensor, dict[str, Tensor]]:
    r"""Log ratios :math:`\log p(x, z_i) - \log q(z_i)`, shape ``(num_samples,)``, and the
    guide's latent draws by site, ``(num_samples, size)``: vectorised in chunks of
    ``batch_size`` (Pyro's ``vectorized_importance_weights``) or one draw at a time. What
    :func:`guide_psis_khat` and :func:`~pyro_flows.infer.guide_check.guide_importance_check`
    read. Refuses ``num_samples < 10``, a ``batch_size`` that is not a positive int and a
    ``vectorize`` that is not a bool."""
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
    import pyro.poutine as poutine

    if not vectorize:
        log_ratios, values = [], []
        for _ in range(num_samples):
            guide_trace = poutine.trace(guide).get_trace(*args, **kwargs)
            model_trace = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(
                *args, **kwargs
            )
            log_ratios.append(model_trace.log_prob_sum() - guide_trace.log_prob_sum())
            values.append(_latent_values(guide_trace, 1))
        names = values[0].keys()
        return torch.stack(log_ratios), {n: torch.cat([v[n] for v in values]) for n in names}
    from pyro.infer.importance import vectorized_importance_weights

    if max_plate_nesting is None:
        max_plate_nesting = _max_plate_nesting(model, guide, args, kwargs)
    chunk = num_samples if batch_size is None else min(batch_size, num_samples)
    log_ratios, values, done = [], [], 0
    while done < num_samples:
        n = min(chunk, num_samples - done)
        lw, _, guide_trace = vectorized_importance_weights(
            model, guide, *args, num_samples=n, max_plate_nesting=max_plate_nesting,
            normalized=False, **kwargs,
        )  # fmt: skip
        log_ratios.append(lw.reshape(-1) if n > 1 else lw.reshape(1))
        values.append(_latent_values(guide_trace, n))
        done += n
    names = values[0].keys()
    return torch.cat(log_ratios), {name: torch.cat([v[name] for v in values]) for name in names}


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
    ArviZ's ``psislw`` algorithm (see :func:`psis_khat`), which shrinks :math:`\hat k` slightly
    towards 0.5, unlike Pyro's own ``psis_diagnostic``.

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
    log_ratios, _ = guide_draws(
        model, guide, args, kwargs, num_samples, max_plate_nesting, batch_size, vectorize
    )
    return psis_khat(log_ratios)
