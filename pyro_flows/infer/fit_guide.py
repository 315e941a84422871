r"""``fit_guide``: the SVI loop users write by hand around a Pyro model and guide, done well.

For a model :math:`p(x, z)` and a guide :math:`q_\phi(z)` the loop maximises the evidence lower
bound (Ranganath et al., 2014; Kingma & Welling, 2014)

.. math::

    \mathrm{ELBO}(\phi) = \mathbb E_{q_\phi}\big[\log p(x, z) - \log q_\phi(z)\big]
        = \log p(x) - \mathrm{KL}\big(q_\phi(z) \,\|\, p(z \mid x)\big) \le \log p(x),

estimated with :math:`S` reparametrised draws per step (``num_particles``, one vectorised run
of model and guide); ``loss="iwae"`` maximises the tighter importance-weighted bound
:math:`\mathbb E\,\log \frac1S\sum_s p(x, z_s)/q_\phi(z_s)` instead. It adds to
``svi.step`` in a ``for`` loop: a learning-rate decay, gradient clipping, steps with a NaN/inf
loss or gradient refused (and the last good guide kept), a stop when the ELBO no longer
improves beyond its noise, a time limit, checkpoints that resume exactly, progress, and a final
Pareto-smoothed importance-sampling check of the fitted guide. (The loss and the steps are
``pyro_flows.infer._guide_loop``, the training state and its checkpoints
``pyro_flows.infer._guide_state``.)

Example (the result's fields):

>>> import pyro, pyro.distributions as dist
>>> from pyro.infer.autoguide import AutoNormal
>>> def model():
...     pyro.sample("z", dist.Normal(0.0, 1.0))
>>> pyro.clear_param_store()
>>> result = fit_guide(model, AutoNormal(model), steps=50, progress=False, seed=0,
...                    khat_samples=0)
>>> result.steps, result.stopped, len(result.elbo), result.khat
(50, 'completed', 50, None)

References:

- R. Ranganath, S. Gerrish, D. M. Blei. *Black Box Variational Inference.* AISTATS 2014.
- D. P. Kingma, M. Welling. *Auto-Encoding Variational Bayes.* ICLR 2014.
- Y. Yao, A. Vehtari, D. Simpson, A. Gelman. *Yes, but Did It Work?: Evaluating Variational
  Inference.* ICML 2018. https://arxiv.org/abs/1802.02538
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pyro

# ``X as X``: names this module has always offered that the step loop (``_guide_loop``) uses now
from .._progress import progress_bar as progress_bar
from ..threads import accepts_threads
from ._checkpoint import rng_state, set_rng_state
from ._elbo_convergence import SCHEDULES, PlateauRule, default_window
from ._elbo_convergence import learning_rate as learning_rate
from ._guide_loop import PARTICLES_LOOP, PARTICLES_ONE_CALL, GuideLoss, GuideSteps, note
from ._guide_state import GuideTraining, guide_buffers
from ._guide_state import checkpoint_exists as checkpoint_exists
from ._loop import resuming
from ._steps import _shown, check_int, check_number, check_training_options
from ._steps import gradient_norm as gradient_norm
from ._vmapped_model import vmapped_importance_check
from .defensive_draws import defensive_check, supports_defensive_draws
from .guide_check import KHAT_RELIABLE, GuideCheck, guide_importance_check
from .guide_flag import judge_guide

__all__ = ["GuideFitResult", "fit_guide"]

#: ``loss=`` names and the Pyro ELBO each builds
LOSSES = ("elbo", "mean_field", "iwae")
#: consecutive refused (NaN/inf) steps after which training stops
MAX_NONFINITE = 5
#: the PSIS k-hat above which the guide is flagged as unreliable (Vehtari et al.)
KHAT_BAD = KHAT_RELIABLE  # the one threshold, shared with the moment check


@dataclass
class GuideFitResult:
    """What :func:`fit_guide` did.

    :ivar elbo: per optimiser step, the ELBO estimate (the IWAE bound for ``loss="iwae"``), in
        nats; higher is better.
    :ivar lr: per step, the learning rate used.
    :ivar seconds: training wall time (the k-hat check excluded).
    :ivar stopped: ``"completed"`` (all steps), ``"converged"`` (plateau test, after the
        cool-down), ``"max_time"``, ``"non-finite"`` (too many NaN/inf steps in a row; the
        guide holds its last good parameters) or ``"callback"``.
    :ivar converged_at: the step at which the plateau test fired (``None``: it did not).
    :ivar skipped_steps: steps refused for a NaN/inf loss or gradient (not in ``elbo``).
    :ivar vectorized: whether the particles ran vectorised (``False`` after a fall-back).
    :ivar particle_mode: how they ran: ``"vectorised"`` (one model call), ``"vmap"`` (the model
        once per particle under ``torch.func.vmap``, for a model that does not broadcast over
        them) or ``"loop"`` (a Python loop over them).
    :ivar num_particles: the particles per step the run used (the default's choice, or the
        value passed).
    :ivar khat: PSIS :math:`\\hat k` of the fitted guide against the model, or ``None``.
    :ivar khat_note: why ``khat`` is ``None``, or what a ``khat`` of ``-inf`` means (log
        ratios equal up to rounding); ``None`` otherwise.
    :ivar check: the :class:`~pyro_flows.infer.guide_check.GuideCheck` the k-hat came from
        (the guide's moments against the importance-weighted ones), or ``None``.
    :ivar defensive_check: for an :class:`~pyro_flows.infer.AutoFlow` guide, the defensive
        check (:func:`~pyro_flows.infer.defensive_draws.defensive_importance_check`: the guide's
        moments against those weighted over draws of the guide and of its widened twin), from
        draws separate from ``check``'s; ``None`` for other guides or without a check.
    :ivar flag: ``None`` when the final check found nothing wrong, else which rule of
        :func:`~pyro_flows.infer.guide_flag.judge_guide` fired (``"khat"``, ``"tails"`` or
        ``"moments"``); a ``UserWarning`` said so.
    :ivar warnings: everything the run warned about, as text.
    """

    elbo: list[float] = field(default_factory=list)
    lr: list[float] = field(default_factory=list)
    seconds: float = 0.0
    stopped: str = "completed"
    converged_at: int | None = None
    skipped_steps: int = 0
    vectorized: bool = True
    particle_mode: str = "vectorised"
    num_particles: int = 0
    khat: float | None = None
    khat_note: str | None = None
    check: GuideCheck | None = None
    defensive_check: GuideCheck | None = None
    flag: str | None = None
    warnings: list[str] = field(default_factory=list)

    @property
    def steps(self) -> int:
        """Optimiser steps taken."""
        return len(self.elbo)

    @property
    def losses(self) -> list[float]:
        """Per step, Pyro's loss :math:`-\\mathrm{ELBO}` (what ``SVI.step`` returns)."""
        return [-e for e in self.elbo]

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


# -- pieces -------------------------------------------------------------------------------------
def _check_options(model: object, guide: object, *, loss: object, lr_end: object,
                   schedule: object, vectorize_particles: object, max_plate_nesting: object,
                   converge: object, window: object, min_steps: object, tolerance: object,
                   polish: object, long_polish: object, khat_samples: object,
                   progress: object, seed: object, **options: Any) -> None:
    """Every option checked before anything happens (``TypeError``/``ValueError`` naming the
    argument and the value); ``options`` are those of
    :func:`~pyro_flows.infer._steps.check_training_options`."""
    for name, value in (("model", model), ("guide", guide)):
        if not callable(value):
            raise TypeError(f"{name} must be a callable Pyro program, got {_shown(value)}")
    if loss not in LOSSES:
        raise ValueError(f"loss must be one of {LOSSES}, got {loss!r}")
    if schedule not in SCHEDULES:
        raise ValueError(f"schedule must be one of {SCHEDULES}, got {schedule!r}")
    check_number(lr_end, "lr_end")
    for name, value in (("vectorize_particles", vectorize_particles), ("converge", converge),
                        ("polish", polish), ("long_polish", long_polish),
                        ("progress", progress)):
        if not isinstance(value, bool):
            raise TypeError(f"{name} must be True or False, got {_shown(value)}")
    check_int(max_plate_nesting, "max_plate_nesting", 0, optional="found by tracing the model")
    check_int(window, "window", 2, optional="steps / 100, clamped to [50, 250]")
    check_int(min_steps, "min_steps", 0, optional="a 25th of the steps")
    check_number(tolerance, "tolerance", positive=False)
    check_int(khat_samples, "khat_samples", 0)
    if 0 < khat_samples < 10:  # type: ignore[operator]
        raise ValueError(f"khat_samples must be 0 (no check) or >= 10, got {khat_samples}")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise TypeError(f"seed must be None (leave the RNG as it is) or an int, got {_shown(seed)}")
    if seed is not None and not 0 <= seed < 2**32:  # pyro.set_rng_seed seeds numpy's RNG too
        raise ValueError(f"seed must be None (leave the RNG as it is) or an int in "
                         f"[0, 2**32 - 1], got {seed}")
    check_training_options(seed=0 if seed is None else seed, **options)


def _khat(model: Callable, guide: Callable, args: tuple, kwargs: dict, result: GuideFitResult,
          khat_samples: int, max_plate_nesting: int) -> None:
    if khat_samples == 0:
        result.khat_note = "not computed (khat_samples=0)"
        return
    try:
        if result.particle_mode == "vmap":  # the model once per draw, as in training
            check = vmapped_importance_check(
                model, guide, *args, num_samples=khat_samples,
                max_plate_nesting=max_plate_nesting, **kwargs,
            )
        else:
            check = guide_importance_check(
                model, guide, *args, num_samples=khat_samples,
                max_plate_nesting=max_plate_nesting, batch_size=512,
                vectorize=result.vectorized, **kwargs,
            )
    except Exception as err:  # a diagnostic must not lose the fit: report why instead
        result.khat_note = f"k-hat could not be computed ({type(err).__name__}: {err})"
        note(result, f"fit_guide: {result.khat_note}")
        return
    k = float(check.khat)
    result.check, result.khat = check, k
    if k == -math.inf:  # the Pareto fit met ratios that are all equal up to rounding
        result.khat_note = (
            "k-hat is -inf: the log importance ratios are equal up to floating-point rounding "
            "(a guide as close to the posterior as the log densities' precision can tell; with "
            "a log density of about -2e4 float32 resolves only 0.002 nats); ESS "
            f"{check.ess:.0f} of {check.num_samples}"
        )
    result.defensive_check = _defensive(model, guide, args, kwargs, result, khat_samples,
                                        max_plate_nesting)
    verdict = judge_guide(check, result.defensive_check)
    result.flag = verdict.flag
    if verdict.message is not None:
        note(result, f"fit_guide: {verdict.message}",
             UserWarning if verdict.flag is not None else None, stacklevel=4)


def _defensive(model: Callable, guide: Callable, args: tuple, kwargs: dict,
               result: GuideFitResult, khat_samples: int,
               max_plate_nesting: int) -> GuideCheck | None:
    """The defensive check of an AutoFlow guide (``khat_samples // 2`` draws per component),
    from draws of its own: the RNG states are put back afterwards, so ``khat``, ``check`` and
    whatever the caller draws next are as without it. ``None`` for other guides, a loop over
    draws, or a failure (noted)."""
    if result.particle_mode == "loop" or not supports_defensive_draws(guide):
        return None
    state = rng_state()
    try:
        return defensive_check(
            model, guide, args, kwargs, max(10, khat_samples // 2),
            max_plate_nesting=max_plate_nesting, batch_size=512,
            vmapped=result.particle_mode == "vmap",
        )
    except Exception as err:  # a diagnostic must not lose the fit: report why instead
        note(result, f"fit_guide: the defensive check could not be computed "
                     f"({type(err).__name__}: {err}); the plain check decides")
        return None
    finally:
        set_rng_state(state)


# -- the loop -----------------------------------------------------------------------------------
@accepts_threads
def fit_guide(
    model: Callable,
    guide: Callable,
    *args: Any,
    steps: int = 5000,
    lr: float = 1e-2,
    lr_end: float = 1e-3,
    schedule: str = "geometric",
    num_particles: int | None = None,
    vectorize_particles: bool = True,
    max_plate_nesting: int | None = None,
    loss: str = "elbo",
    clip_grad_norm: float | None = 10.0,
    converge: bool = True,
    window: int | None = None,
    min_steps: int | None = None,
    tolerance: float = 1.0,
    polish: bool = True,
    long_polish: bool = False,
    max_time: float | None = None,
    checkpoint: str | os.PathLike | None = None,
    checkpoint_every: int = 500,
    resume: bool = False,
    progress: bool = True,
    seed: int | None = None,
    callback: Callable[[int, GuideFitResult], Any] | None = None,
    khat_samples: int = 4000,
    threads: int | None = None,
    **kwargs: Any,
) -> GuideFitResult:
    r"""Fit a Pyro ``guide`` to a ``model`` by stochastic variational inference.

    ``args`` and ``kwargs`` go to both ``model`` and ``guide`` on every call (as with
    ``svi.step(*args, **kwargs)``); the keyword names below are ``fit_guide``'s own. Works with
    any guide whose parameters live in Pyro's param store: Pyro's autoguides (``AutoNormal``,
    ``AutoMultivariateNormal``, ``AutoIAFNormal``, ...), :class:`~pyro_flows.infer.AutoFlow`,
    or hand-written guides with ``pyro.param``/``pyro.module``. As in ``SVI``, every parameter
    met while computing the loss is trained (a ``pyro.param`` of the model too), and the
    parameters stay in the param store (call ``pyro.clear_param_store()`` before fitting a new
    guide whose parameter names an earlier one used).

    **Loss.** With ``loss="elbo"`` (Pyro's ``Trace_ELBO``), ``"mean_field"``
    (``TraceMeanField_ELBO``, analytic KL terms where known) or ``"iwae"`` (``RenyiELBO`` with
    :math:`\alpha = 0`), estimated from ``num_particles`` draws :math:`z_s \sim q_\phi`,

    .. math::

        \widehat{\mathrm{ELBO}} = \frac1S \sum_{s=1}^S \log\frac{p(x, z_s)}{q_\phi(z_s)},
        \qquad
        \widehat{\mathrm{IWAE}} = \log \frac1S \sum_{s=1}^S \frac{p(x, z_s)}{q_\phi(z_s)}.

    The particles run as one vectorised model call (``vectorize_particles=True``,
    ``max_plate_nesting`` found by tracing model and guide once). If the first vectorised call
    fails (a model whose shapes do not broadcast over an extra particle dimension), or runs but
    gives a site more batch dims than the plates and the particles (``b @ X.T`` for a
    coefficient ``b`` of shape ``(S, 1, D)``: the observation plate broadcasts the particles
    into one another, and the ELBO would be that of :math:`S` copies of the data, sds
    :math:`1/\sqrt S` of the posterior's, silently; :mod:`~pyro_flows.infer._particle_dims`),
    the particles run with the model called once per particle under ``torch.func.vmap``
    (:mod:`~pyro_flows.infer._vmapped_model`: the model sees one particle's latents, as in a
    loop, at about the cost of one vectorised call; ``X @ beta`` regressions run this way), or,
    where ``vmap`` cannot run the model (it branches on a
    latent's value, subsamples) or for ``loss="mean_field"``, in a Python loop. The loop says
    which in ``result.warnings`` (and ``warnings.warn``), sets ``result.vectorized = False``
    and ``result.particle_mode`` (``"vmap"`` or ``"loop"``); if the loop fails as well, its
    error is raised. The final check (and, for AutoFlow, its defensive draws) runs the same
    way (without the defensive draws after a loop).

    **Particles.** By default :data:`PARTICLES_ONE_CALL` = 32 draws per step when they run in
    one call (vectorised or under ``vmap``), where more draws cost little (the step of a small
    model is bound by op dispatch, not arithmetic), and :data:`PARTICLES_LOOP` = 8 in a loop
    (each draw a model run). With 8 draws in one call the gradient noise left hierarchical
    scales too narrow: on fresh 30-group hierarchical models (centred and non-centred, seeds
    0 and 1) :math:`\tau`'s sd came out 0.77-0.90 of a 4000-draw NUTS reference, with 32
    draws 0.90-0.94; on posteriordb's 13 non-ODE posteriors the wall time stayed within the
    noise of the 8-draw runs (4.5-9.5 s), on its Lotka-Volterra ODE it rose from 93 to
    123 s (``benchmarks/posteriordb.py``, seed 0, one thread).

    **Optimiser and schedule.** Adam on all the parameters (created by the first loss call),
    global gradient norm clipped to ``clip_grad_norm``, learning rate falling from ``lr`` to
    ``lr_end`` over ``steps``, geometrically (default) or along a cosine:

    .. math::

        \eta_t = \eta_0 (\eta_1/\eta_0)^{t/T}, \qquad
        \eta_t = \eta_1 + \tfrac12 (\eta_0 - \eta_1)(1 + \cos \pi t/T).

    **Non-finite steps.** A step whose loss or global gradient norm (the one clipping computes)
    is NaN/inf, or whose model or guide rejects NaN parameters, is not applied. After
    :data:`MAX_NONFINITE` such steps in a row the guide is put back to the last parameters at
    which the loss and gradient were finite, ``stopped = "non-finite"`` and a ``RuntimeWarning``
    says so, naming the sites whose log density is not finite at a draw of that guide (an
    observed site with its count of NaN/inf entries: NaN in the data is the usual cause when
    no step could be taken) or, when every site is finite there, suggesting a lower ``lr``;
    isolated refused steps are counted in ``skipped_steps``.

    **Convergence** (``converge=True``). Cut the per-step ELBO into windows of :math:`W`
    steps (``window``; default ``steps/100`` clamped to [50, 250]), with means :math:`m_j` and
    variances :math:`v_j`. Window :math:`j` is *flat* when its gain over the window
    :math:`P_j = \max(3, \lfloor j/4 \rfloor)` windows earlier (a quarter of the history) is
    below ``tolerance`` :math:`=\kappa` standard errors,

    .. math::

        m_j - m_{j-P_j} < \kappa \sqrt{(v_j + v_{j-P_j}) / W};

    after three flat windows in a row (and at least ``min_steps`` steps, default a 25th of
    ``steps``) the remaining schedule is compressed into a cool-down of :math:`2W` steps (with
    ``long_polish``, :math:`\max(2W, s)` steps for a guide that is polished, below; :math:`s`
    is the step the test fired at), in which the learning rate falls geometrically to
    ``lr_end``; then training stops with ``stopped = "converged"`` (``converged_at`` is
    :math:`s`). An ELBO still
    rising by more than about :math:`(\kappa + 2)/P_j` standard errors per window is not stopped
    (see :mod:`pyro_flows.infer._elbo_convergence`). The test judges the objective, not the
    parameters: where the objective is nearly flat along some parameters (IWAE's bound once it
    is tight; a posterior scale a few percent off costs only thousandths of a nat) training
    may stop while they still drift; pass ``converge=False`` (or a larger ``min_steps``) when
    they matter.

    **Polish** (``polish=True``, the default). Once the ELBO is flat, what is left is the
    iterates' jitter about the optimum (Adam moves every parameter by about the learning rate
    per step, and a flow's many weights move its means by several times that). In the
    cool-down a guide with a ``path_gradient`` switch (:class:`~pyro_flows.infer.AutoFlow`)
    takes path-only gradients (Roeder et al., 2017): the same ELBO, an unbiased gradient whose
    variance vanishes where the guide equals the posterior, so the iterates settle; the switch
    is put back afterwards. It costs an inverse pass per cool-down step (about 3 times a
    step on a 10-D posterior). With ``long_polish=True`` the polished cool-down lasts as many
    steps as the run to the plateau took: path-only gradients keep improving the fit in
    directions the plateau test cannot see (near the optimum the ordinary gradient's noise,
    its score term, swamps the small mean gradient of such directions, so the ELBO looks flat
    while the fit still drifts towards the posterior). On a banana
    (:math:`x_2 \mid x_1 \sim \mathcal N(x_1^2/2, 0.5^2)`, seeds 0 and 1) the :math:`2W`
    cool-down stopped at 1100 steps with sd ratios 0.70-0.84 and a KL of 0.04-0.06 nats; 5000
    ordinary steps reached 0.96-0.99, 1000 more ordinary steps 0.87-0.96, and a 1000-step
    polish 0.98-0.99 and 0.89-0.96 (KL 0.003 and 0.013). It is off by default: it roughly
    doubles the training time (a path-only step costs 1.7-2.8 times an ordinary one on
    posteriordb's 3- to 10-D posteriors), and where the flow family cannot hold the posterior
    the better optimum can have worse moments (posteriordb's HMM, seed 0, 40,000 draws: ELBO
    +0.018 nats, largest sd ratio 1.07 -> 1.11; eight schools non-centred: +0.034 nats,
    :math:`\tau`'s sd 1.10 -> 1.14). Re-measured with the 32-draw default (one
    thread, ``benchmarks/guide_flags.py`` and ``benchmarks/posteriordb.py --guides AutoFlow
    --no-nuts``, seed 0): on the fresh problems (seeds 0 and 1) the long polish met the
    targets on 18 of 20 fits against 16 (the banana at both seeds; the funnel still misses,
    flagged) with no false flag against two, at 1.5 times the time; on posteriordb it
    changed no verdict but one_comp's (sds 0.80-1.08 -> 0.99-1.35, flagged either way) and
    took 1.2-3 times as long (lotka_volterra 129 -> 274 s). Running it only when the check
    flags the fit was tried and dropped: the longer fits lowered k-hat more than they fixed
    the moments, so misses that had been flagged went silent (banana seed 1, funnel seed 2).
    Measured on posteriordb's eight regressions
    (:mod:`pyro_flows.targets.posteriordb`, seed 0): with the 50-step window and no polish,
    AutoFlow's worst mean error reached 0.13 reference sd (kidiq interaction); with it, at
    most 0.043 (seeds 0 and 1), in a third to a half of the steps of the earlier default
    (window ``steps/50``, a tenth of the steps before a stop). Pyro's guides have no such
    switch: ``polish`` leaves them alone.

    **The k-hat check** (Yao et al., 2018). After training, ``khat_samples`` draws
    :math:`z_i \sim q` give the log ratios :math:`\log p(x, z_i) - \log q(z_i)`, whose tail is
    fitted by a generalised Pareto distribution (PSIS; Vehtari et al., 2015/2024): :math:`\hat k
    < 0.5` good, :math:`0.5`-:math:`0.7` usable, :math:`\hat k > 0.7` means the guide misses
    posterior mass (``result.khat``). From the same draws the guide's means and sds are compared
    with the PSIS-weighted ones (:mod:`~pyro_flows.infer.guide_check`, ``result.check``): where
    :math:`\hat k \le 0.7` the weights can be trusted, and a mean more than 0.1 sd or an sd more
    than 10 % away from them says the guide is off (this sees a guide that is too *wide*, which
    :math:`\hat k` cannot). For an :class:`~pyro_flows.infer.AutoFlow` guide a *defensive*
    check follows, from draws of its own (``khat_samples // 2`` of the guide and as many of the
    guide with its base widened twofold, weighted against the mixture;
    :mod:`~pyro_flows.infer.defensive_draws`, ``result.defensive_check``; the RNG states are
    put back afterwards, so ``khat``, ``check`` and later draws are as without it): it sees
    posterior mass that the guide's own draws never reach (tails too light with a small
    :math:`\hat k`), and it confirms the moments of a guide whose plain :math:`\hat k` exceeds
    0.7 only because of a few large ratios. The rule
    (:func:`~pyro_flows.infer.guide_flag.judge_guide`): a ``UserWarning`` naming what failed
    when :math:`\hat k > 0.7` and the defensive check does not confirm the moments
    (``result.flag = "khat"``), when the defensive weights are themselves unreliable
    (``"tails"``), or when the moments disagree (``"moments"``; the defensive ones where there
    are, else the plain ones); otherwise ``result.flag`` is ``None``. Measured with the
    defaults (``AutoFlow(model)``) against the truth on posteriordb and fresh posteriors: see
    ``docs/guides.rst``. ``khat`` is ``None`` (with ``khat_note`` saying why) when
    ``khat_samples=0`` or the check fails.

    :param model: a Pyro model.
    :param guide: a Pyro guide for it.
    :param args: positional arguments of model and guide.
    :param steps: the most optimiser steps (the schedule's length).
    :param lr: the initial Adam learning rate.
    :param lr_end: the final learning rate.
    :param schedule: ``"geometric"`` or ``"cosine"``.
    :param num_particles: draws per ELBO estimate (default: :data:`PARTICLES_ONE_CALL` when
        they run in one call, vectorised or under ``vmap``, :data:`PARTICLES_LOOP` when they
        run in a loop; the choice is in ``result.num_particles``).
    :param vectorize_particles: run the draws as one vectorised call (with the fall-back).
    :param max_plate_nesting: the model's plate depth (default: found by tracing once).
    :param loss: ``"elbo"``, ``"mean_field"`` or ``"iwae"``.
    :param clip_grad_norm: clip the global gradient norm to this (``None``: no clipping).
    :param converge: stop at a plateau of the ELBO (the rule above); ``False``: run all steps.
    :param window: the plateau test's window :math:`W` in steps.
    :param min_steps: no plateau stop before this many steps.
    :param tolerance: :math:`\kappa`, the gain in standard errors below which a window is flat.
    :param polish: path-only gradients in the cool-down for a guide that has a
        ``path_gradient`` switch (see above); ``False``: the ordinary gradient throughout.
    :param long_polish: a polished cool-down of :math:`\max(2W, s)` steps instead of
        :math:`2W` (see above): for posteriors whose last few percent of sd matter, such as a
        banana or a funnel, at about twice the training time.
    :param max_time: stop after this many seconds of training (``stopped = "max_time"``).
    :param checkpoint: file for the full training state (parameters by param-store name, the
        guide's buffers, Adam's state, RNG states, step and history), written atomically every
        ``checkpoint_every`` steps, at the end and on ``KeyboardInterrupt``.
    :param checkpoint_every: optimiser steps (not epochs) between checkpoints, a positive int.
    :param resume: continue from ``checkpoint`` (if it exists): the parameters and ELBO history
        equal those of an uninterrupted run. A checkpoint of another set-up (steps, lr, loss,
        particles, ...) or another guide architecture is refused with a ``ValueError`` before
        anything changes (the parameters and the RNG states are left as they were).
    :param progress: show progress with the ELBO averaged over the last window: a tqdm bar on
        a terminal or in a notebook, otherwise a line on stderr every ten seconds and at the
        end; ``False``: quiet.
    :param threads: run this call on that many CPU threads and restore torch's setting
        afterwards (:func:`~pyro_flows.threads.torch_threads`); ``None``: torch's setting.
        One thread is often faster for small models (see :mod:`pyro_flows.threads`).
    :param seed: seed Pyro's RNGs first (``None``: leave them as they are).
    :param callback: called as ``callback(step, result)`` after every step; a true return value
        stops training (``stopped = "callback"``).
    :param khat_samples: guide draws for the final k-hat check (0: skip it).
    :param kwargs: keyword arguments of model and guide.
    :returns: a :class:`GuideFitResult`.
    :raises TypeError, ValueError: an argument of the wrong type or out of range (named, with
        the value given), a guide without parameters, or a refused checkpoint.

    Example: a Normal mean with a known posterior, :math:`z \mid x \sim \mathcal N(\sum_i x_i
    / (n + 1), 1/(n + 1))`:

    >>> import pyro, pyro.distributions as dist, torch
    >>> from pyro.infer.autoguide import AutoNormal
    >>> from pyro_flows.infer import fit_guide
    >>> def model(x):
    ...     z = pyro.sample("z", dist.Normal(0.0, 1.0))
    ...     with pyro.plate("data", len(x)):
    ...         pyro.sample("x", dist.Normal(z, 1.0), obs=x)
    >>> x = torch.tensor([0.5, 1.5, 1.0])
    >>> pyro.clear_param_store()
    >>> guide = AutoNormal(model)
    >>> result = fit_guide(model, guide, x, steps=1500, progress=False, seed=0)
    >>> loc, scale = guide.locs.z.item(), guide.scales.z.item()
    >>> abs(loc - 0.75) < 0.05, abs(scale - 0.5) < 0.05, result.khat < 0.5
    (True, True, True)

    References:

    - R. Ranganath, S. Gerrish, D. M. Blei. *Black Box Variational Inference.* AISTATS 2014.
    - D. P. Kingma, M. Welling. *Auto-Encoding Variational Bayes.* ICLR 2014.
    - Y. Burda, R. Grosse, R. Salakhutdinov. *Importance Weighted Autoencoders.* ICLR 2016.
    - Y. Yao, A. Vehtari, D. Simpson, A. Gelman. *Yes, but Did It Work?: Evaluating
      Variational Inference.* ICML 2018. https://arxiv.org/abs/1802.02538
    - A. Vehtari, D. Simpson, A. Gelman, Y. Yao, J. Gabry. *Pareto Smoothed Importance
      Sampling.* arXiv 2015, JMLR 25, 2024. https://arxiv.org/abs/1507.02646
    - Pyro's SVI tutorial and ``pyro.infer.SVI``: https://pyro.ai/examples/svi_part_i.html;
      NumPyro's ``SVI.run``: https://num.pyro.ai/en/stable/svi.html
    """
    _check_options(
        model, guide, loss=loss, lr_end=lr_end, schedule=schedule,
        vectorize_particles=vectorize_particles, max_plate_nesting=max_plate_nesting,
        converge=converge, window=window, min_steps=min_steps, tolerance=tolerance,
        polish=polish, long_polish=long_polish, khat_samples=khat_samples, progress=progress,
        seed=seed, lr=lr,
        clip_grad_norm=clip_grad_norm, max_time=max_time, checkpoint=checkpoint, resume=resume,
        checkpoint_every=checkpoint_every, callback=callback, steps=steps,
    )
    check_int(num_particles, "num_particles", 1,
              optional=f"{PARTICLES_ONE_CALL} in one call, {PARTICLES_LOOP} in a loop")
    entry_rng = rng_state()
    if seed is not None:
        pyro.set_rng_seed(seed)
    if max_plate_nesting is None:
        from .diagnostics import _max_plate_nesting

        max_plate_nesting = _max_plate_nesting(model, guide, args, kwargs)
    result = GuideFitResult()
    loss_fn = GuideLoss(model, guide, args, kwargs, loss=loss, num_particles=num_particles,
                        max_plate_nesting=max_plate_nesting)
    first, params = loss_fn.first(vectorize_particles and num_particles != 1, result)
    num_particles = result.num_particles = loss_fn.num_particles
    window = default_window(steps) if window is None else window
    min_steps = steps // 25 if min_steps is None else min_steps
    run = GuideTraining(
        params, guide_buffers(guide), lr=lr, history=result, checkpoint=checkpoint,
        guide_name=type(guide).__name__,
        setup={
            "steps": steps, "lr": float(lr), "lr_end": float(lr_end), "schedule": schedule,
            "num_particles": num_particles, "loss": loss, "vectorized": result.vectorized,
            "clip_grad_norm": None if clip_grad_norm is None else float(clip_grad_norm),
            "converge": converge, "window": window, "min_steps": min_steps,
            "tolerance": float(tolerance), "polish": polish,
            # only when on, so that checkpoints written before the option existed still resume
            **({"long_polish": True} if long_polish else {}),
        },
    )
    step, pending = 0, first
    if resuming(resume, checkpoint):
        step, pending = _resume(run, entry_rng), None
    loop = GuideSteps(
        run, loss_fn, PlateauRule(window=window, sigmas=float(tolerance), min_steps=min_steps),
        step=step, pending=pending, steps=steps, lr=lr, lr_end=lr_end, schedule=schedule,
        cooldown=2 * window, clip_grad_norm=clip_grad_norm, converge=converge,
        max_nonfinite=MAX_NONFINITE, polish=polish and converge, long_polish=long_polish,
    )
    loop.run(progress=progress, checkpoint_every=checkpoint_every, callback=callback,
             max_time=max_time)
    result = run.history
    if result.stopped == "completed" and result.converged_at is not None:
        result.stopped = "converged"
    run.save(loop.step)
    _khat(model, guide, args, kwargs, result, khat_samples, max_plate_nesting)
    return result


def _resume(run: GuideTraining, entry_rng: dict[str, Any]) -> int:
    """Continue from the checkpoint (checked whole first); returns its step. A refused resume
    changes nothing: the RNG states go back to those at the call."""
    run.zero_grad()
    try:
        step = run.restore(GuideFitResult)
    except BaseException:
        set_rng_state(entry_rng)  # a refused resume changes nothing
        raise
    run.history.stopped = "completed"
    return step
