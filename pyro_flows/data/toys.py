r"""The 2-D toy densities of the FFJORD paper (Grathwohl et al. 2019), with exact log densities.

Each toy is a :class:`Toy`: a seeded sampler ``toy.sample(n, generator)``, an exact
``toy.log_prob(x)``, ``toy.entropy`` :math:`H(p) = -\mathbb{E}_p[\log p(X)]` in nats, which is
the best expected test NLL any model can reach, and ``toy.oracle_nll``, the value the project
quotes for it. The samplers draw i.i.d. points
from the population density that FFJORD's generators (``lib/toy_data.py``) approximate; where
FFJORD spaces the angles of a batch evenly (``rings``) or fixes the class counts (``pinwheel``,
``circles``, ``2spirals``), the i.i.d. draw uses uniform angles and classes instead, which is
the density given below.

The toys (all noises isotropic Gaussian unless said; how ``log_prob`` is computed in brackets):

- ``checkerboard``: uniform on 8 of the 16 squares (side 2) of :math:`[-4, 4]^2` (closed form).
- ``8gaussians``: :math:`(4(\cos\tfrac{k\pi}{4}, \sin\tfrac{k\pi}{4}) + 0.5\,\varepsilon)/1.414`
  (closed form).
- ``moons``: ``make_moons(noise=0.1) * 2 + [-1, -0.2]``, two half circles (quadrature).
- ``circles``: ``make_circles(noise=0.08, factor=0.5) * 3``, radii 3 and 1.5 (closed form).
- ``rings``: four circles of radii 3, 2.25, 1.5, 0.75, noise 0.08 (closed form).
- ``pinwheel``: five arms, a Gaussian :math:`(r, \tau)` rotated by :math:`e^{r}/4` (root finding).
- ``2spirals``: :math:`\pm(c(t) + 0.5\,U[0,1]^2)/3 + 0.1\,\varepsilon`,
  :math:`t = 3\pi\sqrt{U}` (quadrature).
- ``swissroll``: ``make_swiss_roll(noise=1)[:, [0, 2]] / 5`` (quadrature).

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

:data:`ENTROPY` holds the exact entropies (checkerboard :math:`\ln 32`; the others by grid
quadrature with the exact ``log_prob``, cross-checked by Monte Carlo; the tests recompute them
both ways). :data:`ORACLE_NLL` quotes the project's REFERENCE.md where it gives a value
(checkerboard 3.466, 8gaussians 2.835, moons 2.395) and the entropy elsewhere; REFERENCE.md's
8gaussians and moons values are 0.003 and 0.001 nats above the exact entropies (2.83188,
2.39388), a difference far below the 0.05-nat quality bar.

Example::

    >>> x = two_moons(1000, generator=torch.Generator().manual_seed(0))
    >>> x.shape
    torch.Size([1000, 2])
    >>> toy = TOY_DENSITIES["rings"]
    >>> lp = toy.log_prob(toy.sample(5000, generator=torch.Generator().manual_seed(0)))
    >>> abs(-lp.mean().item() - toy.entropy) < 0.05
    True

References:

- Grathwohl, Chen, Bettencourt, Sutskever, Duvenaud, *FFJORD: Free-form Continuous Dynamics for
  Scalable Reversible Generative Models*, ICLR 2019 (the toy suite, ``lib/toy_data.py``).
- Pedregosa et al., *Scikit-learn: Machine Learning in Python*, JMLR 2011 (``make_moons``,
  ``make_circles``, ``make_swiss_roll``).
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable

import numpy as np
import torch
from torch import Tensor

from .._numbers import check_finite_number

__all__ = [
    "ENTROPY",
    "ORACLE_NLL",
    "TOYS",
    "TOY_DENSITIES",
    "Toy",
    "checkerboard",
    "circles",
    "eight_gaussians",
    "get_toy",
    "pinwheel",
    "rings",
    "swissroll",
    "two_moons",
    "two_spirals",
]

_LOG_2PI = math.log(2.0 * math.pi)
_CHUNK = 1 << 21  # (points x nodes) elements per quadrature chunk


# ---------------------------------------------------------------------------------------------
# samplers: FFJORD's generators, i.i.d., in torch with an optional generator
# ---------------------------------------------------------------------------------------------
def _check_sampler_args(n: object, generator: object) -> int:
    """``n`` as an int ``>= 1`` (a NumPy or 0-d tensor integer too), and ``generator`` a
    ``torch.Generator`` or ``None``; ``TypeError``/``ValueError`` naming what was given."""
    if isinstance(n, bool):
        raise TypeError(f"n must be an int (number of points), got bool ({n!r})")
    try:
        count = operator.index(n)  # type: ignore[arg-type]
    except TypeError:
        raise TypeError(
            f"n must be an int (number of points), got {type(n).__name__} ({n!r})"
        ) from None
    if count < 1:
        raise ValueError(f"n must be >= 1 (number of points), got {count}")
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(
            f"generator must be a torch.Generator or None, got {type(generator).__name__} "
            f"({generator!r}); use torch.Generator().manual_seed(seed)"
        )
    return count


def _rand(n: int, generator: torch.Generator | None) -> Tensor:
    return torch.rand(n, generator=generator)


def _randn(*shape: int, generator: torch.Generator | None) -> Tensor:
    return torch.randn(*shape, generator=generator)


def two_moons(n: int, generator: torch.Generator | None = None, noise: float = 0.1) -> Tensor:
    r"""``make_moons(noise=0.1) * 2 + [-1, -0.2]``: two interleaved half circles.

    :math:`\theta \sim U[0, \pi]`, upper moon :math:`(\cos\theta, \sin\theta)`, lower moon
    :math:`(1 - \cos\theta, \tfrac12 - \sin\theta)`, each with probability 1/2, plus
    :math:`\mathcal{N}(0, \text{noise}^2 I)`; then scaled by 2 and shifted by
    :math:`(-1, -0.2)`. The exact density (``TOY_DENSITIES["moons"]``) assumes ``noise=0.1``.

    >>> two_moons(3, generator=torch.Generator().manual_seed(0)).shape
    torch.Size([3, 2])
    """
    n = _check_sampler_args(n, generator)
    noise = check_finite_number(noise, "noise")
    if noise < 0:
        raise ValueError(f"noise must be >= 0 (a standard deviation), got {noise}")
    angle = math.pi * _rand(n, generator)
    upper = _rand(n, generator) < 0.5
    x = torch.where(upper, torch.cos(angle), 1.0 - torch.cos(angle))
    y = torch.where(upper, torch.sin(angle), 0.5 - torch.sin(angle))
    points = torch.stack([x, y], -1) + noise * _randn(n, 2, generator=generator)
    return points * 2.0 + torch.tensor([-1.0, -0.2])


def eight_gaussians(n: int, generator: torch.Generator | None = None) -> Tensor:
    r"""Eight Gaussians: centres :math:`4(\cos\tfrac{k\pi}{4}, \sin\tfrac{k\pi}{4})`, std 0.5,
    all divided by 1.414 (FFJORD's constant, not :math:`\sqrt2`).

    >>> eight_gaussians(3, generator=torch.Generator().manual_seed(0)).shape
    torch.Size([3, 2])
    """
    n = _check_sampler_args(n, generator)
    k = torch.randint(0, 8, (n,), generator=generator).float()
    centres = 4.0 * torch.stack([torch.cos(k * math.pi / 4), torch.sin(k * math.pi / 4)], -1)
    return (centres + 0.5 * _randn(n, 2, generator=generator)) / 1.414


def checkerboard(n: int, generator: torch.Generator | None = None) -> Tensor:
    r"""Uniform on 8 of the 16 squares (side 2) of :math:`[-4, 4]^2`, alternating like a
    chessboard: density :math:`1/32` on the squares whose integer corners satisfy
    :math:`\lfloor x_1/2 \rfloor + \lfloor x_2/2 \rfloor` odd.

    >>> checkerboard(3, generator=torch.Generator().manual_seed(0)).shape
    torch.Size([3, 2])
    """
    n = _check_sampler_args(n, generator)
    x1 = 4.0 * _rand(n, generator) - 2.0
    x2 = _rand(n, generator) - 2.0 * torch.randint(0, 2, (n,), generator=generator)
    x2 = x2 + torch.floor(x1) % 2
    return 2.0 * torch.stack([x1, x2], -1)


def circles(n: int, generator: torch.Generator | None = None) -> Tensor:
    r"""``make_circles(noise=0.08, factor=0.5) * 3``: circles of radii 3 and 1.5 (probability
    1/2 each), uniform angle, Gaussian noise of std :math:`0.08 \cdot 3 = 0.24`.

    >>> circles(3, generator=torch.Generator().manual_seed(0)).shape
    torch.Size([3, 2])
    """
    n = _check_sampler_args(n, generator)
    angle = 2.0 * math.pi * _rand(n, generator)
    radius = torch.where(_rand(n, generator) < 0.5, 3.0, 1.5)
    centre = radius[:, None] * torch.stack([torch.cos(angle), torch.sin(angle)], -1)
    return centre + 0.24 * _randn(n, 2, generator=generator)


def rings(n: int, generator: torch.Generator | None = None) -> Tensor:
    r"""Four concentric circles of radii 3, 2.25, 1.5, 0.75 (probability 1/4 each), uniform
    angle, Gaussian noise of std 0.08 (FFJORD spaces the angles of a batch evenly; here they
    are i.i.d. uniform).

    >>> rings(3, generator=torch.Generator().manual_seed(0)).shape
    torch.Size([3, 2])
    """
    n = _check_sampler_args(n, generator)
    angle = 2.0 * math.pi * _rand(n, generator)
    radius = 0.75 * (1 + torch.randint(0, 4, (n,), generator=generator)).float()
    centre = radius[:, None] * torch.stack([torch.cos(angle), torch.sin(angle)], -1)
    return centre + 0.08 * _randn(n, 2, generator=generator)


_PIN_RADIAL, _PIN_TANGENTIAL, _PIN_RATE, _PIN_ARMS = 0.3, 0.1, 0.25, 5


def pinwheel(n: int, generator: torch.Generator | None = None) -> Tensor:
    r"""Five spiral arms: :math:`f = (r, \tau) \sim \mathcal{N}((1, 0),
    \mathrm{diag}(0.3^2, 0.1^2))`, arm :math:`k \sim U\{0..4\}`, angle
    :math:`a = 2\pi k/5 + e^{r}/4` and :math:`x = 2 R(-a) f` (FFJORD's
    ``einsum("ti,tij->tj", features, rotations)``).

    >>> pinwheel(3, generator=torch.Generator().manual_seed(0)).shape
    torch.Size([3, 2])
    """
    n = _check_sampler_args(n, generator)
    f = _randn(n, 2, generator=generator) * torch.tensor([_PIN_RADIAL, _PIN_TANGENTIAL])
    f[:, 0] += 1.0
    k = torch.randint(0, _PIN_ARMS, (n,), generator=generator).float()
    a = 2.0 * math.pi * k / _PIN_ARMS + _PIN_RATE * torch.exp(f[:, 0])
    cos, sin = torch.cos(a), torch.sin(a)
    x0 = f[:, 0] * cos + f[:, 1] * sin
    x1 = -f[:, 0] * sin + f[:, 1] * cos
    return 2.0 * torch.stack([x0, x1], -1)


_SPIRAL_TURN = 3.0 * math.pi  # 540 degrees
_SPIRAL_BOX, _SPIRAL_NOISE = 0.5 / 3.0, 0.1


def two_spirals(n: int, generator: torch.Generator | None = None) -> Tensor:
    r"""Two interleaved spirals: :math:`t = 3\pi\sqrt{U}`,
    :math:`c(t) = (-t\cos t, t\sin t)`, :math:`x = \pm(c(t) + 0.5\,U[0,1]^2)/3 +
    0.1\,\varepsilon` with the sign :math:`\pm` of probability 1/2 each.

    >>> two_spirals(3, generator=torch.Generator().manual_seed(0)).shape
    torch.Size([3, 2])
    """
    n = _check_sampler_args(n, generator)
    t = _SPIRAL_TURN * torch.sqrt(_rand(n, generator))
    box = torch.rand(n, 2, generator=generator) * 0.5
    d = torch.stack([-torch.cos(t) * t, torch.sin(t) * t], -1) + box
    sign = torch.where(_rand(n, generator) < 0.5, 1.0, -1.0)
    return sign[:, None] * d / 3.0 + _SPIRAL_NOISE * _randn(n, 2, generator=generator)


_ROLL_LOW, _ROLL_HIGH, _ROLL_NOISE = 1.5 * math.pi, 4.5 * math.pi, 0.2


def swissroll(n: int, generator: torch.Generator | None = None) -> Tensor:
    r"""``make_swiss_roll(noise=1.0)[:, [0, 2]] / 5``: :math:`t \sim U[1.5\pi, 4.5\pi]`,
    :math:`x = (t\cos t, t\sin t)/5 + 0.2\,\varepsilon`.

    >>> swissroll(3, generator=torch.Generator().manual_seed(0)).shape
    torch.Size([3, 2])
    """
    n = _check_sampler_args(n, generator)
    t = _ROLL_LOW + (_ROLL_HIGH - _ROLL_LOW) * _rand(n, generator)
    c = torch.stack([t * torch.cos(t), t * torch.sin(t)], -1) / 5.0
    return c + _ROLL_NOISE * _randn(n, 2, generator=generator)


# ---------------------------------------------------------------------------------------------
# exact log densities (float64 inside)
# ---------------------------------------------------------------------------------------------
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


# ---------------------------------------------------------------------------------------------
# the registry
# ---------------------------------------------------------------------------------------------
class Toy:
    r"""A 2-D toy density: seeded sampler, exact log density, entropy and oracle NLL.

    :param name: registry name (FFJORD's spelling, e.g. ``"8gaussians"``).
    :param sampler: ``sampler(n, generator=None) -> Tensor (n, 2)``.
    :param log_prob: exact ``log p(x)`` for ``x`` of shape ``(N, 2)`` (float64 inside), or
        ``None`` when unknown.
    :param entropy: the exact :math:`H(p) = -\mathbb{E}_p \log p(X)` in nats, or ``None``.
    :param oracle_nll: the oracle NLL quoted by the project (:data:`ORACLE_NLL`): the entropy,
        or REFERENCE.md's 3-decimal value where it gives one.
    :param box: half-width of a square :math:`[-b, b]^2` holding all but :math:`< 10^{-9}` of
        the mass (for grids and plots).

    Example::

        >>> toy = get_toy("8gaussians")
        >>> x = toy.sample(4, generator=torch.Generator().manual_seed(0))
        >>> toy.log_prob(x).shape
        torch.Size([4])
    """

    def __init__(
        self,
        name: str,
        sampler: Callable[..., Tensor],
        log_prob: Callable[[Tensor], Tensor] | None,
        entropy: float | None,
        box: float,
        oracle_nll: float | None = None,
    ) -> None:
        self.name = name
        self.sampler = sampler
        self._log_prob = log_prob
        self.entropy = entropy
        self.oracle_nll = entropy if oracle_nll is None else oracle_nll
        self.box = box

    @property
    def has_log_prob(self) -> bool:
        """Whether :meth:`log_prob` is available."""
        return self._log_prob is not None

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """``n`` i.i.d. points, shape ``(n, 2)``, default float dtype; deterministic given a
        seeded ``generator``."""
        return self.sampler(n, generator=generator)

    def log_prob(self, x: Tensor) -> Tensor:
        """Exact ``log p(x)`` for ``x`` of shape ``(..., 2)``; returned in ``x``'s dtype.

        :raises ValueError: if ``x`` is not of shape ``(..., 2)`` or has NaN or infinite
            entries (naming the rows).
        :raises TypeError: if ``x`` is not a real tensor or array.
        :raises NotImplementedError: if this toy has no known density.
        """
        if self._log_prob is None:
            raise NotImplementedError(f"toy {self.name!r} has no exact log_prob")
        x = self._check_points(x)
        dtype = x.dtype if x.is_floating_point() else torch.get_default_dtype()
        flat = x.detach().reshape(-1, 2).to(torch.float64)
        return self._log_prob(flat).reshape(x.shape[:-1]).to(dtype)

    def _check_points(self, x: object) -> Tensor:
        """``x`` as a real tensor of finite points ``(..., 2)``, or a ``TypeError`` /
        ``ValueError`` naming what was expected and what was given."""
        owner = f"Toy {self.name!r}.log_prob"
        if not isinstance(x, Tensor):
            try:
                x = torch.as_tensor(x)
            except (TypeError, ValueError, RuntimeError):
                raise TypeError(
                    f"{owner} expected x as a tensor or array of shape (..., 2), got "
                    f"{type(x).__name__}"
                ) from None
        if x.is_complex():
            raise TypeError(f"{owner} expected real points, got dtype {x.dtype}")
        if x.dim() == 0 or x.shape[-1] != 2:
            raise ValueError(f"{owner} expected x of shape (..., 2), got {tuple(x.shape)}")
        finite = torch.isfinite(x).all(-1)
        if not bool(finite.all()):
            rows = (~finite).reshape(-1).nonzero().flatten()
            more = "..." if rows.numel() > 10 else ""
            raise ValueError(
                f"{owner} got non-finite values (NaN or inf) in {rows.numel()} row(s) of x of "
                f"shape {tuple(x.shape)} (flat row indices {rows[:10].tolist()}{more})"
            )
        return x

    def __repr__(self) -> str:
        return f"Toy({self.name!r}, entropy={self.entropy}, oracle_nll={self.oracle_nll})"


#: name -> exact entropy :math:`H(p) = -\int p \log p` in nats (5 decimals).
#:
#: checkerboard: ln 32, exact. The others: -sum p log p h^2 over the midpoint grid of spacing
#: h = 0.02 on [-box - 2, box + 2]^2 with the exact log_prob; the grid sum of a density smoothed
#: by Gaussian noise converges spectrally (h = 0.05 gives the same values to 3e-7, and the grid
#: masses are 1 to 1e-9). Cross-checked by Monte Carlo, -mean log p(X) over 10^6 samples
#: (standard errors 0.0007-0.001, all within 2 of them): 8gaussians 2.8334, moons 2.3952,
#: circles 3.2692, rings 2.6235, pinwheel 2.3181, 2spirals 2.6454. tests/data/test_toys.py
#: recomputes all of them by Monte Carlo (within 4 standard errors) and on a coarser grid.
ENTROPY: dict[str, float] = {
    "checkerboard": math.log(32.0),
    "8gaussians": 2.83188,
    "moons": 2.39388,
    "circles": 3.26814,
    "rings": 2.62318,
    "pinwheel": 2.31779,
    "2spirals": 2.64545,
    "swissroll": 2.66965,
}

# REFERENCE.md's oracle NLLs (3 decimals) where it gives one: checkerboard is ln 32; 8gaussians
# (2.835) and moons (2.395) sit 0.003 and 0.001 nats above the exact entropies (they look like
# 10^6-sample Monte Carlo estimates, which give 2.8334 +- 0.0010 and 2.3952 +- 0.0008).
_REFERENCE = {"8gaussians": 2.835, "moons": 2.395}

TOY_DENSITIES: dict[str, Toy] = {
    name: Toy(name, sampler, log_prob, ENTROPY[name], box, _REFERENCE.get(name))
    for name, sampler, log_prob, box in [
        ("checkerboard", checkerboard, _checkerboard_log_prob, 4.0),
        ("8gaussians", eight_gaussians, _eight_gaussians_log_prob, 7.0),
        ("moons", two_moons, _moons_log_prob, 5.5),
        ("circles", circles, lambda x: _rice_mixture_log_prob(x, (3.0, 1.5), 0.24), 6.0),
        (
            "rings",
            rings,
            lambda x: _rice_mixture_log_prob(x, (3.0, 2.25, 1.5, 0.75), 0.08),
            4.5,
        ),
        ("pinwheel", pinwheel, _pinwheel_log_prob, 8.0),
        ("2spirals", two_spirals, _two_spirals_log_prob, 5.0),
        ("swissroll", swissroll, _swissroll_log_prob, 5.0),
    ]
}

#: name -> oracle NLL in nats, the best expected test NLL: REFERENCE.md's values for
#: checkerboard (ln 32), 8gaussians (2.835) and moons (2.395), the exact :data:`ENTROPY`
#: for the others.
ORACLE_NLL: dict[str, float] = {
    name: toy.oracle_nll for name, toy in TOY_DENSITIES.items() if toy.oracle_nll is not None
}

#: name -> sampler ``f(n, generator=None) -> Tensor (n, 2)``.
TOYS: dict[str, Callable[..., Tensor]] = {name: toy.sampler for name, toy in TOY_DENSITIES.items()}


def get_toy(name: str) -> Toy:
    """The :class:`Toy` called ``name`` (one of :data:`TOY_DENSITIES`).

    >>> get_toy("moons").entropy, get_toy("moons").oracle_nll
    (2.39388, 2.395)
    """
    if not isinstance(name, str) or name not in TOY_DENSITIES:
        raise ValueError(f"toy must be one of {sorted(TOY_DENSITIES)}, got {name!r}")
    return TOY_DENSITIES[name]
