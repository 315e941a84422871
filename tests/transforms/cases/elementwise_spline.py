"""Harness cases: elementwise rational splines with their own parameters (``Spline``, both
orders) and with parameters from a context (``ConditionalSpline``)."""

from __future__ import annotations

from pyro_flows.transforms.elementwise_spline import ConditionalSpline, Spline

from . import Case

CASES: list[Case] = [
    *(
        Case(f"elementwise-spline-{order}-d{d}", lambda d=d, o=order: Spline(d, order=o), d)
        for order in ("linear", "quadratic")
        for d in (1, 2, 5)
    ),
    Case(
        "elementwise-spline-linear-d3-bins4-bound5",
        lambda: Spline(3, count_bins=4, bound=5.0),
        3,
    ),
    *(
        Case(
            f"conditional-spline-{order}-d3-ctx2",
            lambda o=order: ConditionalSpline(3, 2, hidden_dims=(16,), order=o),
            3,
            2,
        )
        for order in ("linear", "quadratic")
    ),
    Case(
        "conditional-spline-linear-d1-ctx1",
        lambda: ConditionalSpline(1, context_dim=1, count_bins=16),
        1,
        1,
    ),
]
