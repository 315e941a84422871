"""``benchmarks/loops.py --profile``: where the time of our training loops goes.

For ``fit`` (on the first of ``--fit-dims``) and ``fit_target`` (IAF on the first of
``--target-dims``), next to the zuko hand loop of the same model, and for the SVI step of
``AutoFlow`` next to ``AutoIAFNormal``'s:

- torch.profiler's top operators by self CPU time (``profile_ops``): which kernels and which
  per-step bookkeeping ops (``isfinite``, ``clone``, norms) take the time;
- cProfile's top Python functions by own time (``profile_python``): the interpreter's share;
- ablations: the same call with one of the options that the hand loop does not have switched
  off (validation, clipping, schedule), each timed side by side with the others, so that each
  feature's price is a difference of medians.
"""

from __future__ import annotations

import cProfile
import io
import pstats
import statistics
import time
import warnings
from collections.abc import Callable
from typing import Any

import _hand_loops as hand
import torch
from _peers import zuko, zuko_flow

from pyro_flows.infer import fit, fit_target
from pyro_flows.targets import get_target

ROWS = 15


class Window:
    """A profiler that runs between two of a loop's callbacks: started at ``callback(first)``
    and stopped at ``callback(last)`` (so the set-up, the first unit and what follows the
    loop are left out). ``kind``: ``"torch"`` (torch.profiler, CPU operators) or ``"python"``
    (cProfile)."""

    def __init__(self, kind: str, first: int, last: int) -> None:
        self.kind, self.first, self.last = kind, first, last
        self.prof: Any = None

    def __call__(self, i: int, *_: object) -> None:
        if i == self.first:
            if self.kind == "torch":
                self.prof = torch.profiler.profile(
                    activities=[torch.profiler.ProfilerActivity.CPU]
                )
                self.prof.start()
            else:
                self.prof = cProfile.Profile()
                self.prof.enable()
        elif i == self.last and self.prof is not None:
            if self.kind == "torch":
                self.prof.stop()
            else:
                self.prof.disable()

    def report(self, rows: int = ROWS) -> str:
        """torch: the ``rows`` operators with the most self CPU time; python: the ``rows``
        functions with the most own time (``tottime``)."""
        if self.prof is None:
            return "(nothing profiled)"
        if self.kind == "torch":
            return self.prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=rows)
        out = io.StringIO()
        pstats.Stats(self.prof, stream=out).sort_stats("tottime").print_stats(rows)
        text = out.getvalue()
        return text[text.find("   ncalls") :].rstrip() if "   ncalls" in text else text


def _both(title: str, first: int, last: int,
          loops: dict[str, Callable[[Callable[..., None]], object] | None]) -> None:
    """Each loop run (warm), then under torch.profiler and under cProfile, the window from its
    callback ``first`` to ``last``; both tables printed."""
    for who, loop in loops.items():
        if loop is None:
            continue
        loop(lambda *_: None)  # warm: lazy set-up out of the profile
        for kind, what in (("torch", "torch.profiler, by self CPU"),
                           ("python", "cProfile, by own time")):
            window = Window(kind, first, last)
            loop(window)
            print(f"\n-- {title}: {who}, {what}, top {ROWS} --", flush=True)
            print(window.report(), flush=True)


def ablate(variants: dict[str, Callable[[], float]], repeats: int) -> dict[str, float]:
    """Median of each variant's returned seconds, the variants interleaved (order rotating)."""
    names = list(variants)
    times: dict[str, list[float]] = {n: [] for n in names}
    for n in names:
        variants[n]()
    for r in range(repeats):
        for n in names[r % len(names) :] + names[: r % len(names)]:
            times[n].append(variants[n]())
    return {n: statistics.median(t) for n, t in times.items()}


def _print_ablation(title: str, medians: dict[str, float], unit: str) -> None:
    base = medians["defaults"]
    print(f"\n-- {title}: ablations (median ms/{unit}; change vs defaults) --", flush=True)
    for name, t in medians.items():
        print(f"  {name:<44} {t * 1e3:8.2f}  {100 * (t - base) / base:+6.1f}%", flush=True)


def fit_profile(s: Any, fit_data: Callable[[int, int, int], torch.Tensor], flows: Any) -> None:
    D, epochs = s.fit_dims[0], max(2, min(s.epochs, 5))
    x = fit_data(D, s.rows, s.seed)
    common = dict(batch_size=s.batch, lr=2e-3, seed=s.seed)
    shape = dict(num_transforms=s.layers, hidden_dims=s.hidden)

    def ours(**options: Any) -> Callable[[], float]:
        def run() -> float:
            torch.manual_seed(s.seed)
            flow = flows.maf(D, **shape)
            start = time.perf_counter()
            h = fit(flow, x, epochs=epochs, progress=False, **common, **options)
            return (time.perf_counter() - start) / h.epochs
        return run

    def fit_loop(callback: Callable[..., None]) -> None:
        torch.manual_seed(s.seed)
        fit(flows.maf(D, **shape), x, epochs=epochs, progress=False, callback=callback,
            **common)

    def zuko_loop(callback: Callable[..., None]) -> None:
        zf = zuko_flow("maf", D, s.layers, s.hidden)
        hand.fit_like(zf, lambda v: zf().log_prob(v), x, epochs=epochs, callback=callback,
                      **common)

    title = f"fit maf({D}), epochs 2-{epochs} (N={s.rows}, B={s.batch})"
    _both(title, 0, epochs - 1, {"ours": fit_loop, "zuko loop": zuko_loop if zuko else None})
    off = dict(validation=None, clip_grad_norm=None, lr_schedule=None)
    variants = {
        "defaults": ours(),
        "validation=None": ours(validation=None),
        "clip_grad_norm=None": ours(clip_grad_norm=None),
        "lr_schedule=None": ours(lr_schedule=None),
        "all three off": ours(**off),
    }
    _print_ablation(f"fit maf({D})", ablate(variants, s.repeats), "epoch")


def target_profile(s: Any, flows: Any) -> None:
    D, steps = s.target_dims[0], s.target_steps
    target = get_target("banana", dim=D)
    shape = dict(num_transforms=s.layers, hidden_dims=s.hidden)

    def ours(**options: Any) -> Callable[[], float]:
        def run() -> float:
            torch.manual_seed(s.seed)
            flow = flows.iaf(D, **shape)
            stamps: list[float] = []
            with warnings.catch_warnings():  # the k-hat of an under-trained flow: no matter
                warnings.simplefilter("ignore", UserWarning)
                fit_target(flow, target, steps=steps, method="reverse_kl", check_modes=False,
                           progress=False, seed=s.seed,
                           callback=lambda *_: stamps.append(time.perf_counter()), **options)
            return hand.per_step(stamps, 5)
        return run

    def target_loop(callback: Callable[..., None]) -> None:
        torch.manual_seed(s.seed)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            fit_target(flows.iaf(D, **shape), target, steps=steps, method="reverse_kl",
                       check_modes=False, progress=False, seed=s.seed, callback=callback)

    def zuko_loop(callback: Callable[..., None]) -> None:
        zf = zuko_flow("iaf", D, s.layers, s.hidden)
        hand.reverse_kl_loop(lambda b: zf().rsample_and_log_prob((b,)), target.log_prob,
                             zf.parameters(), steps=steps, batch_size=256, lr=3e-3,
                             callback=callback)

    title = f"fit_target iaf({D}), steps 6-{steps} (B=256)"
    _both(title, 5, steps, {"ours": target_loop, "zuko loop": zuko_loop if zuko else None})

    def by_hand(optimizer: Callable[..., torch.optim.Optimizer]) -> Callable[[], float]:
        def run() -> float:
            torch.manual_seed(s.seed)
            flow = flows.iaf(D, **shape)
            stamps = hand.reverse_kl_loop(
                lambda b: flow.rsample_and_log_prob((b,)), target.log_prob, flow.parameters(),
                steps=steps, batch_size=256, lr=3e-3, optimizer=optimizer)
            return hand.per_step(stamps, 5)
        return run

    variants = {
        "defaults": ours(),
        "clip_grad_norm=None": ours(clip_grad_norm=None),
        "hand loop on ours, Adam (for-loop)": by_hand(torch.optim.Adam),
        "hand loop on ours, Adam(foreach=True)": by_hand(
            lambda p, lr: torch.optim.Adam(p, lr=lr, foreach=True)),
        "hand loop on ours, Adam(fused=True)": by_hand(
            lambda p, lr: torch.optim.Adam(p, lr=lr, fused=True)),
    }
    _print_ablation(f"fit_target iaf({D})", ablate(variants, s.repeats), "step")


def svi_profile(s: Any, runs: dict[str, Any]) -> None:
    """``s.svi_steps`` SVI steps of each warm guide (``loops.GuideRun``), profiled whole."""

    def steps(run: Any) -> Callable[[Callable[..., None]], None]:
        def loop(callback: Callable[..., None]) -> None:
            callback(0)
            run(s.svi_steps)
            callback(s.svi_steps)
        return loop

    _both(f"svi, {s.svi_steps} steps", 0, s.svi_steps,
          {name: steps(run) for name, run in runs.items()})


def run(s: Any, fit_data: Callable[[int, int, int], torch.Tensor], flows: Any,
        guides: dict[str, Any] | None = None) -> None:
    """The profiles and ablations of the parts in ``s.parts`` that have them (``guides``: the
    SVI part's warm guides, ``None`` when it did not run)."""
    print("\n== profile ==", flush=True)
    if "fit" in s.parts:
        fit_profile(s, fit_data, flows)
    if guides:
        svi_profile(s, guides)
    if "target" in s.parts:
        target_profile(s, flows)
