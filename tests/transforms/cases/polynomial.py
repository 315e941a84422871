"""Harness cases: polynomial autoregressive layers (sum-of-squares and Bernstein, MAF direction).

Both invert by a safeguarded root solve followed by one Newton step; ``_ATOL`` leaves room for the
perturbed layers whose slopes approach the floor ``min_slope = 1e-3`` (round trips are otherwise
at about 1e-13 in float64).
"""

from pyro_flows.transforms.polynomial import BernsteinAutoregressive, SOSPolynomialAutoregressive

from . import Case

_ATOL = 1e-9

CASES = [
    Case(
        "sos-ar-d1",
        lambda: SOSPolynomialAutoregressive(1, (8,), degree=3, polynomials=2),
        1,
        lower_triangular=True,
        inverse_atol=_ATOL,
    ),
    Case(
        "sos-ar-d2",
        lambda: SOSPolynomialAutoregressive(2, (8, 8)),
        2,
        lower_triangular=True,
        inverse_atol=_ATOL,
    ),
    Case(
        "sos-ar-d5",
        lambda: SOSPolynomialAutoregressive(5, (8, 8), degree=2, bound=3.0),
        5,
        lower_triangular=True,
        inverse_atol=_ATOL,
    ),
    Case(
        "sos-ar-d3-ctx2",
        lambda: SOSPolynomialAutoregressive(3, (8,), context_dim=2, degree=3),
        3,
        2,
        lower_triangular=True,
        inverse_atol=_ATOL,
    ),
    Case(
        "sos-ar-d4-order",
        lambda: SOSPolynomialAutoregressive(4, (8,), input_order=[2, 0, 3, 1]),
        4,
        inverse_atol=_ATOL,
    ),
    Case(
        "bernstein-ar-d1",
        lambda: BernsteinAutoregressive(1, (8,), degree=6),
        1,
        lower_triangular=True,
        inverse_atol=_ATOL,
    ),
    Case(
        "bernstein-ar-d2",
        lambda: BernsteinAutoregressive(2, (8, 8)),
        2,
        lower_triangular=True,
        inverse_atol=_ATOL,
    ),
    Case(
        "bernstein-ar-d5",
        lambda: BernsteinAutoregressive(5, (8, 8), degree=10, bound=3.0),
        5,
        lower_triangular=True,
        inverse_atol=_ATOL,
    ),
    Case(
        "bernstein-ar-d3-ctx2",
        lambda: BernsteinAutoregressive(3, (8,), context_dim=2, degree=8),
        3,
        2,
        lower_triangular=True,
        inverse_atol=_ATOL,
    ),
    Case(
        "bernstein-ar-d4-order",
        lambda: BernsteinAutoregressive(4, (8,), input_order=[2, 0, 3, 1]),
        4,
        inverse_atol=_ATOL,
    ),
]
