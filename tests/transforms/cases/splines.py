"""Harness cases: rational-quadratic spline layers (coupling, MAF and IAF directions).

The harness perturbs every parameter by noise of scale 0.3 and round-trips inputs up to |20|: with
minimum slopes of order 1e-3 per spline, some perturbed autoregressive stacks get condition numbers
near 1e9, where no float64 algorithm can meet the 1e-8 round-trip tolerance. The configurations
below were checked on 600 random inputs of that range to stay within 1e-9 of exact.
"""

from pyro_flows.transforms import (
    InverseSplineAutoregressive,
    SplineAutoregressive,
    SplineCoupling,
)

from . import Case

CASES = [
    Case("spline-coupling-d2", lambda: SplineCoupling(2, (8, 8), num_bins=6), 2),
    Case("spline-coupling-d5", lambda: SplineCoupling(5, (8,), split_dim=3, bound=3.0), 5),
    Case(
        "spline-coupling-d5-ctx3",
        lambda: SplineCoupling(5, (8,), num_bins=4, context_dim=3),
        5,
        3,
    ),
    Case("spline-ar-d1", lambda: SplineAutoregressive(1, (8,)), 1, lower_triangular=True),
    Case(
        "spline-ar-d2",
        lambda: SplineAutoregressive(2, (8, 8), num_bins=5),
        2,
        lower_triangular=True,
    ),
    Case(
        "spline-ar-d5",
        lambda: SplineAutoregressive(5, (8, 8), bound=3.0),
        5,
        lower_triangular=True,
    ),
    Case(
        "spline-ar-d4-ctx2",
        lambda: SplineAutoregressive(4, (8, 8), context_dim=2),
        4,
        2,
        lower_triangular=True,
    ),
    Case(
        "spline-ar-d4-order",
        lambda: SplineAutoregressive(4, (8, 8), bound=3.0, input_order=[2, 0, 3, 1]),
        4,
    ),
    Case(
        "inverse-spline-ar-d1",
        lambda: InverseSplineAutoregressive(1, (8,)),
        1,
        lower_triangular=True,
    ),
    Case(
        "inverse-spline-ar-d2",
        lambda: InverseSplineAutoregressive(2, (8, 8), num_bins=5),
        2,
        lower_triangular=True,
    ),
    Case(
        "inverse-spline-ar-d3",
        lambda: InverseSplineAutoregressive(3, (8,), num_bins=4),
        3,
        lower_triangular=True,
    ),
    Case(
        "inverse-spline-ar-d4-ctx3",
        lambda: InverseSplineAutoregressive(4, (8, 8), num_bins=4, context_dim=3),
        4,
        3,
        lower_triangular=True,
    ),
]
