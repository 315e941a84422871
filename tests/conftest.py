"""Fixtures shared by the test packages."""

from __future__ import annotations

from collections.abc import Iterator

import pytest


@pytest.fixture
def svg_backend() -> Iterator[None]:
    """The user chose matplotlib's svg backend; it is restored after the test (the figure
    functions must neither switch it nor leave pyplot figures open)."""
    import matplotlib
    import matplotlib.pyplot as plt

    before = matplotlib.get_backend()
    plt.switch_backend("svg")
    try:
        yield
    finally:
        plt.close("all")
        plt.switch_backend(before)
