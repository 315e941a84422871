#!/usr/bin/env python
r"""Does ``fit_guide`` flag every AutoFlow fit that misses, and only those? Hit and false-alarm
rates of its final check against known answers.

Run from the repository root::

    python benchmarks/guide_flags.py --seeds 0 1 2                 # the fresh problems
    python benchmarks/guide_flags.py --names kilpisjarvi_mod-kilpisjarvi arma-arma11 --seeds 0
    python benchmarks/guide_flags.py --quick                       # two problems, short fits (CI)

Each problem is fitted by ``AutoFlow(model)`` through :func:`pyro_flows.infer.fit_guide` with
their defaults. 4000 draws of the fitted guide are compared with the truth (posteriordb's
reference for ``--names``, exact moments otherwise): worst mean error :math:`e` in true sds and
sd ratios :math:`r_j`; the fit *misses* when :math:`e \ge 0.1` or some :math:`r_j \notin [0.9,
1.1]`. Per fit it prints the plain PSIS :math:`\hat k`, the previous rule's flag
(:math:`\hat k > 0.7` or plain moments that disagree) and ``result.flag``
(:func:`pyro_flows.infer.guide_flag.judge_guide`), then the counts: misses flagged, accurate
fits flagged. ``--json`` appends one line per fit. Fresh problems: independent Student-t
(4 dof, 3-D; 8 dof, 5-D), the scale of 6 Normal observations under a HalfCauchy(1) prior or of
12 under a LogNormal(0, 2) prior, eight schools (thetas integrated out; non-centred), a
correlated Gaussian, a Normal mean, a banana and a funnel. ``--quick`` fits two of them (a
Normal mean and the 4-dof Student-t) for 300 steps with 1000 check draws: a smoke run of the
script, not a measurement.
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

import pyro
import pyro.distributions as dist
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from pyro_flows.infer import AutoFlow, fit_guide  # noqa: E402
from pyro_flows.targets.posteriordb import POSTERIORS, load_posterior, reference_errors  # noqa: E402

Truth = dict[str, tuple[torch.Tensor, torch.Tensor]]


def _grid_moments(log_p: Callable, lo: float, hi: float, n: int) -> tuple[torch.Tensor, ...]:
    x = torch.linspace(lo, hi, n, dtype=torch.float64)
    w = torch.softmax(log_p(x), 0)
    mean = (w * x).sum()
    return mean.reshape(1), ((w * (x - mean) ** 2).sum()).sqrt().reshape(1)


def student(df: float, scales: list[float]) -> tuple[Callable, Truth]:
    s = torch.tensor(scales)

    def model():
        pyro.sample("x", dist.StudentT(df, 0.0, s).to_event(1))

    return model, {"x": (torch.zeros(len(scales)), s * math.sqrt(df / (df - 2)))}


def normal_scale(prior: dist.Distribution, y: list[float]) -> tuple[Callable, Truth]:
    y = torch.tensor(y)

    def model():
        s = pyro.sample("s", prior)
        with pyro.plate("n", len(y)):
            pyro.sample("y", dist.Normal(0.0, s), obs=y)

    def log_p(s):
        return prior.log_prob(s.float()).double() + dist.Normal(0.0, s[:, None]).log_prob(
            y.double()).sum(-1)

    return model, {"s": _grid_moments(log_p, 1e-4, 400.0, 400001)}


_Y8 = torch.tensor([28.0, 8.0, -3.0, 7.0, -1.0, 1.0, 18.0, 12.0])
_S8 = torch.tensor([15.0, 10.0, 16.0, 11.0, 9.0, 11.0, 10.0, 18.0])


def _eight_schools_truth() -> Truth:
    mu = torch.linspace(-25, 30, 1101, dtype=torch.float64)[:, None]
    tau = torch.linspace(1e-4, 200, 8001, dtype=torch.float64)[None, :]
    lp = dist.Normal(0.0, 5.0).log_prob(mu) + dist.HalfCauchy(5.0).log_prob(tau)
    for y, s in zip(_Y8.double(), _S8.double(), strict=True):
        lp = lp + dist.Normal(mu, (s**2 + tau**2).sqrt()).log_prob(y)
    w = torch.softmax(lp.reshape(-1), 0).reshape(lp.shape)
    out = {}
    for name, v in (("mu", mu.expand_as(w)), ("tau", tau.expand_as(w))):
        m = (w * v).sum()
        out[name] = (m.reshape(1), ((w * (v - m) ** 2).sum()).sqrt().reshape(1))
    return out


def eight_schools(centred_out: bool) -> tuple[Callable, Truth]:
    def model():
        mu = pyro.sample("mu", dist.Normal(0.0, 5.0))
        tau = pyro.sample("tau", dist.HalfCauchy(5.0))
        with pyro.plate("j", 8):
            if centred_out:  # the thetas integrated out
                pyro.sample("y", dist.Normal(mu, (_S8**2 + tau**2).sqrt()), obs=_Y8)
            else:
                eta = pyro.sample("eta", dist.Normal(0.0, 1.0))
                pyro.sample("y", dist.Normal(mu + tau * eta, _S8), obs=_Y8)

    return model, _eight_schools_truth()


def correlated(rho: float = 0.9) -> tuple[Callable, Truth]:
    scales = torch.tensor([1.0, 2.0, 0.5, 4.0, 1.5])
    loc = torch.tensor([1.0, -2.0, 0.5, 3.0, 0.0])
    corr = torch.full((5, 5), rho).fill_diagonal_(1.0)

    def model():
        pyro.sample("x", dist.MultivariateNormal(loc, corr * scales[:, None] * scales))

    return model, {"x": (loc, scales)}


def normal_mean() -> tuple[Callable, Truth]:
    x = torch.tensor([0.5, 1.5, 1.0, 2.0])

    def model():
        z = pyro.sample("z", dist.Normal(0.0, 1.0))
        with pyro.plate("d", len(x)):
            pyro.sample("x", dist.Normal(z, 1.0), obs=x)

    return model, {"z": (x.sum().reshape(1) / 5, torch.tensor([1 / math.sqrt(5)]))}


def banana(b: float = 0.5, s1: float = 2.0, s2: float = 0.5) -> tuple[Callable, Truth]:
    def model():
        x1 = pyro.sample("x1", dist.Normal(0.0, s1))
        pyro.sample("x2", dist.Normal(b * x1**2, s2))

    sd2 = math.sqrt(s2**2 + 2 * b**2 * s1**4)
    return model, {"x1": (torch.zeros(1), torch.tensor([s1])),
                   "x2": (torch.tensor([b * s1**2]), torch.tensor([sd2]))}


def funnel(d: int = 3) -> tuple[Callable, Truth]:
    def model():
        v = pyro.sample("v", dist.Normal(0.0, 3.0))
        pyro.sample("x", dist.Normal(0.0, (v / 2).exp()[..., None] * torch.ones(d)).to_event(1))

    return model, {"v": (torch.zeros(1), torch.tensor([3.0])),
                   "x": (torch.zeros(d), torch.full((d,), math.exp(9 / 4)))}


#: the fresh problems, each a function () -> (model, exact means and sds per site)
FRESH: dict[str, Callable[[], tuple[Callable, Truth]]] = {
    "normal_mean": normal_mean,
    "correlated_0.9": correlated,
    "student_t4": lambda: student(4.0, [1.0, 3.0, 0.5]),
    "student_t8_5d": lambda: student(8.0, [1.0, 3.0, 0.5, 2.0, 1.0]),
    "halfcauchy_scale": lambda: normal_scale(dist.HalfCauchy(1.0),
                                             [0.3, -0.5, 1.2, 0.1, -0.8, 0.4]),
    "lognormal_scale": lambda: normal_scale(dist.LogNormal(0.0, 2.0), [
        1.1, -0.4, 2.3, 0.2, -1.7, 0.9, 3.1, -2.2, 0.5, 1.4, -0.3, 0.8]),
    "eight_schools_marginal": lambda: eight_schools(True),
    "eight_schools_noncentred": lambda: eight_schools(False),
    "banana": banana,
    "funnel3": funnel,
}


def _truth_errors(samples: dict[str, torch.Tensor], truth: Truth) -> tuple[float, float, float]:
    mean_err, ratios = [], []
    for name, (m, s) in truth.items():
        x = samples[name].double().reshape(len(samples[name]), -1)
        mean_err += ((x.mean(0) - m.double()).abs() / s.double()).tolist()
        ratios += (x.std(0) / s.double()).tolist()
    return max(mean_err), min(ratios), max(ratios)


QUICK_NAMES = ("normal_mean", "student_t4")


def run(name: str, seed: int, steps: int = 5000, khat_samples: int = 4000) -> dict:
    """One default fit (``steps`` and ``khat_samples`` passed to ``fit_guide``) and its flags
    against the truth."""
    pyro.clear_param_store()
    if name in POSTERIORS:
        model, truth = load_posterior(name).model, None
    else:
        model, truth = FRESH[name]()
    guide = AutoFlow(model)
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = fit_guide(model, guide, progress=False, seed=seed, steps=steps,
                           khat_samples=khat_samples)
    seconds = time.perf_counter() - start
    pyro.set_rng_seed(1000 + seed)
    if truth is None:
        with torch.no_grad(), pyro.plate("_draws", 4000, dim=-1):
            errors = reference_errors(name, guide())
        err, (low, high) = errors["worst_mean_error"], errors["sd_ratio_range"]
    else:
        err, low, high = _truth_errors(guide.sample_posterior(4000), truth)
    check = result.check
    before = bool(result.khat is not None and (result.khat > 0.7 or (check and check.biased)))
    return {"name": name, "seed": seed, "seconds": seconds, "mean_error": err, "sd_low": low,
            "sd_high": high, "khat": result.khat, "before": before, "flag": result.flag,
            "plain_biased": bool(check and check.biased),
            "defensive_biased": bool(result.defensive_check and result.defensive_check.biased),
            "miss": err >= 0.1 or low < 0.9 or high > 1.1}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--names", nargs="+", default=None,
                        choices=sorted(FRESH) + sorted(POSTERIORS))
    parser.add_argument("--quick", action="store_true",
                        help="two fresh problems, 300 steps, 1000 check draws (a smoke run)")
    parser.add_argument("--steps", type=int, default=None,
                        help="fit_guide's step budget (default 5000, --quick 300)")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", default=None, help="append one line per fit here")
    args = parser.parse_args(argv)
    names = args.names or (list(QUICK_NAMES) if args.quick else list(FRESH))
    steps = args.steps if args.steps is not None else (300 if args.quick else 5000)
    if steps < 1:
        parser.error(f"--steps must be a positive integer, got {steps}")
    khat_samples = 1000 if args.quick else 4000
    torch.set_num_threads(args.threads)
    rows = []
    for name in names:
        for seed in args.seeds:
            row = run(name, seed, steps, khat_samples)
            rows.append(row)
            print(f"{name:<42} seed {seed}  mean err {row['mean_error']:6.3f}  sd ratio "
                  f"{row['sd_low']:.2f}..{row['sd_high']:.2f}  k-hat {row['khat']:5.2f}  "
                  f"{'MISS' if row['miss'] else 'ok  '}  before {'W' if row['before'] else '-'}"
                  f"  now {row['flag'] or '-'}", flush=True)
            if args.json:
                with open(args.json, "a") as f:
                    f.write(json.dumps(row) + "\n")
    misses = [r for r in rows if r["miss"]]
    fine = [r for r in rows if not r["miss"]]
    for label, key in (("before", "before"), ("now", "flag")):
        print(f"{label:<7} misses flagged {sum(bool(r[key]) for r in misses)}/{len(misses)}, "
              f"accurate fits flagged {sum(bool(r[key]) for r in fine)}/{len(fine)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
