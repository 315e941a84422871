r"""How many CPU threads a computation uses, for one call, without touching the user's setting.

PyTorch runs every CPU operation on :func:`torch.get_num_threads` threads (by default one per
core). The library's training loops are small operations dispatched thousands of times a
second: below a few hundred thousand floats of work per step the threads' hand-offs cost more
than they save, and on a shared machine extra threads wait for busy cores. One thread is then
faster, often by a factor of 2-4 (``benchmarks/threads.py`` measures it on this machine; the
numbers are in :doc:`/installation`). Wide models on large batches gain from more threads.

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
    r"""Give ``fn`` a keyword-only ``threads=None`` argument that runs the call inside
    :func:`torch_threads`; ``fn`` itself never sees it. The signature shown by ``help`` and
    :func:`inspect.signature` lists ``threads`` (before ``**kwargs``, if ``fn`` has them).

    >>> @accepts_threads
    ... def count() -> int:
    ...     return torch.get_num_threads()
    >>> count(threads=1)
    1
    >>> "threads" in inspect.signature(count).parameters
    True
    """
    signature = inspect.signature(fn)
    params = list(signature.parameters.values())
    if "threads" in signature.parameters:
        raise TypeError(f"{fn.__qualname__} already has a parameter named 'threads'")
    where = len(params)
    if params and params[-1].kind is inspect.Parameter.VAR_KEYWORD:
        where -= 1
    params.insert(
        where,
        inspect.Parameter("threads", inspect.Parameter.KEYWORD_ONLY, default=None,
                          annotation="int | None"),
    )

    @functools.wraps(fn)
    def wrapper(*args: Any, threads: int | None = None, **kwargs: Any) -> Any:
        with torch_threads(threads):
            return fn(*args, **kwargs)

    wrapper.__signature__ = signature.replace(parameters=params)  # type: ignore[attr-defined]
    return wrapper  # type: ignore[return-value]
