r"""The loss and the step loop of :func:`~pyro_flows.infer.fit_guide.fit_guide`.

:class:`GuideLoss` is Pyro's ELBO (``Trace_ELBO``, ``TraceMeanField_ELBO`` or, for IWAE,
``RenyiELBO`` with :math:`\alpha = 0`) of ``model`` and ``guide``, with its gradients, on
:math:`S` particles run as one vectorised call when the model allows it (else a loop over
them). :class:`GuideSteps` takes the steps: the learning rate :math:`\eta_t` of the schedule
(compressed into a cool-down once the plateau test fires), a step refused when its loss or
global gradient norm :math:`\|g\|_2` (the one clipping computes) is NaN/inf, a stop after
``max_nonfinite`` refused steps in a row with the last good parameters back, and the stop rules
(cool-down done, callback, time limit), with progress and periodic checkpoints. With
``polish`` a guide with a ``path_gradient`` switch (:class:`~pyro_flows.infer.AutoFlow`) takes
path-only gradients in the cool-down (Roeder et al.'s "sticking the landing": unbiased, and with
a variance that vanishes where the guide equals the posterior, so the iterates settle instead of
jittering about the optimum).

References:

- G. Roeder, Y. Wu, D. Duvenaud. *Sticking the Landing: Simple, Lower-Variance Gradient
  Estimators for Variational Inference.* NeurIPS 2017. https://arxiv.org/abs/1703.09194
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pyro
import pyro.poutine as poutine
import torch
from torch import Tensor

from .._progress import progress_bar
from ._elbo_convergence import PlateauRule, learning_rate
from ._guide_state import GuideTraining
from ._loop import interruptible
from ._particle_dims import watch_particle_dims
from ._site_diagnosis import non_finite_sites
from ._steps import gradient_norm
from ._vmapped_model import VmappedELBO

#: ``fit_guide``'s default particles per step when they run in one call (vectorised, vmap)
PARTICLES_ONE_CALL = 32
#: ... and when they run in a loop over the particles (each one a model run)
PARTICLES_LOOP = 8


def note(result: Any, message: str, category: type[Warning] | None = None,
         stacklevel: int = 3) -> None:
    """Record ``message`` in ``result.warnings`` (and warn with ``category``; ``stacklevel``
    counts the frames up from this function, as for ``warnings.warn``)."""
    result.warnings.append(message)
    if category is not None:
        warnings.warn(message, category, stacklevel=stacklevel)


def make_elbo(loss: str, num_particles: int, vectorize: bool, max_plate_nesting: int) -> Any:
    """The Pyro ELBO that ``loss`` (``"elbo"``, ``"mean_field"`` or ``"iwae"``) names."""
    options = dict(
        num_particles=num_particles, vectorize_particles=vectorize,
        max_plate_nesting=max_plate_nesting,
    )
    if loss == "iwae":
        return pyro.infer.RenyiELBO(alpha=0.0, **options)
    if loss == "mean_field":
        return pyro.infer.TraceMeanField_ELBO(**options)
    return pyro.infer.Trace_ELBO(**options)


def _invalid_values(err: BaseException) -> bool:
    """A distribution's argument check failing on NaN/inf parameters (torch's message)."""
    return isinstance(err, ValueError) and "invalid values" in str(err)


def _drop_gradients(capture: Any) -> None:
    """Forget the gradients a discarded loss evaluation left on the parameters it met."""
    for site in capture.trace.nodes.values():
        if site["type"] == "param":
            site["value"].unconstrained().grad = None


class GuideLoss:
    """``-ELBO`` of ``model`` and ``guide`` on ``args``/``kwargs``, with its gradients."""

    def __init__(self, model: Callable, guide: Callable, args: tuple, kwargs: dict, *,
                 loss: str, num_particles: int | None, max_plate_nesting: int) -> None:
        self.model, self.guide, self.args, self.kwargs = model, guide, args, kwargs
        # ``None``: chosen by :meth:`first`, from how the particles run
        self.auto_particles = num_particles is None
        self.num_particles = PARTICLES_ONE_CALL if num_particles is None else num_particles
        self.loss = loss
        self.max_plate_nesting = max_plate_nesting
        self.elbo: Any = None

    def __call__(self) -> float:
        """One loss evaluation with its gradients; NaN for a model or guide that rejects
        non-finite parameters."""
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Encountered NaN")
            try:
                return float(
                    self.elbo.loss_and_grads(self.model, self.guide, *self.args, **self.kwargs)
                )
            except ValueError as err:
                if _invalid_values(err):
                    return math.nan
                raise

    def _traced(self, mode: str) -> tuple[float, Any]:
        """The first loss call with the particles run as ``mode``, traced for its parameters
        (a loop takes :data:`PARTICLES_LOOP` draws when the count was left to the default)."""
        if mode == "loop" and self.auto_particles:
            self.num_particles = PARTICLES_LOOP
        if mode == "vmap":
            self.elbo = VmappedELBO(self.num_particles, self.max_plate_nesting,
                                    iwae=self.loss == "iwae")
        else:
            self.elbo = make_elbo(self.loss, self.num_particles, mode == "vectorised",
                                  self.max_plate_nesting)
        with poutine.trace(param_only=True) as capture:
            value = self()
        return value, capture

    def _first_vectorised(self) -> tuple[float, Any]:
        """The first call with vectorised particles; refused (``ValueError``) when it ran but
        summed the particles into one another."""
        with watch_particle_dims(self.max_plate_nesting) as extra:
            first, capture = self._traced("vectorised")
        if extra:
            _drop_gradients(capture)
            name, shape = extra[0]
            raise ValueError(
                f"site {name!r} has batch shape {shape}: dims left of the particle plate "
                f"(at most {self.max_plate_nesting + 1} dims), so the particles' "
                "likelihoods would be summed into one another, e.g. `b @ X.T` for a "
                "coefficient b of shape (particles, 1, D); `(X * b).sum(-1)` vectorises"
            )
        return first, capture

    def first(self, vectorize: bool, result: Any) -> tuple[float, dict[str, Tensor]]:
        """The first call, which creates the parameters (and is step 1's loss): vectorised if
        it can be, else with the model run per particle under ``torch.func.vmap``
        (:mod:`~pyro_flows.infer._vmapped_model`; not for ``loss="mean_field"``), else in a
        loop over the particles (each fall-back is noted in ``result``); returns the loss and
        the parameters met (name -> unconstrained tensor)."""
        mode = "vectorised" if vectorize else "loop"
        try:
            first, capture = self._first_vectorised() if vectorize else self._traced("loop")
        except Exception as err:
            if not vectorize:
                raise
            why = f"{type(err).__name__}: {err}"
            first, capture, mode = self._fallback(why)
            note(
                result,
                "fit_guide: the model could not run with vectorised particles "
                f"({why}); " + (
                    f"its {self.num_particles} particles run through torch.func.vmap instead "
                    "(about as fast)" if mode == "vmap" else
                    f"fell back to a loop over the {self.num_particles} particles (slower; "
                    "pass vectorize_particles=False to skip the attempt)"
                ),
                UserWarning,
                stacklevel=4,
            )
        vectorize = mode == "vectorised"
        result.particle_mode = mode
        result.vectorized = vectorize
        params: dict[str, Any] = {}
        for name, site in capture.trace.nodes.items():
            tensor = site["value"].unconstrained()
            if site["type"] == "param" and all(tensor is not p for p in params.values()):
                params[name] = tensor  # once each (AutoIAFNormal meets a tensor under two names)
        if not params:
            raise ValueError(
                f"the guide {type(self.guide).__name__} has no parameters (no pyro.param or "
                "pyro.module site was met while computing the loss): there is nothing to fit"
            )
        return first, params

    def _fallback(self, why: str) -> tuple[float, Any, str]:
        """The first call without vectorised particles: under ``vmap`` when it runs there (and
        the loss is not ``"mean_field"``, whose analytic KL terms it lacks), else a loop."""
        if self.loss != "mean_field":
            try:
                first, capture = self._traced("vmap")
                return first, capture, "vmap"
            except Exception:  # noqa: BLE001 - the loop is the last resort, and it raises
                for p in pyro.get_param_store().values():
                    p.unconstrained().grad = None
        first, capture = self._traced("loop")
        return first, capture, "loop"


class GuideSteps:
    """The steps of ``fit_guide`` on ``training`` from ``step`` (``pending``: the first call's
    loss, whose gradients are already there, or ``None``)."""

    def __init__(self, training: GuideTraining, loss: GuideLoss, rule: PlateauRule, *,
                 step: int, pending: float | None, steps: int, lr: float, lr_end: float,
                 schedule: str, cooldown: int, clip_grad_norm: float | None, converge: bool,
                 max_nonfinite: int, polish: bool = False, long_polish: bool = False) -> None:
        self.training, self.loss, self.rule = training, loss, rule
        self.step, self.pending, self.bad = step, pending, 0
        self.steps, self.lr, self.lr_end, self.schedule = steps, lr, lr_end, schedule
        self.cooldown, self.clip_grad_norm, self.converge = cooldown, clip_grad_norm, converge
        self.max_nonfinite = max_nonfinite
        # polish only a guide that has the switch (Pyro's guides have none: for them the
        # cool-down stays ``cooldown`` steps of the ordinary gradient)
        self.polish = polish and isinstance(getattr(loss.guide, "path_gradient", None), bool)
        self.long_polish = long_polish
        self.result = training.history
        self.started = 0.0  # perf_counter() at the run's start, less the time trained before
        self.lr_now = math.nan

    def _learning_rate(self, **plateau: Any) -> float:
        return learning_rate(self.step, lr=self.lr, lr_end=self.lr_end, steps=self.steps,
                             schedule=self.schedule, **plateau)

    def cooldown_steps(self, converged_at: int | None) -> int:
        """The cool-down's length after a plateau at step ``converged_at``: ``cooldown``
        steps, or with ``long_polish`` (and a guide that is polished)
        ``max(cooldown, converged_at)``: the path-only gradients keep improving the fit along
        directions the plateau test cannot see (see :func:`~pyro_flows.infer.fit_guide.fit_guide`),
        so they get as many steps as it took to reach the plateau."""
        if converged_at is None or not (self.polish and self.long_polish):
            return self.cooldown
        return max(self.cooldown, converged_at)

    def show(self, bar: Any) -> None:
        """The progress: the ELBO averaged over the last window and the learning rate."""
        bar.set_postfix({"smoothed ELBO": f"{self.rule.smoothed(self.result.elbo):.6g}",
                         "lr": f"{self.lr_now:.3g}"}, refresh=False)
        bar.update(self.step - bar.n)

    def _value(self) -> float:
        """This step's loss (with its gradients)."""
        if self.pending is None:
            self.training.zero_grad()
            return self.loss()
        value, self.pending = self.pending, None
        return value

    def _refuse(self) -> bool:
        """A NaN/inf loss or gradient: the step is not applied; ``True`` (stop, the last good
        parameters back) after ``max_nonfinite`` such steps in a row."""
        result = self.result
        self.training.zero_grad()
        result.skipped_steps += 1
        self.bad += 1
        if self.bad < self.max_nonfinite:
            return False
        self.training.restore_last_good()
        result.stopped = "non-finite"
        loss = self.loss
        sites = non_finite_sites(loss.model, loss.guide, loss.args, loss.kwargs)
        advice = (
            f"at a draw of the guide with those parameters the log density is not finite at "
            f"{'; '.join(sites)}: fix the model or its data first" if sites else
            "every site's log density is finite at a draw of the guide with those parameters, "
            "so its gradient is what overflowed: an exp of a large linear predictor in "
            "float32 (standardise the predictors, write phi / exp(eta) as phi * exp(-eta), or "
            "use float64)" if self.step == 0 else
            "every site's log density is finite at a draw of the guide with those parameters: "
            f"lower lr (now {self.lr}) or clip_grad_norm (now {self.clip_grad_norm}), or look "
            "for NaN log densities or overflowing gradients in the model"
        )
        note(
            result,
            f"fit_guide: {self.bad} steps in a row had a NaN/inf loss or gradient (after "
            f"{self.step} good steps); stopped with the last parameters whose loss and "
            f"gradient were finite. {advice[0].upper()}{advice[1:]}",
            RuntimeWarning,
            stacklevel=5,
        )
        return True

    def _apply(self, value: float, bar: Any) -> None:
        """A finite step: remember the parameters as good, step, record, test the plateau."""
        result = self.result
        self.bad = 0
        self.training.mark_good()
        self.training.optimiser.step()
        self.training.zero_grad()
        self.step += 1
        result.elbo.append(-value)
        result.lr.append(self.lr_now)
        result.seconds = time.perf_counter() - self.started
        if self.converge and result.converged_at is None and self.rule.converged(result.elbo):
            result.converged_at = self.step
        self.show(bar)

    def _stops(self, checkpoint_every: int, callback: Callable[[int, Any], Any] | None,
               max_time: float | None) -> bool:
        """The checkpoint every ``checkpoint_every`` steps; ``True`` when the callback or the
        time limit stops the training (``result.stopped`` says which)."""
        result = self.result
        if self.step % checkpoint_every == 0:
            self.training.save(self.step)
        if callback is not None and callback(self.step, result):
            result.stopped = "callback"
            return True
        if max_time is not None and result.seconds >= max_time:
            result.stopped = "max_time"
            return True
        return False

    def run(self, *, progress: bool, checkpoint_every: int,
            callback: Callable[[int, Any], Any] | None, max_time: float | None) -> None:
        """Step until the last step, the end of the cool-down or another stop; a checkpoint
        on ``KeyboardInterrupt``."""
        result = self.result
        bar = progress_bar(total=self.steps, initial=self.step, desc="fit_guide",
                           enabled=progress)
        self.started = time.perf_counter() - result.seconds
        self.lr_now = self._learning_rate()
        with interruptible(bar, lambda: self.training.save(self.step), lambda: self.show(bar)), \
                _path_gradient(self.loss.guide) as switch:
            while self.step < self.steps:
                converged_at = result.converged_at
                cooldown = self.cooldown_steps(converged_at)
                if converged_at is not None and self.step >= converged_at + cooldown:
                    break
                if self.polish and converged_at is not None:
                    switch(True)
                self.lr_now = self._learning_rate(converged_at=converged_at, cooldown=cooldown)
                self.training.set_lr(self.lr_now)
                value = self._value()
                if not (math.isfinite(value) and bool(torch.isfinite(
                        gradient_norm(self.training.params, self.clip_grad_norm)))):
                    if self._refuse():
                        break
                    continue
                self._apply(value, bar)
                if self._stops(checkpoint_every, callback, max_time):
                    break


@contextmanager
def _path_gradient(guide: object) -> Iterator[Callable[[bool], None]]:
    """A switch for ``guide.path_gradient`` (a no-op for a guide without a boolean one), put
    back as it was on the way out."""
    before = getattr(guide, "path_gradient", None)

    def switch(on: bool) -> None:
        if isinstance(before, bool):
            guide.path_gradient = on or before  # type: ignore[attr-defined]

    try:
        yield switch
    finally:
        if isinstance(before, bool):
            guide.path_gradient = before  # type: ignore[attr-defined]
