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

import math
from collections.abc import Iterable

import torch
from torch import Tensor, nn
from torch.distributions import Distribution, Transform

from ._validation import (
    SampleShape,
    all_finite,
    as_tensor,
    check_context,
    check_event,
    check_sample_shape,
    checked_context,
    compiling,
)
from .base import StandardNormal, as_base
from .distribution import FlowDistribution
from .transforms.base import FlowTransform
from .transforms.wrapped import WrappedTransform


def _event_shape(t: FlowTransform) -> torch.Size:
    """The event shape a pyro_flows transform acts on: ``(input_dim,)`` for vector layers."""
    shape = getattr(t, "event_shape", None)
    return torch.Size(shape) if shape is not None else torch.Size([t.input_dim])


def _as_size(sample_shape: SampleShape) -> torch.Size:
    """``sample_shape`` as a ``torch.Size`` (see :func:`~pyro_flows._validation.check_sample_shape`:
    ints ``>= 0`` only, a clear error otherwise)."""
    return check_sample_shape(sample_shape)


def _first_tensor(module: nn.Module, kind: str, seen: set[int]) -> Tensor | None:
    """The first tensor of ``module``'s ``kind`` (``"_parameters"`` or ``"_buffers"``) in the
    order of ``module.parameters()``/``buffers()`` (the module's own, then each submodule's,
    depth first, each submodule once), or ``None``."""
    seen.add(id(module))
    for t in getattr(module, kind).values():
        if t is not None:
            return t
    for child in module._modules.values():
        if child is not None and id(child) not in seen:
            found = _first_tensor(child, kind, seen)
            if found is not None:
                return found
    return None


class FlowOverflowError(ValueError):
    """:meth:`Flow.log_prob` of finite data overflowed the dtype (the rows are named in the
    message). A ``ValueError``, as before it had a class of its own; training loops catch it as
    a non-finite loss (a diverged flow), and keep the last good parameters.

    >>> import torch
    >>> from pyro_flows import flows
    >>> flow = flows.maf(1, num_transforms=1, hidden_dims=(4,))
    >>> try:
    ...     flow.log_prob(torch.tensor([[1e30]]))
    ... except FlowOverflowError as error:
    ...     print(str(error)[:40])
    Flow.log_prob: 1 row(s) of x (flat row i
    """


def _overflow_error(x: Tensor, z: Tensor, log_det: Tensor | None,
                    log_q: Tensor) -> FlowOverflowError:
    """The error for finite data whose log density overflowed the dtype (see
    :meth:`Flow.base_and_log_prob`), naming the rows, how far out they went and what to do."""
    bad = (~torch.isfinite(log_q)).flatten().nonzero().flatten()
    more = "..." if bad.numel() > 10 else ""
    if not all_finite(z):
        reason = "overflowed to non-finite values in the base space"
    elif log_det is not None and not all_finite(log_det):
        reason = "gave a non-finite log-determinant"
    else:
        reason = (
            f"reached |z| = {float(z.detach().abs().max()):.3g} in the base space, where the "
            f"base log density is below the smallest {z.dtype} ({-torch.finfo(z.dtype).max:.3g})"
        )
    return FlowOverflowError(
        f"Flow.log_prob: {bad.numel()} row(s) of x (flat row indices {bad[:10].tolist()}{more}, "
        f"largest |x| {float(x.detach().abs().max()):.3g}) lie too far out for {x.dtype}: the "
        f"inverse pass {reason}. Score them in float64 (flow.double()) or bring the data to the "
        "scale the flow was trained on"
    )


class Flow(nn.Module):
    r"""A normalizing flow: base distribution + ordered transforms (base -> data).

    :param transforms: transforms in the sampling order (base -> data). pyro_flows transforms are
        used directly; other ``torch.distributions`` / Pyro transforms on vectors are wrapped.
    :param base: base distribution: ``None`` (standard Normal), a ``Distribution``, or an
        ``nn.Module`` whose call ``base(context)`` returns one.
    :param context_dim: context size; inferred from the conditional transforms when omitted.

    Shapes: with context of shape ``(*B, C)`` and ``sample_shape`` ``S``, samples have shape
    ``(*S, *B, D)``; ``log_prob(x, context)`` broadcasts ``x.shape[:-1]`` against ``B``.
    Image flows (built from :mod:`pyro_flows.transforms.image` layers, e.g. by
    ``flows.glow``) have events of shape ``(C, H, W)`` instead of ``(D,)`` (``event_shape``;
    ``input_dim`` is then :math:`D = CHW`), and every shape above ends in ``(C, H, W)``.

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
        if isinstance(transforms, (str, bytes, Transform)) or not isinstance(transforms, Iterable):
            raise TypeError(
                "Flow transforms must be a list (or other iterable) of torch.distributions "
                f"Transforms, got {type(transforms).__name__}"
            )
        transforms = list(transforms)
        for i, t in enumerate(transforms):
            if not isinstance(t, Transform):
                raise TypeError(
                    f"Flow transforms must be torch.distributions Transforms, got "
                    f"{type(t).__name__} at position {i}"
                )
        shapes = []
        for i, t in enumerate(transforms):
            if not isinstance(t, FlowTransform):
                continue
            shape = _event_shape(t)
            out = getattr(t, "output_shape", shape)
            if torch.Size(out) != shape:
                raise ValueError(
                    f"transform {i} ({type(t).__name__}) maps event shape {tuple(shape)} to "
                    f"{tuple(out)}: every layer of a Flow keeps one event shape (put squeezes "
                    "inside pyro_flows.transforms.image.MultiScale)"
                )
            shapes.append(shape)
        default = min(shapes, key=lambda s: (len(s), math.prod(s))) if shapes else None
        if default is not None and len(default) == 1:
            default_arg: int | torch.Size | None = default[0]
        else:
            default_arg = default
        base_module = as_base(base, default_arg)
        base_event = getattr(base_module, "event_shape", None)
        if base_event is None:
            base_event = base_module(None).event_shape
        base_event = torch.Size(base_event)
        if len(base_event) not in (1, 3):
            raise ValueError(
                "Flow needs a base with event shape (input_dim,) (vectors) or (C, H, W) "
                f"(images), got {tuple(base_event)}"
            )
        self.event_shape = base_event
        self.input_dim = math.prod(base_event)
        if {s for s in shapes} - {base_event}:
            if len(base_event) == 1 and all(len(s) == 1 for s in shapes):
                dims = sorted({math.prod(s) for s in shapes})
                raise ValueError(
                    f"all transforms must act on input_dim={self.input_dim} (the base event "
                    f"size), got input_dims {dims}"
                )
            raise ValueError(
                f"all transforms must act on the base's event shape {tuple(base_event)}, got "
                f"event shapes {sorted({tuple(s) for s in shapes})}"
            )
        if len(base_event) > 1 and not all(isinstance(t, FlowTransform) for t in transforms):
            bad = next(t for t in transforms if not isinstance(t, FlowTransform))
            raise TypeError(
                f"image flows take pyro_flows transforms only (event shape "
                f"{tuple(base_event)}), got {type(bad).__name__}"
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
        """The flow's first parameter (else first buffer, else ``None``): the tensor whose dtype
        and device inputs must match. The first of ``chain(self.parameters(), self.buffers())``,
        found by a walk over ``_parameters``/``_buffers``/``_modules`` that TorchDynamo traces
        (``parameters()`` hashes every submodule, which breaks the graph at Pyro's
        ``TransformModule.__hash__``) and that stops at the first hit."""
        first = _first_tensor(self, "_parameters", set())
        return first if first is not None else _first_tensor(self, "_buffers", set())

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
        if len(self.event_shape) == 1:
            check_event(x_t, self.input_dim, "x", "Flow")
        elif x_t.dim() < len(self.event_shape) or x_t.shape[-3:] != self.event_shape:
            dims = ", ".join(map(str, self.event_shape))
            raise ValueError(
                f"Flow expected x of shape (..., {dims}) (event shape {tuple(self.event_shape)}), "
                f"got shape {tuple(x_t.shape)}"
            )
        self._check_like_flow(x_t, "x")
        if not compiling() and not all_finite(x_t):
            bad = (~torch.isfinite(x_t)).reshape(-1, self.input_dim).any(-1).nonzero().flatten()
            raise ValueError(
                f"Flow.log_prob got non-finite values in {bad.numel()} row(s) of x "
                f"(flat row indices {bad[:10].tolist()}{'...' if bad.numel() > 10 else ''})"
            )
        return x_t

    def base_dist(self, context: Tensor | None = None) -> Distribution:
        """The base distribution for ``context`` (batch shape ``context.shape[:-1]``)."""
        d = self.base(context)
        if d.event_shape != self.event_shape:
            raise ValueError(
                f"base returned event shape {tuple(d.event_shape)}, expected "
                f"{tuple(self.event_shape)}"
            )
        if context is not None and d.batch_shape != context.shape[:-1]:
            d = d.expand(torch.broadcast_shapes(d.batch_shape, context.shape[:-1]))
        return d

    # -- the two directions ---------------------------------------------------------------------
    def log_prob(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        """``log q(x | context)`` by the inverse pass (data -> base); shape ``x.shape[:-1]``
        broadcast with the context's batch shape. Traces as one graph under ``torch.compile``,
        where only shapes and dtypes are checked (see :meth:`base_and_log_prob`)."""
        return self.base_and_log_prob(x, context)[1]

    def base_and_log_prob(
        self, x: Tensor, context: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        r"""The base point :math:`z = f^{-1}(x)` and :math:`\log q(x \mid c)` from one inverse
        pass (data -> base):

        .. math::

            \log q(x \mid c) = \log p_Z(f^{-1}(x) \mid c)
                + \log\left|\det \frac{\partial f^{-1}(x)}{\partial x}\right|.

        ``log_prob`` is its second half; the first is what
        :func:`~pyro_flows.infer.distill.distill`'s ``"sampling_map"`` objective regresses on.

        :raises ValueError: ``x`` or ``context`` of the wrong shape or with NaN/inf entries; or
            finite ``x`` so far out that the log density overflows the dtype (the inverse pass
            reaches non-finite values, or, with the standard-normal base,
            :math:`|z|^2/2` exceeds the dtype's largest number: about :math:`|z| > 2.6 \cdot
            10^{19}` in float32). Such a point never gets a NaN or ``-inf``; float64 scores it.
            A base with bounded support keeps its ``-inf`` (zero density) at finite ``z``.
            Compiled calls (``torch.compile``) check shapes and dtypes, not values: the
            finiteness and overflow checks read values back to the host and would break the
            graph, so they run in eager calls only (see
            :func:`pyro_flows._validation.compiling`); a NaN given to a compiled call comes
            back as NaN.

        Example::

            >>> from pyro_flows import flows
            >>> flow = flows.realnvp(2, num_transforms=2, hidden_dims=(8,))
            >>> x = flow.sample((4,))
            >>> z, log_q = flow.base_and_log_prob(x)
            >>> torch.allclose(log_q, flow.log_prob(x)) and z.shape == x.shape
            True

        References: L. Dinh, J. Sohl-Dickstein, S. Bengio, *Density estimation using Real NVP*,
        ICLR 2017 (the change of variables).
        """
        x = self._check_x(x)
        context = self._check_context(context)
        z, log_det = x, None
        with checked_context(context):
            for t in reversed(self.transforms):
                z, ld = t.inverse_and_log_det(z, context if t.context_dim else None)
                if not t.zero_log_det:  # (a zero adds nothing: permutations, unit-triangular)
                    log_det = ld if log_det is None else log_det + ld
        log_q = self._base_log_prob(z, context)
        log_q = log_q if log_det is None else log_q + log_det
        if not compiling() and not all_finite(log_q) and self._overflowed(z, log_det, log_q):
            raise _overflow_error(x, z, log_det, log_q)
        return z, log_q

    def _overflowed(self, z: Tensor, log_det: Tensor | None, log_q: Tensor) -> bool:
        """Whether a non-finite ``log_q`` of finite data is a floating-point overflow rather
        than a density of zero (a ``-inf`` from a base with bounded support at a finite,
        in-range ``z``, which is returned as it is)."""
        if bool(log_q.isnan().any()) or not all_finite(z):
            return True
        if log_det is not None and not all_finite(log_det):
            return True
        # positive everywhere: -inf is overflow (StandardNormal, and bases that say so)
        return isinstance(self.base, StandardNormal) or bool(
            getattr(self.base, "positive_everywhere", False)
        )

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
        """Reparametrised samples and their log density in one base -> data pass (no inverse);
        layers whose log-determinant is zero everywhere (``zero_log_det``: permutations,
        unit-triangular maps) are run without it.

        Under ``torch.compile`` this traces as one graph: compiled calls check shapes and
        dtypes, not values (the context's finiteness check is skipped; see
        :func:`pyro_flows._validation.compiling`)."""
        context = self._check_context(context)
        d = self.base_dist(context)
        self._check_reparametrized(d)
        z = d.rsample(_as_size(sample_shape))
        log_q = self._base_log_prob(z, context)
        x = z
        with checked_context(context):
            for t in self.transforms:
                if t.zero_log_det:  # permutations, unit-triangular maps: nothing to subtract
                    x = t.forward_without_log_det(x, context if t.context_dim else None)
                    continue
                x, ld = t.forward_and_log_det(x, context if t.context_dim else None)
                log_q = log_q - ld
        return x, log_q

    def rsample(self, sample_shape: SampleShape = (), context: Tensor | None = None) -> Tensor:
        """Reparametrised samples of shape ``(*sample_shape, *B, *event_shape)`` (no log-dets
        computed). One graph under ``torch.compile`` (shapes checked, not values)."""
        context = self._check_context(context)
        d = self.base_dist(context)
        self._check_reparametrized(d)
        return self._push(d.rsample(_as_size(sample_shape)), context)

    def _push(self, x: Tensor, context: Tensor | None) -> Tensor:
        """Base -> data through every layer; ``context`` was checked by the caller."""
        with checked_context(context):
            for t in self.transforms:
                x = t.forward_without_log_det(x, context if t.context_dim else None)
        return x

    @staticmethod
    def _check_reparametrized(d: Distribution) -> None:
        if not d.has_rsample:
            raise NotImplementedError(
                f"the base distribution ({type(d).__name__}) has no reparametrised sampler "
                "(a discrete base, e.g. an integer discrete flow): use flow.sample"
            )

    @torch.no_grad()
    def sample(self, sample_shape: SampleShape = (), context: Tensor | None = None) -> Tensor:
        """Samples without gradient, shape ``(*sample_shape, *B, *event_shape)``; works for
        discrete bases too (integer discrete flows return integers). One graph under
        ``torch.compile`` (shapes checked, not values)."""
        context = self._check_context(context)
        d = self.base_dist(context)
        shape = _as_size(sample_shape)
        return self._push(d.rsample(shape) if d.has_rsample else d.sample(shape), context)

    def forward(self, context: Tensor | None = None) -> Distribution:
        """A fresh Pyro distribution for ``context`` (batch shape ``context.shape[:-1]``)."""
        return FlowDistribution(self, self._check_context(context))

    def extra_repr(self) -> str:
        if len(self.event_shape) > 1:
            return f"event_shape={tuple(self.event_shape)}, context_dim={self.context_dim}"
        return f"input_dim={self.input_dim}, context_dim={self.context_dim}"
