r"""The methods of ``pyro-flows compare``, each run on a target with its per-target budget: the
seven of the default set (:data:`METHODS`) and ``flow_mcmc``, run when named
(:data:`EXTRA_METHODS`).

=========  ===============================================================================
method     what runs
=========  ===============================================================================
flow       reverse-KL flow :math:`q` (:func:`~pyro_flows.infer.fit_target`), then fresh
           draws :math:`x_i \sim q` with their importance weights
           :math:`w_i = \tilde p(x_i)/q(x_i)`
flow_mcmc  the same flow and budget trained the mass-covering way,
           ``fit_target(method="flow_mcmc")`` (forward KL on tempered MALA chains that the flow
           helps to mix, started at every local maximum a search finds); its samples are the
           chains' post-burn-in states (``history.samples``), its log Z, ESS and k-hat come from
           the flow's draws and weights as for ``flow``
nuts       Pyro's NUTS on :math:`\log\tilde p` (:func:`~pyro_flows.infer.nuts`)
neutra     NUTS on the flow's pulled-back density :math:`\tilde p(f(\varepsilon))
           |\det J_f(\varepsilon)|`, draws mapped by :math:`f` (:func:`~pyro_flows.infer.neutra`)
mh         random-walk Metropolis, vectorised chains
           (:func:`~pyro_flows.infer.random_walk_metropolis`)
mala       Metropolis-adjusted Langevin, vectorised chains (:func:`~pyro_flows.infer.mala`)
is         importance sampling with the trained flow as the proposal, resampled
           (:func:`~pyro_flows.infer.importance_sample`)
ais        annealed importance sampling from the trained flow (a standard Normal when no
           flow-based method ran) to :math:`\tilde p` along :math:`q^{1-\beta}\tilde p^\beta`,
           one HMC move per temperature (:func:`~pyro_flows.infer.annealed_importance_sampling`):
           an estimate of :math:`\log Z` that IS from the flow cannot give when the flow
           misses a mode, and weighted particles
=========  ===============================================================================

``flow``, ``neutra`` and ``is`` share one trained flow; each of them is charged the training's
wall time and its ``steps * batch_size`` target gradients, so their costs compare honestly with
the samplers that need no training. ``flow_mcmc`` trains its own flow and is charged all of its
gradients, the mode search's and every chain's included (``history.grad_evals``: about
``5 x levels`` times reverse KL's per step, 20x in 2-D); it shares the ``flow`` row's code (one
function with the method as an argument). ``ais`` uses the shared flow when one was trained
(and is then charged its training too) and adds its own gradients, about ``particles x
temperatures x leapfrog steps``. A box target (U2-U4) is handled on :math:`\mathbb R^D`: the
flow is pushed onto the box with :func:`~pyro_flows.infer.onto_support`, the samplers run on
``target.unconstrained()`` (density :math:`\tilde p(T(u))|\det J_T(u)|`) and their draws are
mapped back by :math:`z = T(u)`; NeuTra uses the flow before the push, which approximates the
unconstrained target.

This module runs them (:func:`run_method`, :func:`run_methods`, :func:`flow_settings`); the
names and what each method needs are the registry's
(:mod:`~pyro_flows.compare.method_registry`: :data:`METHODS`, :data:`ALL_METHODS`, ...), the
runners are in :mod:`~pyro_flows.compare.method_runners` (:class:`MethodRun`,
:func:`box_starts`) and the flows in :mod:`~pyro_flows.compare.flow_training`
(:func:`train_flow`, :class:`TrainedFlow`); all of them are importable from here.

References:

- M. D. Hoffman, A. Gelman. *The No-U-Turn Sampler.* JMLR 15, 2014.
- M. Gabrié, G. M. Rotskoff, E. Vanden-Eijnden. *Adaptive Monte Carlo augmented with
  normalizing flows.* PNAS 119, 2022 (``flow_mcmc``). https://arxiv.org/abs/2105.12603
- M. D. Hoffman, P. Sountsov, J. V. Dillon, I. Langmore, D. Tran, S. Vasudevan.
  *NeuTra-lizing Bad Geometry in Hamiltonian Monte Carlo Using Neural Transport.* 2019.
  https://arxiv.org/abs/1903.03704
- G. O. Roberts, R. L. Tweedie. *Exponential convergence of Langevin distributions and their
  discrete approximations.* Bernoulli 2(4), 1996.
- A. B. Owen. *Monte Carlo theory, methods and examples*, 2013, chapter 9.
- R. M. Neal. *Annealed importance sampling.* Statistics and Computing 11, 125-139, 2001.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import replace

# the names of this module before it was split (registry, runners, flow training), and the
# samplers, flows and settings it imported, stay importable from it
from .._numbers import check_positive_number as check_positive_number
from .._validation import check_positive_int as check_positive_int
from ..flow import Flow as Flow
from ..infer import SampleResult as SampleResult
from ..infer import TargetFitHistory as TargetFitHistory
from ..infer import annealed_importance_sampling as annealed_importance_sampling
from ..infer import fit_target as fit_target
from ..infer import importance_sample as importance_sample
from ..infer import mala as mala
from ..infer import neutra as neutra
from ..infer import nuts as nuts
from ..infer import onto_support as onto_support
from ..infer import random_walk_metropolis as random_walk_metropolis
from ..infer import systematic_resample as systematic_resample
from ..targets import Target
from ._arguments import _check_seed, _check_settings, _check_target
from .flow_training import TrainedFlow, train_flow
from .method_registry import (
    ALL_METHODS,
    EXTRA_METHODS,
    FLOW_METHODS,
    FLOW_ROWS,
    METHOD_SPECS,
    METHODS,
    OPTIONAL_FLOW_METHODS,
    MethodSpec,
    parse_methods,
)
from .method_runners import MethodRun, box_starts
from .settings import FlowSettings, TargetSettings

__all__ = [
    "METHODS",
    "EXTRA_METHODS",
    "ALL_METHODS",
    "FLOW_METHODS",
    "FLOW_ROWS",
    "METHOD_SPECS",
    "OPTIONAL_FLOW_METHODS",
    "MethodRun",
    "MethodSpec",
    "TrainedFlow",
    "box_starts",
    "flow_settings",
    "parse_methods",
    "run_method",
    "run_methods",
    "train_flow",
]


def flow_settings(method: str, settings: TargetSettings) -> FlowSettings:
    r"""The :class:`~pyro_flows.compare.settings.FlowSettings` that train the flow of ``method``:
    ``settings.flow`` for the shared flow (``flow``, ``neutra``, ``is``, ``ais``), and for
    ``flow_mcmc`` the same flow, steps, batch and learning rate trained by
    ``fit_target(method="flow_mcmc")`` (``anneal`` does not apply there and is dropped).

    Example:

    >>> from pyro_flows.compare.settings import settings_for
    >>> s = settings_for("mixture", quick=True)
    >>> own = flow_settings("flow_mcmc", s)
    >>> own.method, own.anneal, own.steps == s.flow.steps, flow_settings("is", s) is s.flow
    ('flow_mcmc', None, True, True)

    References: Gabrié, Rotskoff & Vanden-Eijnden, PNAS 2022 (see the module docstring).
    """
    if method not in ALL_METHODS:
        raise ValueError(f"unknown method {method!r}; valid methods: {', '.join(ALL_METHODS)}")
    _check_settings(settings, TargetSettings)
    fit_method = FLOW_ROWS.get(method)
    if fit_method is None or fit_method == settings.flow.method:
        return settings.flow
    return replace(settings.flow, method=fit_method, anneal=None)


def run_method(
    method: str,
    target: Target,
    settings: TargetSettings,
    *,
    trained: TrainedFlow | None = None,
    seed: int = 0,
    progress: bool = True,
) -> MethodRun:
    r"""Run one method of :data:`ALL_METHODS` on ``target`` with the budget of ``settings``.

    The flow-based methods need ``trained`` (from :func:`train_flow`; ``ais`` uses it when
    given and starts from a standard Normal otherwise; ``flow_mcmc`` needs one trained by
    ``fit_target(method="flow_mcmc")``, ``train_flow(target, flow_settings("flow_mcmc",
    settings))``); the MCMC methods run on
    :math:`\mathbb R^D` (``target.unconstrained()`` for a box) and map their draws back. Every
    run is seeded by ``seed``.

    Example:

    >>> from pyro_flows.compare.settings import SamplerSettings, settings_for
    >>> from pyro_flows.targets import get_target
    >>> from dataclasses import replace
    >>> s = replace(settings_for("banana", quick=True), mh=SamplerSettings(100, 100, 2))
    >>> run = run_method("mh", get_target("banana"), s, progress=False)
    >>> run.kind, tuple(run.samples.shape), run.grad_evals
    ('mcmc', (2, 100, 2), 19264)

    References: see the module docstring.
    """
    if method not in ALL_METHODS:
        raise ValueError(f"unknown method {method!r}; valid methods: {', '.join(ALL_METHODS)}")
    _check_target(target)
    _check_settings(settings, TargetSettings)
    _check_seed(seed)
    if trained is not None and not isinstance(trained, TrainedFlow):
        raise TypeError(
            f"trained must be a TrainedFlow (from train_flow), got {type(trained).__name__}"
        )
    if (method in FLOW_METHODS or method in FLOW_ROWS) and trained is None:
        raise ValueError(f"method {method!r} needs the trained flow: pass trained=train_flow(...)")
    fit_method = FLOW_ROWS.get(method)
    if fit_method is not None and trained.history.method != fit_method:  # type: ignore[union-attr]
        raise ValueError(
            f"method {method!r} needs a flow trained by fit_target(method={fit_method!r}), got "
            f"one trained by {trained.history.method!r}: pass "  # type: ignore[union-attr]
            f"trained=train_flow(target, flow_settings({method!r}, settings))"
        )
    return METHOD_SPECS[method].run(
        method, target, settings, trained=trained, seed=seed, progress=progress
    )


def run_methods(
    target: Target,
    methods: Iterable[str],
    settings: TargetSettings,
    *,
    seed: int = 0,
    progress: bool = True,
    on_done: Callable[[MethodRun], None] | None = None,
) -> tuple[dict[str, MethodRun], TrainedFlow | None]:
    r"""Run ``methods`` on ``target`` in order, training the shared flow first when one of them
    needs it (``ais`` alone does not: it then anneals from a standard Normal), then
    ``flow_mcmc``'s own flow (:func:`flow_settings`); returns ``({method: MethodRun}, shared
    trained flow or None)`` (the training history of ``flow_mcmc``'s own flow is
    ``runs["flow_mcmc"].history``).

    Example:

    >>> from dataclasses import replace
    >>> from pyro_flows.compare.settings import SamplerSettings, settings_for
    >>> from pyro_flows.targets import get_target
    >>> s = replace(settings_for("banana", quick=True), mala=SamplerSettings(50, 50, 2))
    >>> runs, trained = run_methods(get_target("banana"), ["mala"], s, progress=False)
    >>> list(runs), trained is None
    (['mala'], True)

    References: see the module docstring.
    """
    names = parse_methods(methods)
    _check_target(target)
    _check_settings(settings, TargetSettings)
    if on_done is not None and not callable(on_done):
        raise TypeError(f"on_done must be callable or None, got {type(on_done).__name__}")
    trained = None
    if FLOW_METHODS.intersection(names):
        trained = train_flow(target, settings.flow, seed=seed, progress=progress)
    flows: dict[str, TrainedFlow | None] = {}
    for name in names:  # every flow first: a flow that cannot train fails before the samplers run
        own = flow_settings(name, settings)
        flows[name] = trained
        if name in FLOW_ROWS and (trained is None or own != settings.flow):
            flows[name] = train_flow(target, own, seed=seed, progress=progress)
    runs: dict[str, MethodRun] = {}
    for name in names:
        runs[name] = run_method(
            name, target, settings, trained=flows[name], seed=seed, progress=progress
        )
        if on_done is not None:
            on_done(runs[name])
    return runs, trained
