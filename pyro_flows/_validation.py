"""Input checks shared by transforms and flows: clear errors instead of deep shape errors."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor


def check_positive_int(value: object, name: str, minimum: int = 1) -> int:
    """Return ``value`` as an int, or raise ``TypeError``/``ValueError`` naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__} ({value!r})")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return value


def check_hidden_dims(hidden_dims: Sequence[int], name: str = "hidden_dims") -> tuple[int, ...]:
    """Return ``hidden_dims`` as a tuple of positive ints."""
    if isinstance(hidden_dims, int):
        hidden_dims = (hidden_dims,)
    try:
        dims = tuple(hidden_dims)
    except TypeError:
        raise TypeError(
            f"{name} must be a sequence of ints, got {type(hidden_dims).__name__}"
        ) from None
    for i, h in enumerate(dims):
        check_positive_int(h, f"{name}[{i}]")
    return dims


def as_tensor(value: object, name: str, like: Tensor | None = None) -> Tensor:
    """Convert arrays to tensors (matching ``like``'s dtype/device); reject other types."""
    if isinstance(value, Tensor):
        t = value
    else:
        try:
            t = torch.as_tensor(value)
        except (TypeError, ValueError, RuntimeError):
            raise TypeError(
                f"{name} must be a torch.Tensor or array, got {type(value).__name__}"
            ) from None
    if not t.is_floating_point():
        dtype = like.dtype if like is not None else torch.get_default_dtype()
        t = t.to(dtype)
    if like is not None and not isinstance(value, Tensor):
        t = t.to(device=like.device, dtype=like.dtype)
    return t


def check_event(x: Tensor, input_dim: int, name: str = "x", owner: str = "Flow") -> None:
    """Raise ``ValueError`` unless ``x`` has shape ``(..., input_dim)``."""
    if x.dim() == 0 or x.shape[-1] != input_dim:
        raise ValueError(
            f"{owner} expected {name} of shape (..., {input_dim}) (input_dim={input_dim}), "
            f"got shape {tuple(x.shape)}"
        )


def check_context(
    context: Tensor | None, context_dim: int | None, owner: str = "Flow"
) -> Tensor | None:
    """Check that ``context`` is given exactly when ``context_dim`` is, with the right size."""
    if context_dim is None:
        if context is not None:
            raise ValueError(
                f"{owner} is unconditional (context_dim=None) but a context of shape "
                f"{tuple(context.shape)} was given"
            )
        return None
    if context is None:
        raise ValueError(
            f"{owner} is conditional (context_dim={context_dim}) and needs a context of shape "
            f"(..., {context_dim}), got None"
        )
    if not isinstance(context, Tensor):
        context = as_tensor(context, "context")
    if context.dim() == 0 or context.shape[-1] != context_dim:
        raise ValueError(
            f"{owner} expected context of shape (..., {context_dim}) (context_dim={context_dim}), "
            f"got shape {tuple(context.shape)}"
        )
    return context


def broadcast_batch(x: Tensor, context: Tensor, event_dims: int = 1) -> tuple[Tensor, Tensor]:
    """Expand ``x`` (``event_dims`` trailing event dims) and ``context`` to one batch shape.

    Raises ``ValueError`` naming both shapes when their batch shapes do not broadcast.
    """
    x_batch = x.shape[: x.dim() - event_dims]
    c_batch = context.shape[:-1]
    if x_batch == c_batch:
        return x, context
    try:
        batch = torch.broadcast_shapes(x_batch, c_batch)
    except RuntimeError:
        raise ValueError(
            f"batch shape of x {tuple(x_batch)} does not broadcast with the batch shape of the "
            f"context {tuple(c_batch)} (x: {tuple(x.shape)}, context: {tuple(context.shape)})"
        ) from None
    x = x.expand(batch + x.shape[x.dim() - event_dims :])
    context = context.expand(batch + context.shape[-1:])
    return x, context
