#!/usr/bin/env python
"""Amortized (conditional) flows at IWAE shapes: ``K`` draws for each of ``N`` context rows.

Run from the repository root::

    python benchmarks/amortized.py              # K in 1, 100, 1000; N = 100
    python benchmarks/amortized.py --quick      # a smoke run (< 30 s)

An amortized posterior ``q(z | x)`` is evaluated with ``K`` importance samples per data point
(``pyro_flows.infer.iwae_log_likelihood``): ``K * N`` draws but only ``N`` distinct contexts.
pyro_flows' conditional layers read the context with its own batch shape: context-only
conditioners (planar, radial) run once per context row, and a MADE computes the context's share
of its first layer once per row (``x W_x^T + c W_c^T``, the second term broadcast). Pyro's
conditional transforms do the same for planar (their hypernetwork sees ``N`` rows) and
concatenate an expanded context for autoregressive layers.

Contenders, each drawing ``(K, N, D)`` reparametrised samples with their log densities (the
IWAE inner loop; no inverse for either): pyro_flows' ``flows.planar(D, 8, context_dim=C)`` and
``flows.iaf(D, 2, (128,), context_dim=C)`` against Pyro's ``conditional_planar`` (8 layers) and
``conditional_affine_autoregressive`` (2 layers, hidden 128) on the same base, D = 32, C = 64.
Printed: median milliseconds of 5 interleaved calls and the ratio ours / Pyro (below 1: ours
is faster).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
for _path in (HERE, ROOT):
    if _path not in sys.path:
        sys.path.insert(0, _path)

import _timing  # noqa: E402
import pyro.distributions as dist  # noqa: E402
import pyro.distributions.transforms as T  # noqa: E402

from pyro_flows import flows  # noqa: E402


def ours(kind: str, D: int, C: int) -> Callable[[torch.Tensor, int], object]:
    if kind == "planar":
        flow = flows.planar(D, num_transforms=8, context_dim=C)
    else:
        flow = flows.iaf(D, num_transforms=2, hidden_dims=(128,), context_dim=C)

    def run(context: torch.Tensor, K: int) -> object:
        with torch.no_grad():
            return flow.rsample_and_log_prob((K,), context=context)

    return run


def pyro(kind: str, D: int, C: int) -> Callable[[torch.Tensor, int], object]:
    if kind == "planar":
        layers = [T.conditional_planar(D, C) for _ in range(8)]
    else:
        layers = [T.conditional_affine_autoregressive(D, C, hidden_dims=[128]) for _ in range(2)]

    def run(context: torch.Tensor, K: int) -> object:
        base = dist.Normal(torch.zeros(len(context), D), 1.0).to_event(1)
        q = dist.ConditionalTransformedDistribution(base, layers).condition(context)
        with torch.no_grad():
            x = q.rsample((K,))
            return x, q.log_prob(x)  # Pyro's transforms cache the last x -> z: no inverse

    return run


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--ks", type=int, nargs="+", default=[1, 100, 1000])
    p.add_argument("--n", type=int, default=100, help="context rows")
    p.add_argument("--dim", type=int, default=32)
    p.add_argument("--context-dim", type=int, default=64)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--quick", action="store_true")
    args = p.parse_args(argv)
    if args.quick:
        args.ks, args.n, args.repeats = [1, 50], 20, 2
    threads = _timing.set_threads(args.threads)
    env = _timing.environment(threads, "pyro")
    print(f"torch threads {threads}, cores {env['cores']}, versions {env['versions']}")
    torch.manual_seed(0)
    context = torch.randn(args.n, args.context_dim)
    print(f"{'layers':8s} {'K':>5s} {'N':>4s} {'ours ms':>9s} {'Pyro ms':>9s} {'ours/Pyro':>9s}")
    for kind in ("planar", "iaf"):
        mine, peer = ours(kind, args.dim, args.context_dim), pyro(kind, args.dim, args.context_dim)
        for K in args.ks:
            t = _timing.time_side_by_side(
                {
                    "ours": lambda f=mine, k=K: f(context, k),
                    "pyro": lambda f=peer, k=K: f(context, k),
                },
                repeats=args.repeats,
            )
            a, b = t["ours"].median, t["pyro"].median
            print(
                f"{kind:8s} {K:5d} {args.n:4d} {_timing.fmt_ms(a):>9s} {_timing.fmt_ms(b):>9s} "
                f"{a / b:9.2f}",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
