"""Harness cases: the unit lower-triangular linear map."""

from pyro_flows.transforms import UnitLowerTriangular

from . import Case

# (D = 1 is the fixed identity, with no parameter: the harness's training checks do not apply)
CASES = [
    Case("unit-lower-d2", lambda: UnitLowerTriangular(2), 2, lower_triangular=True),
    Case("unit-lower-d5", lambda: UnitLowerTriangular(5), 5, lower_triangular=True),
]
