"""Input checks shared by transforms and flows: clear errors instead of deep shape errors."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar

import torch
from torch import Tensor

#: The context an enclosing call (``Flow``, ``AmortizedFlowDistribution``) has already checked
#: for finiteness: layers receiving this very tensor skip the check, so a pass through ``K``
#: layers costs one ``isfinite`` reduction, not ``K``.
_CHECKED_CONTEXT: ContextVar[Tensor | None] = ContextVar("pyro_flows_checked_context", default=None)


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
    if t.is_complex():
        raise TypeError(
            f"{name} must hold real numbers, got a complex tensor of dtype {t.dtype} and shape "
            f"{tuple(t.shape)} (a cast would drop the imaginary part)"
        )
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


def _as_index(value: object) -> int | None:
    """``value`` as an int if it is an integer (``int``, NumPy or one-element integer tensor;
    not ``bool``), else ``None``."""
    if isinstance(value, bool) or not hasattr(value, "__index__"):
        return None
    try:
        return value.__index__()  # type: ignore[no-any-return]
    except TypeError:
        return None


#: A sample shape as users pass it: an int, a sequence of ints or a ``torch.Size``.
SampleShape = Sequence[int] | torch.Size | int


def check_sample_shape(sample_shape: object) -> torch.Size:
    """``sample_shape`` (an int or a sequence of ints, each ``>= 0``) as a ``torch.Size``;
    ``TypeError``/``ValueError`` naming what was given otherwise.

    >>> check_sample_shape(3), check_sample_shape((2, 0))
    (torch.Size([3]), torch.Size([2, 0]))
    """
    expected = "sample_shape must be an int or a sequence of ints, each >= 0"
    single = _as_index(sample_shape)
    if single is not None:
        entries = [single]
    elif isinstance(sample_shape, Sequence) and not isinstance(sample_shape, (str, bytes)):
        entries = [_as_index(entry) for entry in sample_shape]
        bad = next((e for e, i in zip(sample_shape, entries, strict=True) if i is None), None)
        if bad is not None:
            raise TypeError(
                f"{expected}, got {sample_shape!r} (an entry of type {type(bad).__name__})"
            )
    else:
        raise TypeError(f"{expected}, got {sample_shape!r} ({type(sample_shape).__name__})")
    if any(i < 0 for i in entries):  # type: ignore[operator]
        raise ValueError(f"{expected}, got {sample_shape!r} (a negative size)")
    return torch.Size(entries)  # type: ignore[arg-type]


def compiling() -> bool:
    """Whether TorchDynamo is tracing the caller (``torch.compile``, ``torch._dynamo.explain``).

    Compiled calls check shapes and dtypes, not values: the checks that read a value back to the
    host (:func:`check_finite`, the finiteness and overflow checks of
    :meth:`pyro_flows.Flow.log_prob`) would each break the graph (a host sync the compiled graph
    cannot hold), so they are skipped while this is true, and only then; eager calls run every
    check. The checked-context marker of :func:`checked_context` (a ``ContextVar``, which
    TorchDynamo cannot trace) is not touched either: nothing reads it while compiling.

    >>> compiling()
    False
    """
    return torch.compiler.is_compiling()


def all_finite(value: Tensor) -> bool:
    """Whether every entry of ``value`` is finite (one reduction, one host sync). Tensors on the
    ``meta`` device hold no data: they count as finite, so shape-only runs go through."""
    if value.device.type == "meta":
        return True
    return bool(torch.isfinite(value).all())


def check_finite(value: Tensor, name: str, owner: str, event_dims: int = 1) -> None:
    """Raise ``ValueError`` naming the rows (flat indices over the batch dims) and the shape of
    ``value`` if it has a NaN or infinite entry; one reduction and one host sync otherwise.
    Skipped while TorchDynamo traces the caller (see :func:`compiling`)."""
    if compiling() or all_finite(value):
        return
    rows = value.reshape(-1, *value.shape[value.dim() - event_dims :]) if value.dim() else value
    bad = (~torch.isfinite(rows)).reshape(rows.shape[0] if rows.dim() else 1, -1).any(-1)
    index = bad.nonzero().flatten()
    more = "..." if index.numel() > 10 else ""
    raise ValueError(
        f"{owner} got non-finite values (NaN or inf) in {index.numel()} row(s) of {name} of "
        f"shape {tuple(value.shape)} (flat row indices {index[:10].tolist()}{more}); "
        f"{name} must be finite"
    )


@contextmanager
def checked_context(context: Tensor | None) -> Iterator[None]:
    """Within the block, layers given this very ``context`` skip its finiteness check (the
    caller has just run :func:`check_finite` on it). A no-op while TorchDynamo traces the
    caller (see :func:`compiling`), where no layer checks values."""
    if compiling():
        yield
        return
    token = _CHECKED_CONTEXT.set(context)
    try:
        yield
    finally:
        _CHECKED_CONTEXT.reset(token)


def check_context(
    context: Tensor | None, context_dim: int | None, owner: str = "Flow"
) -> Tensor | None:
    """Check that ``context`` is given exactly when ``context_dim`` is, with the right size,
    and finite (skipped for the context an enclosing :func:`checked_context` block checked, and
    while compiling: see :func:`compiling`)."""
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
    if not compiling() and context is not _CHECKED_CONTEXT.get():
        check_finite(context, "context", owner)
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
