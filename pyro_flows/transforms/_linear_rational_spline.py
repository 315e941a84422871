r"""Monotone rational-linear splines with linear tails, as pure functions.

The rational-*linear* spline of Dolatabadi, Erfani and Leckie (2020): the same knots
:math:`(x^{(k)}, y^{(k)})_{k=0..K}` on :math:`[-B, B]` and positive knot derivatives
:math:`\delta^{(k)}` as the rational-quadratic spline of :mod:`pyro_flows.transforms._spline`
(same parametrisation, same identity tails with unit slope), but each bin is split at a
fraction :math:`\lambda \in (0, 1)` of its width into two pieces, each a ratio of two linear
functions (a Möbius map). With Dolatabadi et al.'s weights :math:`w_a = 1`,
:math:`w_b = \sqrt{\delta^{(k)}/\delta^{(k+1)}}` and
:math:`w_c = (\lambda\delta^{(k)} + (1 - \lambda)w_b\delta^{(k+1)})/s` (:math:`s = h/w` the
bin's slope), the map simplifies to a closed form with no cancellation. Write
:math:`a = \sqrt{\delta^{(k)}}`, :math:`b = \sqrt{\delta^{(k+1)}}`,
:math:`m = \lambda a + (1 - \lambda) b`. The piece next to the left knot spans
:math:`\Lambda = \lambda w` in :math:`x` and :math:`\lambda a h / m` in :math:`y`; the piece
next to the right knot spans :math:`(1 - \lambda) w` and :math:`(1 - \lambda) b h / m`. On the
piece next to knot :math:`e \in \{k, k+1\}`, with :math:`\Delta x \ge 0` the distance from that
knot, :math:`t = \Delta x / \Lambda_e \in [0, 1]` and :math:`\rho_e = \sqrt{\delta^{(e)}}\,m/s`,

.. math::

    \Delta y = \frac{\delta^{(e)}\,\Delta x}{D}, \qquad D = (1 - t) + \rho_e t, \qquad
    \log\frac{dy}{dx} = \log\delta^{(e)} - 2\log D,

where :math:`\Delta y` is the distance of :math:`y` from :math:`y^{(e)}` (measured inwards). The
slope is :math:`\delta^{(e)}` at the knot and :math:`s^2/m^2` on both sides of the split point:
the map is :math:`C^1`, monotone, and equals Dolatabadi et al.'s (and Pyro's ``order="linear"``)
rational-linear spline. The inverse is closed form too (a Möbius map inverts to a Möbius map):
with :math:`\epsilon = \Delta y / H_e \in [0, 1]` (:math:`H_e` the piece's height) and
:math:`q = \rho_e(1 - \epsilon) + \epsilon`,

.. math::

    \Delta x = \Lambda_e\,\frac{\epsilon}{q}, \qquad
    \log\frac{dx}{dy} = -\log\delta^{(e)} + 2\log\rho_e - 2\log q,

exact up to rounding (no iteration). Every denominator above is a sum of positive terms.

Each entry is evaluated on one piece only, measured from that piece's outer knot: a knot (and
:math:`\pm B`) maps to its image exactly, in both directions, and the masked-out branch of a
``where`` is never evaluated at a point where it could be singular. As in the quadratic kernel,
inputs are clamped to :math:`[-B, B]` before evaluation, so values and gradients stay finite for
any finite input; the identity applies outside.

Parametrisation of :math:`\lambda`: :math:`\lambda = \lambda_{\min} + (1 - 2\lambda_{\min})
\,\mathrm{sigmoid}(u)` (Pyro's, with :math:`\lambda_{\min} = 0.025`). With equal bins and unit
derivatives the map is the identity for *every* :math:`\lambda`, so all-zero parameters give
exactly the identity.

References: Dolatabadi, Erfani, Leckie, "Invertible Generative Modeling using Linear Rational
Splines", AISTATS 2020; Durkan, Bekasov, Murray, Papamakarios, "Neural Spline Flows",
NeurIPS 2019.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ._spline import (
    DEFAULT_MIN_BIN_HEIGHT,
    DEFAULT_MIN_BIN_WIDTH,
    DEFAULT_MIN_DERIVATIVE,
    _bin_ends,
    _check_min_size,
    _derivatives_at,
    _Knots,
)

DEFAULT_MIN_LAMBDA = 0.025


def _pieces(
    d0: Tensor, d1: Tensor, lam: Tensor, s: Tensor, h: Tensor
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """``rho`` of the left and right pieces and their heights (see the module docstring)."""
    a, b = d0.sqrt(), d1.sqrt()
    m = lam * a + (1.0 - lam) * b
    return a * m / s, b * m / s, lam * a * h / m, (1.0 - lam) * b * h / m


def _lrs(
    x: Tensor,
    widths: Tensor,
    heights: Tensor,
    derivatives: Tensor,
    lambdas: Tensor,
    bound: float,
    inverse: bool,
    mins: tuple[float, float, float, float],
) -> tuple[Tensor, Tensor]:
    """The spline on ``x`` ``(..., N)`` with parameters ``(..., K or K - 1, N)``.

    The parameters' batch shape only needs to broadcast with ``x``'s: the knots are computed at
    the parameters' own batch shape (once for a layer's own parameters, not once per input row)
    and gathered per entry from expanded views.
    """
    min_bin_width, min_bin_height, min_derivative, min_lambda = mins
    K = widths.shape[-2]
    knots_x = _Knots(widths, bound, min_bin_width)
    knots_y = _Knots(heights, bound, min_bin_height)
    searched, other = (knots_y, knots_x) if inverse else (knots_x, knots_y)
    inside = (x >= -bound) & (x <= bound)
    v = x.clamp(-bound, bound)  # masked-out entries: finite values and gradients
    inner = searched.inner()
    k = (inner <= v.unsqueeze(-2)).sum(-2, keepdim=True)  # bin index, (..., 1, N)
    idx = torch.cat([(k - 1).clamp_min(0), k.clamp_max(K - 2)], -2)
    batch = idx.shape[:-2]

    def full(t: Tensor) -> Tensor:  # a view with the entries' batch shape, for gather
        return t.expand(*batch, *t.shape[-2:])

    other.cum = full(other.cum)
    v0, v1, v_size = _bin_ends(k, K, full(inner).gather(-2, idx), bound)
    u0, u1, u_size = _bin_ends(k, K, other.at(idx), bound)
    d0, d1 = _derivatives_at(full(derivatives), idx, k, K, min_derivative)
    lam = torch.sigmoid(full(lambdas).gather(-2, k).squeeze(-2))
    lam = min_lambda + (1.0 - 2.0 * min_lambda) * lam
    if inverse:
        x0, x1, w, y0, y1, h = u0, u1, u_size, v0, v1, v_size
    else:
        x0, x1, w, y0, y1, h = v0, v1, v_size, u0, u1, u_size
    rho_left, rho_right, h_left, h_right = _pieces(d0, d1, lam, h / w, h)
    if inverse:
        left = (v - y0) <= h_left
    else:
        left = (v - x0) <= lam * w
    # everything below is evaluated on the entry's own piece only, from its outer knot
    d = torch.where(left, d0, d1)
    rho = torch.where(left, rho_left, rho_right)
    span = torch.where(left, lam, 1.0 - lam) * w
    if inverse:
        dist = torch.where(left, v - y0, y1 - v)
        eps = (dist / torch.where(left, h_left, h_right)).clamp(0.0, 1.0)
        q = rho * (1.0 - eps) + eps  # positive terms only
        step = span * eps / q
        out = torch.where(left, x0 + step, x1 - step)
        log_det = 2.0 * torch.log(rho / q) - torch.log(d)
    else:
        dist = torch.where(left, v - x0, x1 - v)
        t = (dist / span).clamp(0.0, 1.0)
        denom = (1.0 - t) + rho * t  # positive terms only
        step = d * dist / denom
        out = torch.where(left, y0 + step, y1 - step)
        log_det = torch.log(d) - 2.0 * torch.log(denom)
    return torch.where(inside, out, x), torch.where(inside, log_det, 0.0)


def linear_rational_spline(
    x: Tensor,
    widths: Tensor,
    heights: Tensor,
    derivatives: Tensor,
    lambdas: Tensor,
    bound: float,
    inverse: bool = False,
    min_bin_width: float = DEFAULT_MIN_BIN_WIDTH,
    min_bin_height: float = DEFAULT_MIN_BIN_HEIGHT,
    min_derivative: float = DEFAULT_MIN_DERIVATIVE,
    min_lambda: float = DEFAULT_MIN_LAMBDA,
    bin_dim: int = -1,
) -> tuple[Tensor, Tensor]:
    r"""Elementwise monotone rational-linear spline on ``[-bound, bound]``, identity outside.

    :param x: inputs of shape ``(...)`` (the spline's ``y`` side when ``inverse=True``).
    :param widths: unnormalised bin widths ``(..., K)``.
    :param heights: unnormalised bin heights ``(..., K)``.
    :param derivatives: unconstrained derivatives at the ``K - 1`` inner knots ``(..., K - 1)``.
    :param lambdas: unconstrained split points of the ``K`` bins ``(..., K)``.
    :param bound: half-width ``B`` of the spline's interval.
    :param inverse: evaluate the inverse map (closed form, exact up to rounding).
    :param min_bin_width: minimal width of a bin, as a fraction of ``2B``.
    :param min_bin_height: minimal height of a bin, as a fraction of ``2B``.
    :param min_derivative: minimal derivative at an inner knot.
    :param min_lambda: the split point lies in ``[min_lambda, 1 - min_lambda]`` of the bin.
    :param bin_dim: ``-1`` for the layout above; ``-2`` for ``x`` of shape ``(..., N)`` with
        parameters ``(..., K, N)`` and ``(..., K - 1, N)`` (parameter-major, as the
        conditioners produce them).
    :returns: ``(y, log|dy/dx|)`` elementwise, or ``(x, log|dx/dy|)`` with ``inverse=True``.

    Cost: :math:`O(K)` per entry (as :func:`~pyro_flows.transforms._spline.\
rational_quadratic_spline`), the same in both directions.

    All-zero parameters give the identity map:

    >>> x = torch.linspace(-6.0, 6.0, 7)
    >>> zeros = torch.zeros(7, 4)
    >>> y, log_det = linear_rational_spline(
    ...     x, zeros, zeros, torch.zeros(7, 3), zeros, bound=5.0
    ... )
    >>> torch.allclose(y, x, atol=1e-6) and torch.allclose(log_det, torch.zeros(7), atol=1e-6)
    True
    """
    if bin_dim not in (-1, -2):
        raise ValueError(f"bin_dim must be -1 or -2, got {bin_dim}")
    params = (widths, heights, derivatives, lambdas)
    if min(t.dim() for t in params) < (1 if bin_dim == -1 else 2):
        raise ValueError(f"parameters need a bin dimension {bin_dim}")
    K = widths.shape[bin_dim]
    sizes = [p.shape[bin_dim] for p in params]
    if K < 2 or sizes != [K, K, K - 1, K]:
        raise ValueError(
            "expected K >= 2 widths, heights and lambdas and K - 1 derivatives along the bin "
            f"dimension, got shapes {[tuple(p.shape) for p in params]} (bin_dim={bin_dim})"
        )
    _check_min_size(min_bin_width, K, "min_bin_width")
    _check_min_size(min_bin_height, K, "min_bin_height")
    if not min_derivative > 0.0:
        raise ValueError(f"min_derivative must be > 0, got {min_derivative}")
    if not 0.0 < min_lambda < 0.5:
        raise ValueError(f"min_lambda must be in (0, 0.5), got {min_lambda}")
    mins = (min_bin_width, min_bin_height, min_derivative, min_lambda)
    if bin_dim == -1:
        # flatten the batch and put the bins first: (K, M) rows, one entry per column
        batch = torch.broadcast_shapes(x.shape, *(p.shape[:-1] for p in params))
        x_flat = x.expand(batch).reshape(-1)
        flat = [p.expand(*batch, p.shape[-1]).reshape(-1, p.shape[-1]).t() for p in params]
        y, log_det = _lrs(x_flat, *flat, bound, inverse, mins)
        return y.reshape(batch), log_det.reshape(batch)
    if x.dim() < 1:
        raise ValueError("with bin_dim=-2, x needs shape (..., N)")
    batch = torch.broadcast_shapes(x.shape, *(p.shape[:-2] + p.shape[-1:] for p in params))
    # the parameters keep their own batch shape (broadcast inside): see _lrs
    wide = [p.expand(*p.shape[:-1], batch[-1]) for p in params]
    return _lrs(x.expand(batch), *wide, bound, inverse, mins)
