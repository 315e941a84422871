"""Fit a flow to every 2-D toy and compare its test NLL with the oracle (the toy's entropy).

Writes one picture with a row per toy: the data, the flow's density, the flow's samples.

    python examples/density_2d.py                    # nsf on all toys, fit() defaults
    python examples/density_2d.py --flow maf --toys moons 8gaussians
    python examples/density_2d.py --quick            # what CI runs
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from pyro_flows import flows
from pyro_flows.data import ORACLE_NLL, TOYS
from pyro_flows.infer import evaluate_nll, fit
from pyro_flows.plots import density_grid

BUILDERS = {"nsf": flows.nsf, "maf": flows.maf, "realnvp": flows.realnvp, "nice": flows.nice}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--flow", choices=sorted(BUILDERS), default="nsf")
    parser.add_argument("--toys", nargs="+", choices=sorted(TOYS), default=sorted(TOYS))
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--out", type=Path, default=Path("outputs/density_2d"))
    parser.add_argument("--quick", action="store_true", help="small data, 2 epochs (CI)")
    args = parser.parse_args()
    n, epochs = (2000, 2) if args.quick else (20000, args.epochs)

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(args.toys), 3, figsize=(9, 3 * len(args.toys)), squeeze=False)
    print(f"{'toy':14s} {'test NLL':>9s} {'oracle':>7s} {'gap':>7s} {'secs':>5s}")
    for row, toy in enumerate(args.toys):
        g = torch.Generator().manual_seed(0)
        train, test = TOYS[toy](n, generator=g), TOYS[toy](n, generator=g)
        torch.manual_seed(0)
        flow = BUILDERS[args.flow](2)
        start = time.perf_counter()
        fit(flow, train, epochs=epochs, progress=not args.quick)
        seconds = time.perf_counter() - start
        nll = evaluate_nll(flow, test)
        oracle = ORACLE_NLL.get(toy)
        gap = "" if oracle is None else f"{nll - oracle:+.3f}"
        shown = "" if oracle is None else f"{oracle:.3f}"
        print(f"{toy:14s} {nll:9.3f} {shown:>7s} {gap:>7s} {seconds:5.0f}")

        bounds = (-4.5, 4.5)
        xs, ys, density = density_grid(flow, bounds, resolution=150)
        samples = flow.sample((5000,))
        hist = dict(bins=100, range=[bounds, bounds], cmap="viridis")
        axes[row, 0].hist2d(train[:, 0].numpy(), train[:, 1].numpy(), **hist)
        axes[row, 1].pcolormesh(xs.numpy(), ys.numpy(), density.numpy(), cmap="viridis")
        axes[row, 2].hist2d(samples[:, 0].numpy(), samples[:, 1].numpy(), **hist)
        axes[row, 0].set_ylabel(f"{toy}\nNLL {nll:.3f}" + (f" ({gap})" if gap else ""))
    for ax, title in zip(axes[0], ("data", f"{args.flow} density", "samples"), strict=True):
        ax.set_title(title)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_aspect("equal")
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"toys_{args.flow}.png"
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
