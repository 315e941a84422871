"""Atomic training checkpoints (write to a temporary file, then rename over the target), and the
checks that refuse a checkpoint *before* anything is changed.

A resume reads the whole file, checks it against the training set-up (what wrote it, the
parameter names and shapes, the optimiser's and the schedule's state, the RNG states), and only
then loads it, all or nothing: a refused or failed resume leaves the model, the optimiser, the
schedule and the RNGs exactly as they were.
"""

from __future__ import annotations

import copy
import hashlib
import os
import random
import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

#: What a refused checkpoint's message ends with.
_REMEDY = "delete it or pass resume=False"


def save_atomic(state: dict[str, Any], path: str | os.PathLike) -> None:
    """``torch.save`` to a temporary file in the same folder, then ``os.replace`` it onto
    ``path``: a crash mid-write never leaves a truncated checkpoint behind."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def load(path: str | os.PathLike) -> dict[str, Any]:
    """Load a checkpoint written by :func:`save_atomic` (on the CPU).

    An empty, truncated, corrupt or unreadable file is a ``ValueError`` naming the file (not
    the ``EOFError``/``UnpicklingError``/``RuntimeError``/``OSError`` of the reader).
    """
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:  # any failure to read it means it is not a usable checkpoint
        raise ValueError(
            f"{os.fspath(path)} is not a readable checkpoint of pyro_flows (empty, truncated or "
            f"corrupt: {type(err).__name__}: {err}); {_REMEDY}"
        ) from err
    if not isinstance(state, dict):
        raise ValueError(
            f"{os.fspath(path)} is not a checkpoint of pyro_flows (it holds a "
            f"{type(state).__name__}, not a training state); {_REMEDY}"
        )
    return state


def rng_state() -> dict[str, Any]:
    """The global RNG states (torch, CUDA if present, numpy, random)."""
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": np.random.get_state(),
        "random": random.getstate(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` returned."""
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["random"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# -- fingerprints ---------------------------------------------------------------------------------
def tensor_digest(*tensors: Tensor | None) -> str:
    """A short hash of the dtypes, shapes and bytes of ``tensors`` (``None`` counts as a value):
    equal exactly when the tensors are equal bit for bit. One pass over the bytes (copied to
    the CPU first for a tensor on an accelerator).

    >>> a = torch.arange(6.0).reshape(3, 2)
    >>> tensor_digest(a) == tensor_digest(a.clone()), tensor_digest(a) == tensor_digest(a + 1)
    (True, False)
    """
    h = hashlib.blake2b(digest_size=16)
    for t in tensors:
        if t is None:
            h.update(b"none;")
            continue
        flat = t.detach().reshape(-1).contiguous().cpu()
        h.update(f"{flat.dtype}{tuple(t.shape)};".encode())
        if flat.numel():
            h.update(flat.view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def describe_differences(saved: Mapping[str, Any], now: Mapping[str, Any]) -> list[str]:
    """``"key=<saved> in the checkpoint, key=<now> now"`` for every key whose values differ
    (``"<absent>"`` for a key one side lacks)."""
    missing = "<absent>"
    lines = []
    for key in list(now) + [k for k in saved if k not in now]:
        a, b = saved.get(key, missing), now.get(key, missing)
        if a != b:
            lines.append(f"{key}={a!r} in the checkpoint, {key}={b!r} now")
    return lines


# -- checks: nothing below changes any state ----------------------------------------------------
def refuse(path: str | os.PathLike, problem: str) -> ValueError:
    """The ``ValueError`` for a checkpoint ``path`` this training cannot resume from."""
    return ValueError(f"checkpoint {os.fspath(path)} {problem}; nothing was changed: {_REMEDY}")


def check_entries(saved: Mapping[str, Any], required: Sequence[str], path: str | os.PathLike,
                  kind: str) -> None:
    """``saved`` was written by ``kind`` (its ``"kind"`` entry) and has every ``required``
    entry; a ``ValueError`` naming what is wrong otherwise."""
    written_by = saved.get("kind")
    if written_by != kind:
        origin = (
            f"was written by {written_by}" if isinstance(written_by, str)
            else "has no 'kind' entry (written by another program or an older version)"
        )
        raise refuse(path, f"{origin}, not by {kind}")
    missing = [key for key in required if key not in saved]
    if missing:
        raise refuse(path, f"lacks the entries {missing} (a damaged or foreign file)")


def _names(keys: Sequence[str], limit: int = 6) -> str:
    shown = ", ".join(keys[:limit])
    return shown + (f" and {len(keys) - limit} more" if len(keys) > limit else "")


def _shape(value: object) -> tuple[int, ...] | str:
    """A tensor's shape, or the type name of anything else (a state entry that is no tensor)."""
    return tuple(value.shape) if isinstance(value, Tensor) else type(value).__name__


def state_mismatch(expected: Mapping[str, Tensor], saved: object) -> str | None:
    """``None`` when ``saved`` is a state dict with exactly the keys of ``expected`` and the
    same shapes; otherwise what differs (missing keys, unexpected keys, wrong shapes)."""
    if not isinstance(saved, Mapping):
        return f"holds a {type(saved).__name__} instead of a state dict"
    missing = [k for k in expected if k not in saved]
    unexpected = [k for k in saved if k not in expected]
    wrong = [
        f"{k} {_shape(saved[k])} in the checkpoint vs {_shape(v)} now"
        for k, v in expected.items()
        if k in saved and _shape(saved[k]) != _shape(v)
    ]
    parts = []
    if missing:
        parts.append(f"missing keys: {_names(missing)}")
    if unexpected:
        parts.append(f"unexpected keys: {_names(unexpected)}")
    if wrong:
        parts.append(f"wrong shapes: {_names(wrong, 4)}")
    return "; ".join(parts) or None


def check_module_state(expected: Mapping[str, Tensor], saved: object, path: str | os.PathLike,
                       what: str) -> None:
    """``ValueError`` naming the missing / unexpected / wrong-shape keys when ``saved`` is not
    a state dict of the architecture ``expected`` describes."""
    problem = state_mismatch(expected, saved)
    if problem is not None:
        raise refuse(path, f"was written for another architecture ({what}: {problem})")


def check_optimizer_state(optimizer: torch.optim.Optimizer, saved: object,
                          path: str | os.PathLike) -> None:
    """``saved`` is an optimiser state of ``optimizer``'s parameter groups: as many groups and
    parameters, and per-parameter state tensors (Adam's moments) of the parameters' shapes."""
    if not isinstance(saved, Mapping) or not isinstance(saved.get("param_groups"), list) or (
        not isinstance(saved.get("state"), Mapping)
    ):
        raise refuse(path, "has an optimiser state that is not one (no param_groups/state)")
    groups = optimizer.param_groups
    sizes = [
        len(g["params"]) if isinstance(g, Mapping) and isinstance(g.get("params"), list) else -1
        for g in saved["param_groups"]
    ]
    if sizes != [len(g["params"]) for g in groups]:
        raise refuse(
            path,
            f"has an optimiser state for parameter groups of sizes {sizes}, this training has "
            f"{[len(g['params']) for g in groups]}",
        )
    shapes = [p.shape for g in groups for p in g["params"]]
    for index, entry in saved["state"].items():
        if not isinstance(index, int) or not 0 <= index < len(shapes) or not isinstance(
            entry, Mapping
        ):
            raise refuse(path, f"has an optimiser state for an unknown parameter {index!r}")
        for name, value in entry.items():
            if isinstance(value, Tensor) and value.dim() > 0 and value.shape != shapes[index]:
                raise refuse(
                    path,
                    f"has an optimiser state {name!r} of shape {tuple(value.shape)} for a "
                    f"parameter of shape {tuple(shapes[index])}",
                )


def check_schedule_state(schedule: Any, saved: object, path: str | os.PathLike) -> None:
    """``saved`` is a learning-rate schedule's state (a dict, or ``None`` without a schedule)
    with one base learning rate per parameter group."""
    if schedule is None:
        if saved is not None:
            raise refuse(path, "has a learning-rate schedule state, this training has none")
        return
    if not isinstance(saved, Mapping):
        raise refuse(path, f"has a learning-rate schedule state of type {type(saved).__name__}")
    now = schedule.state_dict()
    if "base_lrs" in now and len(saved.get("base_lrs", ())) != len(now["base_lrs"]):
        raise refuse(path, "has a learning-rate schedule for another number of groups")


def check_rng_state(saved: object, path: str | os.PathLike) -> None:
    """``saved`` looks like what :func:`rng_state` returns."""
    if not isinstance(saved, Mapping) or not {"torch", "numpy", "random"} <= set(saved):
        raise refuse(path, "has no random-number-generator state (torch, numpy, random)")
    if not isinstance(saved["torch"], Tensor) or saved["torch"].dtype != torch.uint8:
        raise refuse(path, "has a torch RNG state that is not a byte tensor")


def check_generator_state(generator: torch.Generator, saved: object,
                          path: str | os.PathLike) -> None:
    """``saved`` is a state of a generator like ``generator`` (a byte tensor of its size)."""
    now = generator.get_state()
    if not isinstance(saved, Tensor) or saved.dtype != now.dtype or saved.shape != now.shape:
        raise refuse(path, "has a batch-order generator state that is not one")


# -- loading, all or nothing ------------------------------------------------------------------
#: ``(read the current state, set a state, the state to set)``
Restorable = tuple[Callable[[], Any], Callable[[Any], None], Any]


def load_all_or_nothing(path: str | os.PathLike, parts: Sequence[Restorable]) -> None:
    """Set every part's state in order; if one fails, put back the states of every part set so
    far (and of the failing one) and raise a ``ValueError`` naming ``path``: nothing changes."""
    done: list[tuple[Callable[[Any], None], Any]] = []
    try:
        for get, put, state in parts:
            done.append((put, copy.deepcopy(get())))
            put(state)
    except Exception as err:
        for put, previous in reversed(done):
            put(previous)
        raise refuse(path, f"could not be loaded ({type(err).__name__}: {err})") from err
