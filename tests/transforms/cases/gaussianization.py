"""Harness cases: trainable marginal Gaussianization (pyro_flows.transforms.gaussianization).

The sampling direction is a root solve stopped at the rounding level of log Phi(x) (a few ulps of
x, float64), so round trips agree to ~1e-13 on these layers; the default 1e-8 tolerance holds.
"""

from __future__ import annotations

from pyro_flows.transforms.gaussianization import MarginalGaussianization

from . import Case

CASES: list[Case] = [
    Case("gaussianization-d1", lambda: MarginalGaussianization(1, num_components=3), 1),
    Case("gaussianization-d2", lambda: MarginalGaussianization(2, num_components=4), 2),
    Case(
        "gaussianization-gaussian-kernel-d3",
        lambda: MarginalGaussianization(3, num_components=5, kernel="gaussian"),
        3,
    ),
    Case(
        "gaussianization-d3-ctx2",
        lambda: MarginalGaussianization(3, num_components=4, context_dim=2, hidden_dims=(8,)),
        3,
        2,
    ),
]
