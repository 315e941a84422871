"""The ``pyro-flows`` command line."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence


def _demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    steps = 300 if args.quick else args.steps
    result = run_demo(args.out, args.toy, steps=steps, seed=args.seed, progress=not args.quiet)
    print(
        f"{result.toy}: test NLL {result.test_nll:.3f} nats, oracle {result.oracle_nll:.3f}, "
        f"gap {result.test_nll - result.oracle_nll:+.3f} ({result.seconds:.1f} s training)"
    )
    print(f"density image: {result.image}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pyro-flows", description="Normalizing flows for Pyro: demos and tools."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser(
        "demo", help="fit a MAF to a 2-D toy and write a PNG of its density next to the data"
    )
    demo.add_argument("--toy", default="moons", choices=["moons", "8gaussians", "checkerboard"])
    demo.add_argument("--steps", type=int, default=3000, help="training steps (default 3000)")
    demo.add_argument("--out", default="outputs/demo", help="output folder")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--quick", action="store_true", help="a few hundred steps (for CI)")
    demo.add_argument("--quiet", action="store_true", help="no progress bar")
    demo.set_defaults(run=_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.run(args))


if __name__ == "__main__":
    sys.exit(main())
