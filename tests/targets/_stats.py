"""Shared statistics for the target tests: Monte Carlo tolerances from the samples themselves.

Every Monte Carlo check compares an estimate with the exact value within ``Z_TOL`` standard
errors, the standard error being estimated from the same samples (seeded, so deterministic).
At 5 standard errors a correct implementation fails with probability below 6e-7 per check.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator

import torch
from torch import Tensor

Z_TOL = 5.0


@contextlib.contextmanager
def default_dtype(dtype: torch.dtype) -> Iterator[None]:
    """Build targets whose buffers are stored in ``dtype`` (restores the default afterwards)."""
    old = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(old)


def assert_mean_std(samples: Tensor, mean: Tensor, std: Tensor, z_tol: float = Z_TOL) -> None:
    """Sample means and variances within ``z_tol`` standard errors of the exact ones.

    SE(mean_d) = s_d / sqrt(n); SE(var_d) = sqrt((m4_d - s_d^4) / n) with the sample fourth
    central moment m4_d (the delta-method error of a variance estimate).
    """
    x = samples.double().reshape(-1, samples.shape[-1])
    n = x.shape[0]
    mean, std = mean.double(), std.double()
    m = x.mean(0)
    c = x - m
    var = (c**2).mean(0)
    m4 = (c**4).mean(0)
    se_mean = var.sqrt() / math.sqrt(n)
    se_var = ((m4 - var**2).clamp_min(0) / n).sqrt()
    z_mean = ((m - mean).abs() / se_mean).max().item()
    z_var = ((var - std**2).abs() / se_var).max().item()
    assert z_mean < z_tol, f"means off by {z_mean:.1f} SE: {m} vs {mean}"
    assert z_var < z_tol, f"variances off by {z_var:.1f} SE: {var} vs {std**2}"


def assert_importance_mean(log_w: Tensor, expected: float, z_tol: float = Z_TOL) -> None:
    """The mean of ``exp(log_w)`` equals ``expected`` within ``z_tol`` standard errors."""
    w = torch.exp(log_w.double())
    est = w.mean().item()
    se = w.std().item() / math.sqrt(w.numel())
    assert abs(est - expected) < z_tol * se, f"{est} vs {expected} (SE {se:.2e})"
    assert se < 0.01 * expected, f"importance estimate too noisy to be a test (SE {se:.2e})"


def midpoint_grid(lows: tuple[float, ...], highs: tuple[float, ...], h: float) -> Tensor:
    """Cell centres (float64) of a regular grid of spacing ``h`` on a box, shape ``(cells, D)``."""
    axes = []
    for lo, hi in zip(lows, highs, strict=True):
        n = round((hi - lo) / h)
        axes.append(lo + h * (torch.arange(n, dtype=torch.float64) + 0.5))
    mesh = torch.meshgrid(*axes, indexing="ij")
    return torch.stack([m.reshape(-1) for m in mesh], -1)


def grid_log_integral(log_f: Tensor, h: float, dim: int) -> float:
    """``log sum(exp(log_f)) h^dim`` (midpoint rule)."""
    return (torch.logsumexp(log_f, 0) + dim * math.log(h)).item()


def chi_square_2d(
    samples: Tensor, log_p: Tensor, grid: Tensor, h: float, bounds: tuple, bins: int
) -> tuple[float, int]:
    """Pearson's statistic of a ``bins x bins`` histogram of ``samples`` against the cell
    probabilities integrated from the normalised density ``exp(log_p)`` on the midpoint ``grid``.

    Cells with an expected count below 5 are pooled into one. Returns (statistic, degrees of
    freedom); for a correct sampler the statistic is about dof +- sqrt(2 dof).
    """
    (x0, x1), (y0, y1) = bounds
    n = samples.shape[0]

    def cell(points: Tensor) -> Tensor:
        ix = ((points[:, 0] - x0) / (x1 - x0) * bins).floor().long()
        iy = ((points[:, 1] - y0) / (y1 - y0) * bins).floor().long()
        inside = (ix >= 0) & (ix < bins) & (iy >= 0) & (iy < bins)
        return torch.where(inside, ix * bins + iy, torch.full_like(ix, bins * bins))

    p = torch.zeros(bins * bins + 1, dtype=torch.float64)
    p.index_add_(0, cell(grid), torch.exp(log_p) * h * h)
    p[-1] = (1.0 - p[:-1].sum()).clamp_min(0)  # mass outside the bounds
    counts = torch.bincount(cell(samples.double()), minlength=bins * bins + 1).double()
    expected = n * p / p.sum()
    small = expected < 5
    obs = torch.cat([counts[~small], counts[small].sum().reshape(1)])
    exp = torch.cat([expected[~small], expected[small].sum().reshape(1)])
    keep = exp > 0
    stat = (((obs - exp) ** 2)[keep] / exp[keep]).sum().item()
    return stat, int(keep.sum().item()) - 1


def assert_chi_square(stat: float, dof: int) -> None:
    """``stat`` within 5 standard deviations (sqrt(2 dof)) of its mean ``dof``."""
    assert stat < dof + 5 * math.sqrt(2 * dof), f"chi-square {stat:.1f} for {dof} dof"
