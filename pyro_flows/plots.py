"""Pictures of 2-D flows: density images beside the data, for people to look at."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor

from ._figures import check_figure_path, new_figure, save_figure
from ._numbers import check_interval
from ._validation import as_tensor, check_finite, check_positive_int
from .flow import Flow


def _check_flow_2d(flow: object) -> Flow:
    if not isinstance(flow, Flow):
        raise TypeError(f"flow must be a pyro_flows Flow, got {type(flow).__name__}")
    if flow.input_dim != 2 or len(flow.event_shape) != 1:
        raise ValueError(f"density_grid needs a 2-D flow, got input_dim={flow.input_dim}")
    if flow.context_dim is not None:
        raise ValueError(
            f"density_grid needs an unconditional flow, got context_dim={flow.context_dim}"
        )
    return flow


def density_grid(
    flow: Flow, bounds: tuple[float, float] = (-4.0, 4.0), resolution: int = 200
) -> tuple[Tensor, Tensor, Tensor]:
    """``(xs, ys, density)`` of a 2-D flow on a square grid (density shape ``(res, res)``).

    :raises TypeError: if ``flow`` is not a :class:`~pyro_flows.Flow`.
    :raises ValueError: for a flow that is not 2-D and unconditional, ``bounds`` that are not a
        finite ``(lo, hi)`` pair with ``lo < hi``, or a ``resolution`` below 2.
    """
    _check_flow_2d(flow)
    lo, hi = check_interval(bounds, "bounds")
    check_positive_int(resolution, "resolution", minimum=2)
    ref = next(flow.parameters(), None)
    dtype = ref.dtype if ref is not None else torch.get_default_dtype()
    device = ref.device if ref is not None else None
    axis = torch.linspace(lo, hi, resolution, dtype=dtype, device=device)
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
    """Write a figure with three panels: the data, the flow's density, the flow's samples, and
    return the path of the file written.

    ``data`` (a tensor or array of shape ``(rows, 2)``, every value finite) and every option
    are checked before anything is drawn, ``path`` too: its extension names the format (one of
    :func:`~pyro_flows._figures.figure_formats`; none: ``.png`` is appended, as the returned
    path shows), an existing directory is refused, and its folder is created. The figure is
    drawn without pyplot: the matplotlib backend is left as it was and no figure stays open.

    Example:

    >>> import tempfile, torch
    >>> from pyro_flows import flows
    >>> flow = flows.realnvp(2, num_transforms=1, hidden_dims=(4,))
    >>> with tempfile.TemporaryDirectory() as d:
    ...     p = plot_density_2d(flow, torch.randn(50, 2), f"{d}/fig", num_samples=50)
    ...     p.name, p.read_bytes()[:4]
    ('fig.png', b'\\x89PNG')

    :raises TypeError: ``flow`` is not a :class:`~pyro_flows.Flow`, ``data`` not an array,
        ``title`` not a ``str``, ``path`` not a path.
    :raises ValueError: a flow that is not 2-D and unconditional, ``data`` not of shape
        ``(rows, 2)`` or with NaN/inf rows (their count is named), bad ``bounds`` or
        ``num_samples``, an unsupported extension or a directory as ``path``.
    :raises NotADirectoryError: a file where the folder of ``path`` should be.
    """
    _check_flow_2d(flow)
    check_interval(bounds, "bounds")
    check_positive_int(num_samples, "num_samples")
    if not isinstance(title, str):
        raise TypeError(f"title must be a str, got {type(title).__name__} ({title!r})")
    data = as_tensor(data, "data").detach().cpu()
    if data.dim() != 2 or data.shape[-1] != 2:
        raise ValueError(f"data must have shape (rows, 2), got {tuple(data.shape)}")
    check_finite(data, "data", "plot_density_2d")
    path = check_figure_path(path)
    xs, ys, density = density_grid(flow, bounds)
    samples = flow.sample((num_samples,)).detach().cpu()
    fig = new_figure(figsize=(12, 4), layout="constrained")
    axes = fig.subplots(1, 3)
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
    return save_figure(fig, path, dpi=100)
