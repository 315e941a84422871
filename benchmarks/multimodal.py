#!/usr/bin/env python
"""Targets with several modes: fit_target's default against reverse KL and NUTS, side by side.

Run from the repository root::

    python benchmarks/multimodal.py                 # unequal2, mixture, gmm40; 3000 steps
    python benchmarks/multimodal.py --quick         # unequal2 and mixture, 400 steps (~2 min)
    python benchmarks/multimodal.py --targets gmm40,many_well --seeds 0,1

Per target and seed, one row per method, printed as it finishes:

- ``auto``: ``fit_target(realnvp(D), target)`` with every default (the mode search, then
  flow-assisted MCMC where it finds several maxima);
- ``reverse_kl``: the same with ``method="reverse_kl"`` (the mode-seeking baseline);
- ``nuts``: Pyro's NUTS through ``infer.nuts`` with its default starts, 4 chains of 500
  warm-up and 500 draws (``--quick``: 100 and 100).

Columns: wall seconds, target gradients, :math:`\\log\\hat Z - \\log Z` (importance sampling
from the flow, 20 000 draws; ``bridge``: bridge sampling between ``flow_mcmc``'s chain states
and the same draws, what ``compare``'s ``flow_mcmc`` row reports), the IS ESS fraction, PSIS
k-hat, and the largest error of the mass per mode (mixtures: the mass nearest each centre;
many-well: the left-well mass per pair) computed from the flow's own draws (``flow``), from the
same draws importance-weighted (``IS``), from the post-burn-in states of ``flow_mcmc``'s chains
(``history.samples``, ``chains``: what the method reports) and for NUTS from its chains;
``found`` counts modes holding at least half their mass in the method's own draws (``chains``
for ``flow_mcmc``, else ``flow``). The issue's bars: log Z within 0.05 nats in 2-D (0.1 above),
every mode's mass within 0.01 (2-D mixtures), the sign probabilities within 0.02 (many-well).
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
import warnings

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from pyro_flows import flows  # noqa: E402
from pyro_flows.infer import fit_target, nuts  # noqa: E402
from pyro_flows.infer._target_evaluation import draw_log_ratios  # noqa: E402
from pyro_flows.infer.bridge_sampling import bridge_log_Z  # noqa: E402
from pyro_flows.infer.diagnostics import psis_khat  # noqa: E402
from pyro_flows.targets import get_target  # noqa: E402
from pyro_flows.targets.mixture import GaussianMixture  # noqa: E402

DRAWS = 20_000


def make_target(name: str):
    """A target by name: the registry's, or ``unequal2`` (0.25 / 0.75 at a 30-nat barrier)."""
    if name == "unequal2":
        return GaussianMixture(centres=torch.tensor([[5.0, 1.0], [-3.0, -2.0]]),
                               weights=[0.25, 0.75], scale=0.6, num_modes=2)
    return get_target(name)


def mass_errors(target, x: torch.Tensor, log_w: torch.Tensor | None) -> tuple[float, str]:
    """Largest mass error per mode (and modes found) from draws ``x`` (weighted by ``log_w``)."""
    if not hasattr(target, "mode_masses"):  # no known modes (ring, u1)
        return math.nan, "-"
    weights = None if log_w is None else torch.softmax(log_w, 0)
    masses = target.mode_masses(x, weights)
    if masses.dim() == 2:  # many-well: (pairs, 2) left / right, against the exact masses
        return float((masses[:, 0] - target.well_masses[0]).abs().max()), ""
    truth = target.true_mode_weights
    found = int((masses >= 0.5 * truth).sum())
    return float((masses - truth).abs().max()), f"{found}/{len(truth)}"


def flow_row(target, method: str, steps: int, seed: int) -> str:
    torch.manual_seed(seed)
    flow = flows.realnvp(target.dim)
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        history = fit_target(flow, target, steps=steps, seed=seed, progress=False, method=method)
    seconds = time.perf_counter() - start
    with torch.no_grad():
        x, log_q = flow.rsample_and_log_prob((DRAWS,))
        log_w = target.log_prob(x) - log_q
    log_Z = float(torch.logsumexp(log_w, 0) - math.log(DRAWS))
    ess = float(torch.exp(2 * torch.logsumexp(log_w, 0) - torch.logsumexp(2 * log_w, 0)) / DRAWS)
    raw, found = mass_errors(target, x, None)
    weighted, _ = mass_errors(target, x, log_w)
    chains = bridge = math.nan
    if history.samples is not None:
        chains, found = mass_errors(target, history.samples.reshape(-1, target.dim), None)
        ratios = draw_log_ratios(flow, target.log_prob, history.samples)
        bridge = bridge_log_Z(ratios, log_w).log_Z - target.log_Z
    label = method if method != "auto" else f"auto->{history.method}"
    return (f"{label:<20} {seconds:8.1f} {history.grad_evals:>11,d} "
            f"{log_Z - target.log_Z:+8.3f} {bridge:+8.3f} {ess:6.3f} {psis_khat(log_w):6.2f} "
            f"{raw:8.4f} {weighted:8.4f} {chains:8.4f} {found:>6}")


def nuts_row(target, quick: bool, seed: int) -> str:
    n = 100 if quick else 500
    start = time.perf_counter()
    result = nuts(target, num_samples=n, warmup=n, num_chains=4, progress=False, seed=seed)
    seconds = time.perf_counter() - start
    draws = torch.as_tensor(result.samples).reshape(-1, target.dim).to(torch.get_default_dtype())
    raw, found = mass_errors(target, draws, None)
    rhat = result.diagnostics().get("rhat_max", float("nan"))
    return (f"{'nuts (4 chains)':<20} {seconds:8.1f} {result.num_grad_evals:>11,d} "
            f"{'':>8} {'':>8} {'':>6} {'':>6} {raw:8.4f} {'':>8} {'':>8} {found:>6}"
            f"  R-hat {rhat:.3f}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small budget (CI)")
    parser.add_argument("--targets", default=None, help="comma-separated target names")
    parser.add_argument("--seeds", default="0", help="comma-separated seeds")
    parser.add_argument("--steps", type=int, default=None, help="fit_target steps")
    parser.add_argument("--no-nuts", action="store_true", help="skip the NUTS rows")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    names = (args.targets or ("unequal2,mixture" if args.quick else "unequal2,mixture,gmm40"))
    steps = args.steps or (400 if args.quick else 3000)
    header = (f"{'method':<20} {'seconds':>8} {'gradients':>11} {'dlogZ':>8} {'bridge':>8} "
              f"{'ESS':>6} "
              f"{'k-hat':>6} {'mass:flow':>8} {'mass:IS':>8} {'mass:chains':>8} {'found':>6}")
    for name in names.split(","):
        target = make_target(name.strip())
        for seed in [int(s) for s in args.seeds.split(",")]:
            print(f"\n{name} (D={target.dim}), seed {seed}, {steps} steps", flush=True)
            print(header, flush=True)
            for method in ("auto", "reverse_kl"):
                print(flow_row(target, method, steps, seed), flush=True)
            if not args.no_nuts:
                print(nuts_row(target, args.quick, seed), flush=True)


if __name__ == "__main__":
    main()
