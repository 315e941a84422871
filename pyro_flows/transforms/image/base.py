r"""The base class of image transforms: bijections on events of shape ``(C, H, W)``.

An :class:`ImageTransform` is a :class:`~pyro_flows.transforms.base.FlowTransform` whose events
are images (``event_dim = 3``): ``x`` has shape ``(*B, C, H, W)`` and every log-determinant has
exactly the batch shape ``B``,

.. math::

    \log\left|\det \frac{\partial y}{\partial x}\right| \in \mathbb{R}^{B}, \qquad
    x, y \in \mathbb{R}^{B \times C \times H \times W},

the determinant being that of the :math:`CHW \times CHW` Jacobian of the flattened map. Its
``input_dim`` is the number of dimensions :math:`D = CHW` (what bits/dim divide by) and its
``event_shape`` is ``(C, H, W)``. Convolutions need 4-D tensors: :func:`as_batch_of_images`
flattens any batch shape to one leading dimension and :func:`restore_batch` undoes it.

References:

- D. P. Kingma, P. Dhariwal. *Glow: Generative Flow with Invertible 1x1 Convolutions.*
  NeurIPS, 2018. https://arxiv.org/abs/1807.03039
- L. Dinh, J. Sohl-Dickstein, S. Bengio. *Density estimation using Real NVP.* ICLR, 2017.
  https://arxiv.org/abs/1605.08803
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from pyro.distributions.torch_transform import TransformModule
from torch import Tensor
from torch.distributions import constraints

from ..._validation import broadcast_batch, check_context, check_positive_int
from ..base import FlowTransform

__all__ = [
    "ConditionedImageTransform",
    "ImageTransform",
    "as_batch_of_images",
    "check_image_shape",
    "restore_batch",
    "zeros_image_log_det",
]

ImageShape = Sequence[int] | torch.Size


def check_image_shape(shape: object, name: str = "shape") -> tuple[int, int, int]:
    """Return ``shape`` as a ``(C, H, W)`` tuple of positive ints, or raise.

    :raises TypeError: if ``shape`` is not a sequence of ints.
    :raises ValueError: if it does not have exactly three positive entries.

    Example:

    >>> check_image_shape([1, 8, 8])
    (1, 8, 8)
    """
    if isinstance(shape, int | str) or not isinstance(shape, Sequence | torch.Size):
        raise TypeError(
            f"{name} must be a (C, H, W) sequence of ints, got {type(shape).__name__} ({shape!r})"
        )
    dims = tuple(shape)
    if len(dims) != 3:
        raise ValueError(f"{name} must have 3 entries (C, H, W), got {dims}")
    for axis, value in zip("CHW", dims, strict=True):
        check_positive_int(value, f"{name} {axis}")
    return dims  # type: ignore[return-value]


def as_batch_of_images(x: Tensor) -> tuple[Tensor, torch.Size]:
    """``x`` of shape ``(*B, C, H, W)`` as ``(N, C, H, W)`` (``N = prod(B)``), and ``B``."""
    batch = x.shape[:-3]
    return x.reshape(-1, *x.shape[-3:]), batch


def restore_batch(x: Tensor, batch: torch.Size) -> Tensor:
    """Undo :func:`as_batch_of_images` (the event shape may have changed)."""
    return x.reshape(*batch, *x.shape[1:])


def zeros_image_log_det(x: Tensor) -> Tensor:
    """A zero log-determinant with the batch shape ``x.shape[:-3]``."""
    return torch.zeros(x.shape[:-3], dtype=x.dtype, device=x.device)


class ImageTransform(FlowTransform):
    r"""Base class: a bijection on images of shape ``(C, H, W)`` (``event_dim = 3``).

    Subclasses implement ``forward_and_log_det`` (base :math:`\to` data) and
    ``inverse_and_log_det`` (data :math:`\to` base) on tensors of shape ``(*B, C, H, W)``,
    returning log-determinants of shape ``B``; :meth:`_prepare` validates the event shape and
    broadcasts a context of shape ``(*B, context_dim)`` against the batch shape. A transform whose
    output has another shape (:class:`~pyro_flows.transforms.image.squeeze.Squeeze`) sets
    ``output_shape``; all others keep ``output_shape == event_shape``.

    Cost: defined by each subclass (the base class itself computes nothing).

    :param shape: the event shape ``(C, H, W)`` of the input (base side).
    :param context_dim: size of the context vector for conditional layers, or ``None``.

    Example:

    >>> from pyro_flows.transforms.image.actnorm import ChannelActNorm
    >>> t = ChannelActNorm((3, 4, 4))
    >>> isinstance(t, ImageTransform), t.event_dim, t.input_dim, tuple(t.event_shape)
    (True, 3, 48, (3, 4, 4))
    """

    domain = constraints.independent(constraints.real, 3)
    codomain = constraints.independent(constraints.real, 3)
    event_dim = 3
    #: the forward (sampling) pass is an iterative solve and the inverse one network pass
    #: (MintNet): log-dets for Pyro's ``log_abs_det_jacobian`` are then taken from the data side
    forward_is_iterative: bool = False

    def __init__(self, shape: ImageShape, context_dim: int | None = None) -> None:
        c, h, w = check_image_shape(shape)
        super().__init__(c * h * w, context_dim)
        self.event_shape = torch.Size((c, h, w))
        self.output_shape = self.event_shape

    @property
    def channels(self) -> int:
        """Number of channels ``C`` of the input."""
        return self.event_shape[0]

    def _prepare(
        self, x: Tensor, context: Tensor | None, name: str, shape: torch.Size | None = None
    ) -> tuple[Tensor, Tensor | None]:
        """Validate that ``x`` has shape ``(*B, *shape)`` (default: ``event_shape``) and the
        context, and broadcast their batch shapes."""
        shape = self.event_shape if shape is None else shape
        if not isinstance(x, Tensor):
            raise TypeError(f"{type(self).__name__} expected a torch.Tensor {name}, got "
                            f"{type(x).__name__}")
        if x.dim() < 3 or x.shape[-3:] != shape:
            dims = ", ".join(map(str, shape))
            raise ValueError(
                f"{type(self).__name__} expected {name} of shape (..., {dims}) (event shape "
                f"{tuple(shape)}), got shape {tuple(x.shape)}"
            )
        context = check_context(context, self.context_dim, type(self).__name__)
        if context is not None:
            x, context = broadcast_batch(x, context, event_dims=3)
        return x, context

    def condition(self, context: Tensor) -> TransformModule:
        """Bind ``context`` (shape ``(*B, context_dim)``); unconditional layers return ``self``."""
        if self.context_dim is None:
            return self
        context = check_context(context, self.context_dim, type(self).__name__)
        return ConditionedImageTransform(self, context)

    def forward_shape(self, shape: torch.Size) -> torch.Size:
        return torch.Size(shape[:-3]) + self.output_shape

    def inverse_shape(self, shape: torch.Size) -> torch.Size:
        return torch.Size(shape[:-3]) + self.event_shape

    def extra_repr(self) -> str:
        extra = f"shape={tuple(self.event_shape)}"
        if self.output_shape != self.event_shape:
            extra += f", output_shape={tuple(self.output_shape)}"
        if self.context_dim is not None:
            extra += f", context_dim={self.context_dim}"
        return extra


class ConditionedImageTransform(ImageTransform):
    """A conditional :class:`ImageTransform` with its context bound (from ``.condition``).

    Shares parameters with the layer it came from and holds the context by reference (built per
    call, as :class:`~pyro_flows.Flow` does). Cost: that of the wrapped layer.

    Example:

    >>> from pyro_flows.transforms.image import ImageAffineCoupling
    >>> t = ImageAffineCoupling((2, 4, 4), "channel", hidden_channels=4, context_dim=3)
    >>> bound = t.condition(torch.randn(5, 3))
    >>> isinstance(bound, ConditionedImageTransform), bound(torch.randn(5, 2, 4, 4)).shape
    (True, torch.Size([5, 2, 4, 4]))
    """

    @property
    def sign(self) -> int:
        """The sign of the conditioned layer's Jacobian determinant."""
        return self.transform.sign

    def __init__(self, transform: ImageTransform, context: Tensor) -> None:
        super().__init__(transform.event_shape)
        self.output_shape = transform.output_shape
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
