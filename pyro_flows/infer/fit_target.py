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
from torch import nn

from .._progress import progress_bar
from ..threads import accepts_threads
from ._loop import NonFiniteLossError, interruptible, trainable_parameters
from ._steps import StepTraining, check_training_options

# ``X as X``: this module's names, now defined beside it (``_target_evaluation``, ``_target_modes``)
from ._target_evaluation import LogDensity as LogDensity
from ._target_evaluation import TargetError as TargetError
from ._target_evaluation import check_support, draw_log_ratios, evaluate_target, log_density
from ._target_evaluation import importance_weights as importance_weights
from ._target_modes import check_modes as check_modes_of
from ._target_modes import choose_method, final_khat, search_target
from .bridge_sampling import bridge_log_Z

__all__ = [
    "KEPT_ROUNDS", "METHODS", "TargetFitHistory", "TargetError", "fit_target", "importance_weights",
]

#: the training methods of :func:`fit_target` (``"auto"`` picks one of the other two)
METHODS = ("auto", "reverse_kl", "flow_mcmc")
#: ``flow_mcmc``: nats between the importance-sampling and bridge-sampling log Z that warn
BRIDGE_DISAGREEMENT = 0.1
#: ``flow_mcmc``: the most rounds of chain states ``history.samples`` keeps after the burn-in
KEPT_ROUNDS = 200


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
        warns. Under ``flow_mcmc``, when bridge sampling with the chains confirms the IS
        :math:`\\log\\hat Z` (within :data:`BRIDGE_DISAGREEMENT` nats, its standard error
        under a third of that), the warning says so: the flow's own draws (and per-mode masses
        read from them) stay unreliable, while the method's answers, the chains' ``samples`` and
        ``log_Z_bridge``, are not. On fresh 2-D and 10-D mixtures (a mode of mass 0.02-0.03, or
        modes 40-50 from the origin) :math:`\\hat k` read 0.74-2.32 while the chains' masses were
        within 0.003 and both :math:`\\log\\hat Z` within 0.02 nats; in the 2.32 run the flow's
        own mode masses were 0.13 off.
    :ivar samples: ``flow_mcmc``: ``(chains, draws, D)`` states of the target-level chains
        after the burn-in (the first half of the steps, while the step sizes adapt), thinned to
        at most :data:`KEPT_ROUNDS` rounds (the final states alone when training stopped
        earlier); ``None`` for reverse KL. These are MCMC draws from :math:`p`, whose share per
        mode the accept steps correct, so **mode masses and expectations should come from
        them** (or from the flow's draws importance-weighted), not from the flow's own draws,
        which the forward KL fits only approximately.
    :ivar log_Z_bridge: ``flow_mcmc``: the bridge-sampling estimate of :math:`\\log Z` from
        ``samples`` and the final evaluation's flow draws together
        (:func:`~pyro_flows.infer.bridge_sampling.bridge_log_Z`), robust where the flow
        under-weights a region and the importance-sampling ``log_Z`` comes out low; ``nan`` for
        reverse KL. ``log_Z_bridge_stderr``: its jackknife standard error over the chains.
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
    samples: torch.Tensor | None = None
    log_Z_bridge: float = math.nan
    log_Z_bridge_stderr: float = math.nan

    @property
    def steps(self) -> int:
        """Optimiser steps taken."""
        return len(self.elbo)

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _beta_schedule(anneal: float | Callable[[int], float] | None, steps: int) -> Callable:
    if anneal is None:
        return lambda step: 1.0
    if callable(anneal):
        checked = _checked_beta(anneal)
        checked(0)  # a callable of the wrong kind fails here, before training starts
        return checked
    if isinstance(anneal, bool) or not (isinstance(anneal, (int, float)) and 0 < anneal <= 1):
        raise ValueError(
            "anneal must be None, a fraction in (0, 1] of the steps over which beta rises "
            f"linearly from 0.01 to 1, or a callable step -> beta; got {anneal!r}"
        )
    ramp = max(1, int(anneal * steps))
    return lambda step: min(1.0, 0.01 + 0.99 * step / ramp)


def _checked_beta(anneal: Callable[[int], float]) -> Callable[[int], float]:
    """``anneal`` with its value checked at every step: a number in (0, 1] (a beta of -1
    rewarded low target density; NaN stopped the run blaming the learning rate)."""

    def beta_at(step: int) -> float:
        try:
            value = anneal(step)
        except TypeError as error:
            raise TypeError(
                f"anneal must be a callable step -> beta; anneal({step}) raised {error}"
            ) from error
        try:  # a bool, a string or None is not a beta, even where float() takes it
            beta = math.nan if isinstance(value, (bool, str, bytes)) else float(value)
        except (TypeError, ValueError, RuntimeError):
            beta = math.nan
        if not 0 < beta <= 1:
            raise ValueError(
                f"anneal(step) must return a beta in (0, 1], got {value!r} at step {step}"
            )
        return beta

    return beta_at


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
        rises linearly from 0.01 to 1, or a callable ``step -> beta`` returning a number in
        :math:`(0, 1]` (checked at every step, and once at step 0 before training).
    :param clip_grad_norm: clip the gradients' global norm to this positive number (``None``:
        off); a NaN/inf global norm stops the training either way.
    :param eval_every: steps between importance-sampling diagnostics (0: only at the end).
    :param eval_samples: draws per diagnostic.
    :param checkpoint: file for the full training state (atomic writes every
        ``checkpoint_every`` steps and on ``KeyboardInterrupt``).
    :param checkpoint_every: optimiser steps (not epochs, unlike ``fit``) between
        checkpoints, a positive int.
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
        the forward-KL batch; ``anneal`` does not apply. Its draws from the target are the
        chains' post-burn-in states, ``history.samples``: take mode masses and expectations
        from them, not from the flow's own draws; and :math:`\log Z` from
        ``history.log_Z_bridge`` (bridge sampling between the chains and the flow: 0.02-0.12
        nats off on the 32-D ``many_well`` where importance sampling read 0.03-0.73 low), with
        a ``UserWarning`` when the two estimates differ by more than
        :data:`BRIDGE_DISAGREEMENT` nats and three standard errors (a PSIS
        :math:`\\hat k > 0.7` warning says when they agree that the chains' answers stand while
        the flow's own draws do not; see :class:`TargetFitHistory`'s ``khat``).
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
    log_prob, dim, support = log_density(target)
    params = _check_options(
        flow, target, dim, support, lr=lr, seed=seed, clip_grad_norm=clip_grad_norm,
        max_time=max_time, checkpoint=checkpoint, resume=resume,
        checkpoint_every=checkpoint_every, eval_every=eval_every, callback=callback, steps=steps,
        batch_size=batch_size, eval_samples=eval_samples, check_modes=check_modes,
        ignore_support=ignore_support, method=method,
    )
    choice = choose_method(method, target, log_prob, flow, batch_size, seed)
    beta_at = _beta_schedule(anneal, steps)
    run = StepTraining(
        flow, params, kind="fit_target", steps=steps, lr=lr, history=TargetFitHistory(),
        checkpoint=checkpoint, resume=resume, seed=seed,
        setup={
            "batch_size": batch_size,
            "lr": float(lr),
            "clip_grad_norm": None if clip_grad_norm is None else float(clip_grad_norm),
            "anneal": "a callable" if callable(anneal) else anneal,
            "method": choice.method,
        },
        extra=choice.chains,
    )
    history = run.history
    history.method, history.modes_found = choice.method, choice.modes_found
    evaluate = _evaluator(flow, log_prob, run, eval_samples)
    loop = _StepLoop(
        run, flow, log_prob, batch_size=batch_size, lr=lr, clip_grad_norm=clip_grad_norm,
        after_step=lambda: run.after_step(
            eval_every=eval_every, evaluate=evaluate, checkpoint_every=checkpoint_every,
            callback=callback, max_time=max_time,
        ),
    )
    flow.train()
    bar = progress_bar(total=steps, initial=run.step, desc="fit_target", enabled=progress)
    with interruptible(bar, run.save):
        if choice.chains is not None:
            loop.flow_mcmc(bar, choice.chains, choice.search_cost)
        else:
            loop.reverse_kl(bar, beta_at)
    flow.eval()
    evaluate(final=True)
    if history.khat > 0.7:
        warnings.warn(_khat_message(history), UserWarning, stacklevel=3)
    _warn_if_estimates_disagree(history)
    if check_modes:
        search = choice.search
        if search is None:  # reverse KL as asked: search now, for the probe's candidates
            try:
                search = search_target(target, log_prob, flow, batch_size, seed)
            except (ValueError, RuntimeError):
                search = None
        check_modes_of(flow, log_prob, history, seed, None if search is None else search.modes)
    run.save()
    return history


# -- the set-up -----------------------------------------------------------------------------------
def _check_options(flow: Any, target: Any, dim: int | None, support: Any, *, check_modes: object,
                   ignore_support: bool, method: object, **options: Any) -> list[torch.Tensor]:
    """Every option, the flow and the target checked before anything happens (a ``TypeError``
    or ``ValueError`` naming the argument and the value); returns the trainable parameters."""
    check_training_options(**options)
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
        check_support(support, flow, getattr(target, "name", type(target).__name__))
    params = trainable_parameters(flow, "flow")
    if method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(map(repr, METHODS))}, got {method!r}")
    return params


def _evaluator(flow: nn.Module, log_prob: LogDensity, run: StepTraining,
               eval_samples: int) -> Callable[..., None]:
    r"""The importance-sampling diagnostics of ``eval_samples`` fresh draws at the current step
    (:math:`\log\hat Z` and the ESS fraction into ``run.history``; with ``final=True`` the
    PSIS :math:`\hat k` of the weights too)."""
    history = run.history

    def evaluate(final: bool = False) -> None:
        _, log_w = importance_weights(flow, log_prob, eval_samples)
        if final:
            history.khat = final_khat(log_w)
            if history.samples is not None:
                _bridge_into(history, flow, log_prob, log_w)
        n = log_w.numel()
        log_Z = torch.logsumexp(log_w, 0) - math.log(n)
        ess = torch.exp(2 * torch.logsumexp(log_w, 0) - torch.logsumexp(2 * log_w, 0)) / n
        history.eval_steps.append(run.step)
        history.log_Z.append(float(log_Z))
        history.ess_fraction.append(float(ess))

    return evaluate


def _bridge_into(history: TargetFitHistory, flow: nn.Module, log_prob: LogDensity,
                 log_w: torch.Tensor) -> None:
    """``history.log_Z_bridge`` (and its standard error) from the chains' states and the
    flow draws' log weights ``log_w``; left ``nan`` where a chain state has no finite ratio."""
    assert history.samples is not None
    try:
        ratios = draw_log_ratios(flow, log_prob, history.samples.to(log_w))
        estimate = bridge_log_Z(ratios, log_w.detach())
    except ValueError:  # a state the flow cannot score (overflow) or a zero target density
        return
    history.log_Z_bridge = estimate.log_Z
    history.log_Z_bridge_stderr = estimate.log_Z_stderr


def _bridge_vouches(history: TargetFitHistory) -> bool:
    r"""``flow_mcmc``: whether bridge sampling with the chains confirms the importance-sampling
    :math:`\log\hat Z` (the two within :data:`BRIDGE_DISAGREEMENT` nats, and the bridge's
    standard error under a third of that), so that a :math:`\hat k > 0.7` of the flow's weights
    (a tail of the flow too thin somewhere the target has little mass) does not make the method's
    answers, the chains' ``samples`` and ``log_Z_bridge``, unreliable."""
    bridge, stderr = history.log_Z_bridge, history.log_Z_bridge_stderr
    if history.method != "flow_mcmc" or not history.log_Z:
        return False
    if not (math.isfinite(bridge) and math.isfinite(stderr)):
        return False
    return (abs(history.log_Z[-1] - bridge) <= BRIDGE_DISAGREEMENT
            and 3 * stderr <= BRIDGE_DISAGREEMENT)


def _khat_message(history: TargetFitHistory) -> str:
    """The text of the PSIS k-hat warning: what is unreliable, and what still stands when the
    chains confirm :math:`\\log\\hat Z` (:func:`_bridge_vouches`)."""
    head = (f"fit_target: PSIS k-hat of the trained flow's importance weights is "
            f"{history.khat:.2f} > 0.7: ")
    if _bridge_vouches(history):
        return head + (
            "the flow's own draws are unreliable where the target has little mass (mode masses "
            "or tails read from flow samples may be off), but bridge sampling with the chains "
            f"confirms log Z ({history.log_Z_bridge:.4f} +- {history.log_Z_bridge_stderr:.4f}, "
            f"IS {history.log_Z[-1]:.4f}): use history.samples (the chains) and "
            "history.log_Z_bridge, or train longer for a better flow"
        )
    return head + (
        "the flow's tails or a mode are badly off, and log Z, the ESS and any IS estimate from "
        "it are unreliable (train longer, use a more flexible flow, or check with "
        "annealed_importance_sampling or MCMC)"
    )


def _warn_if_estimates_disagree(history: TargetFitHistory) -> None:
    """A ``UserWarning`` when the importance-sampling and bridge-sampling :math:`\\log\\hat Z`
    differ by more than 0.1 nats and three bridge standard errors."""
    bridge, stderr = history.log_Z_bridge, history.log_Z_bridge_stderr
    if not (math.isfinite(bridge) and history.log_Z):
        return
    gap = history.log_Z[-1] - bridge
    if abs(gap) > max(BRIDGE_DISAGREEMENT, 3 * (stderr if math.isfinite(stderr) else 0.0)):
        warnings.warn(
            f"fit_target: log Z from importance sampling ({history.log_Z[-1]:.3f}) and from "
            f"bridge sampling with the chains ({bridge:.3f} +- {stderr:.3f}) differ by "
            f"{gap:+.3f} nats: the flow does not match the target (read log Z from "
            "history.log_Z_bridge, masses and expectations from history.samples; train longer "
            "or use a more flexible flow)",
            UserWarning,
            stacklevel=4,
        )


# -- the steps ------------------------------------------------------------------------------------
class _StepLoop:
    """The two step loops of :func:`fit_target` on one :class:`StepTraining` run: reverse KL on
    the flow's own draws, and forward KL on the states of flow-assisted chains. Both stop at
    ``run.steps``, at a non-finite loss or gradient (the flow back to the last good parameters,
    a :class:`~pyro_flows.infer.fit.NonFiniteLossError`) or when ``after_step()`` says so."""

    def __init__(self, run: StepTraining, flow: Any, log_prob: LogDensity, *, batch_size: int,
                 lr: float, clip_grad_norm: float | None,
                 after_step: Callable[[], bool]) -> None:
        self.run, self.flow, self.log_prob = run, flow, log_prob
        self.batch_size, self.lr, self.clip_grad_norm = batch_size, lr, clip_grad_norm
        self.after_step = after_step

    def _fail(self, stopped: str, what: str, step: int) -> NonFiniteLossError:
        return self.run.fail(
            stopped,
            f"fit_target: {what} at step {step}; the flow holds the last good parameters (lower "
            f"lr, now {self.lr}, or clip_grad_norm, now {self.clip_grad_norm})",
        )

    def _update(self, loss: torch.Tensor, step: int) -> None:
        if not self.run.update(loss, self.clip_grad_norm):
            raise self._fail("non-finite gradient", "non-finite gradient (NaN/inf global norm)",
                             step)

    def _finish_step(self, bar: Any, **postfix: str) -> bool:
        """The progress (its figures refreshed at each snapshot) and the rest of the step's
        bookkeeping; ``True`` when the run must stop."""
        if self.run.record_step():
            bar.set_postfix(**postfix, refresh=False)
        bar.update(1)
        return self.after_step()

    def reverse_kl(self, bar: Any, beta_at: Callable[[int], float]) -> None:
        r"""Steps on :math:`\frac1B\sum_b [\log q(x_b) - \beta_t \log\tilde p(x_b)]`."""
        run, history = self.run, self.run.history
        while run.step < run.steps:
            step = run.step
            beta = float(beta_at(step))
            x, log_q = self.flow.rsample_and_log_prob((self.batch_size,))
            if not bool(torch.isfinite(log_q).all() & torch.isfinite(x).all()):  # one sync
                raise self._fail(
                    "non-finite loss", "the flow's samples or log density became non-finite", step
                )
            log_p = evaluate_target(self.log_prob, x)
            if beta == 1.0:  # unannealed: no product by one, and the ELBO is minus the loss
                loss = (log_q - log_p).mean()  # (a - b = -(b - a) and the mean of negated
                elbo = 0.0 - float(loss.detach())  # terms is the negated mean, to the bit)
            else:
                loss = (log_q - beta * log_p).mean()
                elbo = float((log_p - log_q).detach().mean())
            self._update(loss, step)
            history.elbo.append(elbo)
            history.beta.append(beta)
            history.grad_evals += self.batch_size
            if self._finish_step(bar, elbo=f"{elbo:.3f}", beta=f"{beta:.2f}"):
                break

    def flow_mcmc(self, bar: Any, chains: Any, search_cost: int) -> None:
        r"""Steps on :math:`-\frac1B\sum_b \log q(x_b)` over the chains' states (the chains
        adapt their step sizes during the first half of the steps, the burn-in; after it, the
        cold states of every ``thin``-th round join ``history.samples``)."""
        run, history = self.run, self.run.history
        burn_in = run.steps // 2
        thin = max(1, math.ceil((run.steps - burn_in) / KEPT_ROUNDS))
        while run.step < run.steps:
            step = run.step
            chains.sampler.adapt = step < burn_in
            elbo = chains.advance()
            if step >= burn_in and (step - burn_in) % thin == 0:
                _keep_states(history, chains.sampler.cold[0])
            loss = -self.flow.log_prob(chains.batch(self.batch_size)).mean()
            if not bool(torch.isfinite(loss)):
                raise self._fail(
                    "non-finite loss",
                    "the flow's log density of the chains' states became non-finite", step
                )
            self._update(loss, step)
            history.elbo.append(elbo)
            history.beta.append(1.0)
            history.global_acceptance.append(chains.global_acceptance)
            history.swap_acceptance.append(chains.sampler.swap_acceptance)
            history.grad_evals = search_cost + chains.grad_evals
            if self._finish_step(bar, elbo=f"{elbo:.3f}", jump=f"{chains.global_acceptance:.2f}"):
                break
        if history.samples is None:  # stopped during the burn-in: the states it reached
            _keep_states(history, chains.sampler.cold[0])


def _keep_states(history: TargetFitHistory, states: torch.Tensor) -> None:
    """Append one round of ``(chains, D)`` states to ``history.samples`` ``(chains, draws, D)``."""
    states = states.detach().clone()[:, None]
    history.samples = states if history.samples is None else torch.cat([history.samples, states], 1)
