r"""The base class every pyro_flows transform derives from.

A :class:`FlowTransform` is a Pyro :class:`~pyro.distributions.torch_transform.TransformModule`
(so it works in ``pyro.distributions.TransformedDistribution`` and registers its parameters like
any ``nn.Module``) that implements two methods, one per direction, each returning the output *and*
the log-determinant of that direction's own Jacobian:

.. math::

    (y, \log|\det \partial y/\partial x|) = \mathrm{forward\_and\_log\_det}(x)
    \qquad\text{(base} \to \text{data, sampling)}

    (x, \log|\det \partial x/\partial y|) = \mathrm{inverse\_and\_log\_det}(y)
    \qquad\text{(data} \to \text{base, density)}

so the inverse's log-det is minus the forward's at the matching point. Nothing is cached: every
call computes from the current parameters, so a result can never be stale after an optimiser step,
``load_state_dict`` or ``.to()``. Pyro's ``_call``, ``_inverse`` and ``log_abs_det_jacobian``
are derived from these two methods; subclasses override ``log_abs_det_jacobian`` when the
``y`` side is cheaper (MAF).

Conditional layers (built with ``context_dim``) take ``context`` of shape ``(*B, context_dim)``;
``.condition(context)`` binds one and returns a plain ``TransformModule`` (Pyro's
``ConditionalTransformModule`` protocol). Their inverse ``.inv`` is conditional too:
``layer.inv.condition(context)`` returns ``layer.condition(context).inv``, so
``pyro.distributions.ConditionalTransformedDistribution(base, [layer.inv])`` works as with Pyro's
own conditional transforms.

``sign`` (the sign of :math:`\det \partial y/\partial x`, which ``torch.distributions`` and
``torch.jit.trace`` read) is ``+1`` by default: a layer whose Jacobian determinant can be negative
(a permutation, a learnt linear map) overrides it.
"""

from __future__ import annotations

import torch
from pyro.distributions.conditional import ConditionalTransform, ConditionalTransformModule
from pyro.distributions.torch_transform import TransformModule
from torch import Tensor
from torch.distributions import constraints
from torch.distributions.transforms import Transform, _InverseTransform

from .._validation import (
    as_tensor,
    broadcast_batch,
    check_context,
    check_event,
    check_positive_int,
)


class FlowTransform(TransformModule, ConditionalTransformModule):
    """Base class: a bijection on vectors of size ``input_dim`` (``event_dim = 1``).

    :param input_dim: event size.
    :param context_dim: size of the context vector for conditional layers, or ``None``.
    """

    domain = constraints.real_vector
    codomain = constraints.real_vector
    bijective = True
    event_dim = 1
    #: ``True`` for layers whose log-determinant is zero everywhere, whatever their parameters
    #: (permutations, unit-triangular maps): :class:`~pyro_flows.Flow` skips adding it
    zero_log_det = False

    def __init__(self, input_dim: int, context_dim: int | None = None) -> None:
        super().__init__(cache_size=0)
        self.input_dim = check_positive_int(input_dim, "input_dim")
        self.context_dim = (
            None if context_dim is None else check_positive_int(context_dim, "context_dim")
        )

    # -- the two methods subclasses implement -------------------------------------------------
    def forward_and_log_det(
        self, x: Tensor, context: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        """Base -> data: return ``y`` and ``log|det dy/dx|`` of shape ``x.shape[:-1]``."""
        raise NotImplementedError

    def inverse_and_log_det(
        self, y: Tensor, context: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        """Data -> base: return ``x`` and ``log|det dx/dy|`` of shape ``y.shape[:-1]``."""
        raise NotImplementedError

    def forward_without_log_det(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        """Base -> data without the log-determinant (sampling); layers override it where
        skipping the log-det saves work."""
        return self.forward_and_log_det(x, context)[0]

    # -- helpers for subclasses ---------------------------------------------------------------
    def _as_input(self, x: object, name: str) -> Tensor:
        """``x`` as it is if a tensor; a NumPy array or list converted to the dtype and device
        of the layer's first parameter or buffer (as :meth:`pyro_flows.Flow.log_prob` does);
        ``TypeError`` for anything else."""
        if isinstance(x, Tensor):
            return x
        like = next(self.parameters(), None)
        if like is None:
            like = next(self.buffers(), None)
        if like is not None and not like.is_floating_point():
            like = None
        return as_tensor(x, name, like=like)

    def _prepare(
        self, x: Tensor, context: Tensor | None, name: str
    ) -> tuple[Tensor, Tensor | None]:
        """Validate ``x``/``context`` and broadcast them to one batch shape."""
        x = self._as_input(x, name)
        check_event(x, self.input_dim, name, type(self).__name__)
        context = check_context(context, self.context_dim, type(self).__name__)
        if context is not None:
            x, context = broadcast_batch(x, context)
        return x, context

    def _prepare_shared_context(
        self, x: Tensor, context: Tensor | None, name: str
    ) -> tuple[Tensor, Tensor | None]:
        """As :meth:`_prepare`, but only ``x`` is expanded to the joint batch shape: the context
        keeps its own (broadcastable) batch shape, so a conditioner that reads the context runs
        once per context row, not once per draw (``K`` draws per row at IWAE time)."""
        x = self._as_input(x, name)
        check_event(x, self.input_dim, name, type(self).__name__)
        context = check_context(context, self.context_dim, type(self).__name__)
        if context is not None:
            x = broadcast_batch(x, context)[0]  # (the expanded context is a view, dropped)
        return x, context

    # -- Pyro / torch.distributions glue -------------------------------------------------------
    @property
    def sign(self) -> int:
        r"""The sign of :math:`\det \partial y/\partial x`: ``+1`` for this layer.

        Constant over the whole domain (a diffeomorphism's Jacobian determinant never vanishes
        on a connected domain), so one number describes the layer. ``+1`` holds for every layer
        built from monotone elementwise maps, triangular Jacobians with a positive diagonal,
        planar/radial maps under their invertibility constraints and ODE flows; layers that can
        reverse the orientation (permutations, learnt linear maps) override it. Being defined,
        it also lets ``torch.jit.trace`` walk a module holding the layer (the tracer reads every
        attribute, and torch's default raises ``NotImplementedError``).
        """
        return 1

    @property
    def inv(self) -> InverseFlowTransform:
        """The inverse transform (data -> base), built once and kept (``t.inv.inv is t``).

        A conditional layer's inverse is conditional too: ``layer.inv.condition(context)``
        returns ``layer.condition(context).inv`` (Pyro's ``ConditionalTransformModule.inv``
        protocol), so ``ConditionalTransformedDistribution(base, [layer.inv])`` works."""
        inv = self._inv
        if inv is None:
            inv = InverseFlowTransform(self)
            self._inv = inv
        return inv  # type: ignore[return-value]

    def _bound_context(self) -> Tensor | None:
        if self.context_dim is not None:
            raise ValueError(
                f"{type(self).__name__} was built with context_dim={self.context_dim}: call "
                ".condition(context) first, or use it inside a Flow and pass context="
            )
        return None

    def _call(self, x: Tensor) -> Tensor:
        return self.forward_without_log_det(x, self._bound_context())

    def _inverse(self, y: Tensor) -> Tensor:
        return self.inverse_and_log_det(y, self._bound_context())[0]

    def log_abs_det_jacobian(self, x: Tensor, y: Tensor) -> Tensor:
        return self.forward_log_det(x, y, self._bound_context())

    def forward_log_det(self, x: Tensor, y: Tensor, context: Tensor | None = None) -> Tensor:
        """``log|det dy/dx|`` given both ends of the map; uses whichever end is cheaper.

        The default recomputes the forward pass from ``x``; MAF overrides it to use ``y``.
        """
        return self.forward_and_log_det(x, context)[1]

    def condition(self, context: Tensor) -> TransformModule:
        """Bind ``context`` (shape ``(*B, context_dim)``); unconditional layers return ``self``."""
        if self.context_dim is None:
            return self
        context = check_context(context, self.context_dim, type(self).__name__)
        return ConditionedTransform(self, context)

    def __repr__(self) -> str:
        return torch.nn.Module.__repr__(self)

    def extra_repr(self) -> str:
        extra = f"input_dim={self.input_dim}"
        if self.context_dim is not None:
            extra += f", context_dim={self.context_dim}"
        return extra


class ConditionedTransform(FlowTransform):
    """A conditional :class:`FlowTransform` with its context bound (from ``.condition``).

    Shares parameters with the layer it came from; holds the context by reference, not as a
    buffer, so it is meant to be built per call (as :class:`~pyro_flows.Flow` does).
    """

    def __init__(self, transform: FlowTransform, context: Tensor) -> None:
        super().__init__(transform.input_dim)
        self.transform = transform
        self.context = context

    def forward_and_log_det(
        self, x: Tensor, context: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        return self.transform.forward_and_log_det(x, self.context)

    def inverse_and_log_det(
        self, y: Tensor, context: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        return self.transform.inverse_and_log_det(y, self.context)

    def forward_without_log_det(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        return self.transform.forward_without_log_det(x, self.context)

    def forward_log_det(self, x: Tensor, y: Tensor, context: Tensor | None = None) -> Tensor:
        return self.transform.forward_log_det(x, y, self.context)

    @property
    def sign(self) -> int:
        """The sign of the conditioned layer's Jacobian determinant."""
        return self.transform.sign


class InverseFlowTransform(_InverseTransform, ConditionalTransform):
    """The inverse (``.inv``) of a :class:`FlowTransform`: torch's inverse transform, plus
    Pyro's conditional protocol.

    ``condition(context)`` returns the inverse of the conditioned layer,
    ``layer.condition(context).inv`` (for an unconditional layer: this inverse itself), so a
    conditional layer can be used in the data -> base direction in
    ``pyro.distributions.ConditionalTransformedDistribution``. Calling it unconditioned on a
    conditional layer raises the layer's "call .condition(context) first" ``ValueError``.

    Example::

        >>> import pyro.distributions as dist
        >>> from pyro_flows.transforms import MaskedAutoregressive
        >>> layer = MaskedAutoregressive(2, (8,), context_dim=3)
        >>> base = dist.Normal(torch.zeros(2), 1.0).to_event(1)
        >>> d = dist.ConditionalTransformedDistribution(base, [layer.inv])
        >>> d.condition(torch.zeros(3)).log_prob(torch.zeros(4, 2)).shape
        torch.Size([4])
    """

    def condition(self, context: Tensor) -> Transform:
        """The inverse of ``transform.condition(context)``."""
        assert self._inv is not None
        return self._inv.condition(context).inv  # type: ignore[attr-defined]


def zeros_log_det(x: Tensor) -> Tensor:
    """A zero log-determinant with the batch shape of ``x`` (event dim 1)."""
    return torch.zeros(x.shape[:-1], dtype=x.dtype, device=x.device)
