r"""Annealed importance sampling (AIS): an estimate of :math:`\log Z` that does not need the
proposal to cover every mode of the target.

Plain importance sampling (:func:`~pyro_flows.infer.importance.importance_sample`) weights draws
of a proposal :math:`q` by :math:`\tilde p / q`; a mode of :math:`\tilde p` that :math:`q` misses
contributes nothing until a draw lands in it, so :math:`\log\hat Z` comes out low, by
:math:`\log 2` for one missed mode out of two of equal mass, with a small standard error that
hides it. AIS (Neal 2001) walks the particles from :math:`q` to :math:`\tilde p` through the
geometric path

.. math::

    \log f_\beta(x) = (1 - \beta)\log q(x) + \beta\log\tilde p(x), \qquad
    0 = \beta_0 < \beta_1 < \dots < \beta_T = 1,

with a Markov transition :math:`K_t` leaving :math:`f_{\beta_t}` invariant after each step
(here Hamiltonian Monte Carlo, Metropolis-corrected), and weights each particle by the product
of the density ratios it met on the way:

.. math::

    w = \prod_{t=1}^{T}\frac{f_{\beta_t}(x_{t-1})}{f_{\beta_{t-1}}(x_{t-1})}, \qquad
    \log w = \sum_{t=1}^{T}(\beta_t - \beta_{t-1})
    \bigl[\log\tilde p(x_{t-1}) - \log q(x_{t-1})\bigr],
    \qquad x_0 \sim q,\ x_t \sim K_t(x_{t-1}, \cdot).

*Unbiased.* :math:`w` is an importance weight on the extended space of whole trajectories
:math:`(x_0, \dots, x_{T-1})`: the proposal is the forward chain
:math:`q(x_0)\prod_{t<T} K_t(x_{t-1}, x_t)`, the target is the unnormalised
:math:`f_{\beta_T}(x_{T-1})\prod_{t<T}\tilde K_t(x_t, x_{t-1})` with the reversed kernels
:math:`\tilde K_t(x', x) = K_t(x, x') f_{\beta_t}(x) / f_{\beta_t}(x')`, which integrate to one,
so that the target's mass is :math:`\int\tilde p = Z` (:math:`q` is normalised). Their ratio
telescopes to the product above, hence :math:`\mathbb E[w] = Z` for any number of
temperatures and any mixing of the kernels, and :math:`\hat Z = \frac1n\sum_i w_i` is
unbiased; :math:`\log\hat Z` is biased low by about :math:`\operatorname{se}^2/2` (Jensen).

*Variance.* With transitions that mix perfectly at every temperature,

.. math::

    \operatorname{Var}(\log w) \approx \sum_{t=1}^{T}(\beta_t - \beta_{t-1})^2
    \operatorname{Var}_{f_{\beta_t}}\bigl[\log\tilde p - \log q\bigr] = O(1/T),

so more temperatures drive the weights to equality. Across well separated modes the
transitions do not mix: particles are shared between the modes in the proportions of
:math:`f_\beta` at the temperature where the barrier between them rises, and the weights
correct these proportions afterwards, which works as long as some particles reach every mode
(a broad :math:`q`, or a flow trained on the target, as in FAB).

The standard error reported is the delta-method one of :math:`\log\hat Z`,
:math:`\operatorname{sd}(w) / (\sqrt n\,\bar w)`
(:func:`~pyro_flows.infer.diagnostics.importance_log_Z`); like every importance-sampling
error bar it cannot see mass that no particle reached.
This module holds the estimator; its pieces are :mod:`~pyro_flows.infer.ais_result` (what a run
returns), :mod:`~pyro_flows.infer.ais_schedule` (the temperatures and step sizes),
:mod:`~pyro_flows.infer.ais_proposal` (the proposal's draws and density) and
:mod:`~pyro_flows.infer.ais_hmc` (the HMC transition kernel).


References:

- R. M. Neal. *Annealed importance sampling.* Statistics and Computing 11, 125-139, 2001.
- L. I. Midgley, V. Stimper, G. N. C. Simm, B. Schölkopf, J. M. Hernández-Lobato. *Flow
  Annealed Importance Sampling Bootstrap.* ICLR 2023 (AIS from a flow, HMC transitions with a
  step size tuned towards an acceptance of 0.65).
- R. M. Neal. *MCMC using Hamiltonian dynamics.* Handbook of Markov Chain Monte Carlo, 2011.
- R. B. Grosse, C. J. Maddison, R. R. Salakhutdinov. *Annealing between distributions by
  averaging moments.* NeurIPS 2013 (the geometric path and its variance).
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from .._progress import progress_bar
from .._validation import check_positive_int
from .ais_hmc import _evaluate, _hmc_move, _State
from .ais_proposal import _check_proposal, _Proposal
from .ais_result import AISResult as AISResult
from .ais_schedule import GEOMETRIC_BETA_MIN as GEOMETRIC_BETA_MIN
from .ais_schedule import _check_step_size, ais_betas
from .diagnostics import ess_fraction, importance_log_Z, psis_khat
from .importance import warn_if_khat_high
from .results import (
    TargetDensity,
    _forked_rng,
    _generator,
    _stated_device_and_dtype,
    as_target,
)
from .results import TargetOutputError as TargetOutputError

__all__ = ["AISResult", "annealed_importance_sampling", "ais_betas"]

#: gain of the step-size update :math:`\log h \mathrel{+}= \gamma(\bar a - a^*)`
_STEP_GAIN = 0.5


# -- the estimator --------------------------------------------------------------------------------
def annealed_importance_sampling(
    target: Any,
    proposal: Any = None,
    *,
    dim: int | None = None,
    num_samples: int = 1024,
    num_steps: int = 128,
    schedule: str | Sequence[float] | Tensor = "linear",
    num_hmc_steps: int = 1,
    num_leapfrog_steps: int = 5,
    step_size: float | Tensor | None = None,
    initial_step_size: float | None = None,
    target_accept: float = 0.65,
    progress: bool = True,
    seed: int | None = None,
    warn: bool = True,
) -> AISResult:
    r"""Estimate :math:`\log Z = \log\int\tilde p` by annealed importance sampling (Neal 2001)
    from ``proposal`` to ``target``.

    .. math::

        \log w_i = \sum_{t=1}^{T}(\beta_t - \beta_{t-1})
        \bigl[\log\tilde p(x^i_{t-1}) - \log q(x^i_{t-1})\bigr], \qquad
        \log\hat Z = \log\frac1n\sum_{i=1}^{n} w_i, \qquad \mathbb E[\hat Z] = Z,

    with :math:`x^i_0 \sim q` and :math:`x^i_t` the result of ``num_hmc_steps`` HMC moves
    leaving :math:`f_{\beta_t} \propto q^{1-\beta_t}\tilde p^{\beta_t}` invariant (the maths,
    why it is unbiased and its variance: see :mod:`pyro_flows.infer.ais`). ``T = num_steps``
    annealing steps follow ``schedule`` (:func:`ais_betas`; default linear,
    :math:`\beta_t = t/T`; ``"geometric"`` for a target much narrower than the proposal). With
    ``num_hmc_steps=0`` this is plain importance sampling.

    Each HMC move draws a momentum :math:`\rho \sim \mathcal N(0, I)`, takes
    ``num_leapfrog_steps`` leapfrog steps of size :math:`h_t` on
    :math:`\log f_{\beta_t}` and accepts with probability
    :math:`\min(1, e^{-\Delta H})`, all particles at once (one batched call of the target and
    of the proposal per leapfrog step), each particle with its own step size drawn uniformly
    in :math:`h_t\,[0.8, 1.2]` (Neal 2011: this smooths the drop of the acceptance at the
    leapfrog's stability limit). A trajectory that meets a non-finite density, gradient or
    position, a point where the target or the proposal raises a ``ValueError`` (a flow refusing
    a point too far out), or an energy that varies by more than 1000 along it (a divergence,
    as in Stan) is rejected: the particle stays where it was, so a NaN of the target never
    reaches the weights. With ``step_size=None`` the step size is adapted from one
    temperature to the next, :math:`\log h_{t+1} = \log h_t + 0.5(\bar a_t - a^*)` with
    :math:`\bar a_t` the mean acceptance probability over the particles at temperature
    :math:`t` and :math:`a^* =` ``target_accept`` (0.65, as in FAB). The kernels then depend
    on the whole population, a coupling of the particles whose effect on
    :math:`\mathbb E[\hat Z]` vanishes as :math:`n` grows; for kernels fixed in advance (and
    :math:`\hat Z` exactly unbiased) rerun with ``step_size=result.step_sizes``.

    Cost: :math:`n` proposal draws, then ``num_steps * num_hmc_steps * num_leapfrog_steps``
    batched evaluations of :math:`\log\tilde p` and its gradient at the :math:`n` particles
    (and of :math:`\log q` and its gradient for :math:`\beta < 1`; a flow's ``log_prob`` is its
    data -> base direction).

    :param target: an object with ``log_prob(z)`` (and ``dim``, optional ``log_Z``) or a
        callable ``log_prob(z)`` with ``dim=``, differentiable in ``z``.
    :param proposal: a :class:`~pyro_flows.Flow` (e.g. trained by
        :func:`~pyro_flows.infer.fit_target`) or a distribution with ``sample`` (or
        ``rsample_and_log_prob``) and a ``log_prob`` differentiable in its argument, event
        shape ``(dim,)``; ``None``: the standard Normal :math:`\mathcal N(0, I_D)` (scale the
        target's coordinates, or pass a wider Normal, when its modes lie far from the
        origin).
    :param dim: the event size, when the target does not state it.
    :param num_samples: particles :math:`n` (at least 10).
    :param num_steps: annealing steps :math:`T` (intermediate distributions plus the target).
    :param schedule: ``"linear"``, ``"geometric"`` or the betas :math:`\beta_1 .. \beta_T`.
    :param num_hmc_steps: HMC moves per temperature (0: plain importance sampling).
    :param num_leapfrog_steps: leapfrog steps per HMC move.
    :param step_size: ``None`` (adapted) or a fixed leapfrog step size: one number, or one per
        temperature (shape ``(num_steps,)``).
    :param initial_step_size: the first step size when adapting (default
        :math:`0.5\,D^{-1/4}`).
    :param target_accept: the acceptance probability the adaptation aims at, in (0, 1).
    :param progress: show progress over the temperatures (a bar on a terminal, a line every
        ten seconds otherwise).
    :param seed: seeds the proposal draws (in a forked RNG: the global RNGs are left as they
        were), the momenta and the Metropolis uniforms; ``None``: a seed drawn from the global
        RNG.
    :param warn: warn (``UserWarning``) when the PSIS :math:`\hat k` of the AIS weights
        exceeds 0.7 (:data:`~pyro_flows.infer.guide_check.KHAT_RELIABLE`): :math:`\log\hat Z`,
        its standard error and the ESS are then unreliable. ``False``: no warning, for a caller
        that reads ``result.khat`` itself.
    :returns: an :class:`AISResult` (``log_Z``, ``log_Z_stderr``, ``log_weights``, ``ess``,
        final ``samples``, ``accept_rates`` and ``step_sizes`` per temperature, ``wall_time``,
        ``num_log_prob_evals``, ``num_grad_evals``, and ``log_Z_error`` when the target knows
        its ``log_Z``).
    :raises ValueError: for bad arguments, a proposal whose draws have the wrong shape or a
        non-finite log density at its own draws, a target whose log density is NaN or
        :math:`+\infty` at a proposal draw, or no particle with positive weight.
    :raises TypeError: for arguments of the wrong type, a proposal without ``log_prob`` or a
        way to draw, or a target or proposal that is not differentiable.

    A particle whose first draw has zero target density (``log_prob = -inf``) keeps weight 0
    and is counted in ``num_zero_weights``, with a ``RuntimeWarning``.

    Example: an unnormalised Gaussian :math:`e^{1}\,\mathcal N(0, 2^2 I_2)` times
    :math:`2\pi\cdot 4`, i.e. :math:`\log Z = 1 + \log 8\pi`:

    >>> import math, torch
    >>> log_p = lambda z: 1.0 - 0.125 * (z**2).sum(-1)
    >>> r = annealed_importance_sampling(log_p, dim=2, num_samples=500, num_steps=32,
    ...                                  progress=False, seed=0)
    >>> abs(r.log_Z - (1.0 + math.log(8 * math.pi))) < 4 * r.log_Z_stderr + 0.02
    True
    >>> r.samples.shape, r.accept_rates.shape
    (torch.Size([500, 2]), torch.Size([32]))

    References:

    - R. M. Neal. *Annealed importance sampling.* Statistics and Computing 11, 125-139, 2001.
    - L. I. Midgley et al. *Flow Annealed Importance Sampling Bootstrap.* ICLR 2023.
    """
    check_positive_int(num_samples, "num_samples", 10)
    check_positive_int(num_steps, "num_steps")
    check_positive_int(num_hmc_steps, "num_hmc_steps", 0)
    check_positive_int(num_leapfrog_steps, "num_leapfrog_steps")
    betas = ais_betas(num_steps, schedule)
    fixed_h = _check_step_size(step_size, num_steps)
    if initial_step_size is not None:
        if isinstance(initial_step_size, bool) or not isinstance(initial_step_size, int | float):
            raise TypeError(
                "initial_step_size must be a positive float or None, got "
                f"{type(initial_step_size).__name__} ({initial_step_size!r})"
            )
        if not (math.isfinite(initial_step_size) and initial_step_size > 0):
            raise ValueError(
                f"initial_step_size must be positive and finite, got {initial_step_size!r}"
            )
    if isinstance(target_accept, bool) or not isinstance(target_accept, int | float):
        raise TypeError(
            f"target_accept must be a number in (0, 1), got {type(target_accept).__name__} "
            f"({target_accept!r})"
        )
    if not 0 < target_accept < 1:
        raise ValueError(f"target_accept must be a number in (0, 1), got {target_accept!r}")
    for name, flag in (("progress", progress), ("warn", warn)):
        if not isinstance(flag, bool):
            raise TypeError(
                f"{name} must be a bool (True or False), got {type(flag).__name__} {flag!r}"
            )
    _check_proposal(proposal)
    density = as_target(target, dim)
    d = density.dim
    q = _Proposal(proposal, d)
    _, seed = _generator(seed)
    start = time.perf_counter()
    module = proposal if isinstance(proposal, nn.Module) else None
    was_training = module.training if module is not None else False
    if module is not None:
        module.eval()  # BatchNorm layers must use their running statistics
    try:
        if proposal is None:
            device = density.points_device()
            dtype = density._initial_dtype(device)
            gen, _ = _generator(seed, device)
            x, lq = q.draw(num_samples, gen, dtype, device)
        else:
            proposal_device, _ = _stated_device_and_dtype(proposal)
            with _forked_rng(seed, [proposal_device, density.device]), torch.no_grad():
                x, lq = q.draw(num_samples)
            gen, _ = _generator(seed, x.device)
        result = _anneal(
            density,
            q,
            x,
            lq,
            betas,
            fixed_h,
            initial_step_size,
            float(target_accept),
            num_hmc_steps,
            num_leapfrog_steps,
            gen,
            progress,
        )
    finally:
        if module is not None:
            module.train(was_training)
    lw, samples, step_sizes, accept_rates = result
    wall = time.perf_counter() - start
    zero = int((lw == -math.inf).sum())
    if zero == num_samples:
        raise ValueError(
            f"all {num_samples} particles have zero weight: the target's log density is -inf "
            "at every proposal draw (is the proposal on the target's support?)"
        )
    if zero:
        warnings.warn(
            f"{zero} of {num_samples} AIS particles have weight 0: the target's log density is "
            "-inf at their proposal draws (outside its support)",
            RuntimeWarning,
            stacklevel=2,
        )
    log_Z, stderr = importance_log_Z(lw)
    frac = ess_fraction(lw)
    khat = psis_khat(lw)
    if warn:
        warn_if_khat_high(
            khat, "annealed_importance_sampling", "the AIS weights",
            "use more annealing steps (num_steps) or HMC moves per step (num_hmc_steps), or a "
            "proposal closer to the target (e.g. a flow trained by fit_target)", stacklevel=2,
        )
    return AISResult(
        log_Z=log_Z,
        log_Z_stderr=stderr,
        log_weights=lw,
        ess=frac * num_samples,
        ess_fraction=frac,
        khat=khat,
        samples=samples,
        betas=betas,
        step_sizes=step_sizes,
        accept_rates=accept_rates,
        wall_time=wall,
        num_log_prob_evals=density.num_log_prob_evals,
        num_grad_evals=density.num_grad_evals,
        num_zero_weights=zero,
        seed=seed,
        target_log_Z=density.log_Z,
    )


def _anneal(
    density: TargetDensity,
    q: _Proposal,
    x: Tensor,
    lq0: Tensor,
    betas: Tensor,
    fixed_h: Tensor | None,
    initial_step_size: float | None,
    target_accept: float,
    num_hmc_steps: int,
    num_leapfrog: int,
    gen: torch.Generator,
    progress: bool,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """The annealing loop: ``(log_weights, samples, step_sizes, accept_rates)``."""
    n, d = x.shape
    if not x.is_floating_point():
        raise TypeError(f"the proposal's draws must be floating-point, got dtype {x.dtype}")
    bad_q = ~torch.isfinite(lq0)
    if bool(bad_q.any()):
        raise ValueError(
            f"the proposal's log density is not finite at {int(bad_q.sum())} of {n} of its own "
            f"draws, e.g. draws {bad_q.nonzero().flatten()[:5].tolist()}"
        )
    bad_x = ~torch.isfinite(x).all(-1)
    if bool(bad_x.any()):
        raise ValueError(
            f"the proposal drew {int(bad_x.sum())} non-finite points of {n}, e.g. draws "
            f"{bad_x.nonzero().flatten()[:5].tolist()}"
        )
    num_steps = betas.numel() - 1
    need_grad = num_hmc_steps > 0
    if need_grad:
        lp, glp, lq, glq = _evaluate(density, q, x, need_q=betas[1].item() < 1.0)
        if betas[1].item() == 1.0:
            lq = lq0.to(x.dtype)
    else:
        with torch.no_grad():
            lp = density(x).detach().to(x.dtype)
        lq, glp, glq = lq0.to(x.dtype), torch.zeros_like(x), torch.zeros_like(x)
    bad_p = torch.isnan(lp) | (lp == math.inf)
    if bool(bad_p.any()):
        raise ValueError(
            f"the target's log density is NaN or +inf at {int(bad_p.sum())} of {n} proposal "
            f"draws, e.g. draws {bad_p.nonzero().flatten()[:5].tolist()}: AIS needs a log "
            "density that is finite or -inf (zero density)"
        )
    alive = torch.isfinite(lp)
    state = _State(x.detach(), lp, glp, lq, glq)
    lw = torch.where(
        alive,
        torch.zeros(n, dtype=torch.float64, device=x.device),
        torch.full((n,), -math.inf, dtype=torch.float64, device=x.device),
    )
    h = float(initial_step_size) if initial_step_size is not None else 0.5 * d ** (-0.25)
    step_sizes = torch.full((num_steps,), math.nan, dtype=torch.float64)
    accept_rates = torch.full((num_steps,), math.nan, dtype=torch.float64)
    num_alive = max(int(alive.sum()), 1)
    bar = progress_bar(total=num_steps, desc="ais", unit="temperature", enabled=progress)
    try:
        for t in range(1, num_steps + 1):
            beta, previous = float(betas[t]), float(betas[t - 1])
            increment = (beta - previous) * (
                state.lp.to(torch.float64) - state.lq.to(torch.float64)
            )
            lw = lw + torch.where(alive, increment, torch.zeros_like(increment))
            if fixed_h is not None:
                h = float(fixed_h[t - 1])
            step_sizes[t - 1] = h
            if num_hmc_steps:
                total = 0.0
                for _ in range(num_hmc_steps):
                    state, accept_prob = _hmc_move(
                        density, q, state, alive, beta, h, num_leapfrog, gen
                    )
                    total += float(accept_prob.sum()) / num_alive
                mean_accept = total / num_hmc_steps
                accept_rates[t - 1] = mean_accept
                if fixed_h is None:
                    h = h * math.exp(_STEP_GAIN * (mean_accept - target_accept))
            bar.update(1)
            if progress and (t % 10 == 0 or t == num_steps):
                bar.set_postfix(
                    beta=f"{beta:.3g}", step=f"{h:.3g}", accept=f"{accept_rates[t - 1]:.2f}"
                )
    finally:
        bar.close()
    bad = torch.isnan(lw) | (lw == math.inf)
    if bool(bad.any()):
        raise ValueError(
            f"{int(bad.sum())} of {n} AIS log weights are NaN or +inf (the target's or the "
            f"proposal's log density at an accepted point), e.g. particles "
            f"{bad.nonzero().flatten()[:5].tolist()}"
        )
    return lw, state.x, step_sizes, accept_rates
