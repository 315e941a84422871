r"""Progress that a user sees wherever the output goes: one factory for every long loop.

:func:`progress_bar` returns a tqdm bar when standard error is a terminal or the code runs in
a notebook, and otherwise (output piped to a file, a CI log, ``nohup``) a :class:`LineProgress`
that writes one plain line every :data:`LINE_SECONDS` seconds and a last line when it closes:
tqdm's carriage returns would pile up into one endless line in a log, and a bar that writes
nothing looks like a hang. ``enabled=False`` returns a silent bar. Both kinds answer the part of
tqdm's interface the loops use: iteration, ``update``, ``set_postfix``, ``set_description``,
``n``, ``close`` and use as a context manager.

Example::

    >>> bar = progress_bar(range(3), desc="demo", enabled=False)
    >>> [i for i in bar]
    [0, 1, 2]
    >>> bar.n
    3

References:

- tqdm documentation, "Parameters" (``disable``, ``mininterval``). https://tqdm.github.io/
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Iterable, Iterator
from typing import Any, TextIO

__all__ = ["LINE_SECONDS", "LineProgress", "progress_bar", "stream_is_interactive"]

#: seconds between progress lines when the output is not a terminal
LINE_SECONDS = 10.0


def stream_is_interactive(stream: TextIO | None = None) -> bool:
    """Whether a live bar can be drawn: ``stream`` (standard error by default) is a terminal,
    or the code runs in a Jupyter kernel."""
    stream = sys.stderr if stream is None else stream
    if "ipykernel" in sys.modules:
        return True
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


def _format_seconds(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    if seconds < 60:
        return f"{seconds:.0f} s"
    if seconds < 3600:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


class LineProgress:
    r"""A progress report for output that is not a terminal: ``desc: n/total (p%), elapsed,
    about r left, postfix`` on ``stream`` after the first unit (the loop has started, and at
    what speed), then at most every ``every`` seconds, and once more when closed; never when
    ``every`` is infinite (a silent bar that still counts).

    :param iterable: optional iterable to wrap (its length is the default ``total``).
    :param total: the number of units (``None``: unknown, no percentage).
    :param desc: the label at the start of each line.
    :param initial: units already done (a resumed run).
    :param unit: the name of a unit.
    :param every: seconds between lines (default :data:`LINE_SECONDS`).
    :param stream: where lines go (standard error by default).

    >>> import io
    >>> out = io.StringIO()
    >>> bar = LineProgress(total=4, desc="fit", every=0.0, stream=out)
    >>> bar.update(2); bar.set_postfix(loss="1.5"); bar.close()
    >>> first, last = out.getvalue().splitlines()
    >>> first.startswith("fit: 2/4 step (50%)"), last.endswith("loss=1.5")
    (True, True)
    """

    def __init__(
        self,
        iterable: Iterable[Any] | None = None,
        *,
        total: int | None = None,
        desc: str = "",
        initial: int = 0,
        unit: str = "step",
        every: float | None = None,
        stream: TextIO | None = None,
    ) -> None:
        if total is None and iterable is not None and hasattr(iterable, "__len__"):
            total = len(iterable)  # type: ignore[arg-type]
        self.iterable, self.total, self.desc, self.unit = iterable, total, desc, unit
        self.n, self.initial = initial, initial
        self.every = LINE_SECONDS if every is None else every
        self.stream = stream
        self.postfix = ""
        self.started = time.perf_counter()
        self.last_line = self.started
        self.lines = 0
        self.closed = False

    def __iter__(self) -> Iterator[Any]:
        if self.iterable is None:
            raise TypeError("LineProgress was built without an iterable")
        for item in self.iterable:
            yield item
            self.update(1)

    def __enter__(self) -> LineProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def line(self) -> str:
        """The current report, without writing it."""
        elapsed = time.perf_counter() - self.started
        text = f"{self.desc}: {self.n}" if self.desc else f"{self.n}"
        if self.total:
            text += f"/{self.total} {self.unit} ({100.0 * self.n / self.total:.0f}%), "
            text += _format_seconds(elapsed)
            done = self.n - self.initial
            if 0 < done and self.n < self.total:
                left = elapsed / done * (self.total - self.n)
                text += f", about {_format_seconds(left)} left"
        else:
            text += f" {self.unit}, {_format_seconds(elapsed)}"
        if self.postfix:
            text += f", {self.postfix}"
        return text

    def _write(self) -> None:
        stream = sys.stderr if self.stream is None else self.stream
        print(self.line(), file=stream, flush=True)
        self.last_line = time.perf_counter()
        self.lines += 1

    def update(self, n: int = 1) -> None:
        """Count ``n`` more units; write a line after the first, then when ``every`` seconds
        have passed since the last."""
        self.n += n
        if self.lines == 0 and math.isfinite(self.every):  # the first: it has started, how fast
            self._write()
        elif time.perf_counter() - self.last_line >= self.every:
            self._write()

    def set_postfix(self, ordered_dict: dict[str, Any] | None = None, refresh: bool = True,
                    **kwargs: Any) -> None:
        """Values shown at the end of the next line (tqdm's signature; ``refresh`` is
        ignored: lines are written on the clock)."""
        values = dict(ordered_dict or {}, **kwargs)
        self.postfix = ", ".join(f"{k}={v}" for k, v in values.items())

    def set_description(self, desc: str | None = None, refresh: bool = True) -> None:
        """Change the label of the next lines."""
        self.desc = desc or ""

    def close(self) -> None:
        """Write a last line (when the first was written); idempotent."""
        if not self.closed and self.lines:
            self._write()
        self.closed = True


def progress_bar(
    iterable: Iterable[Any] | None = None,
    *,
    total: int | None = None,
    desc: str = "",
    enabled: bool = True,
    initial: int = 0,
    unit: str = "step",
    leave: bool = False,
) -> Any:
    r"""A progress bar for a loop: tqdm on a terminal or in a notebook, :class:`LineProgress`
    (a line every :data:`LINE_SECONDS` seconds) when standard error is not a terminal, silent
    when ``enabled`` is false (it still counts ``n``).

    :param iterable: optional iterable to wrap.
    :param total: the number of units (default: ``len(iterable)``).
    :param desc: the label.
    :param enabled: ``False`` for a silent bar (the user's ``progress=False`` / ``quiet``).
    :param initial: units already done (a resumed run).
    :param unit: the name of a unit.
    :param leave: keep tqdm's bar on screen after it closes.

    >>> with progress_bar(total=2, desc="quiet", enabled=False) as bar:
    ...     bar.update(2)
    >>> bar.n
    2
    """
    if not enabled or not stream_is_interactive():
        every = None if enabled else math.inf  # silent, but counting like a bar
        return LineProgress(iterable, total=total, desc=desc, initial=initial, unit=unit,
                            every=every)
    from tqdm.auto import tqdm

    return tqdm(iterable, total=total, desc=desc, initial=initial, unit=unit, leave=leave,
                disable=not enabled)
