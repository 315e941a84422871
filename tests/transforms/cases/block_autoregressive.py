"""Harness cases: block neural autoregressive flow (pyro_flows.transforms.block_autoregressive).

The solving direction stops at |F_i(u_i) - v_i| <= 8 eps (1 + |v_i| + (1 - g)|c_i|) (float64):
round trips agree to ~1e-14 on these layers; 1e-8 is the harness default and leaves room.
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
        lambda: BlockAutoregressive(3, (4, 2), activation="leaky_relu"),
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
