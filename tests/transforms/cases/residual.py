"""Harness cases for invertible residual layers (pyro_flows.transforms.residual).

All use ``logdet="exact"`` (the harness compares log-dets with autograd Jacobians in float64) and
the exact spectral norm (a deterministic map in train and eval modes); the estimators and the
power-iteration spectral norm are checked in tests/transforms/test_residual.py.
"""

from __future__ import annotations

from pyro_flows.transforms.residual import InvertibleResidual

from . import Case

# The forward solve stops at the Banach bound L/(1-L) |step| <= 16 eps (1 + |y|) or at rounding
# level; round trips agree to ~1e-15 (relative) on the perturbed layers (L up to ~0.91): 1e-10
# leaves room for the 1/(1 - L) amplification of rounding.
_ATOL = 1e-10

CASES: list[Case] = [
    Case(
        "iresidual-d2",
        make=lambda: InvertibleResidual(2, (16, 16), logdet="exact"),
        input_dim=2,
        inverse_atol=_ATOL,
    ),
    Case(
        "iresidual-d1",
        make=lambda: InvertibleResidual(1, (8,), logdet="exact"),
        input_dim=1,
        inverse_atol=_ATOL,
    ),
    Case(
        "iresidual-d5-elu",
        make=lambda: InvertibleResidual(5, (16, 16), activation="elu", logdet="exact"),
        input_dim=5,
        inverse_atol=_ATOL,
    ),
    Case(
        "iresidual-d4-one-hidden-c0.9",
        make=lambda: InvertibleResidual(4, (32,), logdet="exact", coeff=0.9),
        input_dim=4,
        inverse_atol=_ATOL,
    ),
    Case(
        "iresidual-d3-ctx2",
        make=lambda: InvertibleResidual(3, (16, 16), context_dim=2, logdet="exact"),
        input_dim=3,
        context_dim=2,
        inverse_atol=_ATOL,
    ),
    Case(
        "iresidual-d2-ctx1-elu",
        make=lambda: InvertibleResidual(2, (16,), context_dim=1, activation="elu", logdet="exact"),
        input_dim=2,
        context_dim=1,
        inverse_atol=_ATOL,
    ),
]
