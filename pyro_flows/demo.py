"""The showcase: fit a MAF to a 2-D toy by maximum likelihood and picture its density.

This is the foundation's demo; it uses a plain Adam loop. ``pyro-flows demo`` runs it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm

from . import flows
from .data import ORACLE_NLL, TOYS
from .plots import plot_density_2d


@dataclass
class DemoResult:
    toy: str
    test_nll: float
    oracle_nll: float
    seconds: float
    image: Path


def run_demo(
    out_dir: str | Path = "outputs/demo",
    toy: str = "moons",
    steps: int = 3000,
    batch_size: int = 512,
    seed: int = 0,
    progress: bool = True,
) -> DemoResult:
    """Fit ``flows.maf(2)`` to ``toy`` and write ``<out_dir>/<toy>_maf.png``."""
    if toy not in TOYS:
        raise ValueError(f"toy must be one of {sorted(TOYS)}, got {toy!r}")
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    sampler = TOYS[toy]
    train, test = sampler(20000, generator=g), sampler(20000, generator=g)
    flow = flows.maf(2, num_transforms=5, hidden_dims=(64, 64))
    opt = torch.optim.Adam(flow.parameters(), lr=2e-3)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    start = time.perf_counter()
    bar = tqdm(range(steps), desc=f"maf on {toy}", disable=not progress)
    for step in bar:
        batch = train[torch.randint(0, len(train), (batch_size,), generator=g)]
        loss = -flow.log_prob(batch).mean()
        if not torch.isfinite(loss):
            raise FloatingPointError(f"non-finite loss at step {step}")
        opt.zero_grad()
        loss.backward()
        opt.step()
        schedule.step()
        if step % 100 == 0:
            bar.set_postfix(nll=f"{loss.item():.3f}")
    seconds = time.perf_counter() - start
    with torch.no_grad():
        test_nll = -flow.log_prob(test).mean().item()
    oracle = ORACLE_NLL[toy]
    image = plot_density_2d(
        flow,
        train[:20000],
        Path(out_dir) / f"{toy}_maf.png",
        title=f"MAF on {toy}: test NLL {test_nll:.3f} nats (oracle {oracle:.3f})",
    )
    return DemoResult(toy, test_nll, oracle, seconds, image)
