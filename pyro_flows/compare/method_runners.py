r"""The runners of ``pyro-flows compare``: one function per kind of method, each turning a target,
its budget (:class:`~pyro_flows.compare.settings.TargetSettings`) and, for the flow-based
methods, a :class:`~pyro_flows.compare.flow_training.TrainedFlow` into a :class:`MethodRun`
(draws in the target's own coordinates and their cost).

Every runner has the signature of :data:`Runner`,
``runner(method, target, settings, *, trained, seed, progress) -> MethodRun``; the registry
(:mod:`~pyro_flows.compare.method_registry`) names the runner of each method and
:func:`~pyro_flows.compare.methods.run_method` checks the arguments and calls it.

========================  ======================================================================
runner                    what it does
========================  ======================================================================
:func:`run_chains`        an MCMC sampler of :mod:`pyro_flows.infer` (NUTS, MH, MALA) on
                          :math:`\mathbb R^D`, started by :func:`box_starts` on a box target
:func:`run_neutra`        NUTS on the flow's pulled-back density
                          :math:`\tilde p(f(\varepsilon))|\det J_f(\varepsilon)|`
:func:`run_flow_draws`    fresh draws :math:`x_i \sim q` and their weights
                          :math:`w_i = \tilde p(x_i)/q(x_i)` (the flow rows)
:func:`run_importance`    the same draws resampled by their weights (``is``)
:func:`run_ais`           annealed importance sampling from the flow (or a standard Normal)
========================  ======================================================================

MCMC on a box target runs on ``target.unconstrained()`` (density
:math:`\tilde p(T(u))|\det J_T(u)|`) and its draws are mapped back by :math:`z = T(u)`.

Example:

>>> from dataclasses import replace
>>> from pyro_flows.compare.settings import SamplerSettings, settings_for
>>> from pyro_flows.infer import mala
>>> from pyro_flows.targets import get_target
>>> s = replace(settings_for("banana", quick=True), mala=SamplerSettings(20, 20, 2))
>>> run = run_chains("mala", get_target("banana"), s, trained=None, seed=0, progress=False,
...                  sampler=mala)
>>> run.kind, tuple(run.samples.shape)
('mcmc', (2, 20, 2))

References:

- M. D. Hoffman, A. Gelman. *The No-U-Turn Sampler.* JMLR 15, 2014.
- M. D. Hoffman, P. Sountsov, J. V. Dillon, I. Langmore, D. Tran, S. Vasudevan.
  *NeuTra-lizing Bad Geometry in Hamiltonian Monte Carlo Using Neural Transport.* 2019.
  https://arxiv.org/abs/1903.03704
- A. B. Owen. *Monte Carlo theory, methods and examples*, 2013, chapter 9.
- R. M. Neal. *Annealed importance sampling.* Statistics and Computing 11, 125-139, 2001.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor
from torch.distributions import biject_to

from .._numbers import check_positive_number
from .._validation import check_positive_int
from ..infer import (
    SampleResult,
    TargetFitHistory,
    annealed_importance_sampling,
    importance_sample,
    neutra,
    systematic_resample,
)
from ..infer._target_evaluation import draw_log_ratios
from ..infer.bridge_sampling import bridge_log_Z
from ..targets import Target
from ._arguments import _boxed, _check_seed, _check_target
from .flow_training import TrainedFlow
from .settings import TargetSettings

__all__ = [
    "MethodRun",
    "Runner",
    "box_starts",
    "run_ais",
    "run_chains",
    "run_flow_draws",
    "run_importance",
    "run_neutra",
]


@dataclass
class MethodRun:
    r"""What one method produced on one target, in the target's own coordinates.

    :ivar method: one of :data:`~pyro_flows.compare.method_registry.ALL_METHODS`.
    :ivar kind: ``"mcmc"`` (nuts, neutra, mh, mala: chains of correlated draws), ``"flow"``
        (``flow``: independent draws of :math:`q`, unweighted; ``flow_mcmc``: its chains'
        states after the burn-in, ``history.samples``), ``"is"``
        (resampled importance draws) or ``"ais"`` (resampled AIS particles).
    :ivar samples: draws of shape ``(chains, draws, dim)`` (one chain for ``flow``, ``is`` and
        ``ais``).
    :ivar wall_time: seconds, training included for the flow-based methods.
    :ivar grad_evals: target gradients (training included for the flow-based methods).
    :ivar log_prob_evals: target log-density evaluations without a gradient (MH, IS).
    :ivar divergences: divergent transitions (NUTS, NeuTra), else ``None``.
    :ivar proposal: raw flow draws ``(n, dim)`` behind the flow rows and ``is``, the final AIS
        particles for ``ais`` (``None`` for MCMC).
    :ivar log_weights: their :math:`\log w_i = \log\tilde p(x_i) - \log q(x_i)` (``ais``: the
        AIS log weights).
    :ivar stats: importance-sampling statistics (``elbo``, ``log_Z_hat``, ``log_Z_stderr``,
        ``ess``, ``ess_fraction``, ``khat``) for the flow rows and ``is``; the same but
        ``elbo`` for ``ais``. ``flow_mcmc``'s ``log_Z_hat`` and ``log_Z_stderr`` are bridge
        sampling's between its chains and the flow's draws (the importance-sampling estimate
        in ``log_Z_is``).
    :ivar history: the flow's training history for the flow-based methods.
    :ivar result: the underlying :class:`~pyro_flows.infer.SampleResult` (``ais``: the
        :class:`~pyro_flows.infer.ais.AISResult`).
    :ivar settings: a one-line description of the budget.

    ESS per gradient of a run is :math:`\mathrm{ESS}/\texttt{grad\_evals}`
    (:func:`~pyro_flows.compare.metrics.row_for`).

    Example:

    >>> import torch
    >>> run = MethodRun("mh", "mcmc", torch.zeros(4, 100, 2), wall_time=0.5, grad_evals=0)
    >>> run.samples.shape[0], run.divergences
    (4, None)

    References: see the module docstring.
    """

    method: str
    kind: str
    samples: Tensor
    wall_time: float
    grad_evals: int
    log_prob_evals: int = 0
    divergences: int | None = None
    proposal: Tensor | None = None
    log_weights: Tensor | None = None
    stats: dict[str, float] = field(default_factory=dict)
    history: TargetFitHistory | None = None
    result: Any = None
    settings: str = ""


#: What the registry (:mod:`~pyro_flows.compare.method_registry`) holds for each method:
#: ``runner(method, target, settings, *, trained, seed, progress) -> MethodRun``, with
#: ``trained`` the :class:`~pyro_flows.compare.flow_training.TrainedFlow` (checked by
#: :func:`~pyro_flows.compare.methods.run_method`; ``None`` for the methods without a flow).
Runner = Callable[..., MethodRun]


def _mcmc_run(
    method: str,
    result: SampleResult,
    target: Target,
    *,
    settings: str,
    wall_time: float | None = None,
    history: TargetFitHistory | None = None,
) -> MethodRun:
    samples = result.samples.detach()
    if _boxed(target):
        unconstrained = target.unconstrained()
        samples = unconstrained.to_support(samples.to(torch.float64))  # type: ignore[attr-defined]
    return MethodRun(
        method=method,
        kind="mcmc",
        samples=samples,
        wall_time=float(result.wall_time if wall_time is None else wall_time),
        grad_evals=int(result.num_grad_evals),
        log_prob_evals=int(result.num_log_prob_evals),
        divergences=result.divergences,
        history=history,
        result=result,
        settings=settings,
    )


_IS_KEYS = ("elbo", "log_Z_hat", "log_Z_stderr", "ess", "ess_fraction", "khat")


def _bridge_stats(target: Target, trained: TrainedFlow, chain_states: Tensor,
                  log_weights: Tensor | None) -> dict[str, float]:
    """``flow_mcmc``'s :math:`\\log\\hat Z` by bridge sampling between its chains' states and
    the flow's draws (:func:`~pyro_flows.infer.bridge_sampling.bridge_log_Z`), robust where the
    flow under-weights a region; the importance-sampling one is kept as ``log_Z_is``. Empty
    (the importance-sampling numbers stay) where a state cannot be scored."""
    if log_weights is None:
        return {}
    try:
        ratios = draw_log_ratios(trained.flow, target.log_prob, chain_states)
        estimate = bridge_log_Z(ratios, log_weights.detach())
    except ValueError:
        return {}
    return {"log_Z_is": float(torch.logsumexp(log_weights.double(), 0)
                              - math.log(log_weights.numel())),
            "log_Z_hat": estimate.log_Z, "log_Z_stderr": estimate.log_Z_stderr}


def _importance_run(
    method: str,
    target: Target,
    trained: TrainedFlow,
    num_samples: int,
    seed: int,
    *,
    resample: bool,
) -> MethodRun:
    """A flow row (``flow``: the flow's own draws; ``flow_mcmc``: its chains' post-burn-in
    states, ``history.samples``, where the training kept them) or, with ``resample``, ``is``
    (resampled). The importance statistics are the flow's either way."""
    result = importance_sample(
        trained.flow, target, num_samples=num_samples, resample=resample, seed=seed,
        warn=False,  # the report flags k-hat > 0.7 itself
    )
    proposal = result.extra["proposal_samples"].detach()
    samples = result.samples.detach() if resample else proposal.unsqueeze(0)
    stats = {k: float(result.extra[k]) for k in _IS_KEYS}
    chain_states = getattr(trained.history, "samples", None)
    if not resample and chain_states is not None:  # MCMC draws: masses fixed by the accept steps
        samples = chain_states.detach().to(proposal)
        stats.update(_bridge_stats(target, trained, samples, result.log_weights))
    return MethodRun(
        method=method,
        kind="is" if resample else "flow",
        samples=samples,
        wall_time=trained.wall_time + float(result.wall_time),
        grad_evals=trained.grad_evals,
        log_prob_evals=int(result.num_log_prob_evals),
        proposal=proposal,
        log_weights=result.log_weights.detach() if result.log_weights is not None else None,
        stats=stats,
        history=trained.history,
        result=result,
        settings=f"{trained.settings.describe()}; {num_samples} draws",
    )


def run_ais(
    method: str,
    target: Target,
    settings: TargetSettings,
    *,
    trained: TrainedFlow | None,
    seed: int,
    progress: bool,
) -> MethodRun:
    r"""Annealed importance sampling (:func:`~pyro_flows.infer.annealed_importance_sampling`,
    budget ``settings.ais``) from ``trained.base_flow``, or from a standard Normal when
    ``trained`` is ``None``, to :math:`\tilde p` along :math:`q^{1-\beta}\tilde p^\beta`;
    charged the flow's training when one is used. On a box target AIS runs on
    ``target.unconstrained()`` from the flow before its push onto the box (as NeuTra) and the
    particles are mapped back; :math:`\log Z` is the same.

    Example: see :func:`~pyro_flows.compare.methods.run_method`.

    References: Neal, Statistics and Computing 2001.
    """
    density = target.unconstrained()
    proposal = None if trained is None else trained.base_flow
    result = annealed_importance_sampling(
        density, proposal, **settings.ais.kwargs(), progress=progress, seed=seed,
        warn=False,  # the report flags k-hat > 0.7 itself
    )
    particles = result.samples.detach()
    if _boxed(target):
        particles = density.to_support(particles.to(torch.float64))  # type: ignore[attr-defined]
    lw = result.log_weights.detach()
    g = torch.Generator().manual_seed(seed)
    index = systematic_resample(lw, lw.numel(), g)
    training_time = 0.0 if trained is None else trained.wall_time
    training_grads = 0 if trained is None else trained.grad_evals
    source = "a standard Normal" if trained is None else "the trained flow"
    return MethodRun(
        method=method,
        kind="ais",
        samples=particles[index].unsqueeze(0),
        wall_time=training_time + float(result.wall_time),
        grad_evals=training_grads + int(result.num_grad_evals),
        log_prob_evals=int(result.num_log_prob_evals),
        proposal=particles,
        log_weights=lw,
        stats={
            "log_Z_hat": float(result.log_Z),
            "log_Z_stderr": float(result.log_Z_stderr),
            "ess": float(result.ess),
            "ess_fraction": float(result.ess_fraction),
            "khat": float(result.khat),
        },
        history=None if trained is None else trained.history,
        result=result,
        settings=f"{settings.ais.describe()} from {source}",
    )


def run_chains(
    method: str,
    target: Target,
    settings: TargetSettings,
    *,
    trained: TrainedFlow | None,
    seed: int,
    progress: bool,
    sampler: Callable[..., SampleResult],
) -> MethodRun:
    r"""Run ``sampler`` (:func:`~pyro_flows.infer.nuts`,
    :func:`~pyro_flows.infer.random_walk_metropolis` or :func:`~pyro_flows.infer.mala`) with the
    budget ``settings.sampler(method)`` on :math:`\mathbb R^D` (``target.unconstrained()``;
    a box target's chains start at :func:`box_starts`) and map the draws back; ``trained`` is
    not used. The registry binds ``sampler`` (``functools.partial``).

    Example: see the module docstring.

    References: Hoffman & Gelman, JMLR 2014; Roberts & Tweedie, Bernoulli 1996.
    """
    budget = settings.sampler(method)
    mcmc_target = target.unconstrained()
    kwargs: dict[str, Any] = dict(budget.kwargs(), progress=progress, seed=seed)
    if _boxed(target):
        kwargs["init"] = box_starts(target, budget.num_chains, seed)
    return _mcmc_run(method, sampler(mcmc_target, **kwargs), target, settings=budget.describe())


def run_neutra(
    method: str,
    target: Target,
    settings: TargetSettings,
    *,
    trained: TrainedFlow | None,
    seed: int,
    progress: bool,
) -> MethodRun:
    r"""NeuTra (:func:`~pyro_flows.infer.neutra`): NUTS with the budget
    ``settings.sampler(method)`` in the base space of ``trained.base_flow`` (before the push
    onto a box), on the density :math:`\tilde p(f(\varepsilon))|\det J_f(\varepsilon)|`;
    charged the flow's training too.

    Example: see :func:`~pyro_flows.compare.methods.run_method`.

    References: Hoffman et al., 2019 (see the module docstring).
    """
    budget = settings.sampler(method)
    kwargs: dict[str, Any] = dict(budget.kwargs(), progress=progress, seed=seed)
    assert trained is not None
    result = neutra(
        trained.base_flow,
        target.unconstrained(),
        training_grad_evals=trained.grad_evals,
        **kwargs,
    )
    return _mcmc_run(
        method,
        result,
        target,
        settings=f"{budget.describe()} in the base space of the trained flow",
        wall_time=trained.wall_time + result.wall_time,
        history=trained.history,
    )


def run_flow_draws(
    method: str,
    target: Target,
    settings: TargetSettings,
    *,
    trained: TrainedFlow | None,
    seed: int,
    progress: bool,
) -> MethodRun:
    r"""A flow row: ``settings.flow_samples`` fresh draws :math:`x_i \sim q` of ``trained.flow``,
    unweighted, with their importance weights :math:`w_i = \tilde p(x_i)/q(x_i)` and statistics
    (``progress`` is not used).

    Example: see :func:`~pyro_flows.compare.methods.run_method`.

    References: Owen, 2013, chapter 9.
    """
    assert trained is not None
    return _importance_run(method, target, trained, settings.flow_samples, seed, resample=False)


def run_importance(
    method: str,
    target: Target,
    settings: TargetSettings,
    *,
    trained: TrainedFlow | None,
    seed: int,
    progress: bool,
) -> MethodRun:
    r"""Importance sampling with ``trained.flow`` as the proposal: ``settings.is_samples``
    draws, resampled by their weights :math:`w_i = \tilde p(x_i)/q(x_i)`
    (:func:`~pyro_flows.infer.importance_sample`; ``progress`` is not used).

    Example: see :func:`~pyro_flows.compare.methods.run_method`.

    References: Owen, 2013, chapter 9.
    """
    assert trained is not None
    return _importance_run(method, target, trained, settings.is_samples, seed, resample=True)


def box_starts(target: Target, num_chains: int, seed: int = 0, radius: float = 1.0) -> Tensor:
    r"""Starting points on :math:`\mathbb R^D` for MCMC on a box target's unconstrained version.

    The target's ``initial_params()`` point :math:`z_0` is pulled a tenth of the way towards
    the box's centre :math:`c` (a mode found on the box's edge would map to
    :math:`T^{-1}(z_0) = \pm\infty`, or to :math:`-87` in float64), mapped by
    :math:`T^{-1}`, and jittered per chain,

    .. math::

        u^{(k)}_0 = T^{-1}\bigl(c + 0.9\,(z_0 - c)\bigr) + \xi^{(k)}, \qquad
        \xi^{(k)} \sim U(-r, r)^D,

    from a generator seeded by ``seed`` (Stan's convention of uniform starts, here around a
    good point).

    Example:

    >>> from pyro_flows.targets import get_target
    >>> u0 = box_starts(get_target("u3"), 4)
    >>> tuple(u0.shape), bool(u0.abs().max() < 5)
    ((4, 2), True)

    References: Stan Development Team, *Stan Reference Manual*, section "Initialization"
    (uniform starts on the unconstrained scale).
    """
    _check_target(target)
    check_positive_int(num_chains, "num_chains")
    _check_seed(seed)
    radius = check_positive_number(radius, "radius")
    transform = biject_to(target.support)
    z0 = target.initial_params()["z"].to(torch.float64)
    lo = transform(torch.full_like(z0, -40.0))
    hi = transform(torch.full_like(z0, 40.0))
    bounded = bool(torch.isfinite(hi - lo).all()) and float((hi - lo).max()) < 1e6
    centre = 0.5 * (lo + hi) if bounded else z0  # only a bounded box has a centre to pull to
    u0 = transform.inv(centre + 0.9 * (z0 - centre))
    g = torch.Generator().manual_seed(seed)
    xi = radius * (2.0 * torch.rand(num_chains, z0.shape[-1], generator=g, dtype=torch.float64) - 1)
    return (u0 + xi).to(torch.get_default_dtype())
