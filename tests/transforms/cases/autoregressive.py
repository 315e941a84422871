"""Harness cases: MAF and IAF layers on MADE."""

from pyro_flows.transforms import InverseAutoregressive, MaskedAutoregressive

from . import Case

CASES = [
    Case("maf-d1", lambda: MaskedAutoregressive(1, (8,)), 1, lower_triangular=True),
    Case("maf-d2", lambda: MaskedAutoregressive(2, (8, 8)), 2, lower_triangular=True),
    Case("maf-d5", lambda: MaskedAutoregressive(5, (8, 8)), 5, lower_triangular=True),
    Case(
        "maf-d3-ctx2",
        lambda: MaskedAutoregressive(3, (8,), context_dim=2),
        3,
        2,
        lower_triangular=True,
    ),
    Case("iaf-d1", lambda: InverseAutoregressive(1, (8,)), 1, lower_triangular=True),
    Case("iaf-d2", lambda: InverseAutoregressive(2, (8, 8)), 2, lower_triangular=True),
    Case("iaf-d5", lambda: InverseAutoregressive(5, (8, 8)), 5, lower_triangular=True),
    Case(
        "iaf-d4-ctx3",
        lambda: InverseAutoregressive(4, (8,), context_dim=3),
        4,
        3,
        lower_triangular=True,
    ),
    Case(
        "maf-d4-order",
        lambda: MaskedAutoregressive(4, (8,), input_order=[2, 0, 3, 1]),
        4,
    ),
    # the exponential scale (log-scale linear in the network output)
    Case("maf-d5-exp", lambda: MaskedAutoregressive(5, (8, 8), scale="exp"), 5,
         lower_triangular=True),
    Case("iaf-d4-ctx3-exp", lambda: InverseAutoregressive(4, (8,), context_dim=3, scale="exp"),
         4, 3, lower_triangular=True),
]
