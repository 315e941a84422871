r"""The ``pyro-flows`` command line.

- ``pyro-flows demo [--quick] [--out DIR] [--seed N] [--quiet]``: the showcase (density
  estimation, a flow guide against NUTS, flow vs NUTS vs NeuTra), a summary and a report folder
  (:mod:`pyro_flows.demo`).
- ``pyro-flows compare TARGET [--methods flow,nuts,neutra,mh,mala,is,ais,flow_mcmc] [--quick]
  [--out DIR] [--overwrite]``: a comparison table of the methods on one target (``flow_mcmc``
  runs only when named), PASS/FAIL
  against the target's requirements, and a report folder (:mod:`pyro_flows.compare`); a folder
  that already holds a report is refused (exit status 2, before anything runs) unless
  ``--overwrite`` is given. ``pyro-flows compare --list`` lists the targets.

Every subcommand has ``--help``. Computations use one thread by default (``--threads``): the
batches here are small, and one thread per process is fastest on a shared machine.

Example:

>>> build_parser().parse_args(["compare", "u1", "--quick"]).methods
'flow,nuts,neutra,mh,mala,is,ais'

References:

- Python documentation, ``argparse``. https://docs.python.org/3/library/argparse.html
"""

from __future__ import annotations

import argparse
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path

__all__ = ["build_parser", "main"]

#: every method of :data:`pyro_flows.compare.methods.METHODS`, the default set, and of its
#: ``EXTRA_METHODS``, run only when named (tests keep them in step; importing compare here would
#: load torch for ``--help``)
_ALL_METHODS = "flow,nuts,neutra,mh,mala,is,ais"
_EXTRA_METHODS = "flow_mcmc"


def _positive_int(text: str) -> int:
    """An ``argparse`` type: a positive int (``--steps 0`` is an error, not an untrained run)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a positive int, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive int, got {value}")
    return value


def _setup(args: argparse.Namespace) -> None:
    import torch

    torch.set_num_threads(args.threads)
    # Pyro's deprecation chatter (jit.trace, arviz's refactor) is noise for a command-line user
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    import logging

    logging.getLogger("pyro").setLevel(logging.WARNING)


def _demo(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    _setup(args)
    from .demo import check_demo_folder, run_demo

    try:
        check_demo_folder(args.out, args.toy)  # before, not after, minutes of training
    except (OSError, ValueError) as err:
        parser.error(f"{err} (--out DIR)")

    result = run_demo(
        args.out,
        quick=args.quick,
        toy=args.toy,
        steps=args.steps,
        seed=args.seed,
        progress=not args.quiet,
    )
    print(result.summary())
    print(f"density image: {result.density.image}")
    failed = [c for c in result.energy.checks if c.status == "FAIL"]
    return 1 if args.strict and failed else 0


def _list_targets() -> str:
    from .compare.settings import settings_for
    from .targets import TARGETS, get_target

    lines = ["targets (pyro-flows compare TARGET):"]
    for name in TARGETS:
        t = get_target(name)
        log_z = "?" if t.log_Z is None else f"{t.log_Z:.4f}"
        flow = settings_for(name).flow
        lines.append(
            f"  {name:<12} {type(t).__name__:<24} dim {t.dim:<4} log Z {log_z:<8} "
            f"flow {flow.builder}"
        )
    return "\n".join(lines)


def _compare(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from .compare.methods import parse_methods
    from .targets import TARGETS

    if args.list:
        print(_list_targets())
        return 0
    if args.target is None:
        parser.error(f"the target is required; valid targets: {', '.join(TARGETS)} (or --list)")
    if args.target.strip().lower() not in TARGETS:
        parser.error(f"unknown target {args.target!r}; valid targets: {', '.join(TARGETS)}")
    try:
        methods = parse_methods(args.methods)
    except ValueError as e:
        parser.error(str(e))
    _setup(args)
    from .compare.report import check_report_folder

    name = args.target.strip().lower()
    out = Path(args.out) if args.out is not None else Path("outputs") / "compare" / name
    try:
        check_report_folder(out, args.overwrite, flag="--overwrite")  # before, not after, the runs
    except OSError as err:  # a report there, a file in the way, no permission
        parser.error(f"{err} (--out DIR)")
    from .compare.run import compare

    result = compare(
        name,
        methods,
        quick=args.quick,
        seed=args.seed,
        out=out,
        progress=not args.quiet,
        overwrite=args.overwrite,
    )
    print(result.summary())
    print(f"report: {result.report}")
    failed = [c for c in result.checks if c.status == "FAIL"]
    return 1 if args.strict and failed else 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``pyro-flows`` (subcommands ``demo`` and ``compare``).

    >>> args = build_parser().parse_args(["demo", "--quick", "--quiet"])
    >>> args.command, args.quick, args.out
    ('demo', True, 'outputs/demo')
    """
    parser = argparse.ArgumentParser(
        prog="pyro-flows",
        description="Normalizing flows for Pyro: the showcase and method comparisons.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="{demo,compare}")

    demo = sub.add_parser(
        "demo",
        help="the showcase: density estimation, a flow guide vs NUTS, flow vs NUTS vs NeuTra",
        description=(
            "Runs (1) a MAF fitted to a 2-D toy by maximum likelihood, (2) AutoFlow and "
            "AutoNormal against NUTS on eight schools, (3) a reverse-KL flow, NUTS and NeuTra "
            "on Neal's 10-D funnel; prints a summary and writes a report folder "
            "(README.md + PNGs). The full run takes a few minutes on two cores."
        ),
    )
    demo.add_argument("--quick", action="store_true", help="small budgets everywhere (CI)")
    demo.add_argument(
        "--out",
        default="outputs/demo",
        help="report folder (outputs/demo); a previous demo report there is replaced",
    )
    demo.add_argument("--seed", type=int, default=0, help="seed of every part (0)")
    demo.add_argument("--quiet", action="store_true", help="no progress bars")
    demo.add_argument(
        "--toy",
        default="moons",
        choices=["moons", "8gaussians", "checkerboard"],
        help="the toy of part 1 (moons)",
    )
    demo.add_argument(
        "--steps",
        type=_positive_int,
        default=None,
        help="training steps of part 1, a positive int (3000; quick: 300)",
    )
    demo.add_argument("--threads", type=int, default=1, help="torch threads (1)")
    demo.add_argument(
        "--strict", action="store_true", help="exit with status 1 when a target check fails"
    )
    demo.set_defaults(run=lambda args: _demo(args, demo))

    cmp = sub.add_parser(
        "compare",
        help="flows (reverse KL, flow MCMC), NUTS, NeuTra, MH, MALA, IS, AIS on a target: "
        "table, checks, report",
        description=(
            "Runs the methods on TARGET with per-target defaults, prints a comparison table "
            "(costs, ESS, R-hat, divergences, moment errors, log Z, IS diagnostics) and the "
            "target's PASS/FAIL requirements, and writes a report folder (Markdown + PNGs: "
            "draws over the target's density or pair plots, trace plots, the ELBO curve)."
        ),
    )
    cmp.add_argument("target", nargs="?", help="the target's name (see --list)")
    cmp.add_argument(
        "--methods",
        default=_ALL_METHODS,
        help=f"comma-separated methods among {_ALL_METHODS},{_EXTRA_METHODS} (default: "
        f"{_ALL_METHODS}; {_EXTRA_METHODS} is the flow trained by "
        "fit_target(method='flow_mcmc'), mass-covering, about 20x the gradients of the "
        "reverse-KL flow, for targets with local maxima)",
    )
    cmp.add_argument("--quick", action="store_true", help="small budgets (seconds; for CI)")
    cmp.add_argument(
        "--out",
        default=None,
        help="report folder (outputs/compare/TARGET); one that already holds a report is "
        "refused unless --overwrite is given",
    )
    cmp.add_argument(
        "--overwrite",
        action="store_true",
        help="replace the report a previous run left in the report folder (its report.md, "
        "results.json and figures; other files are kept)",
    )
    cmp.add_argument("--seed", type=int, default=0, help="seed of every method (0)")
    cmp.add_argument("--quiet", action="store_true", help="no progress bars")
    cmp.add_argument("--list", action="store_true", help="list the targets and exit")
    cmp.add_argument("--threads", type=int, default=1, help="torch threads (1)")
    cmp.add_argument(
        "--strict", action="store_true", help="exit with status 1 when a target check fails"
    )
    cmp.set_defaults(run=lambda args: _compare(args, cmp))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``pyro-flows`` console script; returns the exit status.

    >>> main(["compare", "--list"])  # doctest: +ELLIPSIS
    targets (pyro-flows compare TARGET):
      u1 ...
    0
    """
    args = build_parser().parse_args(argv)
    if getattr(args, "threads", 1) < 1:
        raise SystemExit(f"pyro-flows: --threads must be >= 1, got {args.threads}")
    return int(args.run(args))


if __name__ == "__main__":
    sys.exit(main())
