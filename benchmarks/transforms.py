#!/usr/bin/env python
"""Time pyro_flows' flows against Pyro's built-in transforms and zuko, side by side.

Run from the repository root::

    python benchmarks/transforms.py                 # D = 16 and 64, batch 4096, 5 repeats
    python benchmarks/transforms.py --quick         # tiny sizes, for CI (< 60 s)
    python benchmarks/transforms.py --dims 64 --rows sample/maf --repeats 9 --json out.json

Every flow has 5 layers with hidden sizes (64, 64) and a permutation (reverse order, or zuko's
alternating orders / masks, which is the same thing) between layers. Each row times our flow and
the peers in the same run, interleaved repeat by repeat, and reports medians in milliseconds and
``ratio = ours / best peer`` (goal: <= 1.0). See ``benchmarks/README.md`` for what each row runs.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
for _path in (HERE, ROOT):
    if _path not in sys.path:
        sys.path.insert(0, _path)

import _timing  # noqa: E402
import pyro.distributions.transforms as T  # noqa: E402
from _peers import pyro_affine_coupling, pyro_autoregressive, zuko, zuko_flow  # noqa: E402

Thunk = Callable[[], object]


# ------------------------------------------------------------------------------------------
# settings and results
# ------------------------------------------------------------------------------------------
@dataclass
class Settings:
    dims: list[int]
    batch: int
    repeats: int
    warmup: int
    layers: int
    hidden: tuple[int, ...]
    threads: int
    seed: int
    build_dim: int
    quick: bool


@dataclass
class Result:
    row: str
    dim: int
    ours_s: float
    peers_s: dict[str, float | None] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def best_peer(self) -> tuple[str | None, float | None]:
        timed = {k: v for k, v in self.peers_s.items() if v is not None}
        if not timed:
            return None, None
        name = min(timed, key=timed.__getitem__)
        return name, timed[name]

    @property
    def ratio(self) -> float | None:
        _, best = self.best_peer
        return None if best is None else self.ours_s / best

    def as_dict(self) -> dict[str, Any]:
        name, _ = self.best_peer
        return {
            "row": self.row,
            "dim": self.dim,
            "ours_ms": self.ours_s * 1e3,
            "peers_ms": {k: None if v is None else v * 1e3 for k, v in self.peers_s.items()},
            "best_peer": name,
            "ratio": self.ratio,
            "notes": self.notes,
        }


PEERS = ("pyro", "zuko")


# ------------------------------------------------------------------------------------------
# our flows
# ------------------------------------------------------------------------------------------
def our_builders() -> tuple[dict[str, Callable[..., nn.Module]], str | None]:
    """``{"maf", "iaf", "realnvp", "nice"}`` builders ``(D, num_transforms, hidden_dims)``.

    Uses ``pyro_flows.flows``; while that module cannot be imported yet (it is being written),
    falls back to the same stacks built from ``Flow`` and the layer classes, and says so.
    """
    try:
        from pyro_flows import flows

        return {
            "maf": flows.maf,
            "iaf": flows.iaf,
            "realnvp": flows.realnvp,
            "nice": flows.nice,
        }, None
    except ImportError as exc:
        reason = f"pyro_flows.flows not importable ({exc}); built from Flow + layers"

    from pyro_flows import Flow
    from pyro_flows.transforms import (
        AdditiveCoupling,
        AffineCoupling,
        InverseAutoregressive,
        MaskedAutoregressive,
    )

    def reverse(D: int) -> Any:
        try:
            from pyro_flows.transforms.permutation import Reverse

            return Reverse(D)
        except ImportError:
            return T.Permute(torch.arange(D - 1, -1, -1))

    def rescale(D: int) -> Any:
        try:
            from pyro_flows.transforms.rescale import Rescale

            return Rescale(D)
        except ImportError:
            return None

    def stack(layer: Callable[..., nn.Module], tail: Callable[[int], Any] | None = None):
        def build(D: int, num_transforms: int = 5, hidden_dims: Sequence[int] = (64, 64)):
            layers: list[Any] = []
            for k in range(num_transforms):
                layers.append(layer(D, hidden_dims))
                if k < num_transforms - 1:
                    layers.append(reverse(D))
            if tail is not None and (last := tail(D)) is not None:
                layers.append(last)
            return Flow(layers)

        return build

    return {
        "maf": stack(MaskedAutoregressive),
        "iaf": stack(InverseAutoregressive),
        "realnvp": stack(AffineCoupling),
        "nice": stack(AdditiveCoupling, rescale),
    }, reason


# ------------------------------------------------------------------------------------------
# the rows
# ------------------------------------------------------------------------------------------
def _train_step(log_prob: Callable[[torch.Tensor], torch.Tensor], params, x) -> Thunk:
    params = list(params)

    def step() -> None:
        for p in params:
            p.grad = None
        # a fresh tensor each call: Pyro's cache_size=1 keys on identity and would otherwise
        # hand back the previous call's (already back-propagated) result
        loss = -log_prob(x.clone()).mean()
        loss.backward()

    return step


def _no_grad(fn: Thunk) -> Thunk:
    def run() -> object:
        with torch.no_grad():
            return fn()

    return run


def row_train(kind: str, D: int, s: Settings, ours: dict) -> tuple[dict[str, Thunk | None], list]:
    notes: list[str] = []
    x = torch.randn(s.batch, D)
    flow = ours[kind](D, num_transforms=s.layers, hidden_dims=s.hidden)
    fns: dict[str, Thunk | None] = {"ours": _train_step(flow.log_prob, flow.parameters(), x)}
    if kind == "maf":
        try:
            d, mods = pyro_autoregressive(D, s.layers, s.hidden, invert=True)
            fns["pyro"] = _train_step(d.log_prob, mods.parameters(), x)
        except ValueError as exc:
            fns["pyro"] = None
            notes.append(f"pyro: {exc}")
    elif kind == "realnvp":
        d, mods = pyro_affine_coupling(D, s.layers, s.hidden)
        fns["pyro"] = _train_step(d.log_prob, mods.parameters(), x)
    else:
        fns["pyro"] = None  # Pyro has no NICE (additive coupling) layer
    if zuko is not None:
        zf = zuko_flow(kind, D, s.layers, s.hidden)
        fns["zuko"] = _train_step(lambda v: zf().log_prob(v), zf.parameters(), x)
    return fns, notes


def row_sample(kind: str, D: int, s: Settings, ours: dict) -> tuple[dict[str, Thunk | None], list]:
    notes: list[str] = []
    flow = ours[kind](D, num_transforms=s.layers, hidden_dims=s.hidden)
    shape = (s.batch,)
    fns: dict[str, Thunk | None] = {"ours": _no_grad(lambda: flow.sample(shape))}
    try:
        d, _ = pyro_autoregressive(D, s.layers, s.hidden, invert=kind == "maf")
        fns["pyro"] = _no_grad(lambda: d.sample(shape))
    except ValueError as exc:
        fns["pyro"] = None
        notes.append(f"pyro: {exc}")
    if zuko is not None:
        zf = zuko_flow(kind, D, s.layers, s.hidden)
        fns["zuko"] = _no_grad(lambda: zf().sample(shape))
    return fns, notes


def row_rsample_log_prob(kind: str, D: int, s: Settings, ours: dict):
    """Reparametrised samples and their log density, autograd on (the VI direction)."""
    notes: list[str] = []
    flow = ours[kind](D, num_transforms=s.layers, hidden_dims=s.hidden)
    shape = (s.batch,)
    fns: dict[str, Thunk | None] = {"ours": lambda: flow.rsample_and_log_prob(shape)}
    try:
        d, _ = pyro_autoregressive(D, s.layers, s.hidden, invert=False)

        def pyro_fn() -> object:
            x = d.rsample(shape)
            return x, d.log_prob(x)  # cache_size=1: the inverse is looked up, not recomputed

        fns["pyro"] = pyro_fn
    except ValueError as exc:
        fns["pyro"] = None
        notes.append(f"pyro: {exc}")
    if zuko is not None:
        zf = zuko_flow(kind, D, s.layers, s.hidden)
        fns["zuko"] = lambda: zf().rsample_and_log_prob(shape)
    return fns, notes


def row_log_prob(kind: str, D: int, s: Settings, ours: dict):
    """log q(x) of external points, no grad (for IAF: D sequential passes per layer)."""
    notes: list[str] = []
    x = torch.randn(s.batch, D)
    flow = ours[kind](D, num_transforms=s.layers, hidden_dims=s.hidden)
    fns: dict[str, Thunk | None] = {"ours": _no_grad(lambda: flow.log_prob(x.clone()))}
    try:
        d, _ = pyro_autoregressive(D, s.layers, s.hidden, invert=False)
        fns["pyro"] = _no_grad(lambda: d.log_prob(x.clone()))  # fresh x: no cache hit
    except ValueError as exc:
        fns["pyro"] = None
        notes.append(f"pyro: {exc}")
    if zuko is not None:
        zf = zuko_flow(kind, D, s.layers, s.hidden)
        fns["zuko"] = _no_grad(lambda: zf().log_prob(x.clone()))
    return fns, notes


# (key, label, factory, flow kind)
ROWS: list[tuple[str, str, Callable[..., Any], str]] = [
    ("train/maf", "train step maf (log_prob fwd+bwd)", row_train, "maf"),
    ("train/realnvp", "train step realnvp (log_prob fwd+bwd)", row_train, "realnvp"),
    ("train/nice", "train step nice (log_prob fwd+bwd)", row_train, "nice"),
    ("sample/maf", "sample maf (no grad, D passes)", row_sample, "maf"),
    ("sample/iaf", "sample iaf (no grad, 1 pass)", row_sample, "iaf"),
    ("rsample_log_prob/iaf", "rsample_and_log_prob iaf (1 pass)", row_rsample_log_prob, "iaf"),
    ("log_prob/iaf", "log_prob iaf, external x (D passes)", row_log_prob, "iaf"),
]
ROW_KEYS = [r[0] for r in ROWS]


def run_rows(s: Settings, ours: dict, keys: Sequence[str]) -> list[Result]:
    results = []
    for D in s.dims:
        for key, _label, factory, kind in ROWS:
            if key not in keys:
                continue
            _timing.seed_all(s.seed)
            fns, notes = factory(kind, D, s, ours)
            runnable = {k: v for k, v in fns.items() if v is not None}
            _timing.seed_all(s.seed)
            timings = _timing.time_side_by_side(runnable, s.repeats, s.warmup)
            peers = {p: timings[p].median if p in timings else None for p in PEERS}
            results.append(Result(key, D, timings["ours"].median, peers, notes))
            print(f"  done {key} D={D}", file=sys.stderr, flush=True)
    return results


def run_build(s: Settings, ours: dict) -> dict[str, float | None]:
    """Seconds to build a 5-layer MAF of size ``build_dim`` (ours; goal < 1 s) and peers'."""
    D, reps = s.build_dim, 1 if s.quick else 3
    out: dict[str, float | None] = {}
    out["ours"] = _timing.time_median(
        lambda: ours["maf"](D, num_transforms=s.layers, hidden_dims=s.hidden), reps, 0
    ).median
    try:
        out["pyro"] = _timing.time_median(
            lambda: pyro_autoregressive(D, s.layers, s.hidden, invert=True), reps, 0
        ).median
    except ValueError:
        out["pyro"] = None  # AutoRegressiveNN needs hidden sizes >= input_dim
    out["zuko"] = (
        None
        if zuko is None
        else _timing.time_median(lambda: zuko_flow("maf", D, s.layers, s.hidden), reps, 0).median
    )
    return out


# ------------------------------------------------------------------------------------------
# output
# ------------------------------------------------------------------------------------------
def print_table(results: list[Result]) -> None:
    labels = {key: label for key, label, _, _ in ROWS}
    header = ["row", "D", "ours ms", *(f"{p} ms" for p in PEERS), "ratio", "best peer"]
    body = []
    for r in results:
        name, _ = r.best_peer
        ratio = r.ratio
        ratio_s = "-" if ratio is None else f"{ratio:.2f}" + (" !" if ratio > 1.0 else "")
        peers = [
            _timing.fmt_ms(r.peers_s.get(p)) if r.peers_s.get(p) is not None else "n/a"
            for p in PEERS
        ]
        body.append(
            [labels[r.row], str(r.dim), _timing.fmt_ms(r.ours_s), *peers, ratio_s, name or "-"]
        )
    print(_timing.format_table(header, body))
    for r in results:
        for note in r.notes:
            print(f"note ({r.row}, D={r.dim}): {note}")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dims", type=int, nargs="+", default=None, help="event sizes (16 64)")
    p.add_argument("--batch", type=int, default=None, help="batch size (4096)")
    p.add_argument("--repeats", type=int, default=None, help="timed repeats per row (5)")
    p.add_argument("--warmup", type=int, default=1, help="untimed calls first (1)")
    p.add_argument("--layers", type=int, default=5, help="flow layers (5)")
    p.add_argument("--hidden", type=int, nargs="+", default=[64, 64], help="hidden sizes")
    p.add_argument("--threads", type=int, default=None, help="torch threads (all cores)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--build-dim", type=int, default=1000, help="MAF size for the build time")
    p.add_argument(
        "--rows",
        nargs="+",
        default=None,
        choices=ROW_KEYS,
        metavar="ROW",
        help=f"subset of rows: {' '.join(ROW_KEYS)}",
    )
    p.add_argument("--quick", action="store_true", help="tiny sizes, 2 repeats (CI smoke run)")
    p.add_argument("--json", default=None, metavar="PATH", help="also write results as JSON")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    a = parse_args(argv)
    threads = _timing.set_threads(a.threads)
    s = Settings(
        dims=a.dims or ([4, 8] if a.quick else [16, 64]),
        batch=a.batch or (256 if a.quick else 4096),
        repeats=a.repeats or (2 if a.quick else 5),
        warmup=a.warmup,
        layers=a.layers,
        hidden=tuple(a.hidden),
        threads=threads,
        seed=a.seed,
        build_dim=a.build_dim,
        quick=a.quick,
    )
    env = _timing.environment(threads, "pyro", "zuko")
    v = env["versions"]
    print(
        f"torch {v['torch']}  pyro {v['pyro']}  zuko {v['zuko'] or 'not installed'}  "
        f"python {env['python']}"
    )
    load = env.get("load_avg")
    print(
        f"cores {env['cores']}  torch threads {threads}  ({env['processor']})"
        + (f"  load avg {load[0]:.1f}" if load else "")
    )
    print(
        f"dims {s.dims}  batch {s.batch}  layers {s.layers}  hidden {s.hidden}  "
        f"repeats {s.repeats} (median, after {s.warmup} warm-up)  seed {s.seed}"
        + ("  [quick]" if s.quick else "")
    )
    if zuko is None:
        print(
            "note: zuko is not installed (pip install 'pyro-flows[bench]'): zuko columns "
            "are skipped"
        )
    ours, fallback = our_builders()
    if fallback:
        print(f"note: {fallback}")
    print()

    keys = a.rows or ROW_KEYS
    results = run_rows(s, ours, keys)
    print_table(results)

    build = run_build(s, ours)
    print()
    ok = build["ours"] is not None and build["ours"] < 1.0
    peer_txt = "  ".join(f"{p} {'n/a' if build[p] is None else f'{build[p]:.3f} s'}" for p in PEERS)
    print(
        f"build maf({s.build_dim}), {s.layers} layers: ours {build['ours']:.3f} s "
        f"({'ok' if ok else 'SLOW'}: goal < 1 s)  {peer_txt}"
    )
    if build["pyro"] is None:
        print("  (pyro n/a: AutoRegressiveNN needs hidden sizes >= input_dim)")

    slower = [r for r in results if r.ratio is not None and r.ratio > 1.0]
    print()
    print(
        "ratio = ours / best peer (goal <= 1.0); '!' marks rows where a peer is faster"
        + (f": {len(slower)} row(s)" if slower else ": none")
    )

    if a.json:
        _timing.write_json(
            a.json,
            {
                "environment": env,
                "settings": s,
                "fallback": fallback,
                "rows": [r.as_dict() for r in results],
                "build_s": build,
                "build_dim": s.build_dim,
            },
        )
        print(f"wrote {a.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
