"""Pictures of 2-D flows: density images beside the data, for people to look at."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor

from .flow import Flow


def density_grid(
    flow: Flow, bounds: tuple[float, float] = (-4.0, 4.0), resolution: int = 200
) -> tuple[Tensor, Tensor, Tensor]:
    """``(xs, ys, density)`` of a 2-D flow on a square grid (density shape ``(res, res)``)."""
    if flow.input_dim != 2:
        raise ValueError(f"density_grid needs a 2-D flow, got input_dim={flow.input_dim}")
    ref = next(flow.parameters())
    axis = torch.linspace(*bounds, resolution, dtype=ref.dtype, device=ref.device)
    xx, yy = torch.meshgrid(axis, axis, indexing="xy")
    points = torch.stack([xx, yy], -1).reshape(-1, 2)
    with torch.no_grad():
        density = flow.log_prob(points).exp().reshape(resolution, resolution)
    return axis.cpu(), axis.cpu(), density.cpu()


def plot_density_2d(
    flow: Flow,
    data: Tensor,
    path: str | Path,
    bounds: tuple[float, float] = (-4.0, 4.0),
    title: str = "",
    num_samples: int = 5000,
) -> Path:
    """Write a PNG with three panels: the data, the flow's density, the flow's samples."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    xs, ys, density = density_grid(flow, bounds)
    samples = flow.sample((num_samples,)).cpu()
    data = data.detach().cpu()
    fig, axes = plt.subplots(1, 3, figsize=(12, 4), constrained_layout=True)
    hist_range = [list(bounds), list(bounds)]
    axes[0].hist2d(
        data[:, 0].numpy(), data[:, 1].numpy(), bins=120, range=hist_range, cmap="viridis"
    )
    axes[0].set_title("data")
    axes[1].pcolormesh(xs.numpy(), ys.numpy(), density.numpy(), shading="auto", cmap="viridis")
    axes[1].set_title("flow density")
    axes[2].hist2d(
        samples[:, 0].numpy(), samples[:, 1].numpy(), bins=120, range=hist_range, cmap="viridis"
    )
    axes[2].set_title("flow samples")
    for ax in axes:
        ax.set_aspect("equal")
        ax.set_xticks([])
        ax.set_yticks([])
    if title:
        fig.suptitle(title)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
