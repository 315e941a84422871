"""Checks and splits for training data: clear errors before any training starts."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from .._validation import as_tensor


@dataclass
class Split:
    """Training and validation rows (``val_x`` is ``None`` without validation)."""

    train_x: Tensor
    train_c: Tensor | None
    val_x: Tensor | None
    val_c: Tensor | None


def _refuse_non_real(value: object, name: str) -> None:
    """``TypeError`` for complex or bool tensors and arrays (a cast to float would drop the
    imaginary part or turn flags into numbers without a word)."""
    dtype = getattr(value, "dtype", None)
    if dtype is None:
        return
    kind = getattr(dtype, "kind", None)  # NumPy
    if isinstance(dtype, torch.dtype):
        bad = dtype.is_complex or dtype == torch.bool
    else:
        bad = kind in ("c", "b")
    if bad:
        raise TypeError(f"{name} must hold real numbers, got dtype {dtype}")


def _rows(
    value: object, name: str, like: Tensor | None, event_shape: tuple[int, ...] | None = None
) -> Tensor:
    """``value`` as a tensor of rows ``(N, features)``, or of images ``(N, *event_shape)`` when
    ``event_shape`` is given (image models)."""
    _refuse_non_real(value, name)
    t = as_tensor(value, name, like)
    if like is not None:
        t = t.to(dtype=like.dtype)
    if event_shape is not None:
        if t.dim() != 1 + len(event_shape) or tuple(t.shape[1:]) != tuple(event_shape):
            dims = ", ".join(map(str, event_shape))
            raise ValueError(
                f"{name} must have shape (rows, {dims}) (the model's event shape "
                f"{tuple(event_shape)}), got shape {tuple(t.shape)}"
            )
    elif t.dim() != 2:
        raise ValueError(f"{name} must have shape (rows, features), got shape {tuple(t.shape)}")
    if t.shape[0] == 0:
        raise ValueError(f"{name} is empty (shape {tuple(t.shape)}): nothing to fit")
    bad = (~torch.isfinite(t)).reshape(t.shape[0], -1).any(-1).nonzero().flatten()
    if bad.numel():
        shown = bad[:10].tolist()
        more = f" and {bad.numel() - 10} more" if bad.numel() > 10 else ""
        raise ValueError(
            f"{name} has non-finite values (NaN or inf) in {bad.numel()} row(s): "
            f"rows {shown}{more}; drop or impute them before fitting"
        )
    return t


def check_pair(
    data: object,
    context: object,
    input_dim: int | None,
    context_dim: int | None,
    like: Tensor | None,
    name: str = "data",
    event_shape: tuple[int, ...] | None = None,
) -> tuple[Tensor, Tensor | None]:
    """Validate ``data`` (and its ``context`` rows) against the model's sizes; with
    ``event_shape`` (image models), ``data`` holds images ``(N, *event_shape)``."""
    x = _rows(data, name, like, event_shape)
    if event_shape is None and input_dim is not None and x.shape[1] != input_dim:
        raise ValueError(
            f"{name} has {x.shape[1]} columns but the model's input_dim is {input_dim} "
            f"(expected shape (rows, {input_dim}), got {tuple(x.shape)})"
        )
    if context_dim is None:
        if context is not None:
            raise ValueError(
                f"the model is unconditional (context_dim=None) but {name} came with a context"
            )
        return x, None
    if context is None:
        raise ValueError(
            f"the model is conditional (context_dim={context_dim}): pass context= with one row "
            f"per {name} row"
        )
    c = _rows(context, f"context of {name}", like)
    if c.shape[1] != context_dim:
        raise ValueError(
            f"context has {c.shape[1]} columns but the model's context_dim is {context_dim}"
        )
    if c.shape[0] != x.shape[0]:
        raise ValueError(
            f"context has {c.shape[0]} rows but {name} has {x.shape[0]}: they must be paired "
            "row by row"
        )
    return x, c


def split(
    x: Tensor,
    c: Tensor | None,
    validation: object,
    input_dim: int | None,
    context_dim: int | None,
    seed: int,
    event_shape: tuple[int, ...] | None = None,
) -> Split:
    """Hold out validation rows: a fraction of ``x`` (fixed by ``seed``), or given data."""
    if isinstance(validation, bool):
        raise TypeError(
            "validation must be None, a fraction in (0, 1), validation data or (data, context), "
            f"got bool ({validation})"
        )
    if validation is None or (isinstance(validation, (int, float)) and validation == 0):
        return Split(x, c, None, None)
    if isinstance(validation, (int, float)) and not isinstance(validation, bool):
        if not 0 < validation < 1:
            raise ValueError(f"validation fraction must be in (0, 1), got {validation}")
        n_val = int(round(validation * x.shape[0]))
        if n_val < 1 or n_val >= x.shape[0]:
            raise ValueError(
                f"validation={validation} of {x.shape[0]} rows leaves {n_val} validation and "
                f"{x.shape[0] - n_val} training rows; both need at least one"
            )
        perm = torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(seed))
        val, train = perm[:n_val].to(x.device), perm[n_val:].to(x.device)
        return Split(
            x[train], None if c is None else c[train], x[val], None if c is None else c[val]
        )
    if isinstance(validation, tuple):
        if len(validation) != 2:
            raise ValueError("validation as a tuple must be (data, context)")
        v_data, v_ctx = validation
    else:
        v_data, v_ctx = validation, None
    vx, vc = check_pair(
        v_data, v_ctx, input_dim, context_dim, x, name="validation data", event_shape=event_shape
    )
    return Split(x, c, vx, vc)
