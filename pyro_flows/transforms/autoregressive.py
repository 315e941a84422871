r"""Affine autoregressive layers on a MADE conditioner: MAF and IAF.

Both layers compute the elementwise affine map :math:`y = x \odot \sigma + \mu` (base -> data);
they differ in which side the MADE reads its input from, and so in which direction is one pass:

- :class:`MaskedAutoregressive` (MAF): parameters from the data side, :math:`\mu(y_{<i})`;
  density is one pass, sampling is :math:`D` passes.
- :class:`InverseAutoregressive` (IAF): parameters from the base side, :math:`\mu(x_{<i})`;
  sampling is one pass, density is :math:`D` passes.

The sequential direction solves the triangular system by :math:`D` passes of the fixed-point
iteration :math:`u \leftarrow g(u)`, after which the first :math:`k` dimensions are exact after
:math:`k` passes. The masked weights are computed once per call, not once per pass. The scale is
:math:`\sigma = \mathrm{softplus}(s + c_0) + 10^{-3}` with :math:`\sigma(0)=1`, and
:math:`\log|\det \partial y/\partial x| = \sum_i \log\sigma_i`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch.nn.functional as F
from torch import Tensor

from ..nn.made import MADE, MaskedWeights
from ._affine import affine_forward, affine_inverse
from .base import FlowTransform


class _AffineAutoregressive(FlowTransform):
    def __init__(
        self,
        input_dim: int,
        hidden_dims: Sequence[int] = (64, 64),
        context_dim: int | None = None,
        input_order: Sequence[int] | None = None,
        activation: Callable[[Tensor], Tensor] = F.relu,
    ) -> None:
        super().__init__(input_dim, context_dim)
        self.made = MADE(
            input_dim,
            hidden_dims,
            param_dims=(1, 1),
            context_dim=context_dim,
            input_order=input_order,
            activation=activation,
        )

    def _params(
        self, u: Tensor, context: Tensor | None, weights: MaskedWeights | None = None
    ) -> tuple[Tensor, Tensor]:
        shift, raw_scale = self.made(u, context, weights)
        return shift, raw_scale

    def _one_pass_forward(self, x: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        """IAF direction: ``y = x * sigma(x) + mu(x)``."""
        return affine_forward(x, *self._params(x, context))

    def _one_pass_inverse(self, y: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        """MAF direction: ``x = (y - mu(y)) / sigma(y)``."""
        return affine_inverse(y, *self._params(y, context))

    def _sequential_forward(self, x: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        """MAF sampling: solve ``y = x * sigma(y) + mu(y)`` in ``D`` passes."""
        weights = self.made.masked_weights()
        y = x.new_zeros(x.shape)
        log_det = x.new_zeros(x.shape[:-1])
        for _ in range(self.input_dim):
            y, log_det = affine_forward(x, *self._params(y, context, weights))
        return y, log_det

    def _sequential_inverse(self, y: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        """IAF density: solve ``y = x * sigma(x) + mu(x)`` for ``x`` in ``D`` passes."""
        weights = self.made.masked_weights()
        x = y.new_zeros(y.shape)
        log_det = y.new_zeros(y.shape[:-1])
        for _ in range(self.input_dim):
            x, log_det = affine_inverse(y, *self._params(x, context, weights))
        return x, log_det


class MaskedAutoregressive(_AffineAutoregressive):
    r"""MAF layer: :math:`y_i = x_i\,\sigma_i(y_{<i}, c) + \mu_i(y_{<i}, c)`.

    The density direction is one MADE pass on the data, :math:`x = (y - \mu(y))/\sigma(y)`,
    so maximum-likelihood training is fast; sampling solves the recursion in ``input_dim``
    passes. :math:`\log|\det \partial y/\partial x| = \sum_i \log\sigma_i(y_{<i})`, computed from
    ``y`` in one pass when both ends are known (``log_abs_det_jacobian(x, y)``).
    The Jacobian :math:`\partial y/\partial x` is lower triangular in ``input_order``.

    Cost: inverse (density, data -> base): 1 MADE pass; forward (sampling): ``input_dim`` passes.

    :param input_dim: event size ``D`` (1 is allowed).
    :param hidden_dims: MADE hidden sizes.
    :param context_dim: context size for a conditional layer.
    :param input_order: autoregressive order of the MADE (default natural).
    :param activation: MADE activation function.

    Example::

        >>> t = MaskedAutoregressive(3, hidden_dims=(16,))
        >>> y = torch.randn(5, 3)
        >>> x, log_det = t.inverse_and_log_det(y)  # one pass
        >>> torch.allclose(t(x), y, atol=1e-5)  # sampling direction: 3 passes
        True

    References: Papamakarios, Pavlakou, Murray, "Masked Autoregressive Flow for Density
    Estimation", NeurIPS 2017; Germain et al., "MADE", ICML 2015.
    """

    def forward_and_log_det(
        self, x: Tensor, context: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        x, context = self._prepare(x, context, "x")
        return self._sequential_forward(x, context)

    def inverse_and_log_det(
        self, y: Tensor, context: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        y, context = self._prepare(y, context, "y")
        return self._one_pass_inverse(y, context)

    def forward_log_det(self, x: Tensor, y: Tensor, context: Tensor | None = None) -> Tensor:
        return -self.inverse_and_log_det(y, context)[1]


class InverseAutoregressive(_AffineAutoregressive):
    r"""IAF layer: :math:`y_i = x_i\,\sigma_i(x_{<i}, c) + \mu_i(x_{<i}, c)`.

    The sampling direction is one MADE pass on the base sample, so drawing samples and scoring
    them (:meth:`~pyro_flows.Flow.rsample_and_log_prob`) is fast: the variational-inference
    direction. Scoring an external point solves the recursion in ``input_dim`` passes.
    :math:`\log|\det \partial y/\partial x| = \sum_i \log\sigma_i(x_{<i})`.
    The Jacobian is lower triangular in ``input_order``.

    Cost: forward (sampling, base -> data): 1 MADE pass; inverse (density): ``input_dim`` passes.

    :param input_dim: event size ``D`` (1 is allowed).
    :param hidden_dims: MADE hidden sizes.
    :param context_dim: context size for a conditional layer (amortized IAF posterior).
    :param input_order: autoregressive order of the MADE (default natural).
    :param activation: MADE activation function.

    Example::

        >>> t = InverseAutoregressive(3, hidden_dims=(16,), context_dim=2)
        >>> x, c = torch.randn(5, 3), torch.randn(5, 2)
        >>> y, log_det = t.forward_and_log_det(x, c)  # one pass
        >>> torch.allclose(t.inverse_and_log_det(y, c)[0], x, atol=1e-5)  # 3 passes
        True

    References: Kingma, Salimans, Jozefowicz, Chen, Sutskever, Welling, "Improved Variational
    Inference with Inverse Autoregressive Flow", NeurIPS 2016.
    """

    def forward_and_log_det(
        self, x: Tensor, context: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        x, context = self._prepare(x, context, "x")
        return self._one_pass_forward(x, context)

    def inverse_and_log_det(
        self, y: Tensor, context: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        y, context = self._prepare(y, context, "y")
        return self._sequential_inverse(y, context)
