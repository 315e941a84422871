#!/usr/bin/env python
"""Density estimation against the oracle and the peers: same data, parameters and wall time.

Run from the repository root::

    python benchmarks/density.py                       # toys + digits, 45 s per model
    python benchmarks/density.py --toys moons --budget 20 --no-digits
    python benchmarks/density.py --quick               # a smoke run for CI (< 90 s)

Part 1 (toys): every model is trained by the *same* loop (Adam, batch 512, a learning rate that
decays to zero over the wall-time budget by a cosine, the best validation state kept), with a
hidden width chosen so that its parameter count is as close as possible to ``--params``. It
prints test NLL (nats), the gap to the toy's oracle NLL (its entropy), parameters, steps and
seconds. Validation and test NLLs are computed in eval mode (exact traces for the CNF).

Contenders: pyro_flows' ``nsf``, ``maf``, ``realnvp``, ``nice`` (``--layers`` layers, hidden
``(width, width)``), the Gaussianization flow and FFJORD, Pyro's built-in MAF, RealNVP and NSF
(autoregressive and coupling) and zuko's MAF and NSF. Two of them map ``(layers, width)`` to
their own size knobs:

- ``pyro_flows gaussianization``
  (:func:`pyro_flows.flows.iterative_gaussianization.gaussianization`): 8 blocks (the setting of
  ``benchmarks/gaussianization.py``; ``--layers`` is not used) of a Householder-QR rotation and
  a marginal Gaussianization with ``width`` logistic components per dimension: it has no hidden
  network (its ``hidden_dims`` only shape context networks), the number of components is what
  scales its size, ``8 * (3 D width + D (3 D + 1) / 2)`` parameters (18,488 at width 384, D = 2).
  Before training it gets its data-driven initialisation (``initialize_gaussianization``) on at
  most 4,096 training rows, through the optional ``Model.prepare`` hook; that time counts
  against its wall-time budget.
- ``pyro_flows cnf`` (:func:`pyro_flows.flows.continuous.cnf`, FFJORD): one ODE block (not
  ``--layers``: each block is an ODE solve) whose dynamics MLP has three tanh hidden layers of
  ``width``, dopri5 at ``rtol = atol = 1e-5``, exact trace at D = 2 (as ``benchmarks/cnf.py``).
  A step costs tens of network passes, so it gets far fewer steps in the same time: that is the
  comparison.

Part 2 (defaults): pyro_flows' ``fit`` with its default settings on ``flows.nsf(2)``, the targets
being within 0.05 nats of the oracle on 8 gaussians and moons and 0.15 on checkerboard, each in
under 2 minutes.

Part 3 (digits): scikit-learn's 8x8 digits (17 levels), uniformly dequantized and logit
pre-processed the same way for every model; test bits/dim in the data space. ``nice`` and the CNF
are left out (a printed line says why); the Gaussianization flow takes part (384 components make
about 640k parameters, within the verdict's 25% of the 690k budget), but at D = 64 each of its
steps costs seconds on a CPU, so it gets few steps.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass

import torch
from torch import Tensor, nn

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
for _path in (HERE, ROOT):
    if _path not in sys.path:
        sys.path.insert(0, _path)

import _peers  # noqa: E402
import _timing  # noqa: E402

from pyro_flows import flows  # noqa: E402
from pyro_flows.data import ORACLE_NLL, TOYS  # noqa: E402
from pyro_flows.flows.continuous import cnf  # noqa: E402
from pyro_flows.flows.iterative_gaussianization import (  # noqa: E402
    gaussianization,
    initialize_gaussianization,
)
from pyro_flows.infer import evaluate_nll, fit  # noqa: E402

LogProb = Callable[[Tensor], Tensor]


@dataclass
class Model:
    """A contender: its log density, its parameters and a way to save/restore its state.

    ``prepare``, if given, is called once with the training rows before training (a data-driven
    initialisation); the loops count its time against the model's wall-time budget.
    """

    name: str
    log_prob: LogProb
    module: nn.Module
    prepare: Callable[[Tensor], object] | None = None

    @property
    def num_params(self) -> int:
        return sum(p.numel() for p in self.module.parameters() if p.requires_grad)


@contextmanager
def evaluating(module: nn.Module) -> Iterator[None]:
    """Eval mode (and no gradients) inside, the previous mode restored after: exact densities
    (a CNF uses its exact trace, batch norm its running statistics)."""
    was_training = module.training
    module.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        module.train(was_training)


def prepare_and_train(
    model: Model, train: Tensor, val: Tensor, budget: float, **kw
) -> tuple[int, float, float]:
    """``model.prepare(train)`` (if any), then :func:`train_for` for what is left of ``budget``;
    returns (steps, total seconds, seconds spent in ``prepare``)."""
    prep = 0.0
    if model.prepare is not None:
        start = time.perf_counter()
        model.prepare(train)
        prep = time.perf_counter() - start
    steps, secs = train_for(model, train, val, max(budget - prep, 0.0), **kw)
    return steps, prep + secs, prep


def _ours(builder: Callable[..., nn.Module], **kw) -> Callable[[int, int, int], Model]:
    def make(D: int, layers: int, width: int) -> Model:
        flow = builder(D, num_transforms=layers, hidden_dims=(width, width), **kw)
        return Model("", flow.log_prob, flow)

    return make


def _pyro(builder) -> Callable[[int, int, int], Model]:
    def make(D: int, layers: int, width: int) -> Model:
        d, modules = builder(D, layers, (width, width))
        return Model("", d.log_prob, modules)

    return make


def _zuko(kind: str) -> Callable[[int, int, int], Model]:
    def make(D: int, layers: int, width: int) -> Model:
        if kind == "nsf":
            flow = _peers.zuko_nsf(D, layers, (width, width))
        else:
            flow = _peers.zuko_flow(kind, D, layers, (width, width))
        return Model("", lambda x: flow().log_prob(x), flow)

    return make


GF_BLOCKS = 8
GF_INIT_ROWS = 4096
CNF_DEPTH = 3


def _gaussianization(blocks: int = GF_BLOCKS) -> Callable[[int, int, int], Model]:
    """Gaussianization flow: ``blocks`` blocks (``layers`` is not used), ``width`` mixture
    components per dimension; ``prepare`` runs the data-driven initialisation on at most
    ``GF_INIT_ROWS`` training rows (a fixed random subset)."""

    def make(D: int, layers: int, width: int) -> Model:
        flow = gaussianization(D, num_transforms=blocks, num_components=width, rotation="qr")

        def prepare(train: Tensor) -> None:
            g = torch.Generator().manual_seed(0)
            rows = train[torch.randperm(train.shape[0], generator=g)[:GF_INIT_ROWS]]
            initialize_gaussianization(flow, rows)

        return Model("", flow.log_prob, flow, prepare)

    return make


def _cnf(depth: int = CNF_DEPTH) -> Callable[[int, int, int], Model]:
    """FFJORD: one ODE block (``layers`` is not used), dynamics MLP of ``depth`` tanh hidden
    layers of ``width``; dopri5 at rtol = atol = 1e-5, direct backpropagation."""

    def make(D: int, layers: int, width: int) -> Model:
        flow = cnf(
            D,
            num_transforms=1,
            hidden_dims=(width,) * depth,
            activation="tanh",
            method="dopri5",
            rtol=1e-5,
            atol=1e-5,
        )
        return Model("", flow.log_prob, flow)

    return make


# contenders left out of the digits part, with the reason printed
DIGITS_SKIP = {
    "pyro_flows nice": "toys only (additive couplings; the digits part compares the affine and "
    "spline flows)",
    "pyro_flows cnf": "an ODE solve with Hutchinson traces at D = 64 gets only a handful of "
    "steps in the budget: not a meaningful row",
}


# the --quick (CI smoke run) set: a few seconds each
QUICK_CONTENDERS = (
    "pyro_flows nsf",
    "pyro_flows gaussianization",
    "pyro_flows cnf",
    "pyro MAF",
    "zuko NSF",
)


def contenders(include_zuko: bool) -> dict[str, Callable[[int, int, int], Model]]:
    out = {
        "pyro_flows nsf": _ours(flows.nsf),
        "pyro_flows maf": _ours(flows.maf),
        "pyro_flows realnvp": _ours(flows.realnvp),
        "pyro_flows nice": _ours(flows.nice),
        "pyro_flows gaussianization": _gaussianization(),
        "pyro_flows cnf": _cnf(),
        "pyro_flows bnaf": _ours(flows.bnaf),
        "pyro_flows sospf": _ours(flows.sospf),
        "pyro_flows bpf": _ours(flows.bpf),
        "pyro_flows unaf": _ours(flows.unaf),
        "pyro_flows residual_flow": _ours(flows.residual_flow),
        "pyro MAF": _pyro(lambda D, L, h: _peers.pyro_autoregressive(D, L, h, invert=True)),
        "pyro RealNVP": _pyro(_peers.pyro_affine_coupling),
        "pyro NSF (AR)": _pyro(_peers.pyro_spline_autoregressive),
        "pyro NSF (coupling)": _pyro(_peers.pyro_spline_coupling),
    }
    if include_zuko and _peers.zuko is not None:
        out["zuko MAF"] = _zuko("maf")
        out["zuko NSF"] = _zuko("nsf")
        for kind in _peers.ZUKO_FAMILIES:  # NAF, UNAF, SOSPF, BPF
            out[f"zuko {_peers.ZUKO_FAMILIES[kind]}"] = _zuko(kind)
    return out


def match_budget(make, D: int, layers: int, target: int) -> tuple[Model, int]:
    """The hidden width whose parameter count is closest to ``target``."""
    best: tuple[int, int] | None = None
    for width in (8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512):
        try:
            torch.manual_seed(0)
            n = make(D, layers, width).num_params
        except ValueError:  # e.g. Pyro's AutoRegressiveNN refuses hidden < input_dim
            continue
        if best is None or abs(n - target) < abs(best[1] - target):
            best = (width, n)
    assert best is not None
    torch.manual_seed(0)
    return make(D, layers, best[0]), best[0]


def train_for(
    model: Model, train: Tensor, val: Tensor, budget: float, lr: float = 2e-3, batch: int = 512
) -> tuple[int, float]:
    """The shared loop: Adam, cosine decay over the wall-time budget, best validation state
    (validation NLL in eval mode, every ``budget / 20`` seconds, at most ~20% of the time)."""
    params = [p for p in model.module.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=lr)
    g = torch.Generator().manual_seed(0)
    best, best_state = math.inf, None
    start = time.perf_counter()
    steps, next_eval = 0, 0.0
    while True:
        elapsed = time.perf_counter() - start
        if elapsed >= next_eval or elapsed >= budget:
            with evaluating(model.module):
                v = -float(model.log_prob(val.clone()).mean())
            if v < best:
                best = v
                best_state = {k: t.clone() for k, t in model.module.state_dict().items()}
            # every budget / 20 seconds, but never more than ~20% of the time on validation
            # (slow models: the CNF, large Gaussianization flows)
            now = time.perf_counter() - start
            next_eval = now + max(budget / 20, 0.5, 4 * (now - elapsed))
        if elapsed >= budget:
            break
        for group in opt.param_groups:
            group["lr"] = lr * 0.5 * (1 + math.cos(math.pi * min(elapsed / budget, 1.0)))
        idx = torch.randint(0, train.shape[0], (batch,), generator=g)
        loss = -model.log_prob(train[idx].clone()).mean()
        if not torch.isfinite(loss):
            break
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 10.0)
        opt.step()
        steps += 1
    if best_state is not None:
        model.module.load_state_dict(best_state)
    return steps, time.perf_counter() - start


def test_nll(model: Model, test: Tensor) -> float:
    """Average test NLL (nats) in eval mode."""
    total = 0.0
    with evaluating(model.module):
        for chunk in test.split(4096):
            total += float(model.log_prob(chunk.clone()).double().sum())
    return -total / test.shape[0]


@dataclass
class Row:
    part: str
    data: str
    model: str
    params: int
    width: int
    steps: int
    seconds: float
    test: float
    gap: float | None
    prepare_seconds: float = 0.0  # of ``seconds``: data-driven initialisation


def toy_split(name: str, n: int, seed: int = 0) -> tuple[Tensor, Tensor, Tensor]:
    g = torch.Generator().manual_seed(seed)
    sampler = TOYS[name]
    return sampler(n, generator=g), sampler(n // 4, generator=g), sampler(n, generator=g)


def run_toys(args, makers) -> list[Row]:
    rows = []
    for toy in args.toys:
        train, val, test = toy_split(toy, args.n)
        for name, make in makers.items():
            model, width = match_budget(make, 2, args.layers, args.params)
            steps, secs, prep = prepare_and_train(model, train, val, args.budget)
            nll = test_nll(model, test)
            rows.append(
                Row(
                    "toys",
                    toy,
                    name,
                    model.num_params,
                    width,
                    steps,
                    secs,
                    nll,
                    nll - ORACLE_NLL[toy] if toy in ORACLE_NLL else None,
                    prep,
                )
            )
            print(f"  {toy:12s} {name:26s} test NLL {nll:7.3f}", flush=True)
    return rows


def run_defaults(args) -> list[Row]:
    rows = []
    for toy in args.toys:
        train, _, test = toy_split(toy, args.n)
        torch.manual_seed(0)
        flow = flows.nsf(2)
        start = time.perf_counter()
        history = fit(flow, train, progress=False, max_time=args.default_time)
        secs = time.perf_counter() - start
        nll = evaluate_nll(flow, test)
        n = sum(p.numel() for p in flow.parameters())
        rows.append(
            Row(
                "defaults",
                toy,
                "pyro_flows nsf + fit()",
                n,
                64,
                history.epochs,
                secs,
                nll,
                nll - ORACLE_NLL[toy] if toy in ORACLE_NLL else None,
            )
        )
        print(f"  {toy:12s} fit() defaults: test NLL {nll:.3f} in {secs:.0f} s", flush=True)
    return rows


def digits_data(seed: int = 0):
    """Digits as (train, val, test) in logit space, plus the per-row log-det to data space."""
    from pyro_flows.data import load_digits_dataset

    ds = load_digits_dataset()
    K = ds.num_levels
    g = torch.Generator().manual_seed(seed)
    alpha = 0.05

    def prepare(x: Tensor) -> tuple[Tensor, Tensor]:
        y = (x + torch.rand(x.shape, generator=g)) / K  # uniform dequantization, in (0, 1)
        s = alpha + (1 - 2 * alpha) * y
        z = torch.log(s) - torch.log1p(-s)
        # log |dz/dy| per row, and the dequantization's log K per dim: data-space bits/dim
        log_det = (math.log(1 - 2 * alpha) - torch.log(s) - torch.log1p(-s)).sum(-1)
        return z, log_det - x.shape[1] * math.log(K)

    return [prepare(part) for part in (ds.train, ds.val, ds.test)]


def run_digits(args, makers) -> list[Row]:
    (train, _), (val, _), (test, test_ld) = digits_data()
    D = train.shape[1]
    rows = []
    for name, make in makers.items():
        if name in DIGITS_SKIP:
            print(f"  digits       {name}: skipped, {DIGITS_SKIP[name]}", flush=True)
            continue
        if name in ("pyro_flows nsf", "pyro_flows maf"):
            # random orders between layers, as Pyro's spline_autoregressive and AutoRegressiveNN
            # use by default; on images the order matters (reverse: 2.25 bits/dim, random: 2.16)
            builder = flows.nsf if name.endswith("nsf") else flows.maf
            make = _ours(builder, permutation="random")
            name += " (random orders)"
        model, width = match_budget(make, D, args.layers, args.digits_params)
        steps, secs, prep = prepare_and_train(
            model, train, val, args.digits_budget, lr=1e-3, batch=256
        )
        with evaluating(model.module):
            lp = torch.cat([model.log_prob(c.clone()) for c in test.split(1024)]) + test_ld
        bpd = float(-lp.double().mean()) / (D * math.log(2))
        rows.append(
            Row("digits", "digits", name, model.num_params, width, steps, secs, bpd, None, prep)
        )
        print(f"  digits       {name:26s} test bits/dim {bpd:.4f}", flush=True)
    return rows


def print_rows(rows: Sequence[Row], digits_params: int) -> None:
    for part in ("toys", "defaults", "digits"):
        sel = [r for r in rows if r.part == part]
        if not sel:
            continue
        unit = "bits/dim" if part == "digits" else "NLL nats"
        print(f"\n== {part} ==")
        print(
            f"{'data':12s} {'model':32s} {'params':>7s} {'width':>5s} {'steps':>6s} "
            f"{'secs':>5s} {unit:>9s} {'gap':>7s}"
        )
        for r in sel:
            gap = "" if r.gap is None else f"{r.gap:+.3f}"
            print(
                f"{r.data:12s} {r.model:32s} {r.params:7d} {r.width:5d} {r.steps:6d} "
                f"{r.seconds:5.0f} {r.test:9.4f} {gap:>7s}"
            )
        for r in sel:
            if r.prepare_seconds > 0:
                print(
                    f"  ({r.data} {r.model}: secs include {r.prepare_seconds:.1f} s of "
                    "data-driven initialisation)"
                )
        if part == "toys":
            for toy in dict.fromkeys(r.data for r in sel):
                ranked = sorted((r for r in sel if r.data == toy), key=lambda r: r.test)
                print(f"  best on {toy}: {ranked[0].model} ({ranked[0].test:.3f})")
        if part == "digits":
            fair = [r for r in sel if abs(r.params - digits_params) <= 0.25 * digits_params]
            for r in sel:
                if r not in fair:
                    print(
                        f"  (not in the verdict: {r.model} has {r.params} parameters, more "
                        f"than 25% off the budget of {digits_params})"
                    )
            ranked = sorted(fair, key=lambda r: r.test)
            mine = [r for r in fair if r.model.startswith("pyro_flows")]
            peers = [r for r in fair if not r.model.startswith("pyro_flows")]
            if not mine or not peers:
                print("  no verdict: no pyro_flows model and peer within 25% of the budget")
                continue
            ours = min(mine, key=lambda r: r.test)
            beats = ours.test < min(p.test for p in peers)
            verdict = "beats every peer" if beats else "does NOT beat every peer"
            print(
                f"  best at equal parameters: {ranked[0].model}; pyro_flows' best "
                f"({ours.model}) {verdict}"
            )
        if part == "defaults":
            targets = {"moons": 0.05, "8gaussians": 0.05, "checkerboard": 0.15}
            for r in sel:
                if r.data in targets and r.gap is not None:
                    ok = r.gap <= targets[r.data] and r.seconds <= 120
                    print(
                        f"  {r.data}: gap {r.gap:+.3f} (target {targets[r.data]}), "
                        f"{r.seconds:.0f} s (target 120) -> {'ok' if ok else 'MISSED'}"
                    )


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    p.add_argument("--toys", nargs="+", default=["8gaussians", "moons", "checkerboard"])
    p.add_argument("--n", type=int, default=20000, help="training rows per toy")
    p.add_argument("--params", type=int, default=20000, help="parameter budget (toys)")
    p.add_argument("--layers", type=int, default=5)
    p.add_argument("--budget", type=float, default=45.0, help="seconds per model (toys)")
    p.add_argument("--default-time", type=float, default=120.0, help="fit() time cap")
    p.add_argument("--digits-params", type=int, default=690000)
    p.add_argument("--digits-budget", type=float, default=90.0)
    p.add_argument("--no-digits", action="store_true")
    p.add_argument("--no-toys", action="store_true")
    p.add_argument("--no-defaults", action="store_true")
    p.add_argument("--no-zuko", action="store_true")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument(
        "--models",
        nargs="+",
        default=None,
        help="only these contenders (names as printed, e.g. 'pyro_flows unaf' 'zuko UNAF')",
    )
    p.add_argument("--quick", action="store_true", help="a smoke run for CI")
    p.add_argument("--json", default=None, help="write the rows here")
    args = p.parse_args(argv)
    if args.quick:
        args.toys, args.n, args.params, args.budget = ["moons"], 2000, 3000, 1.5
        args.default_time, args.digits_params, args.digits_budget = 3.0, 20000, 2.0
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    threads = _timing.set_threads(args.threads)
    env = _timing.environment(threads, "pyro", "zuko")
    print(f"torch threads {threads}, cores {env['cores']}, versions {env['versions']}")
    makers = contenders(not args.no_zuko)
    if args.models:
        unknown = sorted(set(args.models) - set(makers))
        if unknown:
            raise SystemExit(f"unknown --models {unknown}; expected some of {sorted(makers)}")
        makers = {k: v for k, v in makers.items() if k in args.models}
    elif args.quick:
        makers = {k: v for k, v in makers.items() if k in QUICK_CONTENDERS}
    rows = [] if args.no_toys else run_toys(args, makers)
    if not args.no_defaults:
        rows += run_defaults(args)
    if not args.no_digits:
        rows += run_digits(args, makers)
    print_rows(rows, args.digits_params)
    if args.json:
        _timing.write_json(args.json, {"env": env, "rows": [asdict(r) for r in rows]})
    return 0


if __name__ == "__main__":
    sys.exit(main())
