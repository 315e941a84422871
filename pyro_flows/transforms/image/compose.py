r"""A sequence of image transforms acting as one: :math:`f = f_K \circ \dots \circ f_1`.

.. math::

    \log\left|\det \frac{\partial f}{\partial x}\right|
    = \sum_{k=1}^{K} \log\left|\det \frac{\partial f_k}{\partial x_{k-1}}\right|,
    \qquad x_k = f_k(x_{k-1}).

The building block of :class:`~pyro_flows.transforms.image.multiscale.MultiScale`, whose levels
each hold a sequence of flow steps.

References:

- D. J. Rezende, S. Mohamed. *Variational Inference with Normalizing Flows.* ICML, 2015.
  https://arxiv.org/abs/1505.05770
"""

from __future__ import annotations

from collections.abc import Iterable

from torch import Tensor, nn

from .base import ImageTransform

__all__ = ["ImageSequential"]


class ImageSequential(ImageTransform):
    r"""Image transforms applied in order (base :math:`\to` data), as one :class:`ImageTransform`.

    .. math::

        y = f_K \circ \cdots \circ f_1(x), \qquad
        \log|\det J_f| = \sum_k \log|\det J_{f_k}|.

    The inverse applies the inverses in reverse order. Conditional members receive the context;
    the sequence's ``context_dim`` is theirs (they must agree). Each member's output shape must be
    the next one's input shape.

    Cost: the sum of the members' costs, in each direction.

    :param transforms: the members, in sampling order (at least one).

    Example:

    >>> from pyro_flows.transforms.image import ChannelActNorm, InvertibleConv1x1
    >>> t = ImageSequential([ChannelActNorm((2, 4, 4)), InvertibleConv1x1((2, 4, 4))])
    >>> _ = t.eval()  # in training mode the first inverse call initialises the ActNorm
    >>> x = torch.randn(3, 2, 4, 4)
    >>> torch.allclose(t.inv(t(x)), x, atol=1e-5)
    True

    References:

    - D. J. Rezende, S. Mohamed. *Variational Inference with Normalizing Flows.* ICML, 2015.
      https://arxiv.org/abs/1505.05770
    """

    @property
    def sign(self) -> int:
        """The product of the layers' Jacobian signs."""
        sign = 1
        for t in self.layers:
            sign *= t.sign
        return sign

    def __init__(self, transforms: Iterable[ImageTransform]) -> None:
        members = list(transforms)
        if not members:
            raise ValueError("ImageSequential needs at least one transform, got none")
        for i, t in enumerate(members):
            if not isinstance(t, ImageTransform):
                raise TypeError(
                    f"ImageSequential members must be ImageTransforms, got {type(t).__name__} "
                    f"at position {i}"
                )
        for i, (a, b) in enumerate(zip(members[:-1], members[1:], strict=False)):
            if a.output_shape != b.event_shape:
                raise ValueError(
                    f"transform {i} outputs shape {tuple(a.output_shape)} but transform {i + 1} "
                    f"expects {tuple(b.event_shape)}"
                )
        dims = {t.context_dim for t in members if t.context_dim is not None}
        if len(dims) > 1:
            raise ValueError(f"conditional members disagree on context_dim: {sorted(dims)}")
        super().__init__(members[0].event_shape, dims.pop() if dims else None)
        self.output_shape = members[-1].output_shape
        self.layers = nn.ModuleList(members)

    def forward_and_log_det(
        self, x: Tensor, context: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        x, context = self._prepare(x, context, "x")
        total = None
        for t in self.layers:
            x, ld = t.forward_and_log_det(x, context if t.context_dim else None)
            total = ld if total is None else total + ld
        assert total is not None
        return x, total

    def forward_without_log_det(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        x, context = self._prepare(x, context, "x")
        for t in self.layers:
            x = t.forward_without_log_det(x, context if t.context_dim else None)
        return x

    def inverse_and_log_det(
        self, y: Tensor, context: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        y, context = self._prepare(y, context, "y", self.output_shape)
        total = None
        for t in reversed(self.layers):
            y, ld = t.inverse_and_log_det(y, context if t.context_dim else None)
            total = ld if total is None else total + ld
        assert total is not None
        return y, total

    @property
    def forward_is_iterative(self) -> bool:  # type: ignore[override]
        return any(t.forward_is_iterative for t in self.layers)

    def forward_log_det(self, x: Tensor, y: Tensor, context: Tensor | None = None) -> Tensor:
        """From the data side (one inverse pass) when a member's forward pass is the expensive
        direction (MintNet's fixed-point solve), else from a forward pass."""
        if self.forward_is_iterative:
            return -self.inverse_and_log_det(y, context)[1]
        return self.forward_and_log_det(x, context)[1]

