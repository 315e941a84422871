"""Harness cases: NICE and RealNVP couplings."""

from pyro_flows.transforms import AdditiveCoupling, AffineCoupling

from . import Case

CASES = [
    Case("additive-coupling-d2", lambda: AdditiveCoupling(2, (8, 8)), 2),
    Case("additive-coupling-d5", lambda: AdditiveCoupling(5, (8,)), 5),
    Case("additive-coupling-d4-ctx3", lambda: AdditiveCoupling(4, (8,), context_dim=3), 4, 3),
    Case("affine-coupling-d2", lambda: AffineCoupling(2, (8, 8)), 2),
    Case("affine-coupling-d5-split3", lambda: AffineCoupling(5, (8,), split_dim=3), 5),
    Case("affine-coupling-d3-ctx2", lambda: AffineCoupling(3, (8, 8), context_dim=2), 3, 2),
]
