"""Any ``torch.distributions`` / Pyro transform on vectors, inside a :class:`~pyro_flows.Flow`."""

from __future__ import annotations

from torch import Tensor, nn
from torch.distributions import Transform

from .base import FlowTransform


class WrappedTransform(FlowTransform):
    """Adapter giving a foreign ``Transform`` the two-direction interface of pyro_flows.

    Elementwise transforms (``domain.event_dim == 0``, e.g. ``ExpTransform``) have their
    log-determinant summed over the last dimension. The foreign transform's own cache setting is
    respected; pyro_flows adds none.

    Cost: whatever the wrapped transform costs; the log-det reuses both ends of the map.

    Example::

        >>> from torch.distributions.transforms import AffineTransform
        >>> t = WrappedTransform(AffineTransform(0.0, 2.0), input_dim=3)
        >>> t.forward_and_log_det(torch.ones(1, 3))[1]
        tensor([2.0794])
    """

    def __init__(self, transform: Transform, input_dim: int) -> None:
        if not isinstance(transform, Transform):
            raise TypeError(
                f"Flow transforms must be torch.distributions Transforms, got "
                f"{type(transform).__name__}"
            )
        if not transform.bijective:
            raise ValueError(f"{type(transform).__name__} is not bijective")
        event_dim = transform.domain.event_dim
        if event_dim > 1:
            raise ValueError(
                f"{type(transform).__name__} acts on events of {event_dim} dims; Flow needs 0 or 1"
            )
        super().__init__(input_dim)
        self._sum_last = event_dim == 0
        if isinstance(transform, nn.Module):
            self.transform = transform
        else:
            self.__dict__["transform"] = transform

    def _log_det(self, x: Tensor, y: Tensor) -> Tensor:
        log_det = self.transform.log_abs_det_jacobian(x, y)
        if self._sum_last:
            log_det = log_det.sum(-1)
        return log_det.expand(x.shape[:-1])

    def forward_and_log_det(
        self, x: Tensor, context: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        x, _ = self._prepare(x, context, "x")
        y = self.transform(x)
        return y, self._log_det(x, y)

    def inverse_and_log_det(
        self, y: Tensor, context: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        y, _ = self._prepare(y, context, "y")
        x = self.transform.inv(y)
        return x, -self._log_det(x, y)

    def extra_repr(self) -> str:
        return f"{self.transform!r}, input_dim={self.input_dim}"
