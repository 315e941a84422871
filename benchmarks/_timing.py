"""Shared timing helpers for the benchmarks in this folder.

Everything here is plain ``time.perf_counter`` arithmetic: warm up, then take the median of a few
repeats. :func:`time_side_by_side` interleaves the contenders of one row (ours and the peers)
repeat by repeat, so slow drift of the machine (thermal throttling, a background job) hits all of
them alike instead of whichever happened to run last.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch


def core_count() -> int:
    """Number of CPU cores this process may run on (affinity-aware where the OS supports it)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def set_threads(num_threads: int | None) -> int:
    """Set torch's intra-op thread count (default: every available core); return it."""
    n = core_count() if num_threads is None else int(num_threads)
    torch.set_num_threads(max(n, 1))
    return torch.get_num_threads()


def seed_all(seed: int) -> None:
    """Seed torch (and Python's ``random``) so that every contender gets the same inputs."""
    import random

    random.seed(seed)
    torch.manual_seed(seed)


def versions(*modules: str) -> dict[str, str | None]:
    """``{name: version}`` for importable modules, ``None`` for missing ones."""
    out: dict[str, str | None] = {}
    for name in modules:
        try:
            mod = __import__(name)
        except ImportError:
            out[name] = None
        else:
            out[name] = str(getattr(mod, "__version__", "?"))
    return out


def environment(num_threads: int, *modules: str) -> dict[str, Any]:
    """Machine and library description printed at the top of a benchmark and saved in JSON."""
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cores": core_count(),
        "torch_threads": num_threads,
        "load_avg": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "versions": versions("torch", *modules),
    }


def _sync() -> None:
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()


def time_once(fn: Callable[[], object]) -> float:
    """Wall time of one call of ``fn``, in seconds."""
    _sync()
    start = time.perf_counter()
    fn()
    _sync()
    return time.perf_counter() - start


@dataclass
class Timing:
    """Per-call times (seconds) of one contender; ``median`` is what tables report."""

    times: list[float] = field(default_factory=list)

    @property
    def median(self) -> float:
        return statistics.median(self.times) if self.times else float("nan")

    @property
    def best(self) -> float:
        return min(self.times) if self.times else float("nan")


def time_side_by_side(
    contenders: Mapping[str, Callable[[], object]],
    repeats: int = 5,
    warmup: int = 1,
) -> dict[str, Timing]:
    """Time several callables on the same footing.

    Each contender is called ``warmup`` times untimed, then the contenders take turns, one call
    each per round, for ``repeats`` rounds; the order within a round rotates so no contender is
    always first after another's allocations. Returns a :class:`Timing` per contender.
    """
    names = list(contenders)
    for name in names:
        for _ in range(warmup):
            contenders[name]()
    timings = {name: Timing() for name in names}
    for r in range(max(repeats, 1)):
        shift = r % len(names) if names else 0
        for name in names[shift:] + names[:shift]:
            timings[name].times.append(time_once(contenders[name]))
    return timings


def time_median(fn: Callable[[], object], repeats: int = 5, warmup: int = 1) -> Timing:
    """Median timing of a single callable (see :func:`time_side_by_side`)."""
    return time_side_by_side({"fn": fn}, repeats, warmup)["fn"]


def fmt_ms(seconds: float | None) -> str:
    """Format seconds as milliseconds with 3 significant digits, ``-`` for missing."""
    if seconds is None or seconds != seconds:  # None or NaN
        return "-"
    ms = seconds * 1e3
    if ms >= 100:
        return f"{ms:.0f}"
    if ms >= 10:
        return f"{ms:.1f}"
    return f"{ms:.2f}"


def format_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A plain-text table: first column left-aligned, the others right-aligned."""
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]

    def line(cells: Sequence[str]) -> str:
        parts = [
            str(c).ljust(w) if i == 0 else str(c).rjust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        ]
        return "  ".join(parts).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(header), rule, *(line(r) for r in rows)])


def write_json(path: str | os.PathLike[str], payload: Any) -> None:
    """Write ``payload`` (dataclasses allowed) as indented JSON, creating parent folders."""

    def default(obj: Any) -> Any:
        if hasattr(obj, "__dataclass_fields__"):
            return asdict(obj)
        raise TypeError(f"not JSON serialisable: {type(obj).__name__}")

    folder = os.path.dirname(os.fspath(path))
    if folder:
        os.makedirs(folder, exist_ok=True)
    with open(path, "w", encoding="utf-8") as fh:
        json.dump(payload, fh, indent=2, default=default)
        fh.write("\n")
