"""Harness cases for the Sylvester family (pyro_flows.transforms.sylvester)."""

from __future__ import annotations

from pyro_flows.transforms.sylvester import Sylvester

from . import Case

# The inverse is M scalar root solves, each stopped at |residual| <= 8 eps (1 + |e_i| + |R_ii|)
# (float64), the residuals carried through the back substitution by the off-diagonal entries:
# round trips agree to ~1e-13 on the perturbed layers; 1e-7 leaves room, as for Planar.
_ATOL = 1e-7

CASES: list[Case] = [
    Case("sylvester-d2", make=lambda: Sylvester(2), input_dim=2, inverse_atol=_ATOL),
    Case("sylvester-d1", make=lambda: Sylvester(1), input_dim=1, inverse_atol=_ATOL),
    Case("sylvester-d5", make=lambda: Sylvester(5), input_dim=5, inverse_atol=_ATOL),
    Case(
        "sylvester-d5-m2",
        make=lambda: Sylvester(5, num_vectors=2),
        input_dim=5,
        inverse_atol=_ATOL,
    ),
    Case(
        "sylvester-d4-orthogonal-m3",
        make=lambda: Sylvester(4, num_vectors=3, kind="orthogonal"),
        input_dim=4,
        inverse_atol=_ATOL,
    ),
    Case(
        "sylvester-d2-orthogonal",
        make=lambda: Sylvester(2, kind="orthogonal"),
        input_dim=2,
        inverse_atol=_ATOL,
    ),
    Case(
        "sylvester-d4-triangular",
        make=lambda: Sylvester(4, kind="triangular"),
        input_dim=4,
        inverse_atol=_ATOL,
    ),
    Case(
        "sylvester-d3-triangular-m2",
        make=lambda: Sylvester(3, num_vectors=2, kind="triangular"),
        input_dim=3,
        inverse_atol=_ATOL,
    ),
    Case(
        "sylvester-d4-ctx3",
        make=lambda: Sylvester(4, context_dim=3, hidden_dims=(16, 16), num_vectors=3),
        input_dim=4,
        context_dim=3,
        inverse_atol=_ATOL,
    ),
    Case(
        "sylvester-d3-ctx2-orthogonal",
        make=lambda: Sylvester(3, context_dim=2, hidden_dims=(16,), kind="orthogonal"),
        input_dim=3,
        context_dim=2,
        inverse_atol=_ATOL,
    ),
    Case(
        "sylvester-d2-ctx2-triangular",
        make=lambda: Sylvester(2, context_dim=2, hidden_dims=(16,), kind="triangular"),
        input_dim=2,
        context_dim=2,
        inverse_atol=_ATOL,
    ),
]
