"""The training state of :func:`~pyro_flows.infer.fit_guide`: Adam on the guide's parameters (by
their param-store names), the last parameters whose loss and gradient were finite, and
checkpoints that resume exactly or are refused before anything changes.

Unlike :class:`~pyro_flows.infer._steps.StepTraining`, the parameters are not one module's: a
Pyro guide keeps them in the param store (``pyro.param``/``pyro.module``), so they are held as a
name -> unconstrained-tensor mapping, and the guide's buffers (masks, permutations of a flow
guide) travel with them when the guide is an ``nn.Module``. The learning rate is set per step by
:func:`~pyro_flows.infer._elbo_convergence.learning_rate` (a pure function of the step), so the
"schedule" state is the step and the plateau step, both in the history.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from . import _checkpoint
from ._adam import adam
from ._checkpoint import rng_state, save_atomic, set_rng_state

KIND = "fit_guide"


def _adam(params: list[Tensor], lr: float) -> torch.optim.Adam:
    return adam(params, lr)  # fused where torch has the kernel


class GuideTraining:
    """Adam on ``params`` (name -> leaf tensor), ``buffers`` of the guide, ``history`` and the
    step, restored from ``checkpoint`` when ``resume`` (all or nothing)."""

    def __init__(
        self,
        params: Mapping[str, Tensor],
        buffers: Mapping[str, Tensor],
        *,
        lr: float,
        history: Any,
        checkpoint: str | os.PathLike | None,
        setup: dict[str, Any],
        guide_name: str,
    ) -> None:
        self.names = list(params)
        self.params = [params[n] for n in self.names]
        self.buffers = dict(buffers)
        self.history = history
        self.checkpoint = checkpoint
        self.setup = dict(setup)
        self.guide_name = guide_name
        self.optimiser = _adam(self.params, lr)
        with torch.no_grad():
            self.last_good = [p.detach().clone() for p in self.params]

    # -- the parameters -------------------------------------------------------------------------
    def param_state(self) -> dict[str, Tensor]:
        return {n: p.detach().clone() for n, p in zip(self.names, self.params, strict=True)}

    def _load_params(self, state: Mapping[str, Tensor]) -> None:
        with torch.no_grad():
            for n, p in zip(self.names, self.params, strict=True):
                p.copy_(state[n])

    def _buffer_state(self) -> dict[str, Tensor]:
        return {n: b.detach().clone() for n, b in self.buffers.items()}

    def _load_buffers(self, state: Mapping[str, Tensor]) -> None:
        with torch.no_grad():
            for n, b in self.buffers.items():
                b.copy_(state[n])

    def mark_good(self) -> None:
        """Remember the current parameters as the last whose loss and gradient were finite."""
        with torch.no_grad():
            torch._foreach_copy_(self.last_good, [p.detach() for p in self.params])

    def restore_last_good(self) -> None:
        with torch.no_grad():
            for p, good in zip(self.params, self.last_good, strict=True):
                p.copy_(good)

    def set_lr(self, lr: float) -> None:
        for group in self.optimiser.param_groups:
            group["lr"] = lr

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None

    # -- checkpoints ----------------------------------------------------------------------------
    def save(self, step: int) -> None:
        """Write the full training state atomically (no-op without a checkpoint file)."""
        if self.checkpoint is None:
            return
        save_atomic(
            {
                "kind": KIND,
                "setup": self.setup,
                "step": step,
                "params": self.param_state(),
                "buffers": self._buffer_state(),
                "optimiser": self.optimiser.state_dict(),
                "history": self.history.as_dict(),
                "rng": rng_state(),
            },
            self.checkpoint,
        )

    def restore(self, history_type: type) -> int:
        """Load the checkpoint (checked whole first); returns the step it was written at."""
        path = self.checkpoint
        assert path is not None
        saved = _checkpoint.load(path)
        _checkpoint.check_entries(
            saved, ("setup", "step", "params", "buffers", "optimiser", "history", "rng"), path,
            KIND,
        )
        if not isinstance(saved["setup"], dict):
            raise _checkpoint.refuse(path, "has a set-up entry that is not a dict")
        differences = _checkpoint.describe_differences(saved["setup"], self.setup)
        if differences:
            raise _checkpoint.refuse(
                path, "was written for a different set-up (" + "; ".join(differences) + ")"
            )
        _checkpoint.check_module_state(self.param_state(), saved["params"], path, self.guide_name)
        _checkpoint.check_module_state(
            self._buffer_state(), saved["buffers"], path, f"{self.guide_name} buffers"
        )
        _checkpoint.check_optimizer_state(self.optimiser, saved["optimiser"], path)
        _checkpoint.check_rng_state(saved["rng"], path)
        step = saved["step"]
        steps = self.setup.get("steps")
        if isinstance(step, bool) or not isinstance(step, int) or not 0 <= step <= steps:
            raise _checkpoint.refuse(path, f"has step {step!r}, not in [0, {steps}]")
        try:
            history = history_type(**saved["history"])
        except (TypeError, ValueError) as err:
            problem = f"has a history this version cannot read ({err})"
            raise _checkpoint.refuse(path, problem) from err
        if len(history.elbo) != step:
            raise _checkpoint.refuse(
                path, f"has {len(history.elbo)} ELBO values for step {step} (a damaged file)"
            )
        _checkpoint.load_all_or_nothing(
            path,
            [
                (self.param_state, self._load_params, saved["params"]),
                (self._buffer_state, self._load_buffers, saved["buffers"]),
                (self.optimiser.state_dict, self.optimiser.load_state_dict, saved["optimiser"]),
                (rng_state, set_rng_state, saved["rng"]),
            ],
        )
        self.history = history
        self.mark_good()
        return step


def guide_buffers(guide: object) -> dict[str, Tensor]:
    """The buffers of a guide that is an ``nn.Module`` (none otherwise)."""
    if isinstance(guide, nn.Module):
        return dict(guide.named_buffers())
    return {}


def checkpoint_exists(checkpoint: str | os.PathLike | None) -> bool:
    return checkpoint is not None and Path(checkpoint).exists()
