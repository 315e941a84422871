"""The step-based training state shared by ``fit_target`` and ``distill``: argument checks, Adam
with a cosine decay to zero, one guarded optimiser step, the last good parameters, a training
clock that pauses for evaluations, and checkpoints that resume exactly."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ._checkpoint import load, rng_state, save_atomic, set_rng_state


def check_step_args(lr: float, resume: bool, checkpoint: Any, **counts: int) -> None:
    """``ValueError`` naming the argument for non-positive counts, a bad ``lr`` or a resume
    without a checkpoint file."""
    for name, value in counts.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}")
    if not (isinstance(lr, (int, float)) and lr > 0 and math.isfinite(lr)):
        raise ValueError(f"lr must be a positive number, got {lr!r}")
    if resume and checkpoint is None:
        raise ValueError("resume=True needs checkpoint= (the file to resume from)")


class StepTraining:
    """Adam on ``params`` with a cosine decay to zero over ``steps``; ``history`` and ``step``
    are restored from ``checkpoint`` when ``resume`` (a checkpoint of another ``kind`` or step
    count is refused)."""

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
    ) -> None:
        self.module, self.params, self.kind, self.steps = module, list(params), kind, steps
        self.checkpoint = checkpoint
        self.optimiser = torch.optim.Adam(self.params, lr=lr)
        self.schedule = torch.optim.lr_scheduler.LambdaLR(
            self.optimiser, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps))
        )
        self.history = history
        self.step = 0
        torch.manual_seed(seed)
        if resume and checkpoint is not None and Path(checkpoint).exists():
            self._restore(load(checkpoint))
        self.last_good = self._snapshot()
        self._started = time.perf_counter() - float(self.history.time)

    # -- the last good parameters and the clock --------------------------------------------------
    def _snapshot(self) -> dict[str, Tensor]:
        return {k: v.detach().clone() for k, v in self.module.state_dict().items()}

    def restore_last_good(self) -> None:
        """Put the module back to the parameters of the last snapshot (after a failure)."""
        self.module.load_state_dict(self.last_good)

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

    def _restore(self, state: dict[str, Any]) -> None:
        if state.get("kind") != self.kind or state.get("steps") != self.steps:
            raise ValueError(
                f"checkpoint {self.checkpoint} was written by a different set-up "
                f"(kind={state.get('kind')!r}, steps={state.get('steps')!r}; now "
                f"kind={self.kind!r}, steps={self.steps}): delete it or pass resume=False"
            )
        self.module.load_state_dict(state["module"])
        self.optimiser.load_state_dict(state["optimiser"])
        self.schedule.load_state_dict(state["schedule"])
        self.history = type(self.history)(**state["history"])
        self.step = state["step"]
        set_rng_state(state["rng"])

    def save(self) -> None:
        """Write the full training state atomically (no-op without a checkpoint file)."""
        if self.checkpoint is None:
            return
        save_atomic(
            {
                "kind": self.kind,
                "steps": self.steps,
                "step": self.step,
                "module": self.module.state_dict(),
                "optimiser": self.optimiser.state_dict(),
                "schedule": self.schedule.state_dict(),
                "history": self.history.as_dict(),
                "rng": rng_state(),
            },
            self.checkpoint,
        )

    def update(self, loss: Tensor, clip_grad_norm: float | None) -> bool:
        """Backward, clip, and step; ``False`` (nothing stepped) when a gradient is non-finite."""
        self.optimiser.zero_grad(set_to_none=True)
        loss.backward()
        if clip_grad_norm is not None:
            torch.nn.utils.clip_grad_norm_(self.params, clip_grad_norm)
        if not all(p.grad is None or bool(torch.isfinite(p.grad).all()) for p in self.params):
            return False
        self.optimiser.step()
        self.schedule.step()
        self.step += 1
        return True
