"""Harness cases for the planar and radial families (pyro_flows.transforms.planar / .radial)."""

from __future__ import annotations

from pyro_flows.transforms.planar import Planar
from pyro_flows.transforms.radial import Radial

from . import Case

# Planar's inverse is a root solve stopped at |residual| <= 8 eps (1 + |c| + |a|) (float64):
# round trips agree to ~1e-12 on well-conditioned layers; 1e-7 leaves room for layers whose
# slope 1 + w^T u_hat sech^2 gets small after the harness's parameter noise.
_PLANAR_ATOL = 1e-7

CASES: list[Case] = [
    Case("planar-d2", make=lambda: Planar(2), input_dim=2, inverse_atol=_PLANAR_ATOL),
    Case("planar-d1", make=lambda: Planar(1), input_dim=1, inverse_atol=_PLANAR_ATOL),
    Case("planar-d5", make=lambda: Planar(5), input_dim=5, inverse_atol=_PLANAR_ATOL),
    Case(
        "planar-d5-ctx3",
        make=lambda: Planar(5, context_dim=3, hidden_dims=(16, 16)),
        input_dim=5,
        context_dim=3,
        inverse_atol=_PLANAR_ATOL,
    ),
    Case(
        "planar-d2-ctx2",
        make=lambda: Planar(2, context_dim=2, hidden_dims=(16,)),
        input_dim=2,
        context_dim=2,
        inverse_atol=_PLANAR_ATOL,
    ),
    Case("radial-d2", make=lambda: Radial(2), input_dim=2),
    Case("radial-d1", make=lambda: Radial(1), input_dim=1),
    Case("radial-d5", make=lambda: Radial(5), input_dim=5),
    Case(
        "radial-d3-ctx2",
        make=lambda: Radial(3, context_dim=2, hidden_dims=(16, 16)),
        input_dim=3,
        context_dim=2,
    ),
]
