r"""The exact log densities of the 2-D toys (:mod:`~pyro_flows.data.toys`), in float64: each
``_<toy>_log_prob(x)`` takes points ``x`` of shape ``(N, 2)`` and returns :math:`\log p(x)`,
shape ``(N,)``; :class:`~pyro_flows.data.toys.Toy` checks the input and casts.

How each density is computed:

- *Noisy curves* (moons, 2spirals, swissroll): with curve parameter :math:`t \sim w(t)` and noise
  kernel :math:`k`, :math:`p(x) = \int w(t)\, k(x - c(t))\, dt`, evaluated by composite
  Gauss-Legendre quadrature over :math:`t` in log space (log-sum-exp over the nodes), within
  :math:`10^{-6}` in :math:`\log p` of the quadrature with 4 times as many nodes wherever
  :math:`\log p > -50` on the toy's box (relative :math:`10^{-4}` elsewhere; tested). In 2spirals
  the kernel is a uniform box convolved with a Gaussian, exact through :math:`\Phi` differences.
- *Noisy circles* (circles, rings): the integral over a uniform angle is closed form (the Rice
  density), :math:`p(x) = \frac{1}{2\pi s^2} e^{-(|x|^2 + R^2)/2s^2} I_0(|x| R / s^2)`.
- *pinwheel*: with :math:`y = x/2` in polar coordinates :math:`(\rho, \phi)`, arm :math:`k`
  maps :math:`f = \rho(\cos\psi, \sin\psi) \sim \mathcal{N}((1, 0), \mathrm{diag}(0.3^2, 0.1^2))`
  to angle :math:`\phi = \psi - 2\pi k/5 - e^{\rho\cos\psi}/4`, so
  :math:`p_y(y) = \tfrac15 \sum_{\psi^*} p_f(f^*)/|g'(\psi^*)|` over all roots
  :math:`\psi^*` (found on a grid and refined by bisection to machine precision) with
  :math:`g'(\psi) = 1 + \tfrac14 \rho \sin\psi\, e^{\rho\cos\psi}`, and :math:`p(x) = p_y(x/2)/4`.
  Exact to the bisection tolerance for :math:`|x| \le 12` (holding all but :math:`e^{-100}` of
  the mass), except within one grid cell of a fold (:math:`g' = 0`, where the density has an
  integrable singularity; such points carry less than :math:`10^{-7}` of the mass).

The other two are closed forms: checkerboard (:math:`\ln\frac{1}{32}` on its 8 squares, edges
included) and 8gaussians (a mixture of 8 isotropic Gaussians). The shapes (radii, noises, curve
ranges) are the samplers' (:mod:`~pyro_flows.data.toy_samplers`).

Example:

>>> x = torch.tensor([[0.5, 0.5], [0.5, -0.5]], dtype=torch.float64)
>>> _checkerboard_log_prob(x).tolist() == [-math.log(32.0), -math.inf]
True
>>> bool(_moons_log_prob(torch.tensor([[-1.0, -0.2]], dtype=torch.float64)) < 0)
True

References:

- Grathwohl, Chen, Bettencourt, Sutskever, Duvenaud, *FFJORD: Free-form Continuous Dynamics for
  Scalable Reversible Generative Models*, ICLR 2019 (the toy suite).
- S. O. Rice, *Mathematical analysis of random noise*, Bell System Technical Journal 24, 1945
  (the density of a noisy circle).
- P. J. Davis, P. Rabinowitz, *Methods of Numerical Integration*, 2nd ed., 1984 (composite
  Gauss-Legendre quadrature).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch
from torch import Tensor

from .toy_samplers import (
    _PIN_ARMS,
    _PIN_RADIAL,
    _PIN_RATE,
    _PIN_TANGENTIAL,
    _ROLL_HIGH,
    _ROLL_LOW,
    _ROLL_NOISE,
    _SPIRAL_BOX,
    _SPIRAL_NOISE,
    _SPIRAL_TURN,
)

__all__: list[str] = []

_LOG_2PI = math.log(2.0 * math.pi)
_CHUNK = 1 << 21  # (points x nodes) elements per quadrature chunk


def _gauss_legendre(a: float, b: float, panels: int, order: int) -> tuple[Tensor, Tensor]:
    """Composite Gauss-Legendre nodes and weights on ``[a, b]`` (float64)."""
    u, w = np.polynomial.legendre.leggauss(order)
    edges = np.linspace(a, b, panels + 1)
    half = 0.5 * np.diff(edges)[:, None]
    nodes = (edges[:-1, None] + half * (u[None] + 1.0)).reshape(-1)
    weights = (half * w[None]).reshape(-1)
    return torch.from_numpy(nodes), torch.from_numpy(weights)


def _chunked(fn: Callable[[Tensor], Tensor], x: Tensor, nodes: int) -> Tensor:
    rows = max(1, _CHUNK // max(nodes, 1))
    if x.shape[0] <= rows:
        return fn(x)
    return torch.cat([fn(x[i : i + rows]) for i in range(0, x.shape[0], rows)])


def _curve_log_prob(x: Tensor, centres: Tensor, log_w: Tensor, noise: float) -> Tensor:
    """``log sum_m w_m N(x; c_m, noise^2 I)`` for ``x`` (N, 2), centres (M, 2)."""

    def one(xc: Tensor) -> Tensor:
        sq = (xc[:, None, :] - centres[None]).square().sum(-1)
        return torch.logsumexp(log_w - sq / (2.0 * noise**2), -1)

    return _chunked(one, x, centres.shape[0]) - _LOG_2PI - 2.0 * math.log(noise)


def _checkerboard_log_prob(x: Tensor) -> Tensor:
    # unit cells (k, m) of x / 2 with k + m even carry density 1/32; a point on a cell edge
    # belongs to both neighbours (so float32 samples rounded onto an edge stay in the support)
    v = x / 2.0
    lower, upper = torch.ceil(v) - 1.0, torch.floor(v)  # differ only on an edge
    inside = (v >= -2.0).all(-1) & (v <= 2.0).all(-1)
    even = torch.zeros(x.shape[:-1], dtype=torch.bool)
    for k in (lower[..., 0], upper[..., 0]):
        for m in (lower[..., 1], upper[..., 1]):
            in_board = (k >= -2) & (k <= 1) & (m >= -2) & (m <= 1)
            even = even | (in_board & ((k + m) % 2 == 0))
    value = torch.tensor(-math.log(32.0), dtype=x.dtype)
    return torch.where(inside & even, value, -math.inf)


def _eight_gaussians_log_prob(x: Tensor) -> Tensor:
    k = torch.arange(8, dtype=x.dtype)
    centres = 4.0 * torch.stack([torch.cos(k * math.pi / 4), torch.sin(k * math.pi / 4)], -1)
    centres = centres / 1.414
    s = 0.5 / 1.414
    sq = (x[..., None, :] - centres).square().sum(-1)
    return torch.logsumexp(-sq / (2 * s**2), -1) - math.log(8.0) - _LOG_2PI - 2 * math.log(s)


_MOON_NODES = _gauss_legendre(0.0, math.pi, 16, 16)


def _moons_log_prob(x: Tensor) -> Tensor:
    theta, w = _MOON_NODES
    cos, sin = torch.cos(theta), torch.sin(theta)
    upper = torch.stack([cos, sin], -1)
    lower = torch.stack([1.0 - cos, 0.5 - sin], -1)
    shift = torch.tensor([-1.0, -0.2], dtype=torch.float64)
    centres = torch.cat([upper, lower]) * 2.0 + shift
    log_w = torch.log(torch.cat([w, w]) / (2.0 * math.pi))
    return _curve_log_prob(x, centres, log_w, 0.2)


def _rice_mixture_log_prob(x: Tensor, radii: tuple[float, ...], noise: float) -> Tensor:
    r = torch.linalg.vector_norm(x, dim=-1)
    terms = []
    for radius in radii:
        z = r * radius / noise**2
        # exp(-(r^2 + R^2)/2s^2) I0(rR/s^2) = exp(-(r - R)^2/2s^2) i0e(rR/s^2)
        terms.append(-(r - radius).square() / (2 * noise**2) + torch.log(torch.special.i0e(z)))
    mix = torch.logsumexp(torch.stack(terms, -1), -1) - math.log(len(radii))
    return mix - _LOG_2PI - 2 * math.log(noise)


def _log_diff_ndtr(a: Tensor, b: Tensor) -> Tensor:
    """``log(Phi(a) - Phi(b))`` for ``a > b``, stable in both tails."""
    upper = (a + b) > 0  # mostly in the upper tail: use Phi(-b) - Phi(-a)
    hi = torch.where(upper, -b, a)
    lo = torch.where(upper, -a, b)
    log_hi, log_lo = torch.special.log_ndtr(hi), torch.special.log_ndtr(lo)
    d = log_lo - log_hi  # < 0
    log1mexp = torch.where(d > -math.log(2.0), torch.log(-torch.expm1(d)), torch.log1p(-d.exp()))
    return log_hi + log1mexp


_SPIRAL_NODES = _gauss_legendre(0.0, _SPIRAL_TURN, 48, 16)


def _segment_logsumexp(values: Tensor, index: Tensor, n: int) -> Tensor:
    """``out[i] = logsumexp(values[index == i])`` (``-inf`` for empty segments)."""
    shift = torch.full((n,), -math.inf, dtype=values.dtype).scatter_reduce(0, index, values, "amax")
    shift = torch.where(torch.isfinite(shift), shift, torch.zeros_like(shift))
    total = torch.zeros(n, dtype=values.dtype).index_add_(
        0, index, torch.exp(values - shift[index])
    )
    return torch.log(total) + shift


def _spiral_branch_log_prob(x: Tensor) -> Tensor:
    """log density of ``(c(t) + 0.5 U)/3 + 0.1 eps`` (the ``+`` spiral).

    Only the (point, node) pairs whose box lies within ``sqrt(d_min^2 + 100 s^2)`` of the point
    are evaluated: each other term is below ``e^-50`` times the nearest node's (up to factors
    polynomial in ``d/s``, and at most ``e^12`` from the quadrature weights), so dropping them
    changes ``log p`` by less than ``1e-13``.
    """
    t, w = _SPIRAL_NODES
    c = torch.stack([-torch.cos(t) * t, torch.sin(t) * t], -1) / 3.0  # (M, 2)
    log_w = torch.log(w * 2.0 * t / _SPIRAL_TURN**2)
    s, width = _SPIRAL_NOISE, _SPIRAL_BOX

    def one(xc: Tensor) -> Tensor:
        z = xc[:, None, :] - c[None]  # (n, M, 2)
        d2 = (z - z.clamp(0.0, width)).square().sum(-1)
        keep = d2 <= d2.min(-1, keepdim=True).values + 100.0 * s**2
        row, col = keep.nonzero(as_tuple=True)
        zk = z[row, col]
        log_k = _log_diff_ndtr(zk / s, (zk - width) / s).sum(-1) - 2 * math.log(width)
        return _segment_logsumexp(log_w[col] + log_k, row, xc.shape[0])

    return _chunked(one, x, 2 * t.shape[0])


def _two_spirals_log_prob(x: Tensor) -> Tensor:
    both = torch.stack([_spiral_branch_log_prob(x), _spiral_branch_log_prob(-x)], -1)
    return torch.logsumexp(both, -1) - math.log(2.0)


_ROLL_NODES = _gauss_legendre(_ROLL_LOW, _ROLL_HIGH, 48, 16)


def _swissroll_log_prob(x: Tensor) -> Tensor:
    t, w = _ROLL_NODES
    centres = torch.stack([t * torch.cos(t), t * torch.sin(t)], -1) / 5.0
    log_w = torch.log(w / (_ROLL_HIGH - _ROLL_LOW))
    return _curve_log_prob(x, centres, log_w, _ROLL_NOISE)


_PIN_MAX_RHO = 300.0  # |x| / 2 beyond which exp(rho) overflows (the density there is 0)
_PIN_BUCKETS = (2.5, 3.5, 4.5, 6.0, _PIN_MAX_RHO)  # rho ranges sharing one psi grid


def _pinwheel_scaled_angle(psi: Tensor, rho: Tensor, phi: Tensor) -> Tensor:
    """``s(psi) = 5 (psi - e^{rho cos psi}/4 - phi) / 2 pi``: an integer exactly at the roots."""
    return _PIN_ARMS * (psi - _PIN_RATE * torch.exp(rho * torch.cos(psi)) - phi) / (2 * math.pi)


def _pinwheel_log_py(rho: Tensor, phi: Tensor, m: int) -> Tensor:
    """``log p_y`` at polar points ``(rho, phi)`` from the roots on an ``m``-cell psi grid."""
    psi = torch.linspace(-math.pi, math.pi, m + 1, dtype=torch.float64)
    s = _pinwheel_scaled_angle(psi[None], rho[:, None], phi[:, None])  # (n, m + 1)
    fl = torch.floor(s)
    row, col = (fl[:, 1:] != fl[:, :-1]).nonzero(as_tuple=True)
    target = torch.maximum(fl[row, col], fl[row, col + 1])
    lo, hi = psi[col], psi[col + 1]
    r, ph = rho[row], phi[row]
    lo_positive = _pinwheel_scaled_angle(lo, r, ph) > target
    for _ in range(44):  # bisection: cell width 2 pi / m -> below 1e-14
        mid = 0.5 * (lo + hi)
        same = (_pinwheel_scaled_angle(mid, r, ph) > target) == lo_positive
        lo, hi = torch.where(same, mid, lo), torch.where(same, hi, mid)
    root = 0.5 * (lo + hi)
    f0, f1 = r * torch.cos(root), r * torch.sin(root)
    log_pf = (
        -((f0 - 1.0) ** 2) / (2 * _PIN_RADIAL**2)
        - f1**2 / (2 * _PIN_TANGENTIAL**2)
        - _LOG_2PI
        - math.log(_PIN_RADIAL * _PIN_TANGENTIAL)
    )
    log_g_prime = torch.log((1.0 + _PIN_RATE * f1 * torch.exp(f0)).abs())
    return _segment_logsumexp(log_pf - log_g_prime, row, rho.shape[0]) - math.log(_PIN_ARMS)


def _pinwheel_log_prob(x: Tensor) -> Tensor:
    """Sum over the roots of the arm map; see the module docstring.

    The psi grid has ``m >= 10 max|g'|`` cells, ``|g'| <= 1 + rho e^rho / 4``, so ``s`` moves by
    at most 1/2 per cell and every root is bracketed, except pairs of roots closer than one cell
    at a fold (``g' = 0``), which only occur where ``p_f < e^-17``. Beyond ``|x| = 12`` the grid is
    capped (the result is then a lower bound of a density below ``e^-130``); beyond
    ``|x| = 600`` the result is ``-inf``.
    """
    y = x / 2.0
    rho = torch.linalg.vector_norm(y, dim=-1)
    phi = torch.atan2(y[:, 1], y[:, 0])
    out = torch.full_like(rho, -math.inf)
    out[torch.isnan(rho)] = math.nan
    low = 0.0
    for high in _PIN_BUCKETS:
        idx = ((rho >= low) & (rho < high)).nonzero().flatten()
        if idx.numel():
            r_max = min(high, 6.0)
            m = max(256, 2 ** math.ceil(math.log2(10 * (1 + _PIN_RATE * r_max * math.exp(r_max)))))
            rows = max(1, _CHUNK // (m + 1))
            for i in range(0, idx.numel(), rows):
                part = idx[i : i + rows]
                out[part] = _pinwheel_log_py(rho[part], phi[part], m) - math.log(4.0)
        low = high
    return out
