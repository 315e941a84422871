r"""Gauss-Legendre quadrature of a positive integrand from 0 to ``x``, with its exact derivative.

The maths kernel of :class:`~pyro_flows.transforms.monotonic.UnconstrainedMonotonicAutoregressive`.
For an integrand :math:`g(t) > 0` that is constant beyond :math:`|t| > B` (the caller clamps
:math:`t`), the map

.. math::

    \Phi(x) = c \sum_{k=1}^{n} w_k\, g(c\, s_k) + (x - c)\, g(c),
    \qquad c = \mathrm{clip}(x, -B, B),

approximates :math:`\int_0^x g(t)\,dt`: an :math:`n`-node Gauss-Legendre rule (nodes
:math:`s_k \in (0, 1)`, weights :math:`w_k > 0`, :math:`\sum_k w_k = 1`) on :math:`[0, c]` after
the substitution :math:`t = c\,s`, and exact linear tails of slope :math:`g(\pm B)` outside
:math:`[-B, B]`. Its derivative is returned in closed form,

.. math::

    \Phi'(x) = \sum_k w_k \big(g(c s_k) + c s_k\, g'(c s_k)\big) \ (|x| \le B), \qquad
    \Phi'(x) = g(\pm B) \ (|x| > B),

which is exactly what autograd gives for :math:`\Phi` (the derivative *of the computed map*,
not :math:`g(x)`, which it equals only up to the derivative of the quadrature error).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache

import torch
from torch import Tensor

Integrand = Callable[[Tensor], tuple[Tensor, Tensor]]
"""``integrand(t) -> (g(t), dg/dt(t))``, elementwise; ``t`` has one more trailing dim (the
nodes) than the points being integrated to."""


def _legendre_and_derivative(n: int, z: Tensor) -> tuple[Tensor, Tensor]:
    """``P_n(z)`` and ``P_n'(z)`` by the three-term recurrence (``|z| < 1``)."""
    p_prev, p = torch.ones_like(z), z
    for k in range(2, n + 1):
        p_prev, p = p, ((2 * k - 1) * z * p - (k - 1) * p_prev) / k
    return p, n * (z * p - p_prev) / (z * z - 1)


@lru_cache(maxsize=32)
def _gauss_legendre_float64(n: int) -> tuple[Tensor, Tensor]:
    """Nodes and weights on ``[0, 1]``, float64 on the CPU: Golub-Welsch eigenvalues, polished
    by two Newton steps on ``P_n`` (nodes) and ``w = 2 / ((1 - z^2) P_n'(z)^2)`` (weights)."""
    if n == 1:
        return torch.tensor([0.5], dtype=torch.float64), torch.ones(1, dtype=torch.float64)
    k = torch.arange(1, n, dtype=torch.float64)
    beta = k / torch.sqrt(4 * k * k - 1)
    z = torch.linalg.eigvalsh(torch.diag(beta, 1) + torch.diag(beta, -1))
    for _ in range(2):
        p, dp = _legendre_and_derivative(n, z)
        z = z - p / dp
    _, dp = _legendre_and_derivative(n, z)
    weights = 2 / ((1 - z * z) * dp * dp)
    return (z + 1) / 2, weights / 2


def gauss_legendre(
    n: int, dtype: torch.dtype = torch.float64, device: torch.device | str | None = None
) -> tuple[Tensor, Tensor]:
    r"""The ``n``-node Gauss-Legendre rule on :math:`[0, 1]`: ``(nodes, weights)``.

    Exact for polynomials of degree :math:`\le 2n - 1`; the weights are positive and sum to 1.
    Computed once per ``n`` in float64 (to about :math:`10^{-15}`) and cast.

    >>> s, w = gauss_legendre(3)
    >>> round(float((w * s**5).sum()), 12)  # int_0^1 s^5 ds
    0.166666666667
    """
    nodes, weights = _gauss_legendre_float64(n)
    return nodes.to(dtype=dtype, device=device), weights.to(dtype=dtype, device=device)


def integrate_from_zero(
    x: Tensor, integrand: Integrand, nodes: Tensor, weights: Tensor, bound: float
) -> tuple[Tensor, Tensor]:
    r""":math:`\Phi(x)` and :math:`\Phi'(x)` (see the module docstring), elementwise over ``x``.

    Costs ``n + 1`` integrand evaluations per element (the nodes and the end point
    :math:`g(c)`, which gives the tails).

    :param x: upper limits, any shape.
    :param integrand: ``t -> (g(t), g'(t))`` on ``t`` of shape ``(*x.shape, n + 1)``.
    :param nodes: Gauss-Legendre nodes on ``[0, 1]``, shape ``(n,)``.
    :param weights: the matching weights, shape ``(n,)``.
    :param bound: :math:`B`, the end of the quadrature interval (linear tails beyond).
    """
    c = x.clamp(-bound, bound)
    t = torch.cat([c.unsqueeze(-1) * nodes, c.unsqueeze(-1)], -1)
    g, dg = integrand(t)
    g_nodes, g_end = g[..., :-1], g[..., -1]
    phi = c * (weights * g_nodes).sum(-1) + (x - c) * g_end
    inside = (weights * (g_nodes + t[..., :-1] * dg[..., :-1])).sum(-1)
    return phi, torch.where(x.abs() <= bound, inside, g_end)
