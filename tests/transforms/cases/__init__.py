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
    :param data_bounds: the data side is the open box ``(lo, hi)`` in every coordinate.
    :param event_shape: the event shape of the input (base side), default ``(input_dim,)``;
        image layers use ``(C, H, W)``.
    :param output_shape: the event shape of the output (data side), default ``event_shape``
        (differs for squeezes).
    :param discrete: the layer rounds (integer discrete flows): its outputs are piecewise
        constant in the parameters, so "a small optimiser step changes the output" does not apply.
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
    event_shape: tuple[int, ...] | None = None
    output_shape: tuple[int, ...] | None = None
    discrete: bool = False

    @property
    def shape(self) -> tuple[int, ...]:
        """The input (base-side) event shape."""
        return self.event_shape if self.event_shape is not None else (self.input_dim,)

    @property
    def out_shape(self) -> tuple[int, ...]:
        """The output (data-side) event shape."""
        return self.output_shape if self.output_shape is not None else self.shape


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
