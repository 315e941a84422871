r"""Numerical helpers shared by the targets: composite Gauss-Legendre quadrature, the radial
rejection sampler, truncated-normal draws. All in float64.

Composite Gauss-Legendre with :math:`m` nodes per panel integrates polynomials of degree
:math:`2m - 1` exactly on each panel; for the smooth integrands here (Gaussians of width
:math:`\ge` a few panel widths) its error is far below float64 rounding of the results that the
targets quote.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

_F64 = torch.float64


def gauss_legendre(low: float, high: float, panels: int, order: int = 16) -> tuple[Tensor, Tensor]:
    """Nodes and weights of composite Gauss-Legendre quadrature on ``[low, high]`` (float64)."""
    x, w = np.polynomial.legendre.leggauss(order)
    edges = np.linspace(low, high, panels + 1)
    half = 0.5 * np.diff(edges)
    mid = 0.5 * (edges[1:] + edges[:-1])
    nodes = (mid[:, None] + half[:, None] * x[None, :]).ravel()
    weights = (half[:, None] * w[None, :]).ravel()
    return torch.as_tensor(nodes, dtype=_F64), torch.as_tensor(weights, dtype=_F64)


def radial_mode(radius: float, width: float, dim: int) -> float:
    r"""Mode :math:`r^*` of :math:`r^{d-1} e^{-(r - r_0)^2 / 2w^2}` on :math:`r > 0`."""
    return 0.5 * (radius + math.sqrt(radius**2 + 4.0 * (dim - 1) * width**2))


def sample_radius(n: int, radius: float, width: float, dim: int) -> Tensor:
    r"""Exact draws from :math:`f(r) \propto r^{d-1} e^{-(r - r_0)^2/2w^2}` on :math:`r > 0`.

    Rejection from the proposal :math:`\mathcal{N}(r^*, w^2)` with :math:`r^*` the mode of
    :math:`f`: the tangent bound :math:`\log r \le \log r^* + r/r^* - 1` gives
    :math:`f(r) \le C\, \mathcal{N}(r; r^*, w^2)` (because :math:`r^* = r_0 + (d-1)w^2/r^*`), and a
    proposal is accepted with probability
    :math:`(r/r^*)^{d-1} e^{(d-1)(1 - r/r^*)} \le 1` (0 for :math:`r \le 0`).
    """
    mode = radial_mode(radius, width, dim)
    out: list[Tensor] = []
    remaining = n
    while remaining > 0:
        m = max(2 * remaining, 64)
        r = mode + width * torch.randn(m, dtype=_F64)
        ratio = (r / mode).clamp_min(1e-300)
        log_accept = (dim - 1) * (torch.log(ratio) + 1.0 - ratio)
        keep = (r > 0) & (torch.log(torch.rand(m, dtype=_F64)) < log_accept)
        r = r[keep][:remaining]
        out.append(r)
        remaining -= r.numel()
    return torch.cat(out)


def uniform_directions(n: int, dim: int) -> Tensor:
    """``n`` uniform points on the unit sphere of :math:`\\mathbb{R}^{dim}` (float64)."""
    g = torch.randn(n, dim, dtype=_F64)
    norm = torch.linalg.vector_norm(g, dim=-1, keepdim=True)
    # a zero Gaussian vector has probability 0; guard anyway
    return g / norm.clamp_min(1e-300)


def truncated_standard_normal(low: Tensor, high: Tensor) -> Tensor:
    r"""One draw of :math:`t \sim \mathcal{N}(0, 1)` restricted to ``[low, high]`` per element.

    Inverse-CDF sampling, on the side of zero where it is accurate: an interval in the upper tail
    (``low > 0``) is reflected to the lower tail, where :math:`\Phi` has full relative precision.
    """
    flip = low > 0
    a = torch.where(flip, -high, low)
    b = torch.where(flip, -low, high)
    pa, pb = torch.special.ndtr(a), torch.special.ndtr(b)
    u = pa + (pb - pa) * torch.rand(a.shape, dtype=_F64)
    t = torch.special.ndtri(u.clamp(min=torch.finfo(_F64).tiny, max=1.0 - 1e-16))
    t = torch.minimum(torch.maximum(t, a), b)
    return torch.where(flip, -t, t)
