"""Harness cases for continuous normalizing flows (pyro_flows.transforms.continuous).

Every check of the harness applies. The solves use ``rtol = atol = 1e-9`` (float64) so that the
harness's fixed log-det tolerances (``1e-6`` against the autograd Jacobian, ``1e-7`` between the
forward and the inverse log-det) hold: at these tolerances round trips and the two log-dets agree to
~1e-8 on these small layers. ``inverse_atol`` leaves a margin for the property-based
inputs of size up to 20, where the trajectories are longer. Float32 raises the tolerances to
100 eps (documented in ``ContinuousFlow``), which is what the float32 check uses.

Cost: ODE solves are far slower than closed-form layers; the property-based round trip (6-9 s per
case, ~100 solves) and the 401 x 401 grid integration of ``cnf-d2`` (~7 s, 160,801 points with
the exact trace) dominate. The adjoint method is checked in tests/transforms/test_continuous.py
instead of here to keep the harness short.
"""

from __future__ import annotations

from pyro_flows.transforms.continuous import ContinuousFlow

from . import Case

_TOL = {"rtol": 1e-9, "atol": 1e-9}
_CNF_ATOL = 1e-7

CASES: list[Case] = [
    Case(
        "cnf-d2",
        make=lambda: ContinuousFlow(2, hidden_dims=(16,), **_TOL),
        input_dim=2,
        inverse_atol=_CNF_ATOL,
    ),
    Case(
        "cnf-d2-ctx2-softplus",
        make=lambda: ContinuousFlow(
            2, hidden_dims=(16,), context_dim=2, activation="softplus", **_TOL
        ),
        input_dim=2,
        context_dim=2,
        inverse_atol=_CNF_ATOL,
    ),
]
