r"""Base distributions for flows, as modules so that ``.to()`` and ``state_dict`` carry them.

A base is an ``nn.Module`` whose call ``base(context)`` returns a
``torch.distributions.Distribution`` with event shape ``(input_dim,)`` (vector flows) or
``(C, H, W)`` (image flows). The context lets a base be
conditional (its location and scale from an encoder, as in amortized inference).

Where the distributions live: this module holds the base protocol's fixed pieces
(:class:`StandardNormal`, :class:`DistributionBase`, :func:`as_base`); the trainable and special
bases (diagonal Normal, Gaussian mixture, Student-t, discretised logistic) are in the package
:mod:`pyro_flows.distributions`, and the distribution a flow returns per call is
:class:`~pyro_flows.distribution.FlowDistribution` (module :mod:`pyro_flows.distribution`).
:mod:`pyro_flows.distributions` re-exports the three names here and ``FlowDistribution``, so it
is the one place to import distributions from; the names stay importable from here too.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import pyro.distributions as dist
import torch
from torch import Tensor, nn
from torch.distributions import Distribution

from ._validation import check_positive_int


class StandardNormal(nn.Module):
    r"""The standard Normal :math:`\mathcal{N}(0, I_D)` with its tensors as buffers.

    :param input_dim: the event size ``D``, or an event shape such as ``(C, H, W)`` for image
        flows (then :math:`D = CHW` and the event shape is kept).

    Example::

        >>> StandardNormal(2)().sample((3,)).shape
        torch.Size([3, 2])
        >>> StandardNormal((1, 4, 4))().event_shape
        torch.Size([1, 4, 4])
    """

    def __init__(self, input_dim: int | Sequence[int]) -> None:
        super().__init__()
        if isinstance(input_dim, int) or not isinstance(input_dim, Sequence | torch.Size):
            shape: tuple[int, ...] = (check_positive_int(input_dim, "input_dim"),)
        else:
            shape = tuple(input_dim)
            if not shape:
                raise ValueError("StandardNormal needs a non-empty event shape, got ()")
            for i, d in enumerate(shape):
                check_positive_int(d, f"input_dim[{i}]")
        self.shape = torch.Size(shape)
        self.input_dim = math.prod(shape)
        self.register_buffer("loc", torch.zeros(shape))
        self.register_buffer("scale", torch.ones(shape))

    @property
    def event_shape(self) -> torch.Size:
        return self.shape

    def forward(self, context: Tensor | None = None) -> Distribution:
        return dist.Normal(self.loc, self.scale, validate_args=False).to_event(len(self.shape))

    def log_prob(self, z: Tensor, context: Tensor | None = None) -> Tensor:
        r"""Fast path: :math:`-\tfrac12 \|z\|^2 - \tfrac{D}{2} \log 2\pi` (two kernels)."""
        dims = tuple(range(-len(self.shape), 0))
        return z.square().sum(dims).mul(-0.5) - 0.5 * self.input_dim * math.log(2 * math.pi)


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


def as_base(
    base: Distribution | nn.Module | None, input_dim: int | Sequence[int] | None
) -> nn.Module:
    """Turn ``base`` (``None``, a distribution, or a module) into a base module; the default
    base is a :class:`StandardNormal` of size (or event shape) ``input_dim``."""
    if base is None:
        if input_dim is None:
            raise ValueError("cannot infer input_dim for the default base: pass base= explicitly")
        return StandardNormal(input_dim)
    if isinstance(base, nn.Module):
        return base
    return DistributionBase(base)
