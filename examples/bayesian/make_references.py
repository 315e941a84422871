r"""Long NUTS runs that write the reference posteriors in ``references/`` (minutes to an hour).

For each model: ``--chains`` independent single-chain NUTS runs (``--warmup`` adaptation steps,
then ``--samples`` draws; Pyro's NUTS with a diagonal mass matrix, JIT-compiled potential, float64),
run one after another so each chain's wall time is measured on its own. The draws become the
model's coordinates (:mod:`models`), and ArviZ gives R-hat, bulk/tail ESS and the Monte Carlo
standard error of each mean. What is stored as *the reference*:

* ``logistic_regression``: the pooled NUTS draws;
* ``stochastic_volatility``: inference-gym's ground truth for the same model and data (Stan,
  50,000 draws; ``data/sp500_sv_ground_truth.json``), with our NUTS draws for the plots;
* both eight schools parametrisations (one posterior over :math:`\mu, \tau, \theta`): the exact
  moments and draws by quadrature over :math:`\tau` (:mod:`exact`);
* ``funnel``: the exact moments (means 0, sds :math:`3, e^{9/4}, \dots`) and exact draws.

Where the reference is exact, NUTS's run on the model (divergences, wall time, its own moments,
biased on the centred eight schools and the funnel) is stored next to it. Checks printed and
stored: NUTS on the non-centred eight schools and the exact moments against REFERENCE.md's Stan
run, and the stochastic volatility run against inference-gym's Stan ground truth (50,000
draws), as z-scores of the mean difference.

    python examples/bayesian/make_references.py                 # all models, 4 x (1000 + 1000)
    python examples/bayesian/make_references.py --models funnel --chains 2
    python examples/bayesian/make_references.py --quick --out /tmp/refs   # a smoke run (CI)
    python examples/bayesian/make_references.py --reuse-nuts    # rebuild from stored NUTS runs

References:

- M. D. Hoffman, A. Gelman. *The No-U-Turn Sampler.* JMLR 15, 2014.
- A. Vehtari et al. *Rank-normalization, folding, and localization: an improved R-hat.*
  Bayesian Analysis 16(2), 2021.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import platform
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import arviz as az
import numpy as np
import pyro
import torch
from exact import eight_schools_draws, eight_schools_moments, funnel_draws, funnel_moments
from models import DATA_DIR, MODEL_NAMES, get_model
from pyro.infer import MCMC, NUTS
from reference import REFERENCE_DIR, load_reference, save_reference
from tqdm.auto import tqdm

#: REFERENCE.md's Stan run of the non-centred eight schools: (mean, sd).
STAN_EIGHT_SCHOOLS = {"mu": (4.41, 3.31), "tau": (3.60, 3.20), "theta[0]": (6.15, 5.62)}
MAX_DRAWS_STORED = 1000
#: models whose stored draws keep only these columns (the file stays small)
DRAW_COLUMNS = {"stochastic_volatility": ["mu", "phi", "sigma", "h[0]", "h[49]", "h[99]"]}


def versions() -> dict[str, str]:
    """Library versions and platform for the record."""
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "pyro": pyro.__version__,
        "numpy": np.__version__,
        "arviz": az.__version__,
        "platform": platform.platform(),
        "torch_threads": str(torch.get_num_threads()),
    }


def run_nuts(
    name: str,
    chains: int,
    warmup: int,
    samples: int,
    seed: int,
    target_accept: float,
    progress: bool,
) -> dict[str, Any]:
    """``chains`` single-chain NUTS runs on model ``name``; coordinates and diagnostics."""
    spec = get_model(name)
    draws, walls, cpus, divergences, step_sizes = [], [], [], [], []
    for chain in tqdm(range(chains), desc=f"{name}: chains", disable=not progress):
        pyro.clear_param_store()
        pyro.set_rng_seed(seed + 1000 * chain)
        kernel = NUTS(
            spec.model,
            target_accept_prob=target_accept,
            jit_compile=True,
            ignore_jit_warnings=True,
        )
        mcmc = MCMC(kernel, warmup_steps=warmup, num_samples=samples, disable_progbar=not progress)
        wall, cpu = time.perf_counter(), time.process_time()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            mcmc.run(*spec.args, **spec.kwargs)
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
        divergences.append(len(mcmc.diagnostics()["divergences"]["chain 0"]))
        step_sizes.append(float(kernel.step_size))
        draws.append(spec.to_coordinates(mcmc.get_samples()))
    stacked = np.stack(draws)  # (chains, samples, K)
    ds = az.convert_to_dataset({"x": stacked})
    pooled = stacked.reshape(-1, stacked.shape[-1])
    r_hat = az.rhat(ds)["x"].values if chains > 1 else np.full(stacked.shape[-1], np.nan)
    return {
        "draws": stacked,
        "mean": pooled.mean(0),
        "sd": pooled.std(0, ddof=1),
        "mcse_mean": az.mcse(ds)["x"].values,
        "ess_bulk": az.ess(ds, method="bulk")["x"].values,
        "ess_tail": az.ess(ds, method="tail")["x"].values,
        "r_hat": r_hat,
        "wall_time_per_chain_s": walls,
        "cpu_time_per_chain_s": cpus,
        "divergences_per_chain": divergences,
        "step_size_per_chain": step_sizes,
        "settings": {
            "sampler": "pyro.infer.NUTS (diagonal mass matrix, jit_compile=True, float64)",
            "chains": chains,
            "warmup_steps": warmup,
            "num_samples": samples,
            "target_accept_prob": target_accept,
            "max_tree_depth": 10,
            "seed": seed,
            "chains_run": "one after another, one process; wall time includes JIT compilation",
        },
    }


def nuts_record(run: dict[str, Any]) -> dict[str, Any]:
    """The JSON-able part of :func:`run_nuts`'s result."""
    record = {k: v for k, v in run.items() if k != "draws"}
    record["wall_time_per_chain_mean_s"] = float(np.mean(run["wall_time_per_chain_s"]))
    record["cpu_time_per_chain_mean_s"] = float(np.mean(run["cpu_time_per_chain_s"]))
    finite = np.isfinite(run["r_hat"]).any()
    record["max_r_hat"] = float(np.nanmax(run["r_hat"])) if finite else None
    record["min_ess_bulk"] = float(np.min(run["ess_bulk"]))
    record["divergences"] = int(sum(run["divergences_per_chain"]))
    return record


def thin(draws: np.ndarray, num: int = MAX_DRAWS_STORED) -> np.ndarray:
    """At most ``num`` rows of ``draws``, evenly spaced."""
    if draws.shape[0] <= num:
        return draws
    return draws[np.linspace(0, draws.shape[0] - 1, num).round().astype(int)]


def z_scores(names: list[str], mean: np.ndarray, mcse: np.ndarray, truth: dict) -> dict:
    """``{name: (ours - theirs) / sqrt(mcse_ours^2 + se_theirs^2)}`` (their se may be 0)."""
    out = {}
    for coordinate, (their_mean, their_se) in truth.items():
        i = names.index(coordinate)
        out[coordinate] = float((mean[i] - their_mean) / math.hypot(mcse[i], their_se))
    return out


def external_checks(name: str, names: list[str], run: dict[str, Any]) -> dict[str, Any]:
    """Compare a NUTS run with published numbers, where there are any."""
    if name == "eight_schools_noncentered":
        # REFERENCE.md gives means to 2 decimals: their rounding (0.005) is the 'se'.
        truth = {k: (m, 0.005) for k, (m, _) in STAN_EIGHT_SCHOOLS.items()}
        mean, sd = eight_schools_moments()
        pick = {k: names.index(k) for k in STAN_EIGHT_SCHOOLS}
        return {
            "against": "REFERENCE.md's Stan run (mean, sd)",
            "nuts_z_mean": z_scores(names, run["mean"], run["mcse_mean"], truth),
            "nuts_sd_ours_theirs": {
                k: (float(run["sd"][i]), STAN_EIGHT_SCHOOLS[k][1]) for k, i in pick.items()
            },
            "exact_mean_sd_ours_theirs": {
                k: ((float(mean[i]), float(sd[i])), STAN_EIGHT_SCHOOLS[k]) for k, i in pick.items()
            },
        }
    if name == "stochastic_volatility":
        gt = json.loads((DATA_DIR / "sp500_sv_ground_truth.json").read_text())
        truth = {k: (gt[k]["mean"], gt[k]["mean_standard_error"]) for k in ("mu", "phi", "sigma")}
        for t, (m, se) in enumerate(
            zip(gt["h"]["mean"], gt["h"]["mean_standard_error"], strict=True)
        ):
            truth[f"h[{t}]"] = (m, se)
        z = z_scores(names, run["mean"], run["mcse_mean"], truth)
        their_sd = np.array([gt[k]["sd"] for k in ("mu", "phi", "sigma")] + gt["h"]["sd"])
        sd_ratio = run["sd"] / their_sd
        return {
            "against": "inference-gym stochastic_volatility_log_sp500_small ground truth "
            "(Stan, 50,000 draws; data/sp500_sv_ground_truth.json)",
            "z_mean_scalars": {k: z[k] for k in ("mu", "phi", "sigma")},
            "max_abs_z_mean": float(max(abs(v) for v in z.values())),
            "sd_ratio_scalars": {
                k: float(sd_ratio[i]) for i, k in enumerate(("mu", "phi", "sigma"))
            },
            "sd_ratio_range": [float(sd_ratio.min()), float(sd_ratio.max())],
        }
    return {}


def sv_ground_truth() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """inference-gym's Stan ground truth of the stochastic volatility model: mean, sd, se."""
    gt = json.loads((DATA_DIR / "sp500_sv_ground_truth.json").read_text())
    scalars = ("mu", "phi", "sigma")
    return tuple(
        np.array([gt[k][stat] for k in scalars] + gt["h"][stat])
        for stat in ("mean", "sd", "mean_standard_error")
    )


def make_reference(name: str, args: argparse.Namespace, out: Path) -> dict[str, Any]:
    """Run NUTS on ``name`` (or reuse the stored run), build its record and write the files."""
    spec = get_model(name)
    names = spec.coordinate_names
    draw_names = DRAW_COLUMNS.get(name, names)
    stored = load_reference(name, out) if args.reuse_nuts else None
    if stored is not None:
        arrays = ("mean", "sd", "mcse_mean", "ess_bulk", "ess_tail", "r_hat")
        run = {k: np.asarray(v) if k in arrays else v for k, v in stored.record["nuts"].items()}
        nuts_draws = stored.draws if stored.draw_names == draw_names else None
    else:
        run = run_nuts(
            name,
            args.chains,
            args.warmup,
            args.samples,
            args.seed,
            args.target_accept,
            not args.no_progress,
        )
        pooled = run["draws"].reshape(-1, len(names))
        nuts_draws = thin(pooled)[:, [names.index(n) for n in draw_names]]
    num_draws = None
    mcse = np.zeros(len(names))
    if name == "funnel":
        mean, sd = funnel_moments()
        source = "exact"
        draws = funnel_draws(MAX_DRAWS_STORED, seed=args.seed)
    elif name.startswith("eight_schools"):
        mean, sd = eight_schools_moments()
        source = "exact (quadrature over tau)"
        draws = eight_schools_draws(MAX_DRAWS_STORED, seed=args.seed)
    elif name == "stochastic_volatility":
        # Stan with 50,000 draws on the same model and data beats our 4 NUTS chains (which
        # diverge a few times per chain); our draws still serve the plots
        mean, sd, mcse = sv_ground_truth()
        source = "inference-gym ground truth (Stan, 50,000 draws)"
        draws = nuts_draws
    else:
        mean, sd, mcse = (np.asarray(run[k]) for k in ("mean", "sd", "mcse_mean"))
        source = "nuts"
        draws = nuts_draws
        num_draws = len(run["wall_time_per_chain_s"]) * run["settings"]["num_samples"]
    if draws is None:
        raise ValueError(f"{name}: the stored draws do not have the columns {draw_names}")
    record = {
        "model": name,
        "coordinates": names,
        "reference": {
            "source": source,
            "mean": mean,
            "sd": sd,
            "mcse_mean": mcse,
            "num_draws": num_draws,
        },
        "nuts": nuts_record(run),
        "checks": external_checks(name, names, run),
        "created": datetime.date.today().isoformat(),
        "command": "python examples/bayesian/make_references.py " + " ".join(sys.argv[1:]),
        "nuts_command": stored.record.get("nuts_command", stored.record["command"])
        if args.reuse_nuts
        else "python examples/bayesian/make_references.py " + " ".join(sys.argv[1:]),
        "versions": versions(),
    }
    save_reference(name, record, draws, draw_names, out)
    return record


def report(record: dict[str, Any]) -> str:
    """A few lines about one reference."""
    nuts = record["nuts"]
    lines = [
        f"{record['model']}: reference from {record['reference']['source']}",
        f"  NUTS {nuts['settings']['chains']} x ({nuts['settings']['warmup_steps']} + "
        f"{nuts['settings']['num_samples']}): {nuts['wall_time_per_chain_mean_s']:.1f} s per "
        f"chain, divergences {nuts['divergences_per_chain']}, max R-hat "
        f"{nuts['max_r_hat'] if nuts['max_r_hat'] is None else round(nuts['max_r_hat'], 3)}, "
        f"min bulk ESS {nuts['min_ess_bulk']:.0f}",
    ]
    names, ref = record["coordinates"], record["reference"]
    shown = names[:3]
    lines.append(
        "  reference "
        + ", ".join(f"{n} {ref['mean'][i]:.3f} +- {ref['sd'][i]:.3f}" for i, n in enumerate(shown))
    )
    if ref["source"] != "nuts":
        err = (np.asarray(nuts["mean"]) - np.asarray(ref["mean"])) / np.asarray(ref["sd"])
        ratio = np.asarray(nuts["sd"]) / np.asarray(ref["sd"])
        lines.append(
            f"  NUTS on this model vs the reference: max |mean error| {np.abs(err).max():.2f} "
            f"sd, sd ratio {ratio.min():.2f}..{ratio.max():.2f}"
        )
    if record["checks"]:
        lines.append(f"  check: {json.dumps(record['checks'])}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(MODEL_NAMES), choices=MODEL_NAMES)
    parser.add_argument("--chains", type=int, default=4)
    parser.add_argument("--warmup", type=int, default=1000)
    parser.add_argument("--samples", type=int, default=1000)
    parser.add_argument("--target-accept", type=float, default=0.8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--threads", type=int, default=1, help="torch threads (1: robust on a shared machine)"
    )
    parser.add_argument("--out", type=Path, default=REFERENCE_DIR)
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.add_argument(
        "--reuse-nuts",
        action="store_true",
        help="rebuild the files from the NUTS runs stored in --out (no sampling)",
    )
    parser.add_argument(
        "--quick", action="store_true", help="eight schools only, 2 x (50 + 50), for CI"
    )
    args = parser.parse_args(argv)
    torch.set_default_dtype(torch.float64)
    torch.set_num_threads(args.threads)
    if args.quick:
        args.models = ["eight_schools_noncentered", "eight_schools_centered"]
        args.chains, args.warmup, args.samples, args.no_progress = 2, 50, 50, True
        if args.out == REFERENCE_DIR:
            parser.error("--quick would overwrite the stored references: give --out")
    for name in args.models:
        print(report(make_reference(name, args, args.out)), flush=True)


if __name__ == "__main__":
    main()
