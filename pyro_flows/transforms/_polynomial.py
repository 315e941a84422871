r"""Monotone polynomial maps with linear tails, as pure functions.

Two families of increasing scalar maps :math:`g` of a coordinate :math:`y`, each a polynomial on
the box :math:`[-B, B]` and continued *linearly* outside it with the value and slope it has at
the ends,

.. math::

    g(y) = g(\pm B) + g'(\pm B)\,(y \mp B) \qquad (\pm y > B),

so :math:`g` is a :math:`C^1` increasing bijection of :math:`\mathbb{R}` and no power of a large
input is ever formed (a degree-9 polynomial of :math:`|y| = 10^3` is :math:`10^{27}`: finite in
float32, but its square and its slope are not). Inside, the polynomials are evaluated on
:math:`t = y/B \in [-1, 1]` (or :math:`s = (y + B)/(2B) \in [0, 1]`), where every power is at
most 1 in size.

**Sum of squares** (:func:`sos_polynomial`, Jaini, Selby & Yu 2019): with coefficients
:math:`a_{kl}` (:math:`K` polynomials of degree :math:`L`), a slope floor :math:`\epsilon` and
:math:`t = y/B`,

.. math::

    g'(y) = h(t) = \epsilon + \frac{1 - \epsilon}{K}\sum_{k=1}^K q_k(t)^2, \quad
    q_k(t) = \sum_{l=0}^L a_{kl}\,t^l, \qquad
    g(y) = c + B\int_0^t h(\tau)\,d\tau
         = c + B\Big(\epsilon t + \frac{1-\epsilon}{K}\sum_k a_k^\top H(t)\,a_k\Big),

with the Hankel matrix :math:`H_{lj}(t) = t^{l+j+1}/(l+j+1)` (the closed-form integral of
:math:`t^{l+j}`). The slope is evaluated as the sum of squares itself, never from the expanded
polynomial, so it is :math:`\ge\epsilon > 0` in floating point too and its log is a log of a sum
of positive terms.

**Bernstein** (:func:`bernstein_polynomial`, Sick, Hothorn & Dürr 2021): with increasing
coefficients :math:`\theta_0 < \dots < \theta_M`, :math:`\Delta_k = \theta_{k+1} - \theta_k > 0`,
:math:`s = (y + B)/(2B)` and the Bernstein basis :math:`b_{k,M}(s) = \binom{M}{k} s^k
(1-s)^{M-k}`,

.. math::

    g(y) = \sum_{k=0}^M \theta_k\,b_{k,M}(s), \qquad
    g'(y) = \frac{M}{2B}\sum_{k=0}^{M-1} \Delta_k\,b_{k,M-1}(s) \ \ge\ \frac{M}{2B}\min_k\Delta_k,

(the basis sums to one). At the ends :math:`g(-B) = \theta_0`, :math:`g(B) = \theta_M`,
:math:`g'(-B) = M\Delta_0/(2B)` and :math:`g'(B) = M\Delta_{M-1}/(2B)`.
:func:`bernstein_coefficients` also sets :math:`\Delta_0 = \Delta_1` and
:math:`\Delta_{M-1} = \Delta_{M-2}`, which makes :math:`g''(\pm B) = 0`: the joins to the linear
tails are then :math:`C^2`. The powers are built by repeated products (no ``pow``, whose gradient
at 0 is NaN).

**Inverse** (:func:`invert_with_linear_tails`): outside :math:`[g(-B), g(B)]` the inverse is the
linear tail's, in closed form; inside, the root of :math:`g(y) = x` is bracketed by
:math:`[-B, B]` (:math:`g` is increasing and the target is clamped into :math:`[g(-B), g(B)]`)
and found by :func:`~pyro_flows.transforms._root_finding.solve_increasing` (Newton safeguarded by
bisection, started at the secant guess), re-attached to autograd by
:func:`~pyro_flows.transforms._root_finding.implicit_root`, and polished by one Newton step,
:math:`y = t + (x - g(t))/g'(t)`, the same formula that is exact in the tails.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from ._root_finding import implicit_root, solve_increasing

Core = Callable[[Tensor], tuple[Tensor, Tensor]]
"""``core(y) -> (g(y), g'(y))`` for ``y`` in ``[-B, B]``, elementwise."""


def _powers(t: Tensor, n: int) -> Tensor:
    """``(t**0, ..., t**(n-1))`` stacked on a new last dim, by repeated products."""
    powers = [torch.ones_like(t)]
    for _ in range(n - 1):
        powers.append(powers[-1] * t)
    return torch.stack(powers, -1)


def sos_polynomial(
    y: Tensor, a: Tensor, shift: Tensor, bound: float, floor: float
) -> tuple[Tensor, Tensor]:
    r"""The sum-of-squares map and its slope at ``y`` in ``[-bound, bound]`` (module docstring).

    :param y: points, shape ``(...)``, inside ``[-bound, bound]``.
    :param a: coefficients :math:`a_{kl}`, shape ``(..., K, L + 1)`` (lowest degree first).
    :param shift: the constant :math:`c`, shape ``(...)``.
    :param bound: :math:`B`.
    :param floor: the slope floor :math:`\epsilon \in [0, 1)`.
    :return: ``(g(y), g'(y))``.
    """
    n = a.shape[-1]
    t = y / bound
    powers = _powers(t, 2 * n)  # t^0 .. t^(2L+1)
    q = (a * powers[..., None, :n]).sum(-1)  # (..., K)
    slope = floor + (1 - floor) * (q * q).mean(-1)
    degree = torch.arange(n, device=y.device)
    index = degree[:, None] + degree[None, :] + 1  # l + j + 1
    hankel = powers[..., index] / index.to(y.dtype)  # (..., L+1, L+1)
    gram = torch.einsum("...kl,...kj->...lj", a, a) / a.shape[-2]
    value = floor * t + (1 - floor) * (gram * hankel).sum((-1, -2))
    return shift + bound * value, slope


def _binomials(n: int, like: Tensor) -> Tensor:
    return like.new_tensor([math.comb(n, k) for k in range(n + 1)])


def bernstein_polynomial(y: Tensor, theta: Tensor, bound: float) -> tuple[Tensor, Tensor]:
    r"""The Bernstein map and its slope at ``y`` in ``[-bound, bound]`` (module docstring).

    :param y: points, shape ``(...)``, inside ``[-bound, bound]``.
    :param theta: increasing coefficients, shape ``(..., M + 1)``.
    :param bound: :math:`B`.
    :return: ``(g(y), g'(y))``.
    """
    M = theta.shape[-1] - 1
    s = (y + bound) / (2 * bound)
    up = _powers(s, M + 1)  # s^0 .. s^M
    down = _powers(1 - s, M + 1)  # (1-s)^0 .. (1-s)^M
    basis = _binomials(M, y) * up * down.flip(-1)  # b_{k,M}
    value = (theta * basis).sum(-1)
    basis_1 = _binomials(M - 1, y) * up[..., :M] * down[..., :M].flip(-1)  # b_{k,M-1}
    delta = theta[..., 1:] - theta[..., :-1]
    slope = (M / (2 * bound)) * (delta * basis_1).sum(-1)
    return value, slope


def _softplus_inverse(value: float) -> float:
    return value + math.log(-math.expm1(-value))


def bernstein_coefficients(raw: Tensor, bound: float, min_slope: float) -> Tensor:
    r"""Increasing coefficients :math:`\theta` (shape ``(..., M + 1)``) from unconstrained
    ``raw`` (shape ``(..., M - 1)``, :math:`M \ge 3`).

    ``raw[..., 0]`` shifts :math:`\theta_0 = -B + \mathrm{raw}_0`; the other :math:`M - 2`
    entries give :math:`\Delta_1, \dots, \Delta_{M-2}` as
    :math:`\delta_{\min} + \mathrm{softplus}(r + c_0)`, and the end differences repeat their
    neighbours (:math:`g''(\pm B) = 0`). :math:`\delta_{\min} = 2B\,\epsilon/M` makes the slope
    at least ``min_slope`` :math:`=\epsilon`, and :math:`c_0` makes all-zero ``raw`` the identity
    (:math:`\theta_k = -B + 2Bk/M`).
    """
    M = raw.shape[-1] + 1
    delta_min = 2 * bound * min_slope / M
    offset = _softplus_inverse(2 * bound / M - delta_min)
    free = delta_min + F.softplus(raw[..., 1:] + offset)
    delta = torch.cat([free[..., :1], free, free[..., -1:]], -1)
    theta0 = raw[..., :1] - bound
    return torch.cat([theta0, theta0 + torch.cumsum(delta, -1)], -1)


def with_linear_tails(y: Tensor, bound: float, core: Core) -> tuple[Tensor, Tensor]:
    """``g(y)`` and ``log g'(y)`` for every real ``y``: ``core`` inside ``[-bound, bound]``,
    continued linearly with the end values and slopes outside."""
    inner = y.clamp(-bound, bound)
    value, slope = core(inner)
    return value + slope * (y - inner), torch.log(slope)


def invert_with_linear_tails(
    x: Tensor, bound: float, core: Core, max_iter: int = 100
) -> tuple[Tensor, Tensor]:
    r"""Solve ``g(y) = x`` for the map of :func:`with_linear_tails`: ``y`` and
    ``log|dy/dx| = -log g'``.

    The solver stops when :math:`|g(t) - x| \le 8\varepsilon(|g(-B)| + |g(B)|)` or its bracket has
    shrunk to rounding level (at most ``max_iter`` iterations; bisection alone reaches rounding
    level from the width :math:`2B` in about 55 float64 iterations), and one Newton step polishes
    the root (module docstring).
    """
    lo = torch.full_like(x, -bound)
    hi = torch.full_like(x, bound)
    v_lo, _ = core(lo)
    v_hi, _ = core(hi)
    v_lo, v_hi, x = torch.broadcast_tensors(v_lo, v_hi, x)
    target = torch.minimum(torch.maximum(x, v_lo), v_hi)

    def fun(t: Tensor) -> tuple[Tensor, Tensor]:
        value, slope = core(t)
        return value - target, slope

    with torch.no_grad():
        tiny = torch.finfo(x.dtype).tiny
        eps = torch.finfo(x.dtype).eps
        width = (v_hi - v_lo).clamp_min(tiny)
        init = (target - v_lo) / width * (2 * bound) - bound  # secant: exact for affine g
        ftol = 8 * eps * (v_lo.abs() + v_hi.abs())
        root = solve_increasing(fun, lo, hi, init, ftol, max_iter)
        # in the tails the root is the end itself: exactly, so the tail slope is g'(+-B)
        root = torch.where(x >= v_hi, hi, torch.where(x <= v_lo, lo, root))
    t = implicit_root(fun, root)
    value, slope = core(t)
    return t + (x - value) / slope, -torch.log(slope)
