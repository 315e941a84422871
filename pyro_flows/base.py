r"""Base distributions for flows, as modules so that ``.to()`` and ``state_dict`` carry them.

A base is an ``nn.Module`` whose call ``base(context)`` returns a
``torch.distributions.Distribution`` with event shape ``(input_dim,)``. The context lets a base be
conditional (its location and scale from an encoder, as in amortized inference).
"""

from __future__ import annotations

import math

import pyro.distributions as dist
import torch
from torch import Tensor, nn
from torch.distributions import Distribution

from ._validation import check_positive_int


class StandardNormal(nn.Module):
    r"""The standard Normal :math:`\mathcal{N}(0, I_D)` with its tensors as buffers.

    Example::

        >>> StandardNormal(2)().sample((3,)).shape
        torch.Size([3, 2])
    """

    def __init__(self, input_dim: int) -> None:
        super().__init__()
        self.input_dim = check_positive_int(input_dim, "input_dim")
        self.register_buffer("loc", torch.zeros(input_dim))
        self.register_buffer("scale", torch.ones(input_dim))

    @property
    def event_shape(self) -> torch.Size:
        return torch.Size([self.input_dim])

    def forward(self, context: Tensor | None = None) -> Distribution:
        return dist.Normal(self.loc, self.scale, validate_args=False).to_event(1)

    def log_prob(self, z: Tensor, context: Tensor | None = None) -> Tensor:
        r"""Fast path: :math:`-\tfrac12 \|z\|^2 - \tfrac{D}{2} \log 2\pi` (two kernels)."""
        return z.square().sum(-1).mul(-0.5) - 0.5 * self.input_dim * math.log(2 * math.pi)


class DistributionBase(nn.Module):
    """Wraps a fixed ``torch.distributions.Distribution`` so ``.to()`` moves its tensors.

    The distribution's tensor arguments (those listed in ``arg_constraints``) become buffers and
    the distribution is rebuilt from them on each call; ``Independent`` wrappers are kept.
    """

    def __init__(self, distribution: Distribution) -> None:
        super().__init__()
        if not isinstance(distribution, Distribution):
            raise TypeError(
                "base must be a torch Distribution or an nn.Module returning one, got "
                f"{type(distribution).__name__}"
            )
        self.reinterpreted = 0
        inner = distribution
        while isinstance(inner, torch.distributions.Independent):
            self.reinterpreted += inner.reinterpreted_batch_ndims
            inner = inner.base_dist
        self.kind = type(inner)
        self.arg_names: list[str] = []
        for name in inner.arg_constraints:
            value = inner.__dict__.get(name)
            if isinstance(value, Tensor):
                self.register_buffer(f"arg_{name}", value.detach().clone())
                self.arg_names.append(name)
        try:
            rebuilt = self()
        except Exception as error:  # noqa: BLE001 - report any rebuild failure the same way
            raise TypeError(
                f"cannot use {type(distribution).__name__} as a flow base: it could not be "
                f"rebuilt from its parameters ({error}); pass an nn.Module returning it instead"
            ) from error
        if rebuilt.event_shape != distribution.event_shape:
            raise TypeError("base distribution could not be rebuilt with the same event shape")
        self.event_shape = distribution.event_shape

    def forward(self, context: Tensor | None = None) -> Distribution:
        kwargs = {name: getattr(self, f"arg_{name}") for name in self.arg_names}
        d = self.kind(**kwargs)
        if self.reinterpreted:
            d = torch.distributions.Independent(d, self.reinterpreted)
        return d


def as_base(base: Distribution | nn.Module | None, input_dim: int | None) -> nn.Module:
    """Turn ``base`` (``None``, a distribution, or a module) into a base module."""
    if base is None:
        if input_dim is None:
            raise ValueError("cannot infer input_dim for the default base: pass base= explicitly")
        return StandardNormal(input_dim)
    if isinstance(base, nn.Module):
        return base
    return DistributionBase(base)
