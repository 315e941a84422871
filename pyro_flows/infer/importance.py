r"""Importance sampling with a flow (or any distribution) as the proposal.

Draw :math:`x_i \sim q` and weight each by :math:`w_i = \tilde p(x_i) / q(x_i)`, with
:math:`\tilde p = Z p` the unnormalised target:

.. math::

    \hat Z = \frac1n\sum_i w_i, \qquad
    \mathbb E_p[f] \approx \sum_i \bar w_i f(x_i), \quad \bar w_i = \frac{w_i}{\sum_j w_j}.

A flow is the natural proposal: its draws come with their exact log density from one
base -> data pass (``rsample_and_log_prob``, no inverse). Resampling (systematic, then shuffled)
turns the weighted draws into equally weighted ones. How much to trust the result: the ESS
fraction :math:`(\sum w)^2 / (n\sum w^2)`, the delta-method standard error of
:math:`\log\hat Z` and the PSIS :math:`\hat k` (see :mod:`pyro_flows.infer.importance_weights`);
:func:`flow_diagnostics` gives them for a flow against a target, without the draws.

References:

- A. B. Owen. *Monte Carlo theory, methods and examples*, 2013, chapter 9.
- F. Noé, S. Olsson, J. Köhler, H. Wu. *Boltzmann generators: Sampling equilibrium states of
  many-body systems with deep learning.* Science 365, 2019 (flows as IS proposals).
- G. Kitagawa. *Monte Carlo filter and smoother for non-Gaussian nonlinear state space models.*
  JCGS 5(1), 1996 (systematic resampling).
"""

from __future__ import annotations

import math
import time
import warnings
from typing import Any

import torch
from torch import Tensor, nn

from ._device_and_rng import (
    _check_int,
    _draw,
    _forked_rng,
    _generator,
    _stated_device_and_dtype,
)
from .guide_check import KHAT_RELIABLE
from .importance_weights import ess_fraction, importance_log_Z, psis_khat
from .results import SampleResult
from .target_density import TargetDensity, as_target

__all__ = ["flow_diagnostics", "importance_sample", "systematic_resample"]


def warn_if_khat_high(khat: float, who: str, weights: str, advice: str, stacklevel: int) -> bool:
    r"""A ``UserWarning`` when the PSIS :math:`\hat k` of importance weights exceeds
    :data:`~pyro_flows.infer.guide_check.KHAT_RELIABLE` (0.7): the weights' variance is then
    dominated by a few draws (or infinite), so :math:`\log\hat Z`, its standard error, the ESS
    and weighted moments are unreliable. ``who`` names the function, ``weights`` the weights,
    ``advice`` what to try; ``stacklevel`` as for :func:`warnings.warn`, from the caller.
    Returns whether it warned.

    >>> import warnings
    >>> with warnings.catch_warnings(record=True) as caught:
    ...     warnings.simplefilter("always")
    ...     warn_if_khat_high(1.3, "f", "the weights", "try g", 1)
    True
    >>> str(caught[0].message)[:60]
    'f: PSIS k-hat of the weights is 1.30 > 0.7: log Z, its stand'
    """
    if not khat > KHAT_RELIABLE:  # NaN and -inf (equal weights) included
        return False
    shown = f"{khat:.2f}" if math.isfinite(khat) else "inf (too few draws in the tail to fit it)"
    warnings.warn(
        f"{who}: PSIS k-hat of {weights} is {shown} > {KHAT_RELIABLE}: log Z, its standard "
        "error, the ESS and any weighted moment are unreliable (a few draws carry the weight, "
        f"and mass the draws miss is invisible to the standard error): {advice}; pass "
        "warn=False if you read the k-hat yourself",
        UserWarning,
        stacklevel=stacklevel + 1,
    )
    return True


def systematic_resample(log_weights: Tensor, num: int, generator: torch.Generator) -> Tensor:
    r"""Indices of ``num`` draws by systematic resampling, in random order.

    With normalised weights :math:`\bar w` and cumulative sums :math:`c_i`, one uniform
    :math:`u \sim U(0, 1)` gives the points :math:`(j + u)/m`, :math:`j = 0..m-1`, and index
    :math:`i` is taken once per point in :math:`(c_{i-1}, c_i]`: each index :math:`i` appears
    :math:`\lfloor m\bar w_i\rfloor` or :math:`\lceil m\bar w_i\rceil` times (unbiased, with less
    variance than multinomial resampling). The result is shuffled so that consecutive draws
    are exchangeable. It lives on the device of ``log_weights`` (the random numbers come from
    ``generator`` on its own device).

    :param log_weights: unnormalised log weights, shape ``(n,)``.
    :param num: number of indices :math:`m`.
    :param generator: the random generator.
    :returns: a long tensor of shape ``(num,)``.

    Example:

    >>> import math, torch
    >>> lw = torch.tensor([math.log(3.0), math.log(1.0), -math.inf])
    >>> idx = systematic_resample(lw, 4, torch.Generator().manual_seed(0))
    >>> sorted(idx.tolist())
    [0, 0, 0, 1]

    References: Kitagawa, JCGS 5(1), 1996; Douc, Cappé, Moulines, *Comparison of resampling
    schemes for particle filtering*, ISPA 2005.
    """
    _check_int(num, "num", 1)
    if not isinstance(log_weights, Tensor):
        raise TypeError(
            f"log_weights must be a tensor of shape (n,), got {type(log_weights).__name__}"
        )
    if log_weights.dim() != 1 or log_weights.numel() == 0:
        raise ValueError(
            "log_weights must be a non-empty 1-D tensor of shape (n,), got shape "
            f"{tuple(log_weights.shape)}" + (" (empty)" if log_weights.numel() == 0 else "")
        )
    if not log_weights.is_floating_point():
        raise TypeError(f"log_weights must be a floating tensor, got dtype {log_weights.dtype}")
    lw = log_weights.detach()
    if lw.device.type == "meta":  # no values to check (shape-only tensors)
        pass
    elif bool(torch.isnan(lw).any()) or bool((lw == math.inf).any()):
        bad = (torch.isnan(lw) | (lw == math.inf)).nonzero().flatten()[:5].tolist()
        raise ValueError(
            f"log_weights must not be NaN or +inf, got NaN/+inf at indices {bad} (of "
            f"{lw.numel()})"
        )
    elif not bool(torch.isfinite(lw).any()):
        raise ValueError(
            f"all {lw.numel()} log_weights are -inf (every weight is zero): nothing to resample"
        )
    device = log_weights.device
    w = torch.softmax(log_weights.detach().to(torch.float64), 0)
    cdf = torch.cumsum(w, 0)
    cdf[-1] = 1.0
    u = _draw("rand", (), generator, dtype=torch.float64, device=device)
    points = (torch.arange(num, dtype=torch.float64, device=device) + u) / num
    idx = torch.searchsorted(cdf, points, right=False).clamp(max=w.numel() - 1)
    order = torch.randperm(num, generator=generator, device=generator.device).to(device)
    return idx[order]


def _proposal_draws(proposal: Any, n: int) -> tuple[Tensor, Tensor]:
    if callable(getattr(proposal, "rsample_and_log_prob", None)):
        x, log_q = proposal.rsample_and_log_prob((n,))
    elif callable(getattr(proposal, "sample", None)) and callable(
        getattr(proposal, "log_prob", None)
    ):
        x = proposal.sample((n,))
        log_q = proposal.log_prob(x)
    else:
        raise TypeError(
            "the proposal must have rsample_and_log_prob(sample_shape) (a pyro_flows Flow) or "
            f"sample(sample_shape) and log_prob(x) (a torch distribution), got "
            f"{type(proposal).__name__}"
        )
    return x, log_q


@torch.no_grad()
def _weighted_draws(
    proposal: Any, density: TargetDensity, num_samples: int, batch_size: int
) -> tuple[Tensor, Tensor, Tensor]:
    xs, lps, lqs = [], [], []
    module = proposal if isinstance(proposal, nn.Module) else None
    was_training = module.training if module is not None else False
    if module is not None:
        module.eval()  # BatchNorm layers must use their running statistics
    try:
        done = 0
        while done < num_samples:
            n = min(batch_size, num_samples - done)
            x, log_q = _proposal_draws(proposal, n)
            if x.shape != (n, density.dim) or log_q.shape != (n,):
                raise ValueError(
                    f"the proposal must give draws of shape (n, dim) = ({n}, {density.dim}) and "
                    f"log densities of shape ({n},), got {tuple(x.shape)} and "
                    f"{tuple(log_q.shape)}"
                )
            xs.append(x.detach())
            lqs.append(log_q.detach())
            lps.append(density(x).detach())
            done += n
    finally:
        if module is not None:
            module.train(was_training)
    return torch.cat(xs), torch.cat(lps), torch.cat(lqs)


def importance_sample(
    flow_or_proposal: Any,
    target: Any,
    *,
    dim: int | None = None,
    num_samples: int = 10_000,
    batch_size: int = 4096,
    resample: bool = True,
    seed: int | None = None,
    warn: bool = True,
) -> SampleResult:
    r"""Importance sampling of ``target`` with ``flow_or_proposal`` as the proposal.

    .. math::

        \log w_i = \log\tilde p(x_i) - \log q(x_i),\ x_i\sim q; \qquad
        \log\hat Z = \log\frac1n\sum_i w_i, \qquad
        \mathrm{ELBO} = \frac1n\sum_i \log w_i.

    The log weights are computed without gradients, ``batch_size`` draws at a time (a flow is
    put in eval mode meanwhile). With ``resample=True`` the result's ``samples`` are ``n``
    equally weighted draws (systematic resampling, shuffled) as one chain; with
    ``resample=False`` they are the raw proposal draws, to be used with ``log_weights``.

    Cost: ``num_samples`` proposal draws with their log densities (a flow: one base -> data
    pass) and ``num_samples`` target evaluations, no gradients.

    :param flow_or_proposal: a :class:`~pyro_flows.Flow` (``rsample_and_log_prob``) or a
        distribution with ``sample`` and ``log_prob`` and event shape ``(dim,)``.
    :param target: an object with ``log_prob(z)`` (and ``dim``, optional ``log_Z``, ``mean``,
        ``std``) or a callable ``log_prob(z)`` with ``dim=``.
    :param dim: the event size, when the target does not state it.
    :param num_samples: proposal draws :math:`n`.
    :param batch_size: draws per proposal call.
    :param resample: return equally weighted resampled draws (else the weighted raw draws).
    :param seed: seeds the draws and the resampling in a forked RNG (the global RNGs, of the CPU
        and of the proposal's device, are left as they were); ``None``: a seed drawn from the
        global RNG.
    :param warn: warn (``UserWarning``) when the PSIS :math:`\hat k` of the weights exceeds 0.7
        (:data:`~pyro_flows.infer.guide_check.KHAT_RELIABLE`): :math:`\log\hat Z`, its
        standard error, the ESS and weighted moments are then unreliable. ``False``: no
        warning, for a caller that reads ``extra["khat"]`` itself.
    :returns: a :class:`~pyro_flows.infer.results.SampleResult` with ``method="is"``, one chain,
        ``log_weights`` (of the proposal draws) and ``extra``: ``log_Z_hat``, ``log_Z_stderr``,
        ``ess``, ``ess_fraction``, ``khat``, ``elbo``, ``proposal_samples``, ``resampled`` and,
        when the target knows :math:`\log Z`: ``log_Z``, ``log_Z_error``, ``kl_q_p``
        (:math:`\log Z - \mathrm{ELBO} \approx \mathrm{KL}(q\|p)`).
    :raises ValueError: on NaN or :math:`+\infty` log weights (naming how many), proposal draws
        of the wrong shape, bad arguments.
    :raises TypeError: when the proposal can neither ``rsample_and_log_prob`` nor
        ``sample`` and ``log_prob``.

    Example:

    >>> import torch
    >>> q = torch.distributions.MultivariateNormal(torch.zeros(2), 2.0 * torch.eye(2))
    >>> p = lambda z: -0.5 * (z**2).sum(-1)           # Z = 2 pi
    >>> r = importance_sample(q, p, dim=2, num_samples=20000, seed=0)
    >>> abs(r.extra["log_Z_hat"] - torch.log(torch.tensor(2 * torch.pi)).item()) < 0.03
    True
    >>> r.samples.shape, abs(r.extra["ess_fraction"] - 0.75) < 0.03  # exact: 3/4
    (torch.Size([1, 20000, 2]), True)

    References:

    - A. B. Owen. *Monte Carlo theory, methods and examples*, 2013, chapter 9.
    - F. Noé et al. *Boltzmann generators.* Science 365, 2019.
    """
    _check_int(num_samples, "num_samples", 10)
    _check_int(batch_size, "batch_size", 1)
    if not isinstance(resample, bool):
        raise TypeError(
            f"resample must be a bool (True or False), got {type(resample).__name__} "
            f"{resample!r}"
        )
    if not isinstance(warn, bool):
        raise TypeError(f"warn must be a bool (True or False), got {type(warn).__name__} {warn!r}")
    density = as_target(target, dim)
    _, seed = _generator(seed)
    start = time.perf_counter()
    proposal_device, _ = _stated_device_and_dtype(flow_or_proposal)
    with _forked_rng(seed, [proposal_device, density.device]):
        x, log_p, log_q = _weighted_draws(flow_or_proposal, density, num_samples, batch_size)
    gen, _ = _generator(seed, x.device)
    lw = log_p.to(torch.float64) - log_q.to(torch.float64)
    lw = torch.where(log_p == -math.inf, torch.full_like(lw, -math.inf), lw)
    bad = torch.isnan(lw) | (lw == math.inf)
    if bool(bad.any()):
        raise ValueError(
            f"{int(bad.sum())} of {num_samples} log weights are NaN or +inf (log p of the "
            f"target NaN, or log q of the proposal -inf/NaN at its own draws), e.g. at draws "
            f"{bad.nonzero().flatten()[:5].tolist()}"
        )
    if resample:
        samples = x[systematic_resample(lw, num_samples, gen)]
    else:
        samples = x
    wall = time.perf_counter() - start
    log_Z_hat, stderr = importance_log_Z(lw)
    frac = ess_fraction(lw)
    finite = lw[torch.isfinite(lw)]
    elbo = float(lw.mean()) if finite.numel() == lw.numel() else -math.inf
    extra: dict[str, Any] = {
        "log_Z_hat": log_Z_hat,
        "log_Z_stderr": stderr,
        "ess": frac * num_samples,
        "ess_fraction": frac,
        # at the precision the weights were computed in, so rounding noise is recognised
        "khat": psis_khat(lw.to(torch.promote_types(log_p.dtype, log_q.dtype))),
        "elbo": elbo,
        "proposal_samples": x,
        "resampled": resample,
        "seed": seed,
    }
    if density.log_Z is not None:
        extra.update(
            log_Z=density.log_Z,
            log_Z_error=log_Z_hat - density.log_Z,
            kl_q_p=density.log_Z - elbo,
        )
    extra.update(density.facts())
    if warn:
        warn_if_khat_high(
            extra["khat"], "importance_sample", "the importance weights",
            "use a proposal closer to the target (wider tails, every mode covered: e.g. a flow "
            "trained by fit_target) or annealed_importance_sampling from it", stacklevel=2,
        )
    return SampleResult(
        method="is",
        samples=samples.unsqueeze(0),
        wall_time=wall,
        num_log_prob_evals=density.num_log_prob_evals,
        num_grad_evals=0,
        log_weights=lw,
        extra=extra,
    )


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
        (:math:`\log\hat Z - \log Z`) and ``kl_q_p`` (:math:`\log Z - \mathrm{ELBO}`); no
        warning for a :math:`\hat k` above 0.7 (judging it is what the caller asks for).

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
    result = importance_sample(
        flow,
        target,
        dim=dim,
        num_samples=num_samples,
        batch_size=batch_size,
        resample=False,
        seed=seed,
        warn=False,  # the k-hat is returned, for the caller to judge
    )
    keys = ("elbo", "log_Z_hat", "log_Z_stderr", "ess", "ess_fraction", "khat")
    out = {k: result.extra[k] for k in keys}
    for k in ("log_Z", "log_Z_error", "kl_q_p"):
        if k in result.extra:
            out[k] = result.extra[k]
    return out
