"""Layers whose few parameters are their own, or, given a context, the output of a small MLP on
the context (a hypernetwork): planar and radial flows.

The shared part: the hypernetwork (its output bias set to the unconditional initial values, so
both kinds start alike), the two directions as closed-form maps of the parameters, and the
context read once per context row (:meth:`~FlowTransform._prepare_shared_context`).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from ..nn.mlp import MLP
from .base import FlowTransform

Map = Callable[..., tuple[Tensor, Tensor]]


class HyperParametrised(FlowTransform):
    """Base of :class:`~pyro_flows.transforms.Planar` and :class:`~pyro_flows.transforms.Radial`.

    Subclasses set ``forward_map`` and ``inverse_map`` (``(value, *params) -> (value, log_det)``)
    and define ``_params(context)``; ``hidden_dims`` is the hypernetwork's hidden sizes.
    """

    forward_map: Map
    inverse_map: Map
    hidden_dims: tuple[int, ...]

    def _params(self, context: Tensor | None) -> tuple[Tensor, ...]:
        raise NotImplementedError

    def _hypernet(self, initial: Tensor) -> MLP:
        """An MLP context -> raw parameters whose output starts at ``initial`` (zero last
        weights would be the identity's job; here its bias carries the initial values)."""
        net = MLP(0, self.hidden_dims, initial.numel(), context_dim=self.context_dim)
        last = net.net[-1]
        assert isinstance(last, nn.Linear)
        with torch.no_grad():
            last.bias.copy_(initial)
        return net

    def forward_and_log_det(
        self, x: Tensor, context: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        x, context = self._prepare_shared_context(x, context, "x")
        return type(self).forward_map(x, *self._params(context))

    def inverse_and_log_det(
        self, y: Tensor, context: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        y, context = self._prepare_shared_context(y, context, "y")
        return type(self).inverse_map(y, *self._params(context))

    def extra_repr(self) -> str:
        extra = super().extra_repr()
        if self.context_dim is not None:
            extra += f", hidden_dims={self.hidden_dims}"
        return extra
