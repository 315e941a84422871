"""Energy-based models on a 2-D toy: one neural energy per training method, side by side.

Trains an :class:`~pyro_flows.ebm.energy.EnergyModel` with contrastive divergence (persistent
Langevin chains), exact and sliced score matching, noise-contrastive estimation, flow
contrastive estimation (a MAF as the learned noise) and adversarial training (an IAF sampler
with exact entropy); normalises each energy on a grid, prints its test NLL next to the oracle
(the toy's entropy) and writes one PNG with the data and the six density images.

    python examples/ebm_toys.py                       # moons, full length
    python examples/ebm_toys.py --toy 8gaussians --steps 4000
    python examples/ebm_toys.py --quick               # what CI runs (< 60 s)
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import torch

from pyro_flows.data import ORACLE_NLL, TOYS
from pyro_flows.ebm.energy import EnergyModel
from pyro_flows.ebm.train import train_ebm

#: method -> (label, train_ebm options). Learning rates are the energy side's; flows get their own.
METHODS: dict[str, tuple[str, dict[str, Any]]] = {
    "cd": (
        "PCD, Langevin",
        {"k": 20, "step_size": 0.01, "persistent": True, "buffer_size": 5000, "alpha": 0.1},
    ),
    "sm": ("score matching", {}),
    "ssm": ("sliced score matching", {"n_projections": 1}),
    "nce": ("NCE (Gaussian noise)", {"nu": 2.0}),
    "fce": ("flow contrastive", {"sampler_lr": 2e-3, "num_transforms": 3, "hidden_dims": (32,)}),
    "adversarial": (
        "adversarial, IAF",
        {
            "alpha": 0.1,
            "sampler_lr": 5e-3,
            "sampler_steps": 2,
            "num_transforms": 3,
            "hidden_dims": (32,),
        },
    ),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--toy", choices=sorted(ORACLE_NLL), default="moons")
    parser.add_argument("--methods", nargs="+", choices=list(METHODS), default=list(METHODS))
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--out", type=Path, default=Path("outputs/ebm_toys"))
    parser.add_argument("--quick", action="store_true", help="few steps, small nets (CI)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    steps, hidden, resolution = (250, (32, 32), 100) if args.quick else (args.steps, (64, 64), 200)

    g = torch.Generator().manual_seed(0)
    train = TOYS[args.toy](4000 if args.quick else 20000, generator=g)
    test = TOYS[args.toy](5000, generator=g)
    bounds = (-4.5, 4.5)
    oracle = ORACLE_NLL[args.toy]

    images = {}
    print(f"toy {args.toy}: oracle NLL {oracle:.3f} nats; {steps} steps per method")
    print(f"{'method':24s} {'test NLL':>9s} {'gap':>7s} {'secs':>5s}")
    for method in args.methods:
        label, options = METHODS[method]
        torch.manual_seed(0)
        energy = EnergyModel(2, hidden_dims=hidden)
        start = time.perf_counter()
        train_ebm(
            energy, train, method=method, steps=steps, batch_size=256, lr=2e-3,
            progress=not args.quick, **options,
        )
        seconds = time.perf_counter() - start
        log_Z, axis, log_density = energy.log_Z_grid(bounds, resolution)
        with torch.no_grad():
            nll = float(energy(test).double().mean()) + log_Z
        print(f"{label:24s} {nll:9.3f} {nll - oracle:+7.3f} {seconds:5.1f}")
        images[label] = (axis, log_density.exp(), nll)

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(images) + 1
    fig, axes = plt.subplots(1, n, figsize=(3 * n, 3.2), constrained_layout=True)
    axes[0].hist2d(
        test[:, 0].numpy(), test[:, 1].numpy(), bins=100, range=[bounds, bounds], cmap="viridis"
    )
    axes[0].set_title(f"data ({args.toy})\noracle NLL {oracle:.3f}")
    for ax, (label, (axis, density, nll)) in zip(axes[1:], images.items(), strict=True):
        ax.pcolormesh(axis.numpy(), axis.numpy(), density.numpy(), shading="auto", cmap="viridis")
        ax.set_title(f"{label}\nNLL {nll:.3f}")
    for ax in axes:
        ax.set_aspect("equal")
        ax.set_xticks([])
        ax.set_yticks([])
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"ebm_{args.toy}.png"
    fig.savefig(path, dpi=90)
    plt.close(fig)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
