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
           helps to mix, started at every local maximum a search finds), then its draws and
           weights as for ``flow``
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

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from typing import Any

import torch
from torch import Tensor
from torch.distributions import biject_to, constraints

from .._numbers import check_positive_number
from .._validation import check_positive_int
from ..flow import Flow
from ..infer import (
    SampleResult,
    TargetFitHistory,
    annealed_importance_sampling,
    fit_target,
    importance_sample,
    mala,
    neutra,
    nuts,
    onto_support,
    random_walk_metropolis,
    systematic_resample,
)
from ..targets import Target
from .settings import FlowSettings, TargetSettings

__all__ = [
    "METHODS",
    "EXTRA_METHODS",
    "ALL_METHODS",
    "FLOW_METHODS",
    "FLOW_ROWS",
    "OPTIONAL_FLOW_METHODS",
    "MethodRun",
    "TrainedFlow",
    "box_starts",
    "flow_settings",
    "parse_methods",
    "run_method",
    "run_methods",
    "train_flow",
]

#: The default set, in the order of the table: what ``compare`` and the command line run when no
#: method is named (``ais`` costs 1-3 s on a 2-D target in ``--quick``).
METHODS: tuple[str, ...] = ("flow", "nuts", "neutra", "mh", "mala", "is", "ais")
#: The methods run only when named: ``flow_mcmc`` costs about 20x the gradients of the
#: reverse-KL flow and 1.7-2.7x its seconds (``--quick`` on mixture, u1, gmm40), and cannot train
#: where the mode search finds no local maximum to start its chains at (funnel, gaussian100:
#: ``ValueError``), so a default run of those targets would fail.
EXTRA_METHODS: tuple[str, ...] = ("flow_mcmc",)
#: Every name ``compare`` and the command line accept: the one registry of the names.
ALL_METHODS: tuple[str, ...] = METHODS + EXTRA_METHODS
#: The methods that need the shared trained flow (``settings.flow``, reverse KL by default).
FLOW_METHODS: frozenset[str] = frozenset({"flow", "neutra", "is"})
#: The rows whose draws are a trained flow's own, with the
#: :func:`~pyro_flows.infer.fit_target` method that trains it (``None``: ``settings.flow``'s,
#: the shared flow); ``flow_mcmc`` trains its own.
FLOW_ROWS: dict[str, str | None] = {"flow": None, "flow_mcmc": "flow_mcmc"}
#: The methods that use the trained flow when one is trained, and run without it otherwise.
OPTIONAL_FLOW_METHODS: frozenset[str] = frozenset({"ais"})


def parse_methods(methods: str | Iterable[str] | None) -> tuple[str, ...]:
    """Method names from ``"flow,nuts"`` or a sequence, checked, duplicates dropped, in the
    order given; ``None`` means the default set, :data:`METHODS` (the names of
    :data:`ALL_METHODS` are accepted).

    >>> parse_methods("nuts, neutra"), parse_methods(None) == METHODS
    (('nuts', 'neutra'), True)

    References: the method names of :mod:`pyro_flows.infer` (see the module docstring).
    """
    if methods is None:
        return METHODS
    if isinstance(methods, str):
        names = [m.strip().lower() for m in methods.split(",")]
    else:
        try:
            names = [str(m).strip().lower() for m in methods]
        except TypeError:
            raise TypeError(
                f"methods must be a comma-separated str or a sequence of names, got "
                f"{type(methods).__name__}"
            ) from None
    names = [m for m in names if m]
    if not names:
        raise ValueError(f"no method given; valid methods: {', '.join(ALL_METHODS)}")
    unknown = [m for m in names if m not in ALL_METHODS]
    if unknown:
        raise ValueError(
            f"unknown method(s) {', '.join(map(repr, unknown))}; valid methods: "
            f"{', '.join(ALL_METHODS)}"
        )
    return tuple(dict.fromkeys(names))


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


@dataclass
class TrainedFlow:
    r"""A flow fitted to a target by :func:`~pyro_flows.infer.fit_target`: by reverse KL (the
    default of ``settings.flow``) as ``flow``, ``neutra`` and ``is`` share it, or by
    ``method="flow_mcmc"`` for the ``flow_mcmc`` row.

    :ivar flow: the flow on the target's support (sampled and scored by ``flow`` and ``is``).
    :ivar base_flow: the same layers on :math:`\mathbb R^D` (before the push onto a box);
        ``flow`` itself for targets on :math:`\mathbb R^D`. NeuTra runs in its base space.
    :ivar history: the :class:`~pyro_flows.infer.TargetFitHistory` (ELBO per step, ...).
    :ivar wall_time: training seconds, flow construction included.
    :ivar settings: the :class:`~pyro_flows.compare.settings.FlowSettings` used.

    Its cost, charged to every method that uses it, is ``history.grad_evals`` target gradients
    (reverse KL: :math:`\texttt{steps} \times \texttt{batch\_size}`; ``flow_mcmc``: the mode
    search's and every chain's) and ``wall_time`` seconds.

    Example: see :func:`train_flow`.

    References: Rezende & Mohamed, ICML 2015; Hoffman et al., 2019.
    """

    flow: Flow
    base_flow: Flow
    history: TargetFitHistory
    wall_time: float
    settings: FlowSettings

    @property
    def grad_evals(self) -> int:
        """Target gradients spent on training (``history.grad_evals``; reverse KL:
        ``steps * batch_size``)."""
        return int(self.history.grad_evals)


def _boxed(target: Target) -> bool:
    return target.support is not constraints.real_vector


def _check_target(target: object) -> None:
    if not isinstance(target, Target):
        raise TypeError(
            "target must be a pyro_flows Target (e.g. pyro_flows.targets.get_target('banana')), "
            f"got {type(target).__name__} ({target!r})"
        )


def _check_seed(seed: object) -> None:
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"seed must be an int, got {type(seed).__name__} ({seed!r})")


def _check_settings(settings: object, kind: type) -> None:
    if not isinstance(settings, kind):
        raise TypeError(
            f"settings must be a {kind.__name__}, got {type(settings).__name__} ({settings!r})"
        )


def train_flow(
    target: Target, settings: FlowSettings, *, seed: int = 0, progress: bool = True
) -> TrainedFlow:
    r"""Build the flow of ``settings`` (weights from ``torch.manual_seed(seed)``) and fit it to
    ``target`` by ``settings.method``: reverse KL by default,

    .. math::

        \max_\theta\ \mathbb E_{q_\theta}[\log\tilde p(z) - \log q_\theta(z)],

    or forward KL on flow-assisted tempered chains (``"flow_mcmc"``, :func:`flow_settings`),
    pushing it onto the target's support first when that is a box.

    Example:

    >>> from pyro_flows.targets import get_target
    >>> s = FlowSettings("realnvp", {"num_transforms": 1, "hidden_dims": (8,)}, steps=5,
    ...                  batch_size=16)
    >>> trained = train_flow(get_target("u2"), s, progress=False)
    >>> trained.grad_evals, trained.flow is trained.base_flow
    (80, False)

    References: D. J. Rezende, S. Mohamed. *Variational Inference with Normalizing Flows.*
    ICML 2015.
    """
    _check_target(target)
    _check_settings(settings, FlowSettings)
    _check_seed(seed)
    start = time.perf_counter()
    torch.manual_seed(seed)
    base_flow = settings.build(target.dim)
    flow = onto_support(base_flow, target.support) if _boxed(target) else base_flow
    history = fit_target(
        flow,
        target,
        steps=settings.steps,
        batch_size=settings.batch_size,
        lr=settings.lr,
        anneal=settings.anneal,
        method=settings.method,
        eval_every=0,
        eval_samples=1024,
        progress=progress,
        seed=seed,
    )
    flow.eval()
    return TrainedFlow(flow, base_flow, history, time.perf_counter() - start, settings)


@dataclass
class MethodRun:
    r"""What one method produced on one target, in the target's own coordinates.

    :ivar method: one of :data:`ALL_METHODS`.
    :ivar kind: ``"mcmc"`` (nuts, neutra, mh, mala: chains of correlated draws), ``"flow"``
        (``flow``, ``flow_mcmc``: independent draws of :math:`q`, unweighted), ``"is"``
        (resampled importance draws) or ``"ais"`` (resampled AIS particles).
    :ivar samples: draws of shape ``(chains, draws, dim)`` (one chain for the flow rows,
        ``is`` and ``ais``).
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
        ``elbo`` for ``ais``.
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


def _importance_run(
    method: str, target: Target, trained: TrainedFlow, num_samples: int, seed: int
) -> MethodRun:
    """A flow row (``flow``, ``flow_mcmc``: the flow's own draws) or ``is`` (resampled)."""
    result = importance_sample(
        trained.flow, target, num_samples=num_samples, resample=method == "is", seed=seed
    )
    proposal = result.extra["proposal_samples"].detach()
    samples = result.samples.detach() if method == "is" else proposal.unsqueeze(0)
    return MethodRun(
        method=method,
        kind="is" if method == "is" else "flow",
        samples=samples,
        wall_time=trained.wall_time + float(result.wall_time),
        grad_evals=trained.grad_evals,
        log_prob_evals=int(result.num_log_prob_evals),
        proposal=proposal,
        log_weights=result.log_weights.detach() if result.log_weights is not None else None,
        stats={k: float(result.extra[k]) for k in _IS_KEYS},
        history=trained.history,
        result=result,
        settings=f"{trained.settings.describe()}; {num_samples} draws",
    )


def _ais_run(
    target: Target,
    settings: TargetSettings,
    trained: TrainedFlow | None,
    seed: int,
    progress: bool,
) -> MethodRun:
    r"""AIS on :math:`\mathbb R^D` (a box target: ``target.unconstrained()`` from the flow before
    its push onto the box, as NeuTra), particles mapped back; :math:`\log Z` is the same."""
    density = target.unconstrained()
    proposal = None if trained is None else trained.base_flow
    result = annealed_importance_sampling(
        density, proposal, **settings.ais.kwargs(), progress=progress, seed=seed
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
        method="ais",
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
    if method == "ais":
        return _ais_run(target, settings, trained, seed, progress)
    if method in FLOW_ROWS or method == "is":
        n = settings.is_samples if method == "is" else settings.flow_samples
        return _importance_run(method, target, trained, n, seed)  # type: ignore[arg-type]
    sampler = settings.sampler(method)
    mcmc_target = target.unconstrained()
    kwargs: dict[str, Any] = dict(sampler.kwargs(), progress=progress, seed=seed)
    if method == "neutra":
        assert trained is not None
        result = neutra(
            trained.base_flow,
            mcmc_target,
            training_grad_evals=trained.grad_evals,
            **kwargs,
        )
        return _mcmc_run(
            method,
            result,
            target,
            settings=f"{sampler.describe()} in the base space of the trained flow",
            wall_time=trained.wall_time + result.wall_time,
            history=trained.history,
        )
    runner: Callable[..., SampleResult] = {
        "nuts": nuts,
        "mh": random_walk_metropolis,
        "mala": mala,
    }[method]
    if _boxed(target):
        kwargs["init"] = box_starts(target, sampler.num_chains, seed)
    return _mcmc_run(method, runner(mcmc_target, **kwargs), target, settings=sampler.describe())


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
