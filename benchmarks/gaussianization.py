#!/usr/bin/env python
"""Gaussianization flows against the oracle and same-size MAF / NSF on the 2-D toys.

Run from the repository root::

    python benchmarks/gaussianization.py                  # 8 gaussians + moons, 45 s per model
    python benchmarks/gaussianization.py --budget 20 --toys moons
    python benchmarks/gaussianization.py --quick          # a smoke run (< 60 s)

Two parts, per toy (20,000 training rows, 20,000 test rows, fixed seeds):

- **recipe**: ``flows.gaussianization(2, data=train)`` (8 blocks, 32 logistic
  components, Householder-QR linear layers, data-driven initialisation) trained by
  ``pyro_flows.infer.fit`` for ``--epochs`` epochs at lr 5e-3: the configuration the slow test
  ``tests/test_gaussianization_quality.py`` checks against the issue's bar (within 0.1 nats of
  the oracle). Also reported: the gap right after the data-driven initialisation, before any
  gradient step.
- **same size, same time**: the Gaussianization flow (initialised the same way), pyro_flows'
  MAF and NSF with the hidden width whose parameter count is closest to the Gaussianization
  flow's, and the same MAF / NSF at ``benchmarks/density.py``'s default budget of 20,000
  parameters, all trained by ``benchmarks/density.py``'s shared loop (Adam, batch 512, cosine
  decay over the wall-time ``--budget``, best validation state kept).

Columns: test NLL (nats), ``gap`` = NLL - oracle NLL (``pyro_flows.data.ORACLE_NLL``), and
``gap / GF`` = the model's gap divided by the Gaussianization flow's in the same part (above 1:
the Gaussianization flow is closer to the oracle).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
for _path in (HERE, ROOT):
    if _path not in sys.path:
        sys.path.insert(0, _path)

import _timing  # noqa: E402
import density  # noqa: E402

from pyro_flows import flows  # noqa: E402
from pyro_flows.data import ORACLE_NLL  # noqa: E402
from pyro_flows.flows.iterative_gaussianization import gaussianization  # noqa: E402
from pyro_flows.infer import evaluate_nll, fit  # noqa: E402


@dataclass
class Result:
    part: str
    toy: str
    model: str
    params: int
    seconds: float
    test: float
    gap: float
    ratio: float | None = None


def n_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


def run_recipe(toy: str, args: argparse.Namespace) -> list[Result]:
    train, _, test = density.toy_split(toy, args.n)
    torch.manual_seed(0)
    start = time.perf_counter()
    flow = gaussianization(
        2, num_transforms=args.layers, num_components=args.components, data=train
    )
    init_seconds = time.perf_counter() - start
    init_nll = evaluate_nll(flow, test)
    fit(flow, train, epochs=args.epochs, lr=5e-3, progress=False)
    seconds = time.perf_counter() - start
    nll = evaluate_nll(flow, test)
    oracle = ORACLE_NLL[toy]
    return [
        Result("recipe", toy, "GF, data init only", n_params(flow), init_seconds, init_nll,
               init_nll - oracle),
        Result("recipe", toy, f"GF + fit({args.epochs} epochs)", n_params(flow), seconds, nll,
               nll - oracle),
    ]


def run_same_budget(toy: str, args: argparse.Namespace) -> list[Result]:
    train, val, test = density.toy_split(toy, args.n)
    oracle = ORACLE_NLL[toy]
    torch.manual_seed(0)
    gf = gaussianization(2, num_transforms=args.layers, num_components=args.components, data=train)
    size = n_params(gf)
    contenders: list[tuple[str, density.Model]] = [
        ("GF (data init)", density.Model("", gf.log_prob, gf))
    ]
    for label, builder in (("maf", flows.maf), ("nsf", flows.nsf)):
        for target in (size, args.params):
            model, width = density.match_budget(density._ours(builder), 2, 5, target)
            name = f"{label} (5 x {width}-{width})"
            if name not in dict(contenders):  # the smallest width may serve both budgets
                contenders.append((name, model))
    rows = []
    for name, model in contenders:
        _, seconds = density.train_for(model, train, val, args.budget)
        nll = density.test_nll(model, test)
        rows.append(Result("same time", toy, name, model.num_params, seconds, nll, nll - oracle))
        print(f"  {toy:10s} {name:24s} test NLL {nll:.3f}", flush=True)
    gf_gap = rows[0].gap
    for r in rows:
        r.ratio = r.gap / gf_gap if gf_gap > 0 else None
    return rows


def print_results(results: Sequence[Result], quick: bool = False) -> None:
    for part in ("recipe", "same time"):
        sel = [r for r in results if r.part == part]
        if not sel:
            continue
        print(f"\n== {part} ==")
        header = ["toy", "model", "params", "secs", "test NLL", "gap", "gap / GF"]
        rows = [
            [
                r.toy,
                r.model,
                str(r.params),
                f"{r.seconds:.1f}",
                f"{r.test:.3f}",
                f"{r.gap:+.3f}",
                "" if r.ratio is None else f"{r.ratio:.2f}",
            ]
            for r in sel
        ]
        print(_timing.format_table(header, rows))
        if part == "recipe":
            for r in sel:
                if r.model.startswith("GF +"):
                    verdict = "PASS" if r.gap <= 0.1 else "FAIL"
                    if quick:
                        verdict += " (--quick is a smoke run, not a measurement)"
                    print(f"  {r.toy}: gap {r.gap:+.3f} nats (target <= 0.1) -> {verdict}")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    p.add_argument("--toys", nargs="+", default=["8gaussians", "moons"])
    p.add_argument("--n", type=int, default=20000, help="training rows per toy")
    p.add_argument("--layers", type=int, default=8, help="Gaussianization blocks")
    p.add_argument("--components", type=int, default=32, help="mixture components")
    p.add_argument("--epochs", type=int, default=20, help="fit() epochs (recipe)")
    p.add_argument("--budget", type=float, default=45.0, help="seconds per model (same time)")
    p.add_argument("--params", type=int, default=20000, help="the larger MAF/NSF budget")
    p.add_argument("--no-recipe", action="store_true")
    p.add_argument("--no-same-time", action="store_true")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--quick", action="store_true", help="a smoke run")
    p.add_argument("--json", default=None, help="write the rows here")
    args = p.parse_args(argv)
    if args.quick:
        args.toys, args.n, args.epochs, args.budget = ["moons"], 2000, 2, 1.5
        args.layers, args.components, args.params = 4, 16, 3000
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    threads = _timing.set_threads(args.threads)
    env = _timing.environment(threads, "pyro")
    print(f"torch threads {threads}, cores {env['cores']}, versions {env['versions']}")
    results: list[Result] = []
    for toy in args.toys:
        if not args.no_recipe:
            results += run_recipe(toy, args)
        if not args.no_same_time:
            results += run_same_budget(toy, args)
    print_results(results, args.quick)
    if args.json:
        _timing.write_json(args.json, {"env": env, "rows": [asdict(r) for r in results]})
    return 0


if __name__ == "__main__":
    sys.exit(main())
