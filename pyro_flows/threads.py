r"""How many CPU threads a computation uses, for one call, without touching the user's setting.

PyTorch runs every CPU operation on :func:`torch.get_num_threads` threads (by default one per
core). The library's training loops dispatch many small operations: the threads' hand-offs cost
more than they save, and on a shared machine a second thread waits for a busy core. Measured
by ``benchmarks/threads.py`` on a loaded two-core machine, two threads made ``fit``,
``fit_target`` and ``fit_guide`` steps 9-13 times slower than one; idle, they gained at most
16% on ``fit`` and tied elsewhere (the table is in :doc:`/installation`).

The library never changes the global setting on its own. :func:`torch_threads` does it for a
block and restores it afterwards, and the loops (:func:`~pyro_flows.infer.fit`,
:func:`~pyro_flows.infer.fit_target`, :func:`~pyro_flows.infer.fit_guide`,
:func:`~pyro_flows.infer.distill`) take ``threads=`` for the same effect around one call.

Example::

    >>> import torch
    >>> before = torch.get_num_threads()
    >>> with torch_threads(1):
    ...     torch.get_num_threads()
    1
    >>> torch.get_num_threads() == before
    True

References:

- PyTorch documentation, "CPU threading and TorchScript inference".
  https://pytorch.org/docs/stable/notes/cpu_threading_torchscript_inference.html
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import torch

__all__ = ["accepts_threads", "torch_threads"]

F = TypeVar("F", bound=Callable[..., Any])


def _check_threads(threads: object) -> int | None:
    if threads is None:
        return None
    if isinstance(threads, bool) or not isinstance(threads, int):
        raise TypeError(
            f"threads must be a positive int or None (leave torch's setting), got "
            f"{type(threads).__name__} ({threads!r})"
        )
    if threads < 1:
        raise ValueError(f"threads must be a positive int or None, got {threads}")
    return threads


@contextmanager
def torch_threads(threads: int | None) -> Iterator[int]:
    r"""Run a block on ``threads`` CPU threads (:func:`torch.set_num_threads`), then restore the
    count that was set before, also when the block raises. ``None`` changes nothing.

    :param threads: a positive int, or ``None``.
    :returns: (as the ``with`` target) the thread count inside the block.
    :raises TypeError: for a non-int (or a bool).
    :raises ValueError: for ``threads < 1``.

    >>> with torch_threads(None) as n:
    ...     n == torch.get_num_threads()
    True
    """
    threads = _check_threads(threads)
    before = torch.get_num_threads()
    if threads is None or threads == before:
        yield before
        return
    torch.set_num_threads(threads)
    try:
        yield threads
    finally:
        torch.set_num_threads(before)


def accepts_threads(fn: F) -> F:
    r"""Run each call of ``fn`` inside :func:`torch_threads` with the call's ``threads``
    argument. ``fn`` declares ``threads: int | None = None`` as a keyword-only parameter (so
    that its signature, source and docs show it) and otherwise ignores it.

    >>> @accepts_threads
    ... def count(*, threads: int | None = None) -> int:
    ...     return torch.get_num_threads()
    >>> count(threads=1)
    1

    :raises TypeError: (at decoration) when ``fn`` has no keyword-only ``threads`` parameter.
    """
    parameter = inspect.signature(fn).parameters.get("threads")
    if parameter is None or parameter.kind is not inspect.Parameter.KEYWORD_ONLY:
        raise TypeError(f"{fn.__qualname__} needs a keyword-only parameter named 'threads'")
    default = parameter.default if parameter.default is not inspect.Parameter.empty else None

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with torch_threads(kwargs.get("threads", default)):
            return fn(*args, **kwargs)

    return wrapper  # type: ignore[return-value]
