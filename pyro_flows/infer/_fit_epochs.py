r"""The epoch loop of :func:`~pyro_flows.infer.fit.fit`: mini-batches in a seeded order, the
guarded AdamW step, the end-of-epoch bookkeeping and the stop rules.

Each epoch draws a permutation of the :math:`N` training rows from its own generator and steps
on batches of :math:`B` of them (split between the ranks under ``torchrun``); the epoch's
training NLL is the row-weighted mean of the batch losses,

.. math::

    \mathrm{NLL}_{\mathrm{train}} = \frac{\sum_b |b|\, \ell_b}{\sum_b |b|}, \qquad
    \ell_b = -\frac{1}{|b|} \sum_{n \in b} \log q_\theta(x_n \mid c_n).

After an epoch the score (the validation NLL, else the training NLL) decides the best state,
the plateau schedule and early stopping (Prechelt, 1998). The position inside the training
(:data:`~pyro_flows.infer._fit_checkpoint.LOOP_KEYS`) lives in one dict that every checkpoint
stores, so that a resume continues at the same batch with the same permutation and RNG states.
A NaN/inf loss, gradient norm or score stops the training with the parameters of the end of the
last complete epoch (:class:`~pyro_flows.infer.fit.NonFiniteLossError`). The batch loss and its
backward pass are eager or compiled (:class:`~pyro_flows.infer._compiled_step.BatchLoss`); the
rest of the step is the same either way.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from .._progress import progress_bar
from ..flow import FlowOverflowError
from . import _fit_checkpoint
from ._compiled_step import BatchLoss
from ._data import Split
from ._distributed import shard
from ._loop import NonFiniteLossError, interruptible, resuming, stop_non_finite
from ._steps import gradients_are_finite


def state_copy(model: nn.Module) -> dict[str, Tensor]:
    """A detached copy of ``model``'s state dict (a snapshot to go back to)."""
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


class EpochTraining:
    """``fit``'s run: the model, its batch loss (eager or compiled; its loss module wrapped in
    ``DistributedDataParallel`` when distributed), AdamW and the schedule, the training rows,
    the history and the position; restored from ``checkpoint`` when ``resume`` (refused before
    anything changes when it was written for another ``fingerprint``)."""

    def __init__(
        self,
        model: nn.Module,
        batch_loss: BatchLoss,
        params: list[Tensor],
        optimizer: torch.optim.Optimizer,
        scheduler: Any,
        *,
        lr_schedule: str | None,
        parts: Split,
        where: Any,
        batch_size: int,
        n_batches: int,
        seed: int,
        history: Any,
        fingerprint: dict[str, Any],
        checkpoint: str | Path | None,
        resume: bool,
        evaluate: Callable[[nn.Module, Tensor, Tensor | None], float],
        lr: float,
        clip_grad_norm: float | None,
    ) -> None:
        self.model, self.batch_loss, self.params = model, batch_loss, params
        self.optimizer, self.scheduler, self.lr_schedule = optimizer, scheduler, lr_schedule
        self.parts, self.where, self.device = parts, where, params[0].device
        self.batch_size, self.n_batches = batch_size, n_batches
        self.fingerprint, self.checkpoint, self.evaluate = fingerprint, checkpoint, evaluate
        self.lr, self.clip_grad_norm = lr, clip_grad_norm
        self.generator = torch.Generator().manual_seed(seed)
        self.history, self.state = history, _fit_checkpoint.new_position()
        if resuming(resume, checkpoint):
            assert checkpoint is not None
            self.history, self.state = _fit_checkpoint.resume(
                checkpoint, fingerprint, model, optimizer, scheduler, self.generator, n_batches,
                type(history),
            )
        self.last_good = state_copy(model)
        self.epochs = 0  # the run's number of epochs (set by run)
        self.start = 0.0  # perf_counter() at the run's start, less the time trained before

    # -- checkpoints and the finiteness guard -----------------------------------------------------
    def save(self) -> None:
        """Write the checkpoint (only with a checkpoint file, only on rank 0)."""
        if self.checkpoint is None or not self.where.is_main:
            return
        _fit_checkpoint.save(
            self.checkpoint, fingerprint=self.fingerprint, model=self.model,
            optimizer=self.optimizer, scheduler=self.scheduler, generator=self.generator,
            history=self.history, loop=self.state,
        )

    def _save_interrupted(self) -> None:
        self.state["elapsed"] = time.perf_counter() - self.start
        self.save()  # the exact position inside the epoch: resume=True loses nothing

    def _back_to_last_good(self) -> None:
        self.model.load_state_dict(self.last_good)
        self.optimizer.zero_grad(set_to_none=True)

    def stop_on(self, stopped: str, what: str) -> NonFiniteLossError:
        """Back to the last good parameters; the error saying what happened."""
        epochs = self.history.epochs
        good = f"the end of epoch {epochs - 1}" if epochs else "the start of this run"
        return stop_non_finite(
            self._back_to_last_good,
            self.history,
            stopped,
            f"{what}: training stopped and the last good parameters (from {good}) were "
            f"restored. Try a smaller lr (now {self.lr}), standardised data, or clip_grad_norm "
            f"(now {self.clip_grad_norm}).",
        )

    # -- one epoch --------------------------------------------------------------------------------
    def _reduce_sum(self, value: Tensor) -> Tensor:
        if self.where.enabled:
            torch.distributed.all_reduce(value)
        return value

    def _step(self, epoch: int, b: int, perm: Tensor) -> None:
        """Batch ``b`` of the epoch: the loss, the guarded step, the running loss sum."""
        started = time.perf_counter()
        parts, state = self.parts, self.state
        idx = shard(perm[b * self.batch_size : (b + 1) * self.batch_size], self.where)
        batch_x = parts.train_x[idx]
        batch_c = None if parts.train_c is None else parts.train_c[idx]
        try:  # Flow.log_prob's overflow, eager or (a compiled loss scored again) explained
            loss = self.batch_loss(batch_x, batch_c)
            total = self._reduce_sum(loss.detach() * idx.numel())
            rows = idx.numel()
            if self.where.enabled:
                rows = int(self._reduce_sum(torch.tensor(float(rows), device=self.device)))
            loss_sum = float(total)  # the one read of the loss per batch: check and running sum
            if not math.isfinite(loss_sum):
                self.batch_loss.explain_non_finite(batch_x, batch_c)
        except FlowOverflowError as error:
            raise self._overflow_stop(
                error, batch_x, batch_c, "non-finite loss",
                f"non-finite training loss at epoch {epoch}, batch {b}",
            ) from error
        if not math.isfinite(loss_sum):
            raise self.stop_on(
                "non-finite loss",
                f"non-finite training loss ({loss_sum / rows}) at epoch {epoch}, batch {b}",
            )
        self.optimizer.zero_grad(set_to_none=True)
        self.batch_loss.backward(loss, batch_x, batch_c)
        if not gradients_are_finite(self.params, self.clip_grad_norm):
            raise self.stop_on(
                "non-finite gradient",
                f"non-finite gradient (NaN/inf global norm) at epoch {epoch}, batch {b}, "
                f"with a finite loss ({loss_sum / rows})",
            )
        self.optimizer.step()
        if self.lr_schedule == "cosine":
            self.scheduler.step()
        state["loss_sum"] += loss_sum
        state["count"] += rows
        state["batch"] = b + 1
        steps_left = (self.epochs - epoch) * self.n_batches - (b + 1)
        self.batch_loss.timed_step(time.perf_counter() - started, steps_left)

    def train_epoch(self, epoch: int) -> None:
        """The epoch's batches, from the saved position (a new permutation at its start)."""
        state = self.state
        if state["perm"] is None:
            state.update(
                perm=torch.randperm(self.parts.train_x.shape[0], generator=self.generator),
                batch=0,
                loss_sum=0.0,
                count=0,
            )
        perm = state["perm"].to(self.device)
        for b in range(state["batch"], self.n_batches):
            self._step(epoch, b, perm)

    def end_epoch(self, epoch: int) -> tuple[float, float]:
        """The epoch's training and validation NLL into the history, the plateau schedule, the
        best state and the last good one; the position moves to the next epoch."""
        parts, state, history = self.parts, self.state, self.history
        train_nll = state["loss_sum"] / max(state["count"], 1)
        try:
            val_nll = (
                self.evaluate(self.model, parts.val_x, parts.val_c)
                if parts.val_x is not None
                else float("nan")
            )
        except FlowOverflowError as error:
            raise self._overflow_stop(
                error, parts.val_x, parts.val_c, "non-finite validation NLL",
                f"non-finite validation NLL after epoch {epoch}",
            ) from error
        score = val_nll if parts.val_x is not None else train_nll
        if parts.val_x is None and math.isfinite(score):
            score = self._checked_train_nll(train_nll)
        if not math.isfinite(score):
            raise self.stop_on(
                "non-finite validation NLL",
                f"non-finite {'validation' if parts.val_x is not None else 'training'} NLL "
                f"({score}) after epoch {epoch}",
            )
        history.train_nll.append(train_nll)
        history.val_nll.append(val_nll)
        history.lr.append(self.optimizer.param_groups[0]["lr"])
        history.wall_time.append(time.perf_counter() - self.start)
        if self.lr_schedule == "plateau":
            self.scheduler.step(score)
        if history.best_val_nll is None or score < history.best_val_nll:
            history.best_val_nll, history.best_epoch = score, epoch
            state["best_state"] = state_copy(self.model)
            state["bad_epochs"] = 0
        else:
            state["bad_epochs"] += 1
        self.last_good = state_copy(self.model)
        state.update(epoch=epoch + 1, perm=None, batch=0, elapsed=time.perf_counter() - self.start)
        return train_nll, val_nll

    def _overflow_stop(self, error: FlowOverflowError, x: Tensor, c: Tensor | None,
                       stopped: str, what: str) -> Exception:
        """Back to the last good parameters after ``Flow.log_prob`` overflowed on rows ``x``;
        the error to raise: the flow's own (the rows' fault) when they overflow at the last
        good parameters too (data far outside the flow's range, e.g. a row at 3e19), else
        :class:`NonFiniteLossError` (the flow diverged, e.g. at a learning rate of 1e6)."""
        stop = self.stop_on(stopped, f"{what} ({error})")
        try:
            self.evaluate(self.model, x, c)
        except FlowOverflowError:
            return error
        return stop

    def _checked_train_nll(self, train_nll: float) -> float:
        """``train_nll``, or inf when the model after the epoch's last step has a non-finite
        NLL on the first batch's rows: without validation rows nothing else scores the
        parameters that become the last good ones (a last step that diverged was kept)."""
        parts = self.parts
        rows = slice(0, self.batch_size)
        try:
            check = self.evaluate(self.model, parts.train_x[rows],
                                  None if parts.train_c is None else parts.train_c[rows])
        except FlowOverflowError:
            return math.inf
        return train_nll if math.isfinite(check) else math.inf

    def stop_rule(self, epoch: int, epochs: int, patience: int | None,
                  max_time: float | None) -> str | None:
        """Why the training stops after ``epoch`` (``None``: it goes on): early stopping (only
        with validation rows), the time budget, or the last epoch."""
        if (
            self.parts.val_x is not None
            and patience is not None
            and self.state["bad_epochs"] >= patience
        ):
            return "early stopping"
        if max_time is not None and self.history.wall_time[-1] >= max_time:
            return "time budget"
        if epoch + 1 == epochs:
            return "completed"
        return None

    # -- the run ----------------------------------------------------------------------------------
    def _record_compilation(self) -> None:
        """Whether the steps ran compiled, and the first compiled step's time, into the
        history (however the run ends)."""
        self.history.compiled = self.batch_loss.compiled is not None
        if self.batch_loss.compile_seconds is not None:
            self.history.compile_seconds = self.batch_loss.compile_seconds

    def run(
        self,
        *,
        epochs: int,
        progress: bool,
        patience: int | None,
        max_time: float | None,
        checkpoint_every: int,
        callback: Callable[[int, Any], None] | None,
    ) -> Any:
        """The epochs from the saved position to a stop; then the best parameters back (with
        validation rows). Returns the history."""
        self.start = time.perf_counter() - self.state["elapsed"]
        self.epochs = epochs
        bar = progress_bar(
            total=epochs,
            initial=self.state["epoch"],
            desc="fit",
            unit="epoch",
            enabled=progress and self.where.is_main,
        )
        self.model.train()
        try:
            with interruptible(bar, self._save_interrupted):
                for epoch in range(self.state["epoch"], epochs):
                    self.train_epoch(epoch)
                    train_nll, val_nll = self.end_epoch(epoch)
                    bar.update(1)
                    shown = {"train": f"{train_nll:.4f}"}
                    if not math.isnan(val_nll):  # no validation split: nothing to show
                        shown["val"] = f"{val_nll:.4f}"
                    bar.set_postfix(**shown)
                    stop = self.stop_rule(epoch, epochs, patience, max_time)
                    if stop is not None:
                        self.history.stopped = stop
                    if (epoch + 1) % checkpoint_every == 0 or stop is not None:
                        self.save()
                    if callback is not None:
                        callback(epoch, self.history)
                    if stop is not None:
                        break
        finally:
            self._record_compilation()
        if self.state["best_state"] is not None and self.parts.val_x is not None:
            self.model.load_state_dict(self.state["best_state"])
        self.where.barrier()
        return self.history
