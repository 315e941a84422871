"""What the training loops share (``fit``, ``fit_target``, ``distill``, ``train_ebm``): the
checks of their keyword arguments, the guarded gradient step (one global gradient norm, used
both to clip and to refuse a NaN/inf gradient), and the step-based training state of
``fit_target`` and ``distill``: Adam with a cosine decay to zero, the last good parameters, a
training clock that pauses for evaluations, and checkpoints that resume exactly (or are refused
before anything changes)."""

from __future__ import annotations

import math
import numbers
import os
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from . import _checkpoint
from ._adam import adam
from ._checkpoint import rng_state, save_atomic, set_rng_state
from ._loop import NonFiniteLossError, resuming, stop_non_finite

_SEED_RANGE = (-(2**63), 2**64 - 1)  # what torch.manual_seed accepts


# -- argument checks ------------------------------------------------------------------------------
def _shown(value: object) -> str:
    return f"{value!r} ({type(value).__name__})"


def _is_int(value: object) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_real(value: object) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def check_int(value: object, name: str, minimum: int = 1, *, optional: str | None = None) -> None:
    """``TypeError``/``ValueError`` naming ``name`` and ``value`` unless ``value`` is an int
    ``>= minimum`` (or ``None`` when ``optional`` says what ``None`` means)."""
    if value is None and optional is not None:
        return
    kind = "a positive int" if minimum == 1 else f"an int >= {minimum}"
    expected = f"None ({optional}) or {kind}" if optional is not None else kind
    message = f"{name} must be {expected}, got {_shown(value)}"
    if not _is_int(value):
        raise TypeError(message)
    if value < minimum:  # type: ignore[operator]
        raise ValueError(message)


def check_number(
    value: object,
    name: str,
    *,
    positive: bool = True,
    finite: bool = True,
    optional: str | None = None,
) -> None:
    """``TypeError``/``ValueError`` naming ``name`` and ``value`` unless ``value`` is a real
    number ``> 0`` (``>= 0`` when not ``positive``), finite when ``finite`` (``None`` allowed
    when ``optional`` says what it means)."""
    if value is None and optional is not None:
        return
    kind = "a positive" if positive else "a non-negative"
    kind += " finite number" if finite else " number"
    expected = f"None ({optional}) or {kind}" if optional is not None else kind
    message = f"{name} must be {expected}, got {_shown(value)}"
    if not _is_real(value):
        raise TypeError(message)
    number = float(value)  # type: ignore[arg-type]
    if math.isnan(number) or (finite and math.isinf(number)):
        raise ValueError(message)
    if number < 0 or (positive and number == 0):
        raise ValueError(message)


def check_seed(seed: object) -> None:
    """``seed`` is an int that ``torch.manual_seed`` accepts."""
    if not _is_int(seed):
        raise TypeError(f"seed must be an int, got {_shown(seed)}")
    low, high = _SEED_RANGE
    if not low <= seed <= high:  # type: ignore[operator]
        raise ValueError(f"seed must be an int in [{low}, {high}], got {seed}")


def check_checkpoint_path(checkpoint: object, resume: object) -> None:
    """``checkpoint`` is ``None`` or a file path (not a folder); ``resume`` is a bool and
    needs a ``checkpoint``."""
    if not isinstance(resume, bool):
        raise TypeError(f"resume must be True or False, got {_shown(resume)}")
    if checkpoint is None:
        if resume:
            raise ValueError("resume=True needs checkpoint= (the file to resume from)")
        return
    if not isinstance(checkpoint, (str, os.PathLike)):
        raise TypeError(
            f"checkpoint must be None or a file path (str or os.PathLike), got {_shown(checkpoint)}"
        )
    if os.fspath(checkpoint) in ("", b"") or Path(checkpoint).is_dir():
        raise ValueError(f"checkpoint must be a file path, got the folder {checkpoint!r}")


def check_training_options(
    *,
    lr: object,
    seed: object,
    clip_grad_norm: object = None,
    max_time: object = None,
    checkpoint: object = None,
    resume: object = False,
    checkpoint_every: object = 1,
    eval_every: object = 0,
    patience: object = None,
    callback: object = None,
    **counts: object,
) -> None:
    """The keyword arguments every training loop shares, checked before anything happens:
    ``TypeError`` for a value of the wrong type, ``ValueError`` for one out of range, each
    naming the argument and the value. ``counts`` (``steps=``, ``epochs=``, ``batch_size=``,
    ...) must be positive ints. Pass only the options a loop has: the defaults are valid.

    >>> check_training_options(lr=1e-3, seed=0, clip_grad_norm=None, steps=10)
    >>> check_training_options(lr="0.01", seed=0)
    Traceback (most recent call last):
    ...
    TypeError: lr must be a positive finite number, got '0.01' (str)
    """
    check_number(lr, "lr")
    check_seed(seed)
    for name, value in counts.items():
        check_int(value, name)
    check_number(clip_grad_norm, "clip_grad_norm", finite=False, optional="no clipping")
    check_number(max_time, "max_time", positive=False, finite=False, optional="no time limit")
    check_checkpoint_path(checkpoint, resume)
    check_int(checkpoint_every, "checkpoint_every")
    check_int(eval_every, "eval_every", 0)
    check_int(patience, "patience", optional="never stop early")
    if callback is not None and not callable(callback):
        raise TypeError(f"callback must be None or callable, got {_shown(callback)}")


def check_step_args(lr: float, resume: bool, checkpoint: Any, **counts: int) -> None:
    """The checks of :func:`check_training_options` for ``lr``, ``resume``, ``checkpoint``
    and positive ``counts`` (kept for callers of the earlier helper)."""
    check_number(lr, "lr")
    check_checkpoint_path(checkpoint, resume)
    for name, value in counts.items():
        check_int(value, name)


# -- the guarded gradient step --------------------------------------------------------------------
def gradient_norm(params: Iterable[Tensor], clip_grad_norm: float | None) -> Tensor:
    r"""The global gradient norm :math:`\|g\|_2 = (\sum_p \|\nabla_p\|_2^2)^{1/2}` of
    ``params``, after clipping the gradients to ``clip_grad_norm`` when given (the norm
    returned is the one before clipping). One fused reduction either way: NaN/inf in any
    gradient makes it non-finite, so one ``isfinite`` on it checks every gradient.

    Clipping multiplies every gradient by :math:`\min(1, c / (\|g\|_2 + 10^{-6}))`, as
    ``torch.nn.utils.clip_grad_norm_`` does, but only when that factor is below one (a
    multiplication by one changes nothing, so the result is the same to the bit) and the norm
    is finite (a non-finite norm refuses the step anyway); deciding that costs one read of the
    norm, which the caller's finiteness check needs anyway.

    >>> p = torch.nn.Parameter(torch.zeros(2))
    >>> p.grad = torch.tensor([3.0, 4.0])
    >>> float(gradient_norm([p], 1.0)), [round(g, 4) for g in p.grad.tolist()]
    (5.0, [0.6, 0.8])
    """
    params = list(params)
    total_norm = getattr(torch.nn.utils, "get_total_norm", None)  # torch >= 2.6
    clip_with_norm = getattr(torch.nn.utils, "clip_grads_with_norm_", None)
    if total_norm is None or clip_with_norm is None:
        return torch.nn.utils.clip_grad_norm_(
            params, math.inf if clip_grad_norm is None else clip_grad_norm
        )
    norm = total_norm([p.grad for p in params if p.grad is not None])
    if clip_grad_norm is not None:
        value = float(norm)
        if math.isfinite(value) and value + 1e-6 > clip_grad_norm:
            clip_with_norm(params, clip_grad_norm, norm)
    return norm


def gradients_are_finite(params: Sequence[Tensor], clip_grad_norm: float | None) -> bool:
    """Clip (when asked) and say whether every gradient of ``params`` is finite; when not, the
    gradients are cleared so that no NaN is left on the parameters."""
    if math.isfinite(float(gradient_norm(params, clip_grad_norm))):  # one read of the norm
        return True
    for p in params:
        p.grad = None
    return False


class StepTraining:
    """Adam on ``params`` with a cosine decay to zero over ``steps``; ``history`` and ``step``
    are restored from ``checkpoint`` when ``resume``. A checkpoint of another ``kind``, step
    count or ``setup`` (the options that change the result: batch size, lr, ...), or of another
    architecture, is refused before anything is changed."""

    def __init__(
        self,
        module: nn.Module,
        params: Sequence[Tensor],
        *,
        kind: str,
        steps: int,
        lr: float,
        history: Any,
        checkpoint: str | Path | None,
        resume: bool,
        seed: int,
        setup: dict[str, Any] | None = None,
        extra: Any = None,
    ) -> None:
        self.module, self.params, self.kind, self.steps = module, list(params), kind, steps
        self.extra = extra  # more state to checkpoint: has state_dict() and load_state_dict()
        self.checkpoint = checkpoint
        self.setup = {} if setup is None else dict(setup)
        self.optimiser = adam(self.params, lr=lr)
        self.schedule = torch.optim.lr_scheduler.LambdaLR(
            self.optimiser, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps))
        )
        self.history = history
        self.step = 0
        if resuming(resume, checkpoint):
            self._restore(_checkpoint.load(checkpoint))
        else:
            torch.manual_seed(seed)
        self.last_good = self._snapshot()
        self._started = time.perf_counter() - float(self.history.time)

    # -- the last good parameters and the clock --------------------------------------------------
    def _snapshot(self) -> dict[str, Tensor]:
        return {k: v.detach().clone() for k, v in self.module.state_dict().items()}

    def restore_last_good(self) -> None:
        """Put the module back to the parameters of the last snapshot (after a failure)."""
        self.module.load_state_dict(self.last_good)

    def fail(self, stopped: str, message: str) -> NonFiniteLossError:
        """After a non-finite loss or gradient: the module back to the last good parameters,
        ``history.stopped = stopped``, and the ``NonFiniteLossError`` to raise."""
        return stop_non_finite(self.restore_last_good, self.history, stopped, message)

    def record_step(self) -> bool:
        """After a successful step: update ``history.time`` (training time, evaluations
        excluded) and, every 50 steps and at the last, snapshot the parameters as the last good
        ones. Returns whether it snapshotted (the moment to refresh a progress bar)."""
        self.history.time = time.perf_counter() - self._started
        if self.step % 50 == 0 or self.step == self.steps:
            self.last_good = self._snapshot()
            return True
        return False

    def after_step(
        self,
        *,
        eval_every: int,
        evaluate: Callable[[], None],
        checkpoint_every: int,
        callback: Callable[[int, Any], None] | None,
        max_time: float | None,
    ) -> bool:
        """The rest of a step's bookkeeping: an evaluation every ``eval_every`` steps (not
        before the last, whose evaluation the caller runs; its time is not training time), a
        checkpoint every ``checkpoint_every``, the callback, and the time limit. Returns
        ``True`` when ``max_time`` is reached (``history.stopped`` says so)."""
        step = self.step
        if eval_every and step % eval_every == 0 and step < self.steps:
            paused = time.perf_counter()
            evaluate()
            self._started += time.perf_counter() - paused
        if step % checkpoint_every == 0:
            self.save()
        if callback is not None:
            callback(step, self.history)
        if max_time is not None and self.history.time >= max_time:
            self.history.stopped = "max_time"
            return True
        return False

    # -- checkpoints ------------------------------------------------------------------------------
    def _restore(self, saved: dict[str, Any]) -> None:
        """Check the whole checkpoint, then load it all or nothing."""
        path = self.checkpoint
        assert path is not None
        _checkpoint.check_entries(
            saved, ("steps", "step", "module", "optimiser", "schedule", "history", "rng"), path,
            self.kind,
        )
        saved_setup = saved.get("setup", {})
        if not isinstance(saved_setup, dict):
            raise _checkpoint.refuse(path, "has a set-up entry that is not a dict")
        differences = _checkpoint.describe_differences(
            {"steps": saved["steps"], **saved_setup}, {"steps": self.steps, **self.setup}
        )
        if differences:
            raise _checkpoint.refuse(
                path, "was written for a different set-up (" + "; ".join(differences) + ")"
            )
        _checkpoint.check_module_state(
            self.module.state_dict(), saved["module"], path, type(self.module).__name__
        )
        _checkpoint.check_optimizer_state(self.optimiser, saved["optimiser"], path)
        _checkpoint.check_schedule_state(self.schedule, saved["schedule"], path)
        _checkpoint.check_rng_state(saved["rng"], path)
        loads = [
            (self.module.state_dict, self.module.load_state_dict, saved["module"]),
            (self.optimiser.state_dict, self.optimiser.load_state_dict, saved["optimiser"]),
            (self.schedule.state_dict, self.schedule.load_state_dict, saved["schedule"]),
            (rng_state, set_rng_state, saved["rng"]),
        ]
        if self.extra is not None:
            if not isinstance(saved.get("extra"), dict):
                raise _checkpoint.refuse(path, "has no sampler state for this set-up")
            loads.append((self.extra.state_dict, self.extra.load_state_dict, saved["extra"]))
        step = saved["step"]
        if not _is_int(step) or not 0 <= step <= self.steps:
            raise _checkpoint.refuse(path, f"has step {step!r}, not in [0, {self.steps}]")
        try:
            history = type(self.history)(**saved["history"])
        except (TypeError, ValueError) as err:
            problem = f"has a history this version cannot read ({err})"
            raise _checkpoint.refuse(path, problem) from err
        _checkpoint.load_all_or_nothing(path, loads)
        self.history, self.step = history, step

    def save(self) -> None:
        """Write the full training state atomically (no-op without a checkpoint file)."""
        if self.checkpoint is None:
            return
        save_atomic(
            {
                "kind": self.kind,
                "steps": self.steps,
                "setup": self.setup,
                "step": self.step,
                "module": self.module.state_dict(),
                "optimiser": self.optimiser.state_dict(),
                "schedule": self.schedule.state_dict(),
                "history": self.history.as_dict(),
                "rng": rng_state(),
                **({} if self.extra is None else {"extra": self.extra.state_dict()}),
            },
            self.checkpoint,
        )

    # -- the step ---------------------------------------------------------------------------------
    def update(self, loss: Tensor, clip_grad_norm: float | None) -> bool:
        """Backward, clip, and step; ``False`` (nothing stepped, gradients cleared) when the
        global gradient norm is non-finite."""
        self.optimiser.zero_grad(set_to_none=True)
        loss.backward()
        if not gradients_are_finite(self.params, clip_grad_norm):
            return False
        self.optimiser.step()
        self.schedule.step()
        self.step += 1
        return True
