r"""Coupling layers: NICE's additive coupling and RealNVP's affine coupling.

The input is split as :math:`x = (x_a, x_b)` with :math:`x_a` the first ``split_dim`` entries. The
first part passes unchanged and parametrises an elementwise bijection of the second:

.. math::

    y_a = x_a, \qquad y_b = g(x_b;\ \theta(x_a, c)),

so both directions cost one conditioner pass and the Jacobian is block triangular with
:math:`\log|\det J| = \sum_i \log|\partial g_i/\partial x_{b,i}|`. Stack layers with a
permutation (:class:`~pyro_flows.transforms.Reverse`) in between so every dimension gets
transformed.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

from .._validation import check_positive_int
from ..nn.mlp import MLP
from ._affine import affine_forward, affine_inverse, scale_from_raw
from .base import FlowTransform, zeros_log_det


class CouplingTransform(FlowTransform):
    """Base class of coupling layers; subclasses define the elementwise map ``g``.

    :param input_dim: event size ``D >= 2``.
    :param hidden_dims: hidden sizes of the conditioner MLP.
    :param split_dim: size of the unchanged part ``x_a`` (default ``D // 2``).
    :param context_dim: context size for a conditional layer.
    :param activation: activation module class of the conditioner.
    """

    num_params: int = 1

    def __init__(
        self,
        input_dim: int,
        hidden_dims: Sequence[int] = (64, 64),
        split_dim: int | None = None,
        context_dim: int | None = None,
        activation: Callable[[], nn.Module] = nn.ReLU,
    ) -> None:
        super().__init__(input_dim, context_dim)
        if input_dim < 2:
            raise ValueError(
                f"{type(self).__name__} needs input_dim >= 2 to split the input, got {input_dim}"
            )
        split = input_dim // 2 if split_dim is None else check_positive_int(split_dim, "split_dim")
        if split >= input_dim:
            raise ValueError(f"split_dim must be in [1, {input_dim - 1}], got {split}")
        self.split_dim = split
        self.conditioner = MLP(
            split,
            hidden_dims,
            (input_dim - split) * self.num_params,
            context_dim=context_dim,
            activation=activation,
        )

    def _params(self, x_a: Tensor, context: Tensor | None) -> tuple[Tensor, ...]:
        """The conditioner's output as ``num_params`` tensors of shape ``(..., D - split_dim)``
        (parameter-major layout: each one a contiguous block)."""
        out = self.conditioner(x_a, context)
        return out.unflatten(-1, (self.num_params, self.input_dim - self.split_dim)).unbind(-2)

    def _elementwise_forward(
        self, x_b: Tensor, params: tuple[Tensor, ...]
    ) -> tuple[Tensor, Tensor]:
        raise NotImplementedError

    def _elementwise_inverse(
        self, y_b: Tensor, params: tuple[Tensor, ...]
    ) -> tuple[Tensor, Tensor]:
        raise NotImplementedError

    def _elementwise_forward_without_log_det(
        self, x_b: Tensor, params: tuple[Tensor, ...]
    ) -> Tensor:
        return self._elementwise_forward(x_b, params)[0]

    def forward_and_log_det(
        self, x: Tensor, context: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        x, context = self._prepare(x, context, "x")
        x_a, x_b = x[..., : self.split_dim], x[..., self.split_dim :]
        y_b, log_det = self._elementwise_forward(x_b, self._params(x_a, context))
        return torch.cat([x_a, y_b], -1), log_det

    def forward_without_log_det(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        x, context = self._prepare(x, context, "x")
        x_a, x_b = x[..., : self.split_dim], x[..., self.split_dim :]
        params = self._params(x_a, context)
        return torch.cat([x_a, self._elementwise_forward_without_log_det(x_b, params)], -1)

    def inverse_and_log_det(
        self, y: Tensor, context: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        y, context = self._prepare(y, context, "y")
        y_a, y_b = y[..., : self.split_dim], y[..., self.split_dim :]
        x_b, log_det = self._elementwise_inverse(y_b, self._params(y_a, context))
        return torch.cat([y_a, x_b], -1), log_det

    def extra_repr(self) -> str:
        return super().extra_repr() + f", split_dim={self.split_dim}"


class AdditiveCoupling(CouplingTransform):
    r"""NICE additive coupling: :math:`y_a = x_a,\ y_b = x_b + t(x_a, c)`; volume preserving.

    :math:`\log|\det J| = 0` in both directions. Pair with :class:`~pyro_flows.transforms.Rescale`
    at the end of the stack (NICE's diagonal scaling) to change volume.

    Cost: forward (sampling) 1 conditioner pass; inverse (density) 1 conditioner pass.

    Example::

        >>> t = AdditiveCoupling(4, hidden_dims=(32,))
        >>> x = torch.randn(8, 4)
        >>> torch.allclose(t.inv(t(x)), x, atol=1e-6)
        True

    Reference: Dinh, Krueger, Bengio, "NICE: Non-linear Independent Components Estimation",
    ICLR workshop 2015.
    """

    num_params = 1

    def _elementwise_forward(
        self, x_b: Tensor, params: tuple[Tensor, ...]
    ) -> tuple[Tensor, Tensor]:
        return x_b + params[0], zeros_log_det(x_b)

    def _elementwise_inverse(
        self, y_b: Tensor, params: tuple[Tensor, ...]
    ) -> tuple[Tensor, Tensor]:
        return y_b - params[0], zeros_log_det(y_b)


class AffineCoupling(CouplingTransform):
    r"""RealNVP affine coupling: :math:`y_b = x_b \odot \sigma(x_a, c) + \mu(x_a, c)`.

    The scale is :math:`\sigma = \mathrm{softplus}(s + c_0) + 10^{-3}` with :math:`\sigma(0)=1`
    (no ``exp``: float32 stays finite for large inputs), and
    :math:`\log|\det J| = \sum_i \log \sigma_i`. The layer starts near the identity.

    Cost: forward (sampling) 1 conditioner pass; inverse (density) 1 conditioner pass.

    Example::

        >>> t = AffineCoupling(4, hidden_dims=(32,), context_dim=2)
        >>> c = torch.randn(8, 2)
        >>> x = torch.randn(8, 4)
        >>> y, log_det = t.forward_and_log_det(x, c)
        >>> log_det.shape
        torch.Size([8])

    Reference: Dinh, Sohl-Dickstein, Bengio, "Density estimation using Real NVP", ICLR 2017.
    """

    num_params = 2

    def _elementwise_forward(
        self, x_b: Tensor, params: tuple[Tensor, ...]
    ) -> tuple[Tensor, Tensor]:
        return affine_forward(x_b, params[0], params[1])

    def _elementwise_forward_without_log_det(
        self, x_b: Tensor, params: tuple[Tensor, ...]
    ) -> Tensor:
        return torch.addcmul(params[0], x_b, scale_from_raw(params[1]))

    def _elementwise_inverse(
        self, y_b: Tensor, params: tuple[Tensor, ...]
    ) -> tuple[Tensor, Tensor]:
        return affine_inverse(y_b, params[0], params[1])
