"""Harness cases: unconstrained monotonic neural autoregressive layers (UMNN-MAF / UNAF).

The log-determinant is the exact derivative of the quadrature map actually computed, so the
harness's autograd check holds to rounding whatever the number of nodes; the round trip solves
to ``16 eps (1 + |target|)`` in the map's value, i.e. about ``1e-12`` in float64 for slopes
``>= 1e-3``, well inside the default tolerance. Small networks keep the 2-D grid check (160 801
points x ``n + 1`` nodes) light.
"""

from pyro_flows.transforms.monotonic import UnconstrainedMonotonicAutoregressive as UMNN

from . import Case

CASES = [
    Case(
        "unaf-d1",
        lambda: UMNN(1, (8,), signal=4, network=(8,), quadrature_nodes=16),
        1,
        lower_triangular=True,
    ),
    Case(
        "unaf-d2",
        lambda: UMNN(2, (8, 8), signal=4, network=(8,), quadrature_nodes=16),
        2,
        lower_triangular=True,
    ),
    Case("unaf-d5", lambda: UMNN(5, (8, 8), signal=4, network=(8, 8)), 5, lower_triangular=True),
    Case(
        "unaf-d3-ctx2",
        lambda: UMNN(3, (8,), context_dim=2, signal=3, network=(8,), quadrature_nodes=16),
        3,
        2,
        lower_triangular=True,
    ),
    # a short quadrature interval: the harness's inputs reach the exact linear tails
    Case(
        "unaf-d3-tanh-bound3",
        lambda: UMNN(3, (8,), signal=2, network=(6, 6), network_activation="tanh", bound=3.0),
        3,
        lower_triangular=True,
    ),
    Case(
        "unaf-d4-order",
        lambda: UMNN(4, (8,), input_order=[2, 0, 3, 1], signal=1, network=(8,)),
        4,
    ),
]
