#!/usr/bin/env python
r"""Guides on real posteriors they were not tuned for: posteriordb, against NUTS and the reference.

Run from the repository root::

    python benchmarks/posteriordb.py                  # every posterior (an hour or more)
    python benchmarks/posteriordb.py --quick          # three small posteriors, short runs (CI)
    python benchmarks/posteriordb.py --names kidiq-kidscore_momiq arma-arma11 --no-nuts

For each posterior of :mod:`pyro_flows.targets.posteriordb` (faithful Pyro translations of the
Stan programs, with posteriordb's reference draws summarised): Pyro's NUTS (``--nuts-warmup``
+ ``--nuts-draws``, default 1000 + 1000, one chain, Pyro's defaults) and four guides, each with
its defaults through :func:`pyro_flows.infer.fit_guide` (its defaults too: Adam, learning rate
:math:`10^{-2} \to 10^{-3}`, 32 vectorised particles, plateau stop): Pyro's ``AutoNormal``,
``AutoMultivariateNormal`` and ``AutoIAFNormal`` and pyro_flows' ``AutoFlow``. Every guide
starts from :func:`~pyro_flows.infer.initialization.improper_safe` (``init_to_median``, and
the origin of the unconstrained space on Stan's implicit flat priors, which Pyro's own
strategies cannot sample). Per method, against the reference means :math:`m_j` and sds
:math:`s_j`:

.. math::

    e = \max_j \frac{|\bar x_j - m_j|}{s_j}, \qquad
    r_j = \frac{\operatorname{sd}(x_j)}{s_j},

from ``--draws`` draws, PSIS :math:`\hat k` (guides), and the wall time. The targets of the
issue: :math:`e < 0.1`, every :math:`r_j \in [0.9, 1.1]`, a fit under a fifth of NUTS's wall
time. Marks: ``!k`` (:math:`\hat k > 0.7`), ``!b`` (the guide's moments disagree with the
PSIS-weighted ones), ``!F=khat`` / ``!F=tails`` / ``!F=moments`` (the warning
:func:`~pyro_flows.infer.fit_guide` gave, ``result.flag``: for ``AutoFlow`` it also reads the
defensive check, :func:`~pyro_flows.infer.guide_flag.judge_guide`; a miss counts as flagged
when this flag is set), ``!m`` / ``!s`` (mean or sd target missed),
``!f`` (the fit failed), ``!d`` (NUTS divergences). A guide's *score* is
:math:`\max(e / 0.1, \max_j |r_j - 1| / 0.1)` (below 1: both targets met); AutoFlow "beats"
Pyro's guides on a posterior when its score is below the best of theirs. Rows print as each
posterior finishes, then a summary; ``--out`` gets one picture per posterior (each method's
marginals against the reference's 5/50/95% quantiles) and ``--json`` every number (rewritten
after each posterior).

Reference: M. Magnusson et al. *posteriordb: Testing, benchmarking and developing Bayesian
inference algorithms.* arXiv:2407.04967, 2024.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
for _path in (HERE, ROOT):
    if _path not in sys.path:
        sys.path.insert(0, _path)

import _timing  # noqa: E402
import pyro  # noqa: E402
from pyro.infer import MCMC, NUTS  # noqa: E402
from pyro.infer.autoguide import (  # noqa: E402
    AutoIAFNormal,
    AutoMultivariateNormal,
    AutoNormal,
)

from pyro_flows.infer import AutoFlow, fit_guide  # noqa: E402
from pyro_flows.infer.initialization import improper_safe  # noqa: E402
from pyro_flows.targets.posteriordb import POSTERIORS, load_posterior, reference_errors  # noqa: E402

QUICK_NAMES = ("kidiq-kidscore_momiq", "earnings-logearn_height", "kilpisjarvi_mod-kilpisjarvi")
MEAN_TARGET = 0.1
SD_TARGET = 0.1
KHAT_FLAG = 0.7

#: the guides, each a function model -> guide with its library's defaults
GUIDES: dict[str, Callable[[Callable], Callable]] = {
    "AutoNormal": lambda m: AutoNormal(m, init_loc_fn=improper_safe()),
    "AutoMultivariateNormal": lambda m: AutoMultivariateNormal(m, init_loc_fn=improper_safe()),
    "AutoIAFNormal": lambda m: AutoIAFNormal(m, init_loc_fn=improper_safe()),
    "AutoFlow": lambda m: AutoFlow(m),
}
PYRO_GUIDES = ("AutoNormal", "AutoMultivariateNormal", "AutoIAFNormal")


@dataclass
class MethodRow:
    """One method on one posterior."""

    posterior: str
    method: str
    seconds: float
    mean_error: float = math.nan
    sd_low: float = math.nan
    sd_high: float = math.nan
    khat: float | None = None
    biased: bool = False  # fit_guide's moment check: guide vs PSIS-weighted moments disagree
    flag: str | None = None  # fit_guide's verdict (result.flag): "khat", "tails", "moments"
    divergences: int | None = None
    stopped: str = ""
    note: str = ""
    marginals: dict[str, list[float]] = field(default_factory=dict, repr=False)

    @property
    def failed(self) -> bool:
        return bool(self.note)

    @property
    def score(self) -> float:
        if self.failed or math.isnan(self.mean_error):
            return math.inf
        sd_dev = max(abs(self.sd_low - 1), abs(self.sd_high - 1))
        return max(self.mean_error / MEAN_TARGET, sd_dev / SD_TARGET)

    def marks(self) -> str:
        if self.failed:
            return "!f"
        out = []
        if self.khat is not None and self.khat > KHAT_FLAG:
            out.append("!k")
        if self.biased:
            out.append("!b")
        if self.flag is not None:
            out.append(f"!F={self.flag}")
        if self.mean_error >= MEAN_TARGET:
            out.append("!m")
        if not (1 - SD_TARGET <= self.sd_low and self.sd_high <= 1 + SD_TARGET):
            out.append("!s")
        if self.divergences:
            out.append("!d")
        return " ".join(out)


def _summarise(row: MethodRow, name: str, draws: dict[str, torch.Tensor]) -> MethodRow:
    errors = reference_errors(name, draws)
    row.mean_error = errors["worst_mean_error"]
    row.sd_low, row.sd_high = errors["sd_ratio_range"]
    spec_draws = load_posterior(name).reference_draws(draws)
    row.marginals = {e: x.double()[:2000].tolist() for e, x in list(spec_draws.items())[:8]}
    return row


def run_nuts(name: str, warmup: int, draws: int, seed: int) -> MethodRow:
    """Pyro's NUTS with its defaults (one chain) on the posterior's model."""
    spec = load_posterior(name)
    pyro.clear_param_store()
    pyro.set_rng_seed(seed)
    kernel = NUTS(spec.model, init_strategy=improper_safe(), max_plate_nesting=0)
    mcmc = MCMC(kernel, num_samples=draws, warmup_steps=warmup, disable_progbar=True)
    start = time.perf_counter()
    try:
        mcmc.run()
    except (RuntimeError, ValueError) as error:
        note = str(error).strip().splitlines()[0][:80]
        return MethodRow(name, "NUTS", time.perf_counter() - start, note=note)
    seconds = time.perf_counter() - start
    divergences = int(sum(len(v) for v in mcmc.diagnostics().get("divergences", {}).values()))
    row = MethodRow(name, "NUTS", seconds, divergences=divergences)
    return _summarise(row, name, mcmc.get_samples())


def run_guide(method: str, name: str, steps: int, draws: int, khat: int, seed: int) -> MethodRow:
    """One guide through fit_guide with its defaults; ``draws`` posterior draws."""
    spec = load_posterior(name)
    pyro.clear_param_store()
    pyro.set_rng_seed(seed)
    start = time.perf_counter()
    try:
        guide = GUIDES[method](spec.model)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            result = fit_guide(
                spec.model, guide, steps=steps, progress=False, seed=seed, khat_samples=khat
            )
    except (RuntimeError, ValueError, NotImplementedError) as error:
        note = str(error).strip().splitlines()[0][:80]
        return MethodRow(name, method, time.perf_counter() - start, note=note)
    seconds = time.perf_counter() - start
    if result.stopped == "non-finite":
        return MethodRow(name, method, seconds, note="non-finite")
    with torch.no_grad(), pyro.plate("_draws", draws, dim=-1):
        samples = guide()
    biased = result.check is not None and result.check.biased
    row = MethodRow(
        name, method, seconds, khat=result.khat, biased=biased, flag=result.flag,
        stopped=result.stopped,
    )
    return _summarise(row, name, samples)


def _fmt(row: MethodRow, nuts_seconds: float | None) -> str:
    if row.failed:
        return f"  {row.method:<23} {'failed: ' + row.note:<60} {row.seconds:7.1f}s  !f"
    khat = "   -" if row.khat is None else f"{row.khat:5.2f}"
    ratio = ""
    if nuts_seconds and row.method != "NUTS":
        ratio = f"  {row.seconds / nuts_seconds:5.2f}x NUTS"
    return (
        f"  {row.method:<23} mean err {row.mean_error:6.3f}  sd ratio "
        f"{row.sd_low:5.2f}..{row.sd_high:5.2f}  k-hat {khat}  {row.seconds:7.1f}s{ratio}"
        f"  {row.marks()}"
    )


def plot(name: str, rows: list[MethodRow], path: str) -> None:
    """Marginals of each method against the reference's 5/50/95% quantiles."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    spec = load_posterior(name)
    usable = [r for r in rows if not r.failed and r.marginals]
    elements = list(usable[0].marginals) if usable else []
    if not elements:
        return
    fig, axes = plt.subplots(1, len(elements), figsize=(2.6 * len(elements), 2.6), squeeze=False)
    for ax, element in zip(axes[0], elements, strict=False):
        ref = spec.reference[element]
        for row in usable:
            ax.hist(row.marginals[element], bins=40, density=True, histtype="step",
                    label=row.method)
        for key in ("q05", "q50", "q95"):
            ax.axvline(ref[key], color="black", lw=0.8, ls="--" if key != "q50" else "-")
        ax.set_title(element, fontsize=8)
        ax.tick_params(labelsize=6)
    axes[0][0].legend(fontsize=5)
    fig.suptitle(f"{name}: marginals against the reference quantiles (dashed 5/95%)", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--quick", action="store_true", help="three posteriors, short runs")
    parser.add_argument("--names", nargs="+", choices=sorted(POSTERIORS), default=None)
    parser.add_argument("--steps", type=int, default=None, help="fit_guide steps (default 5000)")
    parser.add_argument("--nuts-warmup", type=int, default=None)
    parser.add_argument("--nuts-draws", type=int, default=None)
    parser.add_argument("--no-nuts", action="store_true", help="skip NUTS (no time ratio)")
    parser.add_argument("--guides", nargs="+", choices=list(GUIDES), default=list(GUIDES))
    parser.add_argument("--draws", type=int, default=None, help="guide draws per summary")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=None, help="folder for one picture per posterior")
    parser.add_argument("--json", default=None, help="write every number here")
    args = parser.parse_args(argv)
    quick = args.quick
    names = args.names or (list(QUICK_NAMES) if quick else list(POSTERIORS))

    def chosen(value: int | None, quick_default: int, default: int) -> int:
        return value if value is not None else (quick_default if quick else default)

    steps = chosen(args.steps, 300, 5000)
    warmup = chosen(args.nuts_warmup, 100, 1000)
    nuts_draws = chosen(args.nuts_draws, 100, 1000)
    draws = chosen(args.draws, 2000, 20_000)
    khat = 200 if quick else 4000
    checked = ((steps, "--steps"), (warmup, "--nuts-warmup"), (nuts_draws, "--nuts-draws"),
               (draws, "--draws"))
    for value, flag in checked:
        if value < 1:
            parser.error(f"{flag} must be a positive integer, got {value}")
    threads = _timing.set_threads(args.threads)
    print(f"torch {torch.__version__}, pyro {pyro.__version__}, {_timing.core_count()} cores, "
          f"torch threads {threads}")
    print(f"fit_guide steps {steps} (plateau stop on), NUTS {warmup} + {nuts_draws}, "
          f"{draws} guide draws; marks: !k k-hat > {KHAT_FLAG}, !b guide moments off the "
          f"PSIS-weighted ones, !F=<flag> fit_guide's warning (result.flag), "
          f"!m mean err >= {MEAN_TARGET}, "
          f"!s sd ratio outside [{1 - SD_TARGET}, {1 + SD_TARGET}], !d divergences, !f failed",
          flush=True)
    if args.out:
        os.makedirs(args.out, exist_ok=True)
    all_rows: list[MethodRow] = []
    summary = {
        "meets": 0, "beats": 0, "fast": 0, "flagged_misses": 0, "false_flags": 0, "posteriors": 0
    }
    for name in names:
        spec = load_posterior(name)
        print(f"\n{name} (D = {spec.dim}, {spec.kind})", flush=True)
        rows: list[MethodRow] = []
        nuts_s = None
        if not args.no_nuts:
            nuts = run_nuts(name, warmup, nuts_draws, args.seed)
            nuts_s = None if nuts.failed else nuts.seconds
            rows.append(nuts)
            print(_fmt(nuts, None), flush=True)
        for method in args.guides:
            row = run_guide(method, name, steps, draws, khat, args.seed)
            rows.append(row)
            print(_fmt(row, nuts_s), flush=True)
        all_rows.extend(rows)
        flow = next((r for r in rows if r.method == "AutoFlow"), None)
        pyro_scores = [r.score for r in rows if r.method in PYRO_GUIDES]
        if flow is not None:
            summary["posteriors"] += 1
            met = flow.score < 1
            summary["meets"] += met
            summary["beats"] += bool(pyro_scores) and flow.score < min(pyro_scores)
            summary["fast"] += nuts_s is not None and flow.seconds < nuts_s / 5
            flagged = flow.flag is not None or flow.failed
            summary["flagged_misses"] += (not met) and flagged
            summary["false_flags"] += met and flagged
        if args.out:
            plot(name, rows, os.path.join(args.out, f"{name}.png"))
        if args.json:  # after every posterior, so a cut-short run keeps what it measured
            _write_json(args.json, all_rows, summary, steps)
    n = summary["posteriors"]
    if n:
        print(f"\nAutoFlow with defaults: meets the mean/sd targets on {summary['meets']} of {n}; "
              f"beats the best Pyro autoguide on {summary['beats']} of {n}; under a fifth of "
              f"NUTS's time on {summary['fast']} of {n}; misses flagged (fit_guide's flag: "
              f"result.flag) on {summary['flagged_misses']} of {n - summary['meets']}; "
              f"flags on fits that met the targets: {summary['false_flags']}")
    return 0


def _write_json(path: str, rows: list[MethodRow], summary: dict, steps: int) -> None:
    """Every number of ``rows`` (marginals left out), the summary and the step budget."""
    rows_json = [{**asdict(r), "marginals": None, "score": r.score} for r in rows]
    with open(path, "w") as fh:
        json.dump({"rows": rows_json, "summary": summary, "steps": steps}, fh, indent=1)


if __name__ == "__main__":
    raise SystemExit(main())
