r"""Monotone rational-quadratic splines with linear tails, as pure functions.

A spline with :math:`K` bins on :math:`[-B, B]` has knots
:math:`(x^{(k)}, y^{(k)})_{k=0..K}` with :math:`x^{(0)} = y^{(0)} = -B`,
:math:`x^{(K)} = y^{(K)} = B`, and positive derivatives :math:`\delta^{(k)}` at the knots. On
bin :math:`k`, with width :math:`w = x^{(k+1)} - x^{(k)}`, height
:math:`h = y^{(k+1)} - y^{(k)}`, slope :math:`s = h / w` and
:math:`\theta = (x - x^{(k)}) / w \in [0, 1]`,

.. math::

    y = y^{(k)} + h\,\frac{s\theta^2 + \delta^{(k)}\theta(1-\theta)}
        {s + (\delta^{(k)} + \delta^{(k+1)} - 2s)\,\theta(1-\theta)},

    \frac{dy}{dx} = \frac{s^2\left(\delta^{(k+1)}\theta^2 + 2s\theta(1-\theta)
        + \delta^{(k)}(1-\theta)^2\right)}
        {\left(s + (\delta^{(k)} + \delta^{(k+1)} - 2s)\,\theta(1-\theta)\right)^2}.

Outside :math:`[-B, B]` the map is the identity (log-det 0). Both boundary derivatives are fixed
to 1, so value *and* slope are continuous where the tails join.

Parametrisation (from unconstrained network outputs): widths and heights through a softmax with a
minimum bin size, inner-knot derivatives through
:math:`\delta = \delta_{\min} + \mathrm{softplus}(u + c)` with
:math:`c = \log(e^{1 - \delta_{\min}} - 1)`, so that all-zero outputs give equal bins and unit
derivatives: exactly the identity map.

Numerics, beyond the reference implementations:

- the denominator is evaluated as :math:`s(1 - 2\theta(1-\theta)) + (\delta^{(k)} +
  \delta^{(k+1)})\theta(1-\theta)`, a sum of positive terms (no cancellation);
- the inverse solves :math:`a\theta^2 + b\theta + c = 0` (with :math:`a + b = s`,
  :math:`c \le 0`) choosing, by the sign of :math:`b`, whichever of
  :math:`\theta = 2|c| / (b + \sqrt{b^2 - 4ac})` and
  :math:`\theta = (|b| + \sqrt{b^2 - 4ac}) / (2a)` adds positive numbers only; the usual
  :math:`2c / (-b - \sqrt{\cdot})` alone loses digits when :math:`b < 0` (large
  :math:`\delta^{(k+1)}`);
- the inverse solves from the nearer end of the bin (the spline is symmetric under
  :math:`(\theta, \delta^{(k)}, \delta^{(k+1)}) \to (1 - \theta, \delta^{(k+1)}, \delta^{(k)})`),
  and the forward interpolates with ``lerp``: :math:`\pm B` maps to :math:`\pm B` exactly, and
  each of the spline's own knots to its image with no further rounding (:math:`\theta` is
  exactly 0 there), in both directions. Knots recomputed in another call
  (:func:`spline_knots`, another batch size) agree with the spline's own only to a few units
  in the last place: the softmax and cumulative-sum kernels round differently with the memory
  layout, the vector width and the BLAS code path;
- the spline is evaluated at inputs clamped to :math:`[-B, B]` and every masked branch has a
  denominator bounded away from zero, so values *and* gradients are finite everywhere
  (:math:`\pm 10^4`, exactly on knots, exactly at :math:`\pm B`).

Speed: the conditioners' parameter-major output ``(..., 3K - 1, N)`` is used as it is
(``bin_dim=-2``): one softmax per axis along the bins (a fast kernel for that layout), the
cumulative sums as one small matmul, all inner knots only on the searched axis, and everything
else evaluated at the two knots of each entry's bin (gathered), so the per-entry work beyond the
softmax is :math:`O(1)`.

References: Durkan, Bekasov, Murray, Papamakarios, "Neural Spline Flows", NeurIPS 2019;
Gregory & Delbourgo, "Piecewise rational quadratic interpolation to monotonic data", IMA J.
Numer. Anal. 1982.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

DEFAULT_MIN_BIN_WIDTH = 1e-3
DEFAULT_MIN_BIN_HEIGHT = 1e-3
DEFAULT_MIN_DERIVATIVE = 1e-3


def derivative_shift(min_derivative: float) -> float:
    """The shift ``c`` with ``min_derivative + softplus(0 + c) = 1``."""
    return math.log(math.expm1(1.0 - min_derivative))


def spline_knots(raw: Tensor, bound: float, min_size: float, bin_dim: int = -1) -> Tensor:
    """All ``K + 1`` knot positions on ``[-bound, bound]`` from unnormalised sizes (``K`` along
    ``bin_dim``), by the formula :func:`rational_quadratic_spline` uses: a softmax floored at
    ``min_size`` (a fraction of ``2 bound``), end knots exactly ``-bound`` and ``bound``.

    The inner knots equal the spline's own to a few units in the last place, not bit for bit:
    the softmax and cumulative-sum kernels round differently with the batch layout, the
    vector width and the BLAS code path (compare with a tolerance of a few ulps of ``bound``)."""
    raw = raw.movedim(bin_dim, -1)
    K = raw.shape[-1]
    _check_min_size(min_size, K, "min_size")
    if bin_dim == -2:  # the spline's memory layout
        inner = _Knots(raw.movedim(-1, -2), bound, min_size).inner().movedim(-2, -1)
    else:
        inner = _Knots(raw.reshape(-1, K).t(), bound, min_size).inner().t()
        inner = inner.reshape(*raw.shape[:-1], K - 1)
    knots = F.pad(F.pad(inner, (1, 0), value=-bound), (0, 1), value=bound)
    return knots.movedim(-1, bin_dim)


def knot_derivatives(raw: Tensor, min_derivative: float, bin_dim: int = -1) -> Tensor:
    """Derivatives at all ``K + 1`` knots from the unconstrained ``K - 1`` inner ones (along
    ``bin_dim``): ``min_derivative + softplus(raw + c)``, 1 at ``raw = 0`` and exactly 1 at both
    boundary knots (the slope of the identity tails)."""
    inner = F.softplus(raw.movedim(bin_dim, -1) + derivative_shift(min_derivative))
    return F.pad(inner + min_derivative, (1, 1), value=1.0).movedim(-1, bin_dim)


def _check_min_size(min_size: float, K: int, name: str) -> None:
    if not 0.0 < min_size * K < 1.0:
        raise ValueError(f"{name}={min_size} is invalid for {K} bins: need 0 < {name} * K < 1")


class _Knots:
    """The knots of one axis (x or y) of a batch of splines, bins along dim ``-2``.

    ``knot_j = -B + 2 B m j + 2 B (1 - m K) sum_{i < j} softmax(raw)_i``: the floored softmax
    and its cumulative sum without materialising the normalised sizes. Only the searched axis
    builds all ``K - 1`` inner knots; the other axis evaluates the formula at the two gathered
    knots of each entry's bin.
    """

    def __init__(self, raw: Tensor, bound: float, min_size: float) -> None:
        K = raw.shape[-2]
        self.num_bins = K
        self.offset, self.step = -bound, 2.0 * bound * min_size
        self.scale = 2.0 * bound * (1.0 - min_size * K)
        # softmax along dim -2 is a fast kernel; the cumulative sums are one small matmul (much
        # faster than cumsum along a middle dim, forward and backward)
        ones = torch.ones(K - 1, K, dtype=raw.dtype, device=raw.device)
        self.cum = torch.matmul(ones.tril(), torch.softmax(raw, dim=-2))  # (..., K - 1, N)

    def inner(self) -> Tensor:
        """The ``K - 1`` inner knots, shape ``(..., K - 1, N)``, increasing along dim ``-2``."""
        cum = self.cum
        j = torch.arange(1, self.num_bins, dtype=cum.dtype, device=cum.device).unsqueeze(-1)
        return torch.add(self.offset + self.step * j, cum, alpha=self.scale)

    def at(self, idx: Tensor) -> Tensor:
        """Inner knots number ``idx`` (0-based, shape ``(..., 2, N)``), from the formula."""
        j = (idx + 1).to(self.cum.dtype)
        return torch.add(self.offset + self.step * j, self.cum.gather(-2, idx), alpha=self.scale)


def _bin_ends(
    k: Tensor, K: int, inner_at_idx: Tensor, bound: float
) -> tuple[Tensor, Tensor, Tensor]:
    """Left knot, right knot and width of bin ``k`` from the gathered inner knots
    ``(k - 1, k)``; the end knots are exactly ``-bound`` and ``bound``."""
    left, right = inner_at_idx.unbind(-2)
    k = k.squeeze(-2)
    left = torch.where(k == 0, -bound, left)
    right = torch.where(k == K - 1, bound, right)
    return left, right, right - left


def _derivatives_at(
    raw: Tensor, idx: Tensor, k: Tensor, K: int, min_derivative: float
) -> tuple[Tensor, Tensor]:
    """Derivatives at the two knots of bin ``k``: 1 at the boundary knots."""
    d = F.softplus(raw.gather(-2, idx) + derivative_shift(min_derivative)) + min_derivative
    d0, d1 = d.unbind(-2)
    k = k.squeeze(-2)
    return torch.where(k == 0, 1.0, d0), torch.where(k == K - 1, 1.0, d1)


def _log_slope(theta: Tensor, s: Tensor, d0: Tensor, d1: Tensor, denom: Tensor) -> Tensor:
    """``log dy/dx`` inside a bin: ``log(numerator) + 2 log(s / denom)``."""
    t = theta * (1.0 - theta)
    numerator = d1 * theta.square() + 2.0 * s * t + d0 * (1.0 - theta).square()
    return torch.log(numerator) + 2.0 * torch.log(s / denom)


def _rqs(
    x: Tensor,
    widths: Tensor,
    heights: Tensor,
    derivatives: Tensor,
    bound: float,
    inverse: bool,
    min_bin_width: float,
    min_bin_height: float,
    min_derivative: float,
) -> tuple[Tensor, Tensor]:
    """The spline on ``x`` ``(..., N)`` with parameters ``(..., K or K - 1, N)`` (same batch)."""
    K = widths.shape[-2]
    knots_x = _Knots(widths, bound, min_bin_width)
    knots_y = _Knots(heights, bound, min_bin_height)
    searched, other = (knots_y, knots_x) if inverse else (knots_x, knots_y)
    inside = (x >= -bound) & (x <= bound)
    # masked-out entries are evaluated at the clamped input: finite values and gradients
    v = x.clamp(-bound, bound)
    inner = searched.inner()
    k = (inner <= v.unsqueeze(-2)).sum(-2, keepdim=True)  # bin index, (..., 1, N)
    idx = torch.cat([(k - 1).clamp_min(0), k.clamp_max(K - 2)], -2)
    v0, v1, v_size = _bin_ends(k, K, inner.gather(-2, idx), bound)
    u0, u1, u_size = _bin_ends(k, K, other.at(idx), bound)
    d0, d1 = _derivatives_at(derivatives, idx, k, K, min_derivative)
    if inverse:
        x0, x1, w, y0, y1, h = u0, u1, u_size, v0, v1, v_size
    else:
        x0, x1, w, y0, y1, h = v0, v1, v_size, u0, u1, u_size
    s = h / w
    if inverse:
        # solve from the nearer end of the bin: the spline is symmetric under
        # (theta, eta, d0, d1) -> (1 - theta, 1 - eta, d1, d0), so theta' = 1 - theta comes from
        # the same formula; small distances to either knot keep their relative precision and
        # the knots (and the bound) are recovered exactly
        from_right = (v - y0) > (y1 - v)
        eta = torch.where(from_right, y1 - v, v - y0) / h
        d0, d1 = torch.where(from_right, d1, d0), torch.where(from_right, d0, d1)
        # a theta^2 + b theta + c = 0 with a + b = s and c = -s eta <= 0; the root in [0, 1]
        # from whichever closed form adds positive terms only
        b = d0 - eta * (d0 + d1 - 2.0 * s)
        b_abs = b.abs()
        sqrt_disc = (b.square() + 4.0 * (s - b) * s * eta).clamp_min(0.0).sqrt()
        # both denominators stay >= s > 0 even where their branch is not selected
        theta = torch.where(
            b >= 0,
            2.0 * s * eta / (b_abs + sqrt_disc),
            (b_abs + sqrt_disc) / (2.0 * (s + b_abs)),
        )
        out = torch.where(from_right, x1 - theta * w, x0 + theta * w)
        t = theta * (1.0 - theta)
        denom = s * (1.0 - 2.0 * t) + (d0 + d1) * t  # positive terms only
        log_det = -_log_slope(theta, s, d0, d1, denom)
    else:
        theta = (v - x0) / w  # in [0, 1]: rounding is monotone
        t = theta * (1.0 - theta)
        denom = s * (1.0 - 2.0 * t) + (d0 + d1) * t  # positive terms only
        log_det = _log_slope(theta, s, d0, d1, denom)
        # lerp is exact at both ends: knots map to knots, the bound to the bound
        out = torch.lerp(y0, y1, (s * theta.square() + d0 * t) / denom)
    return torch.where(inside, out, x), torch.where(inside, log_det, 0.0)


def rational_quadratic_spline(
    x: Tensor,
    widths: Tensor,
    heights: Tensor,
    derivatives: Tensor,
    bound: float,
    inverse: bool = False,
    min_bin_width: float = DEFAULT_MIN_BIN_WIDTH,
    min_bin_height: float = DEFAULT_MIN_BIN_HEIGHT,
    min_derivative: float = DEFAULT_MIN_DERIVATIVE,
    bin_dim: int = -1,
) -> tuple[Tensor, Tensor]:
    r"""Elementwise monotone rational-quadratic spline on ``[-bound, bound]``, identity outside.

    :param x: inputs of shape ``(...)`` (the spline's ``y`` side when ``inverse=True``).
    :param widths: unnormalised bin widths ``(..., K)``.
    :param heights: unnormalised bin heights ``(..., K)``.
    :param derivatives: unconstrained derivatives at the ``K - 1`` inner knots ``(..., K - 1)``.
    :param bound: half-width ``B`` of the spline's interval.
    :param inverse: evaluate the inverse map.
    :param min_bin_width: minimal width of a bin, as a fraction of ``2B``.
    :param min_bin_height: minimal height of a bin, as a fraction of ``2B``.
    :param min_derivative: minimal derivative at an inner knot.
    :param bin_dim: ``-1`` for the layout above; ``-2`` for ``x`` of shape ``(..., N)`` with
        parameters ``(..., K, N)`` and ``(..., K - 1, N)`` (the parameter-major layout of the
        conditioners' outputs: the per-bin work then runs on contiguous rows, several times
        faster on CPU).
    :returns: ``(y, log|dy/dx|)`` elementwise, or ``(x, log|dx/dy|)`` with ``inverse=True``.

    Cost: :math:`O(K)` per entry (a softmax and cumulative sum per axis, ``K - 1`` comparisons
    to find the bin); everything else is evaluated at the entry's bin only.

    All-zero parameters give the identity map:

    >>> x = torch.linspace(-6.0, 6.0, 7)
    >>> y, log_det = rational_quadratic_spline(
    ...     x, torch.zeros(7, 4), torch.zeros(7, 4), torch.zeros(7, 3), bound=5.0
    ... )
    >>> torch.allclose(y, x, atol=1e-6) and torch.allclose(log_det, torch.zeros(7), atol=1e-6)
    True
    """
    if bin_dim not in (-1, -2):
        raise ValueError(f"bin_dim must be -1 or -2, got {bin_dim}")
    if min(t.dim() for t in (widths, heights, derivatives)) < (1 if bin_dim == -1 else 2):
        raise ValueError(f"parameters need a bin dimension {bin_dim}")
    K = widths.shape[bin_dim]
    if K < 2 or heights.shape[bin_dim] != K or derivatives.shape[bin_dim] != K - 1:
        raise ValueError(
            "expected K >= 2 widths and heights and K - 1 derivatives along the bin dimension, "
            f"got shapes {tuple(widths.shape)}, {tuple(heights.shape)}, "
            f"{tuple(derivatives.shape)} (bin_dim={bin_dim})"
        )
    mins = (min_bin_width, min_bin_height, min_derivative)
    _check_min_size(min_bin_width, K, "min_bin_width")
    _check_min_size(min_bin_height, K, "min_bin_height")
    if not min_derivative > 0.0:
        raise ValueError(f"min_derivative must be > 0, got {min_derivative}")
    params = (widths, heights, derivatives)
    if bin_dim == -1:
        # flatten the batch and put the bins first: (K, M) rows, one entry per column
        batch = torch.broadcast_shapes(x.shape, *(p.shape[:-1] for p in params))
        x_flat = x.expand(batch).reshape(-1)
        flat = [p.expand(*batch, p.shape[-1]).reshape(-1, p.shape[-1]).t() for p in params]
        y, log_det = _rqs(x_flat, *flat, bound, inverse, *mins)
        return y.reshape(batch), log_det.reshape(batch)
    if x.dim() < 1:
        raise ValueError("with bin_dim=-2, x needs shape (..., N)")
    batch = torch.broadcast_shapes(x.shape, *(p.shape[:-2] + p.shape[-1:] for p in params))
    full = [p.expand(*batch[:-1], p.shape[-2], batch[-1]) for p in params]
    return _rqs(x.expand(batch), *full, bound, inverse, *mins)
