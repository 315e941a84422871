r"""``Flow``: a base distribution pushed through transforms, as one ``nn.Module``.

.. math::

    x = f_K \circ \dots \circ f_1(z), \quad z \sim p_Z, \qquad
    \log q(x) = \log p_Z(z) - \sum_{k=1}^{K} \log\left|\det \frac{\partial f_k}{\partial z_{k-1}}
    \right|.

``log_prob`` walks data -> base through each layer's inverse; ``rsample_and_log_prob`` walks
base -> data once, summing forward log-dets, and never calls an inverse. Calling the flow returns
a fresh Pyro distribution built for that call, so nothing stale survives an optimiser step.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from itertools import chain

import torch
from torch import Tensor, nn
from torch.distributions import Distribution, Transform

from ._validation import as_tensor, check_context, check_event
from .base import as_base
from .transforms.base import FlowTransform
from .transforms.wrapped import WrappedTransform

SampleShape = Sequence[int] | torch.Size | int


def _as_size(sample_shape: SampleShape) -> torch.Size:
    if isinstance(sample_shape, int):
        return torch.Size([sample_shape])
    try:
        return torch.Size(sample_shape)
    except TypeError:
        raise TypeError(
            f"sample_shape must be an int or a sequence of ints, got {sample_shape!r}"
        ) from None


class Flow(nn.Module):
    r"""A normalizing flow: base distribution + ordered transforms (base -> data).

    :param transforms: transforms in the sampling order (base -> data). pyro_flows transforms are
        used directly; other ``torch.distributions`` / Pyro transforms on vectors are wrapped.
    :param base: base distribution: ``None`` (standard Normal), a ``Distribution``, or an
        ``nn.Module`` whose call ``base(context)`` returns one.
    :param context_dim: context size; inferred from the conditional transforms when omitted.

    Shapes: with context of shape ``(*B, C)`` and ``sample_shape`` ``S``, samples have shape
    ``(*S, *B, D)``; ``log_prob(x, context)`` broadcasts ``x.shape[:-1]`` against ``B``.

    Example::

        >>> from pyro_flows import flows
        >>> flow = flows.maf(2, num_transforms=3, hidden_dims=(16,))
        >>> x = flow.sample((5,))
        >>> flow.log_prob(x).shape
        torch.Size([5])
        >>> d = flow()  # a Pyro distribution, usable in pyro.sample
        >>> d.event_shape
        torch.Size([2])
    """

    def __init__(
        self,
        transforms: Iterable[Transform],
        base: Distribution | nn.Module | None = None,
        context_dim: int | None = None,
    ) -> None:
        super().__init__()
        transforms = list(transforms)
        flow_dims = {t.input_dim for t in transforms if isinstance(t, FlowTransform)}
        base_module = as_base(base, min(flow_dims) if flow_dims else None)
        base_event = getattr(base_module, "event_shape", None)
        if base_event is None:
            base_event = base_module(None).event_shape
        if len(base_event) != 1:
            raise ValueError(
                f"Flow needs a base with event shape (input_dim,), got {tuple(base_event)}"
            )
        self.input_dim = int(base_event[0])
        if flow_dims - {self.input_dim}:
            raise ValueError(
                f"all transforms must act on input_dim={self.input_dim} (the base event size), "
                f"got input_dims {sorted(flow_dims)}"
            )
        layers = [
            t if isinstance(t, FlowTransform) else WrappedTransform(t, self.input_dim)
            for t in transforms
        ]
        dims = {t.context_dim for t in layers if t.context_dim is not None}
        if len(dims) > 1:
            raise ValueError(f"conditional transforms disagree on context_dim: {sorted(dims)}")
        inferred = dims.pop() if dims else None
        if context_dim is not None and inferred is not None and context_dim != inferred:
            raise ValueError(
                f"context_dim={context_dim} but the transforms were built with "
                f"context_dim={inferred}"
            )
        self.context_dim = context_dim if context_dim is not None else inferred
        self.transforms = nn.ModuleList(layers)
        self.base = base_module

    # -- checks -------------------------------------------------------------------------------
    def _reference(self) -> Tensor | None:
        return next(chain(self.parameters(), self.buffers()), None)

    def _check_like_flow(self, value: Tensor, name: str) -> None:
        ref = self._reference()
        if ref is None:
            return
        if value.dtype != ref.dtype or value.device != ref.device:
            raise TypeError(
                f"Flow lives on {ref.device} with dtype {ref.dtype}, but {name} is on "
                f"{value.device} with dtype {value.dtype}: convert with "
                f"{name}.to(device={str(ref.device)!r}, dtype={ref.dtype}) or move the flow"
            )

    def _check_context(self, context: object) -> Tensor | None:
        if context is not None:
            context = as_tensor(context, "context", self._reference())
            self._check_like_flow(context, "context")
        return check_context(context, self.context_dim, "Flow")  # type: ignore[arg-type]

    def _check_x(self, x: object) -> Tensor:
        x_t = as_tensor(x, "x", self._reference())
        check_event(x_t, self.input_dim, "x", "Flow")
        self._check_like_flow(x_t, "x")
        if not bool(torch.isfinite(x_t).all()):
            bad = (~torch.isfinite(x_t)).reshape(-1, self.input_dim).any(-1).nonzero().flatten()
            raise ValueError(
                f"Flow.log_prob got non-finite values in {bad.numel()} row(s) of x "
                f"(flat row indices {bad[:10].tolist()}{'...' if bad.numel() > 10 else ''})"
            )
        return x_t

    def base_dist(self, context: Tensor | None = None) -> Distribution:
        """The base distribution for ``context`` (batch shape ``context.shape[:-1]``)."""
        d = self.base(context)
        if d.event_shape != (self.input_dim,):
            raise ValueError(
                f"base returned event shape {tuple(d.event_shape)}, expected ({self.input_dim},)"
            )
        if context is not None and d.batch_shape != context.shape[:-1]:
            d = d.expand(torch.broadcast_shapes(d.batch_shape, context.shape[:-1]))
        return d

    # -- the two directions ---------------------------------------------------------------------
    def log_prob(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        """``log q(x | context)`` by the inverse pass (data -> base); shape ``x.shape[:-1]``
        broadcast with the context's batch shape."""
        x = self._check_x(x)
        context = self._check_context(context)
        z, log_det = x, None
        for t in reversed(self.transforms):
            z, ld = t.inverse_and_log_det(z, context if t.context_dim else None)
            log_det = ld if log_det is None else log_det + ld
        log_q = self._base_log_prob(z, context)
        return log_q if log_det is None else log_q + log_det

    def _base_log_prob(self, z: Tensor, context: Tensor | None) -> Tensor:
        fast = getattr(self.base, "log_prob", None)
        if fast is not None:
            log_q = fast(z, context)
            if context is not None:
                log_q = log_q.expand(torch.broadcast_shapes(log_q.shape, context.shape[:-1]))
            return log_q
        return self.base_dist(context).log_prob(z)

    def rsample_and_log_prob(
        self, sample_shape: SampleShape = (), context: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        """Reparametrised samples and their log density in one base -> data pass (no inverse)."""
        context = self._check_context(context)
        d = self.base_dist(context)
        z = d.rsample(_as_size(sample_shape))
        log_q = self._base_log_prob(z, context)
        x = z
        for t in self.transforms:
            x, ld = t.forward_and_log_det(x, context if t.context_dim else None)
            log_q = log_q - ld
        return x, log_q

    def rsample(self, sample_shape: SampleShape = (), context: Tensor | None = None) -> Tensor:
        """Reparametrised samples of shape ``(*sample_shape, *B, D)`` (no log-dets computed)."""
        context = self._check_context(context)
        x = self.base_dist(context).rsample(_as_size(sample_shape))
        for t in self.transforms:
            x = t.forward_without_log_det(x, context if t.context_dim else None)
        return x

    @torch.no_grad()
    def sample(self, sample_shape: SampleShape = (), context: Tensor | None = None) -> Tensor:
        """Samples without gradient, shape ``(*sample_shape, *B, D)``."""
        return self.rsample(sample_shape, context)

    def forward(self, context: Tensor | None = None) -> Distribution:
        """A fresh Pyro distribution for ``context`` (batch shape ``context.shape[:-1]``)."""
        from .distribution import FlowDistribution

        return FlowDistribution(self, self._check_context(context))

    def extra_repr(self) -> str:
        return f"input_dim={self.input_dim}, context_dim={self.context_dim}"
