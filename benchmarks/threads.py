#!/usr/bin/env python
"""When do fewer torch threads win? pyro_flows' training loops at 1 and 2 threads, side by side.

Run from the repository root::

    python benchmarks/threads.py                  # every workload, 5 repeats
    python benchmarks/threads.py --quick          # small sizes, 2 repeats (~20 s idle)
    python benchmarks/threads.py --rows fit/maf2/b4096 nuts/banana --repeats 9 --json out.json

Each workload runs the same fixed number of steps of one of the library's own loops
(``infer.fit``, ``infer.fit_target``, ``infer.fit_guide`` with ``AutoFlow``, ``infer.nuts``) at
``torch.set_num_threads(1)``, at 2, and at torch's default count when that is neither (a machine
with more cores or ``OMP_NUM_THREADS`` set). The counts alternate call by call (1, 2, 1, 2, ...;
every call is built from the same seeds, and the set-up is untimed), the thread count is restored
afterwards, and the table shows the median seconds per step and ``t(2) / t(1)``: below 1 two
threads win, above 1 one thread wins. The ``work`` column is a rough size of one step: rows per
step times the trainable parameters (about the multiply-adds of one forward pass); for NUTS,
which has no parameters, the target's dimension. The script ends with a rule read off the table.
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
for _path in (HERE, ROOT):
    if _path not in sys.path:
        sys.path.insert(0, _path)

import _timing  # noqa: E402
import pyro  # noqa: E402

from pyro_flows import flows  # noqa: E402
from pyro_flows.data import two_moons  # noqa: E402
from pyro_flows.infer import AutoFlow, fit, fit_guide, fit_target, nuts  # noqa: E402
from pyro_flows.targets import get_target  # noqa: E402
from pyro_flows.targets.eight_schools import (  # noqa: E402
    EIGHT_SCHOOLS_SIGMA,
    EIGHT_SCHOOLS_Y,
    eight_schools_noncentered,
)

#: torch's thread count before this script changes anything (OMP_NUM_THREADS, or all cores)
DEFAULT_THREADS = torch.get_num_threads()

#: ``t(2) / t(1)`` outside [1 - TIE, 1 + TIE] counts as a win for one side
TIE = 0.05


# ------------------------------------------------------------------------------------------
# settings, workloads and results
# ------------------------------------------------------------------------------------------
@dataclass
class Settings:
    repeats: int
    warmup: int
    seed: int
    counts: list[int]
    quick: bool


@dataclass
class Prepared:
    """One untimed set-up: ``run()`` is what is timed; it returns the steps it took."""

    run: Callable[[], int]
    work: float


@dataclass
class Workload:
    key: str
    label: str
    unit: str  # what one "step" is
    prepare: Callable[[], Prepared]


@dataclass
class Result:
    key: str
    label: str
    unit: str
    work: float
    steps: int
    per_step: dict[int, list[float]] = field(default_factory=dict)  # threads -> s/step, each call
    error: str | None = None
    load: float | None = None  # 1-minute load average when the row finished

    def median(self, n: int) -> float:
        times = self.per_step.get(n) or []
        return statistics.median(times) if times else float("nan")

    def ratio(self, n: int, base: int = 1) -> float:
        return self.median(n) / self.median(base)

    def as_dict(self) -> dict[str, Any]:
        return {
            "row": self.key,
            "label": self.label,
            "unit": self.unit,
            "work": self.work,
            "steps": self.steps,
            "per_step_s": {str(n): t for n, t in self.per_step.items()},
            "median_s": {str(n): self.median(n) for n in self.per_step},
            "ratio_2_over_1": None if self.error else self.ratio(2),
            "error": self.error,
            "load_avg_1min": self.load,
        }


def n_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


# ------------------------------------------------------------------------------------------
# the workloads
# ------------------------------------------------------------------------------------------
def fit_workload(dim: int, batch: int, hidden: tuple[int, ...], steps: int, seed: int):
    """``fit(maf(dim), ...)``: ``steps`` AdamW steps of ``batch`` rows (1 epoch, no validation)."""

    def prepare() -> Prepared:
        _timing.seed_all(seed)
        g = torch.Generator().manual_seed(seed)
        if dim == 2:
            data = two_moons(batch * steps, generator=g)
        else:  # a correlated Gaussian: any D, fixed by the seed
            mix = torch.randn(dim, dim, generator=g) / math.sqrt(dim)
            data = torch.randn(batch * steps, dim, generator=g) @ mix
        flow = flows.maf(dim, hidden_dims=hidden)

        def run() -> int:
            fit(
                flow,
                data,
                epochs=1,
                batch_size=batch,
                validation=None,
                patience=None,
                progress=False,
                seed=seed,
            )
            return steps

        return Prepared(run, batch * n_params(flow))

    return prepare


def fit_target_workload(steps: int, seed: int):
    """``fit_target(realnvp(2), U1, method="reverse_kl")`` at the default batch (the reverse-KL
    step; ``method="auto"`` would train U1's two modes by flow-assisted MCMC); the closing
    diagnostics are kept small (256 draws, no mode check) so the per-step time is the training
    step's."""

    def prepare() -> Prepared:
        _timing.seed_all(seed)
        flow = flows.realnvp(2)
        target = get_target("u1")
        batch = 256  # fit_target's default batch_size

        def run() -> int:
            fit_target(
                flow, target, steps=steps, eval_every=0, eval_samples=256, progress=False,
                seed=seed, method="reverse_kl", check_modes=False,
            )
            return steps

        return Prepared(run, batch * n_params(flow))

    return prepare


# eight schools (Rubin 1981), non-centred: the package's model and data
SCHOOLS_Y = torch.tensor(EIGHT_SCHOOLS_Y)
SCHOOLS_SIGMA = torch.tensor(EIGHT_SCHOOLS_SIGMA)
eight_schools = eight_schools_noncentered


def fit_guide_workload(steps: int, seed: int, num_particles: int = 8):
    """``fit_guide(eight_schools, AutoFlow(eight_schools))``: the guide is built and called once
    in the untimed set-up (its deterministic Gaussian start), then ``steps`` SVI steps are timed
    (no convergence stop, no k-hat check)."""

    def prepare() -> Prepared:
        pyro.clear_param_store()
        _timing.seed_all(seed)
        pyro.set_rng_seed(seed)
        guide = AutoFlow(eight_schools)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            guide(SCHOOLS_Y, SCHOOLS_SIGMA)  # the Gaussian start happens here, untimed
        params = sum(v.numel() for v in pyro.get_param_store().values() if v.requires_grad)

        def run() -> int:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                fit_guide(
                    eight_schools,
                    guide,
                    SCHOOLS_Y,
                    SCHOOLS_SIGMA,
                    steps=steps,
                    num_particles=num_particles,
                    max_plate_nesting=1,
                    converge=False,
                    khat_samples=0,
                    progress=False,
                    seed=seed,
                )
            return steps

        return Prepared(run, num_particles * params)

    return prepare


def nuts_workload(samples: int, warmup: int, seed: int):
    """``nuts`` on the 2-D banana, one chain; a "step" is one gradient evaluation (the seed fixes
    the trajectories, so every call takes the same ones)."""

    def prepare() -> Prepared:
        _timing.seed_all(seed)
        target = get_target("banana", dim=2)

        def run() -> int:
            r = nuts(
                target, num_samples=samples, warmup=warmup, num_chains=1, progress=False, seed=seed
            )
            return int(r.num_grad_evals)

        return Prepared(run, float(target.dim))

    return prepare


def workloads(quick: bool, seed: int) -> list[Workload]:
    if quick:
        big_dim, big_hidden, big_batch, big_steps = 16, (64, 64), 1024, 3
        small, large, tgt, guide_steps, draws = 10, 4, 10, 10, (20, 20)
    else:
        big_dim, big_hidden, big_batch, big_steps = 64, (256, 256), 4096, 6
        small, large, tgt, guide_steps, draws = 100, 20, 100, 40, (100, 100)
    return [
        Workload(
            "fit/maf2/b256",
            "fit maf(2), moons, batch 256",
            "AdamW step",
            fit_workload(2, 256, (64, 64), small, seed),
        ),
        Workload(
            "fit/maf2/b4096",
            "fit maf(2), moons, batch 4096",
            "AdamW step",
            fit_workload(2, 4096, (64, 64), large, seed),
        ),
        Workload(
            "fit/maf_large",
            f"fit maf({big_dim}), hidden {big_hidden}, batch {big_batch}",
            "AdamW step",
            fit_workload(big_dim, big_batch, big_hidden, big_steps, seed),
        ),
        Workload(
            "fit_target/realnvp2_u1",
            "fit_target realnvp(2) on u1, batch 256",
            "Adam step",
            fit_target_workload(tgt, seed),
        ),
        Workload(
            "fit_guide/autoflow_8schools",
            "fit_guide AutoFlow, eight schools, 8 particles",
            "SVI step",
            fit_guide_workload(guide_steps, seed),
        ),
        Workload(
            "nuts/banana",
            f"nuts banana(2), {draws[1]}+{draws[0]} draws",
            "gradient",
            nuts_workload(draws[0], draws[1], seed),
        ),
    ]


# ------------------------------------------------------------------------------------------
# timing
# ------------------------------------------------------------------------------------------
def time_workload(w: Workload, s: Settings) -> Result:
    """Warm up at every count, then alternate the counts call by call, ``repeats`` rounds.

    Every call gets a fresh set-up from the same seeds (untimed); only ``run()`` is timed.
    torch's thread count is put back as it was, even on an error.
    """
    before = torch.get_num_threads()
    res = Result(w.key, w.label, w.unit, float("nan"), 0, {n: [] for n in s.counts})
    try:
        for n in s.counts:
            for _ in range(s.warmup):
                torch.set_num_threads(n)
                w.prepare().run()
        for _ in range(max(s.repeats, 1)):
            for n in s.counts:
                torch.set_num_threads(n)
                prepared = w.prepare()
                steps = 0

                def call(p: Prepared = prepared) -> None:
                    nonlocal steps
                    steps = p.run()

                seconds = _timing.time_once(call)
                res.per_step[n].append(seconds / max(steps, 1))
                res.steps, res.work = steps, prepared.work
    except Exception as exc:  # a broken loop is a row that says so, not a lost table
        res.error = f"{type(exc).__name__}: {exc}"
    finally:
        torch.set_num_threads(before)
        res.load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    return res


# ------------------------------------------------------------------------------------------
# output
# ------------------------------------------------------------------------------------------
def fmt_work(work: float) -> str:
    if work != work:
        return "-"
    for div, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if work >= div:
            return f"{work / div:.3g}{suffix}"
    return f"{work:.0f}"


def fmt_s(seconds: float) -> str:
    if seconds != seconds:
        return "-"
    return f"{seconds:.3g}"


def fmt_load(load: float | None) -> str:
    return "-" if load is None else f"{load:.2f}"


def header(counts: Sequence[int]) -> list[str]:
    cols = ["workload", "work", "steps", "unit", *(f"s/step @{n}" for n in counts), "t2/t1"]
    cols += [f"t{n}/t1" for n in counts if n not in (1, 2)]
    return cols + ["faster", "load"]


def winner(ratio: float) -> str:
    if ratio != ratio:
        return "-"
    if ratio > 1 + TIE:
        return "1 thread"
    if ratio < 1 - TIE:
        return "2 threads"
    return "tie"


def cells(r: Result, counts: Sequence[int]) -> list[str]:
    if r.error:
        return [
            r.label,
            "-",
            "-",
            r.unit,
            *("-" for _ in counts),
            "error",
            *("-" for n in counts if n not in (1, 2)),
            "-",
            fmt_load(r.load),
        ]
    ratio = r.ratio(2)
    return [
        r.label,
        fmt_work(r.work),
        str(r.steps),
        r.unit,
        *(fmt_s(r.median(n)) for n in counts),
        f"{ratio:.2f}",
        *(f"{r.ratio(n):.2f}" for n in counts if n not in (1, 2)),
        winner(ratio),
        fmt_load(r.load),
    ]


def print_row(r: Result, counts: Sequence[int], widths: list[int]) -> None:
    row = cells(r, counts)
    parts = [
        c.ljust(w) if i == 0 else c.rjust(w)
        for i, (c, w) in enumerate(zip(row, widths, strict=True))
    ]
    print("  ".join(parts).rstrip(), flush=True)
    if r.error:
        print(f"    error: {r.error}", flush=True)


def best_cut(rows: list[Result]) -> tuple[float | None, list[Result]]:
    """The work size that best splits "2 threads win" from "1 thread wins or ties".

    A one-feature decision stump on ``log(work)``: every cut between two neighbouring workloads
    (and below / above all of them) is tried, and the one that misplaces the fewest rows wins
    (the larger cut on a draw: one thread is the safe default). Returns the cut (``None``: no
    row gains from 2 threads) and the misplaced rows.
    """
    ok = sorted(rows, key=lambda r: r.work)
    if not any(r.ratio(2) < 1 - TIE for r in ok):
        return None, []
    best: tuple[int, float, list[Result]] | None = None
    works = [r.work for r in ok]
    cuts = [works[0] / 2]
    cuts += [math.sqrt(a * b) for a, b in zip(works, works[1:], strict=False) if a < b]
    cuts += [works[-1] * 2]
    for cut in cuts:
        wrong = [r for r in ok if (r.ratio(2) < 1 - TIE) != (r.work > cut)]
        if best is None or len(wrong) <= best[0]:
            best = (len(wrong), cut, wrong)
    assert best is not None
    return best[1], best[2]


def summary(results: list[Result], load: tuple[float, float] | None) -> str:
    """One paragraph: the work size below which one thread wins or ties, from this run's rows."""
    ok = sorted((r for r in results if not r.error), key=lambda r: r.work)
    if not ok:
        return "Summary: no workload ran, so there is no rule to read off."
    load_txt = (
        f" (load average {load[0]:.2f} at the start, {load[1]:.2f} at the end, "
        f"{_timing.core_count()} cores)"
        if load
        else ""
    )
    best = min(ok, key=lambda r: r.ratio(2))
    worst = max(ok, key=lambda r: r.ratio(2))
    extremes = (
        f" Two threads did best on {best.label} (t2/t1 = {best.ratio(2):.2f}) and worst on "
        f"{worst.label} (t2/t1 = {worst.ratio(2):.2f})."
    )
    if load and max(load) >= _timing.core_count() - 0.5:
        extremes += (
            " The machine was busy (load average >= cores): these ratios measure 2 threads "
            "competing with other processes for the cores, which is what a shared box sees; "
            "on an idle machine rerun the script to find the size above which 2 threads pay."
        )
    cut, wrong = best_cut(ok)
    if cut is None or cut > ok[-1].work:
        exceptions = (
            " except "
            + "; ".join(f"{r.label} (t2/t1 {r.ratio(2):.2f})" for r in wrong)
            + ", which no size cut explains (noise, or per-call overhead)"
            if wrong
            else ""
        )
        return (
            f"Summary: one thread won or tied on {'every' if not wrong else 'almost every'} "
            f"workload, up to ~{fmt_work(ok[-1].work)} of work per step{exceptions}{load_txt}, "
            "so the rule is simply torch.set_num_threads(1) for these training loops." + extremes
        )
    below = [r for r in ok if r.work <= cut]
    above = [r for r in ok if r.work > cut]
    gain = statistics.median(r.ratio(2) for r in above) if above else float("nan")
    text = (
        f"Summary: one thread wins or ties below ~{fmt_work(cut)} of work per step (rows x "
        f"parameters; here {', '.join(r.key for r in below) or 'none'}), and two threads win "
        f"above it ({', '.join(r.key for r in above)}: median t2/t1 {gain:.2f}){load_txt}. "
        f"Rule: set torch.set_num_threads(1) unless one "
        f"step does more than ~{fmt_work(cut)} multiply-adds, and even then only on an "
        "otherwise idle machine: with a core taken by another process, 2 threads stall."
    )
    if wrong:
        text += (
            " Rows on the wrong side of that cut in this run: "
            + "; ".join(f"{r.label} (t2/t1 {r.ratio(2):.2f})" for r in wrong)
            + "."
        )
    return text + extremes


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    keys = [w.key for w in workloads(False, 0)]
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--repeats", type=int, default=None, help="timed calls per count (5)")
    p.add_argument("--warmup", type=int, default=1, help="untimed calls per count first (1)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--rows",
        nargs="+",
        default=None,
        choices=keys,
        metavar="ROW",
        help=f"subset of workloads: {' '.join(keys)}",
    )
    p.add_argument("--quick", action="store_true", help="small sizes, 2 repeats (CI smoke run)")
    p.add_argument("--json", default=None, metavar="PATH", help="also write results as JSON")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    a = parse_args(argv)
    counts = [1, 2] + ([DEFAULT_THREADS] if DEFAULT_THREADS not in (1, 2) else [])
    s = Settings(
        repeats=a.repeats or (2 if a.quick else 5),
        warmup=a.warmup,
        seed=a.seed,
        counts=counts,
        quick=a.quick,
    )
    env = _timing.environment(DEFAULT_THREADS, "pyro")
    v = env["versions"]
    print(f"torch {v['torch']}  pyro {v['pyro']}  python {env['python']}")
    load0 = env.get("load_avg")
    print(
        f"cores {env['cores']}  torch default threads {DEFAULT_THREADS}  "
        f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}  ({env['processor']})"
        + (f"  load avg {load0[0]:.2f} {load0[1]:.2f} {load0[2]:.2f}" if load0 else "")
    )
    print(
        f"thread counts {counts}, alternated call by call; {s.repeats} repeats (median, after "
        f"{s.warmup} warm-up per count)  seed {s.seed}" + ("  [quick]" if s.quick else "")
    )
    print()

    chosen = [w for w in workloads(s.quick, s.seed) if a.rows is None or w.key in a.rows]
    head = header(counts)
    widths = [len(h) for h in head]
    widths[0] = max(widths[0], *(len(w.label) for w in chosen))
    widths[3] = max(widths[3], *(len(w.unit) for w in chosen))
    widths = [max(w, 9) if i else w for i, w in enumerate(widths)]
    print(
        "  ".join(
            h.ljust(w) if i == 0 else h.rjust(w)
            for i, (h, w) in enumerate(zip(head, widths, strict=True))
        ).rstrip()
    )
    print("  ".join("-" * w for w in widths), flush=True)
    results = []
    for w in chosen:
        r = time_workload(w, s)
        results.append(r)
        print_row(r, counts, widths)
    print()
    print(
        f"t2/t1 = median s/step at 2 threads / at 1 thread (below 1: 2 threads faster; "
        f"'faster' allows {TIE:.0%} either way as a tie). work = rows per step x trainable "
        "parameters (NUTS: the target's dimension). load = 1-minute load average as the row "
        "finished."
    )
    load1 = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    loads = (load0[0], load1[0]) if load0 and load1 else None
    print()
    print(summary(results, loads), flush=True)

    if a.json:
        _timing.write_json(
            a.json,
            {
                "environment": env,
                "load_avg_after": load1,
                "settings": s,
                "rows": [r.as_dict() for r in results],
                "summary": summary(results, loads),
            },
        )
        print(f"wrote {a.json}")
    return 1 if any(r.error for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
