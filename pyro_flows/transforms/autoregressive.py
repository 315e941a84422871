r"""Affine autoregressive layers on a MADE conditioner: MAF and IAF.

Both layers are the same elementwise affine map :math:`v = u \odot \sigma(u) + \mu(u)`, with
:math:`(\mu_i, \sigma_i)` read by a MADE from :math:`u_{<i}`, used in opposite directions:

- :class:`InverseAutoregressive` (IAF): :math:`u` is the base side, so sampling (and scoring
  one's own samples) is one pass and the density of an external point is :math:`D` passes.
- :class:`MaskedAutoregressive` (MAF): :math:`u` is the data side, so the density is one pass
  and sampling is :math:`D` passes.

The one-pass direction is a multiply-add. The sequential direction solves
:math:`u = (v - \mu(u)) / \sigma(u)` by :math:`D` passes of that fixed-point iteration (the
first :math:`k` dimensions are exact after :math:`k` passes), computing the masked weights once per
call and the log-determinant once, after the last pass. The scale is
:math:`\sigma = \mathrm{softplus}(s + c_0) + 10^{-3}` with :math:`\sigma(0)=1` by default, or
with ``scale="exp"`` :math:`\sigma = \exp(b\tanh(s/b))`, :math:`b` = ``log_scale_bound``
(8 by default; log-scale linear in the network
output: for scales exponential in earlier coordinates, as in Neal's funnel), and
:math:`\log|\det \partial v/\partial u| = \sum_i \log\sigma_i`.

With ``scale="exp"`` the MADE's log-scale head starts at exactly zero (the shift head at the
MADE's small ``out_scale``): each layer is then a pure shift at initialisation, exactly
invertible at any :math:`|u|`. A small random head is not: the network output grows linearly
with :math:`|u|` and exp turns that into a near-singular map far out (a fresh 4-D MAF's float32
round trip at :math:`|u| \approx 10^3` was off by :math:`10^4` relative, an IAF's by 0.4).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from ..nn.made import MADE
from ._affine import (
    EXP_LOG_SCALE_BOUND,
    affine_forward,
    check_log_scale_bound,
    check_scale_kind,
    scale_from_raw,
)
from ._directions import DensityInOnePass, SamplingInOnePass
from .base import FlowTransform


class _AffineAutoregressive(FlowTransform):
    """``v = u * sigma(u_<i) + mu(u_<i)``: one pass for ``u -> v``, ``D`` passes for ``v -> u``."""

    def __init__(
        self,
        input_dim: int,
        hidden_dims: Sequence[int] = (64, 64),
        context_dim: int | None = None,
        input_order: Sequence[int] | None = None,
        activation: Callable[[Tensor], Tensor] = F.relu,
        scale: str = "softplus",
        log_scale_bound: float = EXP_LOG_SCALE_BOUND,
    ) -> None:
        super().__init__(input_dim, context_dim)
        self.scale_kind = check_scale_kind(scale)
        self.log_scale_bound = check_log_scale_bound(log_scale_bound, self.scale_kind)
        self.made = MADE(
            input_dim,
            hidden_dims,
            param_dims=(1, 1),
            context_dim=context_dim,
            input_order=input_order,
            activation=activation,
        )
        if self.scale_kind == "exp":
            # the log-scale head starts at exactly 0: exp makes the scale's slope in u_<i grow
            # with the (unbounded) network output, so at init a point at |u| ~ 1e3 would already
            # meet a near-singular map (float32 round trip off by ~1e4 relative); a zero head
            # makes every layer a pure shift at init, exactly invertible at any |u|. Its weights
            # still get gradients (hidden activations times the log-det's), so it learns at once.
            with torch.no_grad():
                last = self.made.layers[-1]
                last.weight[input_dim:].zero_()
                last.bias[input_dim:].zero_()

    def _one_pass(self, u: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        """``v`` and ``log|dv/du|`` in one MADE pass."""
        shift, raw_scale = self.made(u, context)
        return affine_forward(u, shift, raw_scale, self.scale_kind, self.log_scale_bound)

    def _one_pass_without_log_det(self, u: Tensor, context: Tensor | None) -> Tensor:
        shift, raw_scale = self.made(u, context)
        scale = scale_from_raw(raw_scale, self.scale_kind, self.log_scale_bound)
        return torch.addcmul(shift, u, scale)

    def _solve_without_log_det(self, v: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        """``u`` with ``v = u * sigma(u) + mu(u)`` in ``D`` passes, and the last pass's scales.

        After pass ``k`` the inputs of rank ``<= k`` in the autoregressive order are exact; the
        others are kept at 0 rather than at that pass's guesses, which far from the data can
        overflow and would then poison every later pass (``0 * inf = NaN`` in the masked
        weights) though the solution itself is finite.
        """
        D = self.input_dim
        weights = self.made.masked_weights()
        # not_yet[k]: the inputs still inexact after pass k (rank in the order above k)
        passes = torch.arange(D - 1, device=v.device).unsqueeze(-1)
        not_yet = (self.made.input_rank().to(v.device) > passes).unbind(0)
        u = torch.zeros_like(v)
        scale = torch.ones_like(v)
        for k in range(D):
            shift, raw_scale = self.made(u, context, weights)
            scale = scale_from_raw(raw_scale, self.scale_kind, self.log_scale_bound)
            u = (v - shift) / scale
            if k < D - 1:
                u = u.masked_fill(not_yet[k], 0.0)
        # the last pass read u_{<D}, all exact by then, so its scales are the final ones
        return u, scale

    def _solve(self, v: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        """``u`` and ``log|du/dv|``; the log-det is computed once, after the last pass."""
        u, scale = self._solve_without_log_det(v, context)
        return u, -torch.log(scale).sum(-1)


class MaskedAutoregressive(DensityInOnePass, _AffineAutoregressive):
    r"""MAF layer: the density direction is one MADE pass on the data.

    With :math:`y` the data side and :math:`x` the base side,

    .. math::

        x_i = y_i\,\sigma_i(y_{<i}, c) + \mu_i(y_{<i}, c), \qquad
        \log\left|\det\frac{\partial x}{\partial y}\right| = \sum_i \log\sigma_i(y_{<i}, c)

    (the MAF paper's :math:`x_i = (y_i - \mu_i)/\sigma_i` with the scale inverted, so that the
    density direction is a multiply-add). Maximum-likelihood training is fast; sampling solves
    :math:`y_i = (x_i - \mu_i(y_{<i}))/\sigma_i(y_{<i})` in ``input_dim`` passes. Given both
    ends, ``log_abs_det_jacobian(x, y)`` reads the scales from ``y`` in one pass. Both Jacobians
    are lower triangular in ``input_order``.

    Cost: inverse (density, data -> base): 1 MADE pass; forward (sampling): ``input_dim``
    passes.

    :param input_dim: event size ``D`` (1 is allowed).
    :param hidden_dims: MADE hidden sizes.
    :param context_dim: context size for a conditional layer.
    :param input_order: autoregressive order of the MADE (default natural).
    :param activation: MADE activation function.
    :param scale: ``"softplus"`` (default) or ``"exp"`` (soft-clamped, log-scale linear in the
        network output; see the module docstring).
    :param log_scale_bound: with ``scale="exp"``, the bound :math:`b` of one layer's log-scale
        (default 8; 16 for tails far from the training draws, such as Neal's funnel).

    Example::

        >>> t = MaskedAutoregressive(3, hidden_dims=(16,))
        >>> y = torch.randn(5, 3)
        >>> x, log_det = t.inverse_and_log_det(y)  # one pass
        >>> torch.allclose(t(x), y, atol=1e-5)  # sampling direction: 3 passes
        True

    References: Papamakarios, Pavlakou, Murray, "Masked Autoregressive Flow for Density
    Estimation", NeurIPS 2017; Germain et al., "MADE", ICML 2015.
    """

    def forward_without_log_det(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        x, context = self._prepare_shared_context(x, context, "x")
        return self._solve_without_log_det(x, context)[0]


class InverseAutoregressive(SamplingInOnePass, _AffineAutoregressive):
    r"""IAF layer: the sampling direction is one MADE pass on the base sample.

    .. math::

        y_i = x_i\,\sigma_i(x_{<i}, c) + \mu_i(x_{<i}, c), \qquad
        \log\left|\det\frac{\partial y}{\partial x}\right| = \sum_i \log\sigma_i(x_{<i}, c).

    Drawing samples and scoring them (:meth:`~pyro_flows.Flow.rsample_and_log_prob`) is fast:
    the variational-inference direction. Scoring an external point solves the recursion in
    ``input_dim`` passes. The Jacobian is lower triangular in ``input_order``.

    Cost: forward (sampling, base -> data): 1 MADE pass; inverse (density): ``input_dim``
    passes.

    :param input_dim: event size ``D`` (1 is allowed).
    :param hidden_dims: MADE hidden sizes.
    :param context_dim: context size for a conditional layer (amortized IAF posterior).
    :param input_order: autoregressive order of the MADE (default natural).
    :param activation: MADE activation function.
    :param scale: ``"softplus"`` (default) or ``"exp"`` (soft-clamped, log-scale linear in the
        network output; see the module docstring).
    :param log_scale_bound: with ``scale="exp"``, the bound :math:`b` of one layer's log-scale
        (default 8; 16 for tails far from the training draws, such as Neal's funnel).

    Example::

        >>> t = InverseAutoregressive(3, hidden_dims=(16,), context_dim=2)
        >>> x, c = torch.randn(5, 3), torch.randn(5, 2)
        >>> y, log_det = t.forward_and_log_det(x, c)  # one pass
        >>> torch.allclose(t.inverse_and_log_det(y, c)[0], x, atol=1e-5)  # 3 passes
        True

    References: Kingma, Salimans, Jozefowicz, Chen, Sutskever, Welling, "Improved Variational
    Inference with Inverse Autoregressive Flow", NeurIPS 2016.
    """

    def forward_without_log_det(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        x, context = self._prepare_shared_context(x, context, "x")
        return self._one_pass_without_log_det(x, context)
