"""Density estimation in a few lines: fit a flow to a 2-D toy and look at its density.

python examples/quickstart.py --flow realnvp --toy 8gaussians
python examples/quickstart.py --quick        # what CI runs
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from pyro_flows import flows
from pyro_flows.data import ORACLE_NLL, TOYS
from pyro_flows.plots import plot_density_2d

BUILDERS = {"maf": flows.maf, "realnvp": flows.realnvp, "nice": flows.nice}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--flow", choices=sorted(BUILDERS), default="maf")
    parser.add_argument("--toy", choices=sorted(TOYS), default="moons")
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--out", type=Path, default=Path("outputs/quickstart"))
    parser.add_argument("--quick", action="store_true", help="a short run (CI)")
    args = parser.parse_args()
    steps = 150 if args.quick else args.steps

    torch.manual_seed(0)
    train, test = TOYS[args.toy](20000), TOYS[args.toy](5000)
    flow = BUILDERS[args.flow](2, num_transforms=5, hidden_dims=(64, 64))
    opt = torch.optim.Adam(flow.parameters(), lr=2e-3)
    for _ in range(steps):
        batch = train[torch.randint(0, len(train), (512,))]
        loss = -flow.log_prob(batch).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        nll = -flow.log_prob(test).mean().item()
    print(f"{args.flow} on {args.toy}: test NLL {nll:.3f} nats (oracle {ORACLE_NLL[args.toy]:.3f})")
    image = plot_density_2d(flow, train, args.out / f"{args.toy}_{args.flow}.png")
    print(f"wrote {image}")


if __name__ == "__main__":
    main()
