"""Harness cases: block neural autoregressive flow (pyro_flows.transforms.block_autoregressive).

The solving direction stops at |F_i(u_i) - v_i| <= 8 eps (1 + |v_i| + (1 - g)|c_i|) (float64):
round trips agree to ~1e-14 on these layers; 1e-8 is the harness default and leaves room.

The harness perturbs every stored tensor by 0.3 standard Normals. BNAF stores V / c, s / c and
gamma / c (``param_scale`` c = 20 by default), so that is 6 standard Normals on the effective
log-domain parameters. "bnaf-d3-leaky" therefore uses ``param_scale=1`` (Pyro's
parametrisation, the harness's intended scale). With c = 20 its unbounded leaky network gets
log densities around -1e8 and gradients around 1e10, and the stale-result check's SGD step
(lr 0.05, which with the factor is c^2 = 400 times larger in V) overflows to NaN. Every other
case keeps the default c.
"""

from __future__ import annotations

from pyro_flows.transforms.block_autoregressive import BlockAutoregressive

from . import Case

CASES: list[Case] = [
    Case("bnaf-d1", lambda: BlockAutoregressive(1, (4,)), 1, lower_triangular=True),
    Case("bnaf-d2", lambda: BlockAutoregressive(2, (4, 4)), 2, lower_triangular=True),
    Case("bnaf-d5", lambda: BlockAutoregressive(5, (3, 4)), 5, lower_triangular=True),
    Case(
        "bnaf-d2-normal",
        lambda: BlockAutoregressive(2, (4,), residual="normal"),
        2,
        lower_triangular=True,
    ),
    Case(
        "bnaf-d3-leaky",
        lambda: BlockAutoregressive(3, (4, 2), activation="leaky_relu", param_scale=1.0),
        3,
        lower_triangular=True,
    ),
    Case(
        "bnaf-d2-leaky-plain",
        lambda: BlockAutoregressive(2, (4,), activation="leaky_relu", residual=None),
        2,
        lower_triangular=True,
    ),
    Case(
        "bnaf-d3-sampling",
        lambda: BlockAutoregressive(3, (4, 4), direction="sampling"),
        3,
        lower_triangular=True,
    ),
    Case(
        "bnaf-d3-ctx2",
        lambda: BlockAutoregressive(3, (4,), context_dim=2),
        3,
        2,
        lower_triangular=True,
    ),
    Case(
        "bnaf-d2-ctx3-sampling",
        lambda: BlockAutoregressive(2, (3, 3), context_dim=3, direction="sampling"),
        2,
        3,
        lower_triangular=True,
    ),
]
