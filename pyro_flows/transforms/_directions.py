"""Which direction of an autoregressive layer is the one-pass direction.

An autoregressive layer defines ``_one_pass(u, context)`` (``v`` and ``log|dv/du|`` from one
conditioner pass on ``u``) and ``_solve(v, context)`` (``u`` and ``log|du/dv|`` by ``D``
sequential passes). These mixins wire them to the two directions:

- :class:`DensityInOnePass` (MAF): data -> base is one pass, sampling is sequential;
- :class:`SamplingInOnePass` (IAF): base -> data is one pass, density is sequential.

Put the mixin first in the bases, e.g. ``class MaskedAutoregressive(DensityInOnePass, Base)``.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor


class DensityInOnePass:
    """MAF direction: ``inverse_and_log_det`` is ``_one_pass`` on the data side."""

    def forward_and_log_det(
        self: Any, x: Tensor, context: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        x, context = self._prepare_shared_context(x, context, "x")
        return self._solve(x, context)

    def inverse_and_log_det(
        self: Any, y: Tensor, context: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        y, context = self._prepare_shared_context(y, context, "y")
        return self._one_pass(y, context)

    def forward_log_det(self: Any, x: Tensor, y: Tensor, context: Tensor | None = None) -> Tensor:
        """Given both ends, read the parameters from ``y`` in one pass."""
        return -self.inverse_and_log_det(y, context)[1]


class SamplingInOnePass:
    """IAF direction: ``forward_and_log_det`` is ``_one_pass`` on the base side."""

    def forward_and_log_det(
        self: Any, x: Tensor, context: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        x, context = self._prepare_shared_context(x, context, "x")
        return self._one_pass(x, context)

    def inverse_and_log_det(
        self: Any, y: Tensor, context: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        y, context = self._prepare_shared_context(y, context, "y")
        return self._solve(y, context)
