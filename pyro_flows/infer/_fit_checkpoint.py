"""The checkpoints of :func:`~pyro_flows.infer.fit.fit`: what one holds, the set-up and data it
was written for, and the resume that checks all of it before loading it all or nothing.

A checkpoint holds the model, the optimiser, the schedule, the batch-order generator, the global
RNG states, the history and the position in the training (:data:`LOOP_KEYS`: the epoch, the
batch inside it, the epoch's permutation, the partial loss sum, the best state, the epochs
without improvement and the training time so far), so that a resumed run takes exactly the
steps of an uninterrupted one. Its *fingerprint* (the options that change the result and a
digest of the training and validation rows) must equal this training's, or it is refused with a
``ValueError`` naming the difference, before anything changes.

>>> position = new_position()
>>> sorted(position) == sorted(LOOP_KEYS), position["epoch"], position["perm"]
(True, 0, None)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from . import _checkpoint
from ._data import Split

#: the entries of the training position a checkpoint stores
LOOP_KEYS = ("epoch", "batch", "perm", "loss_sum", "count", "best_state", "bad_epochs", "elapsed")


def new_position() -> dict[str, Any]:
    """The training position of a fresh run: epoch 0, batch 0, no permutation drawn yet."""
    return {
        "epoch": 0,
        "batch": 0,
        "perm": None,
        "loss_sum": 0.0,
        "count": 0,
        "best_state": None,
        "bad_epochs": 0,
        "elapsed": 0.0,
    }


def fingerprint(parts: Split, checkpoint: object, **setup: Any) -> dict[str, Any]:
    """What a checkpoint must have been written for to be resumed: the options that change
    the result and (only with a checkpoint: one pass over the bytes) a digest of the training
    and validation rows."""
    data = None
    if checkpoint is not None:
        data = _checkpoint.tensor_digest(parts.train_x, parts.train_c, parts.val_x, parts.val_c)
    return {**setup, "data": data}


def check_fingerprint(saved: object, now: dict[str, Any], path: str | Path) -> None:
    """Refuse a checkpoint written for another set-up or other data, naming the difference."""
    if not isinstance(saved, dict):
        raise _checkpoint.refuse(path, "has no set-up fingerprint")
    differences = _checkpoint.describe_differences(
        {k: v for k, v in saved.items() if k != "data"},
        {k: v for k, v in now.items() if k != "data"},
    )
    if saved.get("data") != now["data"]:
        differences.append(
            "the training/validation rows differ from those it was trained on (same shapes "
            "perhaps, other values, another validation split or seed)"
        )
    if differences:
        raise _checkpoint.refuse(
            path, "was written for a different set-up (" + "; ".join(differences) + ")"
        )


def check_position(loop: object, path: str | Path, n_train: int, n_batches: int, epochs: int,
                   model_state: dict[str, Tensor]) -> None:
    """The saved position in the training (epoch, batch, permutation, best state) fits."""
    if not isinstance(loop, dict) or not set(LOOP_KEYS) <= set(loop):
        raise _checkpoint.refuse(path, f"has no training position (entries {list(LOOP_KEYS)})")
    epoch, batch = loop["epoch"], loop["batch"]
    if not (isinstance(epoch, int) and isinstance(batch, int)) or not (
        0 <= epoch <= epochs and 0 <= batch <= n_batches
    ):
        raise _checkpoint.refuse(
            path, f"is at epoch {epoch!r}, batch {batch!r}: outside this training"
        )
    perm = loop["perm"]
    if perm is not None and (not isinstance(perm, Tensor) or perm.shape != (n_train,)):
        raise _checkpoint.refuse(path, "has a batch order for another number of rows")
    if loop["best_state"] is not None:
        _checkpoint.check_module_state(model_state, loop["best_state"], path, "best state")


def resume(
    path: str | Path,
    fingerprint: dict[str, Any],
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    generator: torch.Generator,
    n_batches: int,
    history_type: type,
) -> tuple[Any, dict[str, Any]]:
    """Check the whole checkpoint at ``path`` against this training, then load it all or
    nothing; returns the history (a ``history_type``) and the loop state. A refusal changes
    nothing."""
    saved = _checkpoint.load(path)
    _checkpoint.check_entries(
        saved,
        ("fingerprint", "model", "optimizer", "scheduler", "generator", "rng", "history", "loop"),
        path,
        "fit",
    )
    check_fingerprint(saved["fingerprint"], fingerprint, path)
    model_state = model.state_dict()
    _checkpoint.check_module_state(model_state, saved["model"], path, type(model).__name__)
    _checkpoint.check_optimizer_state(optimizer, saved["optimizer"], path)
    _checkpoint.check_schedule_state(scheduler, saved["scheduler"], path)
    _checkpoint.check_generator_state(generator, saved["generator"], path)
    _checkpoint.check_rng_state(saved["rng"], path)
    check_position(
        saved["loop"], path, fingerprint["n_train"], n_batches, fingerprint["epochs"], model_state
    )
    try:
        history = history_type(**saved["history"])
    except (TypeError, ValueError) as err:
        raise _checkpoint.refuse(path, f"has a history this version cannot read ({err})") from err
    parts: list[_checkpoint.Restorable] = [
        (model.state_dict, model.load_state_dict, saved["model"]),
        (optimizer.state_dict, optimizer.load_state_dict, saved["optimizer"]),
        (generator.get_state, generator.set_state, saved["generator"]),
        (_checkpoint.rng_state, _checkpoint.set_rng_state, saved["rng"]),
    ]
    if scheduler is not None:
        parts.insert(2, (scheduler.state_dict, scheduler.load_state_dict, saved["scheduler"]))
    _checkpoint.load_all_or_nothing(path, parts)
    return history, saved["loop"]


def save(
    path: str | Path,
    *,
    fingerprint: dict[str, Any],
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    generator: torch.Generator,
    history: Any,
    loop: dict[str, Any],
) -> None:
    """Write the full training state to ``path``, atomically."""
    _checkpoint.save_atomic(
        {
            "kind": "fit",
            "fingerprint": fingerprint,
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scheduler": None if scheduler is None else scheduler.state_dict(),
            "generator": generator.get_state(),
            "rng": _checkpoint.rng_state(),
            "history": history.as_dict(),
            "loop": loop,
        },
        path,
    )
