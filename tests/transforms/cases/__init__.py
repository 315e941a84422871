"""Registry of transform cases for the shared harness (tests/transforms/test_harness.py).

Each family has its own module here exposing ``CASES: list[Case]``; a new transform joins the
harness by adding a line to its family's module.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass

from torch import Tensor

from pyro_flows.transforms.base import FlowTransform


@dataclass(frozen=True)
class Case:
    """One transform configuration the harness checks.

    :param id: test id.
    :param make: builds the transform (the harness seeds the RNG before calling it).
    :param input_dim: event size.
    :param context_dim: context size for conditional layers.
    :param lower_triangular: the Jacobian dy/dx is lower triangular (autoregressive layers).
    :param batch_statistics: train mode uses batch statistics (BatchNorm): the exactness checks
        run in eval mode after a few train-mode passes have set the running statistics.
    :param prepare: called once as ``prepare(transform, data)`` with data-side samples before the
        checks (ActNorm's data-dependent initialisation).
    :param inverse_atol: absolute tolerance of the round trip (numerical inverses).
    """

    id: str
    make: Callable[[], FlowTransform]
    input_dim: int
    context_dim: int | None = None
    lower_triangular: bool = False
    batch_statistics: bool = False
    prepare: Callable[[FlowTransform, Tensor], None] | None = None
    inverse_atol: float = 1e-8
    data_bounds: tuple[float, float] | None = None


def all_cases() -> list[Case]:
    """Every ``CASES`` entry of every module in this package."""
    cases: list[Case] = []
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        module = importlib.import_module(f"{__name__}.{info.name}")
        cases.extend(module.CASES)
    ids = [c.id for c in cases]
    duplicates = {i for i in ids if ids.count(i) > 1}
    if duplicates:
        raise ValueError(f"duplicate harness case ids: {sorted(duplicates)}")
    return cases
