r"""``fit_target``: train a flow against an unnormalised log density, by reverse KL on a target
with one mode and by flow-assisted MCMC (:mod:`pyro_flows.infer.flow_mcmc`, mass-covering) on
a target where a mode search finds several.

With samples :math:`x = f(\varepsilon)`, :math:`\varepsilon \sim \mathcal N(0, I)`, drawn and
scored in one base -> data pass (``rsample_and_log_prob``, no inverse), the loss is the
negative (optionally tempered) ELBO

.. math::

    \mathcal L_\beta = \mathbb E_{q}\big[\log q(x) - \beta \log \tilde p(x)\big], \qquad
    \mathrm{ELBO} = \mathbb E_q[\log \tilde p(x) - \log q(x)]
        = \log Z - \mathrm{KL}(q \,\|\, p) \le \log Z,

minimised with pathwise (reparametrised) gradients. Annealing raises the inverse temperature
:math:`\beta` from 0.01 to 1 (Rezende & Mohamed, 2015), which keeps an early, narrow flow from
locking onto one mode, but does not save targets with well separated modes: there
``method="auto"`` (the default) trains by forward KL on the states of tempered MALA chains that
the flow helps to mix, started at every local maximum a search from over-dispersed points finds.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.distributions import constraints

from .._progress import progress_bar
from ..threads import accepts_threads
from ._steps import StepTraining, check_training_options

__all__ = ["METHODS", "TargetFitHistory", "TargetError", "fit_target", "importance_weights"]

#: the training methods of :func:`fit_target` (``"auto"`` picks one of the other two)
METHODS = ("auto", "reverse_kl", "flow_mcmc")

LogDensity = Callable[[Tensor], Tensor]


class TargetError(ValueError):
    """The target returned something other than finite log densities of shape ``(batch,)``."""


@dataclass
class TargetFitHistory:
    """What :func:`fit_target` did.

    :ivar elbo: per step, the batch ELBO :math:`\\mathrm{mean}(\\log\\tilde p - \\log q)` at
        :math:`\\beta = 1` (whatever the annealing), in nats.
    :ivar beta: per step, the inverse temperature used for the gradient.
    :ivar eval_steps: the steps at which the importance-sampling diagnostics were computed.
    :ivar ess_fraction: importance-sampling effective sample size / number of samples.
    :ivar log_Z: importance-weighted estimate :math:`\\log \\frac1n\\sum_i \\tilde p(x_i)/q(x_i)`.
    :ivar time: training wall time in seconds (excluding evaluations).
    :ivar stopped: ``"completed"``, ``"max_time"``, or (with a ``NonFiniteLossError``)
        ``"non-finite loss"``, ``"non-finite gradient"``.
    :ivar grad_evals: target gradient evaluations, ``steps * batch_size`` (for ESS per
        gradient comparisons with MCMC).
    :ivar missed_modes: local maxima of the target that the trained flow misses, found by
        :func:`~pyro_flows.infer.mode_probe.probe_modes` (``check_modes=True``), as lists of
        coordinates; empty when none was found.
    :ivar mode_check: the probe's one-line summary (``""`` when it did not run).
    :ivar method: the training method used, ``"reverse_kl"`` or ``"flow_mcmc"`` (what
        ``method="auto"`` chose).
    :ivar modes_found: distinct local maxima the mode search found before training (``-1``:
        no search ran, ``method="reverse_kl"``).
    :ivar global_acceptance: ``flow_mcmc``, per step: the fraction of cold chains that accepted
        the flow's independence proposal (rises as the flow covers the target).
    :ivar swap_acceptance: ``flow_mcmc``, per step: the mean swap acceptance between levels.
    :ivar khat: the PSIS :math:`\\hat k` of the final importance weights (``nan`` before the
        end); above 0.7 the weights' tail is too heavy for IS estimates, and ``fit_target``
        warns.
    """

    elbo: list[float] = field(default_factory=list)
    beta: list[float] = field(default_factory=list)
    eval_steps: list[int] = field(default_factory=list)
    ess_fraction: list[float] = field(default_factory=list)
    log_Z: list[float] = field(default_factory=list)
    time: float = 0.0
    stopped: str = "completed"
    grad_evals: int = 0
    missed_modes: list[list[float]] = field(default_factory=list)
    mode_check: str = ""
    method: str = "reverse_kl"
    modes_found: int = -1
    global_acceptance: list[float] = field(default_factory=list)
    swap_acceptance: list[float] = field(default_factory=list)
    khat: float = math.nan

    @property
    def steps(self) -> int:
        """Optimiser steps taken."""
        return len(self.elbo)

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _log_density(target: Any) -> tuple[LogDensity, int | None, Any]:
    """``(log_prob, dim or None, support)`` of a target object or callable.

    The target is read by :func:`~pyro_flows.infer.results.as_target` (as the samplers read
    it) at the dimension of the points it is first given, the flow's: an error it raises on
    that first evaluation (a target written for another dimension), an output that is not real
    log densities of shape ``x.shape[:-1]``, or points on another device than the target's is a
    :class:`TargetError` naming what was given and what came back.
    """
    from .results import TargetOutputError, as_target, target_dim

    dim = target_dim(target)  # TypeError for what is neither callable nor has a log_prob
    read: dict[int, Any] = {}

    def log_prob(x: Tensor) -> Tensor:
        if x.shape[-1] not in read:  # read once, at the flow's dimension
            read[x.shape[-1]] = as_target(target, x.shape[-1])
        try:
            return read[x.shape[-1]](x)
        except TargetOutputError as err:
            raise TargetError(str(err)) from err

    return log_prob, dim, getattr(target, "support", None)


def _check_support(support: Any, flow: nn.Module, name: str) -> None:
    if support is None or support is constraints.real_vector or support is constraints.real:
        return
    pushed = getattr(flow, "support", None)
    if pushed is support or (pushed is not None and repr(pushed) == repr(support)):
        return
    raise ValueError(
        f"target {name} lives on {support}, not on R^D: train a flow onto that support with "
        "pyro_flows.infer.onto_support(flow, target.support) (or pass ignore_support=True)"
    )


def evaluate_target(log_prob: LogDensity, x: Tensor) -> Tensor:
    """``log_prob(x)`` checked: shape ``x.shape[:-1]``, finite; otherwise :class:`TargetError`
    naming what came back."""
    value = log_prob(x)
    if not isinstance(value, Tensor):
        raise TargetError(f"target log density must return a Tensor, got {type(value).__name__}")
    if value.shape != x.shape[:-1]:
        raise TargetError(
            f"target log density returned shape {tuple(value.shape)} for samples of shape "
            f"{tuple(x.shape)}; expected {tuple(x.shape[:-1])} (one value per sample)"
        )
    finite = torch.isfinite(value)
    if not bool(finite.all()):
        bad = (~finite).nonzero().flatten()
        first = x.reshape(-1, x.shape[-1])[bad[0]].detach().tolist()
        raise TargetError(
            f"target log density returned {int(bad.numel())} non-finite value(s) "
            f"({value.reshape(-1)[bad[0]].item()} at x = {[round(v, 4) for v in first]}); "
            "a target must be finite wherever the flow can put mass (restrict the flow to the "
            "target's support with onto_support)"
        )
    return value


@torch.no_grad()
def importance_weights(
    flow: nn.Module, log_prob: LogDensity, num_samples: int, batch_size: int = 4096
) -> tuple[Tensor, Tensor]:
    """Samples ``x ~ q`` and log importance weights :math:`\\log\\tilde p(x) - \\log q(x)`."""
    xs, ws = [], []
    left = num_samples
    while left > 0:
        n = min(batch_size, left)
        x, log_q = flow.rsample_and_log_prob((n,))
        ws.append(evaluate_target(log_prob, x) - log_q)
        xs.append(x)
        left -= n
    return torch.cat(xs), torch.cat(ws)


def _beta_schedule(anneal: float | Callable[[int], float] | None, steps: int) -> Callable:
    if anneal is None:
        return lambda step: 1.0
    if callable(anneal):
        return anneal
    if not (isinstance(anneal, (int, float)) and 0 < anneal <= 1):
        raise ValueError(
            "anneal must be None, a fraction in (0, 1] of the steps over which beta rises "
            f"linearly from 0.01 to 1, or a callable step -> beta; got {anneal!r}"
        )
    ramp = max(1, int(anneal * steps))
    return lambda step: min(1.0, 0.01 + 0.99 * step / ramp)


@accepts_threads
def fit_target(
    flow: nn.Module,
    target: Any,
    *,
    steps: int = 3000,
    batch_size: int = 256,
    lr: float = 3e-3,
    anneal: float | Callable[[int], float] | None = None,
    clip_grad_norm: float | None = 10.0,
    eval_every: int = 500,
    eval_samples: int = 4096,
    checkpoint: str | Path | None = None,
    checkpoint_every: int = 500,
    resume: bool = False,
    progress: bool = True,
    seed: int = 0,
    max_time: float | None = None,
    ignore_support: bool = False,
    callback: Callable[[int, TargetFitHistory], None] | None = None,
    check_modes: bool = True,
    method: str = "auto",
    threads: int | None = None,
) -> TargetFitHistory:
    r"""Fit ``flow`` to an unnormalised density by reverse KL (maximising the ELBO).

    Each step draws ``batch_size`` samples with their log densities in one base -> data pass
    (:meth:`~pyro_flows.Flow.rsample_and_log_prob`: no inverse, so IAF-direction and coupling
    flows are cheap here), evaluates :math:`\log\tilde p`, and takes an Adam step on

    .. math::

        \mathcal L_\beta = \frac1B \sum_{b=1}^B \big[\log q(x_b) - \beta_t \log\tilde p(x_b)\big],

    with a cosine learning-rate decay to zero and gradient clipping. The ELBO at
    :math:`\beta = 1` is recorded every step; every ``eval_every`` steps (and at the end) the
    importance weights :math:`w_i = \tilde p(x_i)/q(x_i)` of ``eval_samples`` fresh draws give
    :math:`\log\hat Z = \log\frac1n\sum_i w_i` and the ESS fraction
    :math:`(\sum_i w_i)^2 / (n\sum_i w_i^2)`.

    :param flow: a :class:`~pyro_flows.Flow` (anything with ``rsample_and_log_prob``) without
        context.
    :param target: a callable ``log_prob(z) -> (batch,)`` or an object with ``.log_prob`` (e.g.
        one of :mod:`pyro_flows.targets`).
    :param steps: optimiser steps.
    :param batch_size: samples per step.
    :param lr: Adam learning rate (decayed to 0 by a cosine schedule).
    :param anneal: ``None`` (no tempering), a fraction of ``steps`` over which :math:`\beta`
        rises linearly from 0.01 to 1, or a callable ``step -> beta``.
    :param clip_grad_norm: clip the gradients' global norm to this positive number (``None``:
        off); a NaN/inf global norm stops the training either way.
    :param eval_every: steps between importance-sampling diagnostics (0: only at the end).
    :param eval_samples: draws per diagnostic.
    :param checkpoint: file for the full training state (atomic writes every
        ``checkpoint_every`` steps and on ``KeyboardInterrupt``).
    :param resume: continue from ``checkpoint``: the result equals an uninterrupted run (the
        checkpoint must be one of ``fit_target`` with the same steps, batch size, lr,
        clipping and annealing, for this architecture).
    :param progress: show a progress bar with the ELBO (``False``: quiet).
    :param threads: run this call on that many CPU threads and restore torch's setting
        afterwards (:func:`~pyro_flows.threads.torch_threads`); ``None``: torch's setting.
        One thread is often faster for small models (see :mod:`pyro_flows.threads`).
    :param seed: seeds the sampling noise.
    :param max_time: stop after this many seconds of training.
    :param ignore_support: skip the check that the target lives on :math:`\mathbb R^D`.
    :param callback: called as ``callback(step, history)`` after every step.
    :param check_modes: after training, look for modes the flow misses
        (:func:`~pyro_flows.infer.mode_probe.probe_modes`: 64 over-dispersed points climb the
        target; a local maximum where the flow's density is over :math:`e^8` times too small
        is missed) and warn (``UserWarning``) when one is found: reverse KL is mode-seeking, and
        the ELBO, the ESS and the IS estimate of :math:`\log Z` cannot see mass that the flow
        never samples. Recorded in ``history.missed_modes`` and ``history.mode_check``.
    :param method: ``"auto"`` (default): search the target for local maxima from over-dispersed
        points (:func:`~pyro_flows.infer.mode_search.search_modes`, 256 starts climbing 300
        Adam steps, a few seconds); with more than one, train by ``"flow_mcmc"``, else by
        ``"reverse_kl"``. ``"reverse_kl"``: the ELBO above, no search (mode-seeking).
        ``"flow_mcmc"``: forward KL on tempered MALA chains that the flow helps to mix
        (:mod:`pyro_flows.infer.flow_mcmc`; mass-covering, about ``5 * levels`` times the
        target gradients of reverse KL per step, ``levels`` growing like
        :math:`\sqrt{D}`, 4 in 2-D). ``batch_size`` is then the number of chains per level and
        the forward-KL batch; ``anneal`` does not apply.
    :returns: a :class:`TargetFitHistory`.
    :raises TargetError: (a ``ValueError``) the target returned the wrong shape or NaN/inf; the
        parameters are those before the offending step.
    :raises NonFiniteLossError: the flow's own samples, log density or gradient became
        non-finite; the flow is restored to the last good state and ``history.stopped`` says
        which (``"non-finite loss"``, ``"non-finite gradient"``).
    :raises TypeError, ValueError: an argument of the wrong type or out of range (each named
        with its value), or a checkpoint that cannot be resumed (unreadable, or written for
        another set-up or architecture; refused before anything changes).

    Example:

    >>> import torch
    >>> from pyro_flows import flows
    >>> from pyro_flows.infer import fit_target
    >>> target = lambda z: torch.distributions.Normal(1.0, 2.0).log_prob(z).sum(-1)
    >>> flow = flows.realnvp(2, num_transforms=2, hidden_dims=(16,))
    >>> history = fit_target(flow, target, steps=300, batch_size=128, progress=False)
    >>> abs(history.log_Z[-1]) < 0.05  # normalised target: log Z = 0
    True

    References:

    - D. J. Rezende, S. Mohamed. *Variational Inference with Normalizing Flows.* ICML, 2015
      (reverse KL on energies U1-U4, annealing). https://arxiv.org/abs/1505.05770
    - G. Papamakarios, E. Nalisnick, D. J. Rezende, S. Mohamed, B. Lakshminarayanan.
      *Normalizing Flows for Probabilistic Modeling and Inference.* JMLR 22, 2021, sec. 2.3.
      https://arxiv.org/abs/1912.02762
    """
    log_prob, dim, support = _log_density(target)
    check_training_options(
        lr=lr, seed=seed, clip_grad_norm=clip_grad_norm, max_time=max_time,
        checkpoint=checkpoint, resume=resume, checkpoint_every=checkpoint_every,
        eval_every=eval_every, callback=callback, steps=steps, batch_size=batch_size,
        eval_samples=eval_samples,
    )
    if not isinstance(check_modes, bool):
        raise TypeError(f"check_modes must be True or False, got {check_modes!r}")
    if not hasattr(flow, "rsample_and_log_prob"):
        raise TypeError(
            f"flow must have rsample_and_log_prob (a pyro_flows.Flow), got {type(flow).__name__}"
        )
    if getattr(flow, "context_dim", None) is not None:
        raise ValueError("fit_target needs an unconditional flow (context_dim=None)")
    flow_dim = getattr(flow, "input_dim", None)
    if dim is not None and flow_dim is not None and dim != flow_dim:
        raise ValueError(f"the target has dimension {dim} but the flow has input_dim {flow_dim}")
    if not ignore_support:
        _check_support(support, flow, getattr(target, "name", type(target).__name__))
    params = [p for p in flow.parameters() if p.requires_grad]
    if not params:
        raise ValueError("the flow has no trainable parameters")

    if method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(map(repr, METHODS))}, got {method!r}")
    chains = search = None
    modes_found = -1
    if method != "reverse_kl":
        search = _search_target(target, log_prob, flow, batch_size, seed)
        modes_found = len(search.modes)
        if method == "auto":
            method = "flow_mcmc" if modes_found > 1 else "reverse_kl"
        if method == "flow_mcmc":
            from .flow_mcmc import FlowAssistedChains

            starts = search.modes
            if len(starts) == 0:  # no converged maximum (a funnel's neck): start at q's draws
                from .results import _forked_rng

                with torch.no_grad(), _forked_rng(seed, []):
                    starts = flow.rsample_and_log_prob((batch_size,))[0]
            chains = FlowAssistedChains(flow, log_prob, starts, chains=batch_size, seed=seed)
            search_cost = search.num_starts * 301

    beta_at = _beta_schedule(anneal, steps)
    run = StepTraining(
        flow, params, kind="fit_target", steps=steps, lr=lr, history=TargetFitHistory(),
        checkpoint=checkpoint, resume=resume, seed=seed,
        setup={
            "batch_size": batch_size,
            "lr": float(lr),
            "clip_grad_norm": None if clip_grad_norm is None else float(clip_grad_norm),
            "anneal": "a callable" if callable(anneal) else anneal,
            "method": method,
        },
        extra=chains,
    )
    history = run.history
    history.method, history.modes_found = method, modes_found

    def evaluate(final: bool = False) -> None:
        _, log_w = importance_weights(flow, log_prob, eval_samples)
        if final:
            history.khat = _final_khat(log_w)
        n = log_w.numel()
        log_Z = torch.logsumexp(log_w, 0) - math.log(n)
        ess = torch.exp(2 * torch.logsumexp(log_w, 0) - torch.logsumexp(2 * log_w, 0)) / n
        history.eval_steps.append(run.step)
        history.log_Z.append(float(log_Z))
        history.ess_fraction.append(float(ess))

    flow.train()
    bar = progress_bar(total=steps, initial=run.step, desc="fit_target", enabled=progress)
    try:
        while chains is not None and run.step < steps:
            step = run.step
            chains.sampler.adapt = step < steps // 2
            elbo = chains.advance()
            loss = -flow.log_prob(chains.batch(batch_size)).mean()
            if not bool(torch.isfinite(loss)):
                raise run.fail(
                    "non-finite loss",
                    f"fit_target: the flow's log density of the chains' states became "
                    f"non-finite at step {step}; the flow holds the last good parameters (lower "
                    f"lr, now {lr}, or clip_grad_norm, now {clip_grad_norm})",
                )
            if not run.update(loss, clip_grad_norm):
                raise run.fail(
                    "non-finite gradient",
                    f"fit_target: non-finite gradient (NaN/inf global norm) at step {step}; the "
                    f"flow holds the last good parameters (lower lr, now {lr}, or "
                    f"clip_grad_norm, now {clip_grad_norm})",
                )
            history.elbo.append(elbo)
            history.beta.append(1.0)
            history.global_acceptance.append(chains.global_acceptance)
            history.swap_acceptance.append(chains.sampler.swap_acceptance)
            history.grad_evals = search_cost + chains.grad_evals
            if run.record_step():
                bar.set_postfix(elbo=f"{elbo:.3f}", jump=f"{chains.global_acceptance:.2f}",
                                refresh=False)
            bar.update(1)
            if run.after_step(
                eval_every=eval_every, evaluate=evaluate, checkpoint_every=checkpoint_every,
                callback=callback, max_time=max_time,
            ):
                break
        while chains is None and run.step < steps:
            step = run.step
            beta = float(beta_at(step))
            x, log_q = flow.rsample_and_log_prob((batch_size,))
            if not bool(torch.isfinite(log_q).all() and torch.isfinite(x).all()):
                raise run.fail(
                    "non-finite loss",
                    "fit_target: the flow's samples or log density became non-finite at step "
                    f"{step}; the flow holds the last good parameters (lower lr, now {lr}, or "
                    f"clip_grad_norm, now {clip_grad_norm})",
                )
            log_p = evaluate_target(log_prob, x)
            if not run.update((log_q - beta * log_p).mean(), clip_grad_norm):
                raise run.fail(
                    "non-finite gradient",
                    f"fit_target: non-finite gradient (NaN/inf global norm) at step {step}; the "
                    f"flow holds the last good parameters (lower lr, now {lr}, or "
                    f"clip_grad_norm, now {clip_grad_norm})",
                )
            elbo = float((log_p - log_q).detach().mean())
            history.elbo.append(elbo)
            history.beta.append(beta)
            history.grad_evals += batch_size
            if run.record_step():
                bar.set_postfix(elbo=f"{elbo:.3f}", beta=f"{beta:.2f}", refresh=False)
            bar.update(1)
            if run.after_step(
                eval_every=eval_every, evaluate=evaluate, checkpoint_every=checkpoint_every,
                callback=callback, max_time=max_time,
            ):
                break
    except KeyboardInterrupt:
        run.save()
        raise
    finally:
        bar.close()
    flow.eval()
    evaluate(final=True)
    if history.khat > 0.7:
        warnings.warn(
            f"fit_target: PSIS k-hat of the trained flow's importance weights is "
            f"{history.khat:.2f} > 0.7: the flow's tails or a mode are badly off, and log Z, "
            "the ESS and any IS estimate from it are unreliable (train longer, use a more "
            "flexible flow, or check with annealed_importance_sampling or MCMC)",
            UserWarning,
            stacklevel=3,
        )
    if check_modes:
        if search is None:  # reverse KL as asked: search now, for the probe's candidates
            try:
                search = _search_target(target, log_prob, flow, batch_size, seed)
            except (ValueError, RuntimeError):
                search = None
        _check_modes(flow, log_prob, history, seed, None if search is None else search.modes)
    run.save()
    return history


def _final_khat(log_w: Tensor) -> float:
    """PSIS k-hat of the final weights (``nan`` when it cannot be fitted)."""
    from .diagnostics import psis_khat

    try:
        return float(psis_khat(log_w))
    except (ValueError, RuntimeError):
        return math.nan


def _search_target(target: Any, log_prob: LogDensity, flow: nn.Module, batch_size: int,
                   seed: int) -> Any:
    """The local maxima of the target (:func:`~pyro_flows.infer.mode_search.search_modes`),
    searched around its ``initial_params()`` (else the origin) in the flow's dtype and device,
    after a check of the target on ``batch_size`` of the flow's draws (the first step's check:
    a :class:`TargetError` for a wrong shape or NaN). The global RNG is left as it was."""
    from .mode_search import search_modes
    from .results import _forked_rng, as_target

    with torch.no_grad(), _forked_rng(seed, []):
        x = flow.rsample_and_log_prob((batch_size,))[0]
        evaluate_target(log_prob, x)
    dim = x.shape[-1]
    try:
        centre = as_target(target, dim)._center(x.dtype, x.device)
    except (TypeError, ValueError, AttributeError):
        centre = torch.zeros(dim, dtype=x.dtype, device=x.device)
    return search_modes(log_prob, dim, centre=centre.to(x), seed=seed)


def _check_modes(flow: nn.Module, log_prob: LogDensity, history: TargetFitHistory,
                 seed: int, candidates: Tensor | None) -> None:
    """Run the mode probe on the trained flow; record it and warn about missed modes (a probe
    that fails is recorded, never fatal: the training result stands)."""
    from .mode_probe import probe_modes

    try:
        probe = probe_modes(flow, log_prob, seed=seed, candidates=candidates)
    except (ValueError, RuntimeError, TargetError) as error:
        history.mode_check = f"mode check failed: {error}"
        return
    history.mode_check = probe.summary()
    history.missed_modes = probe.modes[probe.missed].tolist()
    if history.missed_modes:
        if history.method == "flow_mcmc":
            advice = ("Training by flow_mcmc has not made the flow cover them yet: train "
                      "longer, or use a more flexible flow (e.g. a spline flow); use "
                      "infer.importance_sample or infer.annealed_importance_sampling with it "
                      "rather than its raw draws.")
        else:
            advice = ("Reverse KL is mode-seeking, and the ELBO, ESS and log Z from the flow's "
                      "own draws cannot see the missing mass. Use method='flow_mcmc' "
                      "(mass-covering; what method='auto' picks when its search finds several "
                      "modes), a more flexible flow, or check with MCMC (its chains start at the "
                      "modes) and infer.annealed_importance_sampling.")
        warnings.warn(
            f"fit_target: the flow misses {len(history.missed_modes)} mode(s) of the target "
            f"({probe.summary()}). {advice}",
            UserWarning,
            stacklevel=3,
        )
