"""Harness cases: the elementwise sinh-arcsinh layer (tail power and skew)."""

from pyro_flows.transforms import SinhArcsinh

from . import Case

CASES = [
    Case("sinh-arcsinh-d1", lambda: SinhArcsinh(1), 1, lower_triangular=True),
    Case("sinh-arcsinh-d4", lambda: SinhArcsinh(4), 4, lower_triangular=True),
]
