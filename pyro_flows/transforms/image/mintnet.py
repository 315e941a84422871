r"""MintNet-style masked-convolution layers: triangular Jacobian, positive diagonal, inverse by
fixed-point iteration (Song et al., 2019).

In the density direction (data :math:`y \to` base :math:`x`) the layer is a masked residual
network,

.. math::

    x = g(y) = s \odot y + L_2\big(\tanh(L_1 y + b_1)\big) + b_2,

where :math:`L_1` (``C -> kC`` channels) and :math:`L_2` (``kC -> C``) are
:class:`~pyro_flows.nn.masked_conv.MaskedConv2d` convolutions, causal in the channel-major raster
order (hidden channels :math:`j \in \{ck, \dots, ck + k - 1\}` form the group of channel
:math:`c`), and :math:`s = \mathrm{softplus}(r) > 0` per channel. The Jacobian
:math:`\partial g/\partial y` is then lower triangular, and its diagonal is

.. math::

    \frac{\partial g_{c,p}}{\partial y_{c,p}} = s_c + \sum_{j \in c} u_j v_j
        \big(1 - \tanh^2(a_{j,p})\big) \in \Big[s_c,\ M_c\Big], \qquad
    M_c = s_c + \sum_{j \in c} u_j v_j,

with :math:`v_j > 0`, :math:`u_j > 0` the (softplus-positive) centre taps of :math:`L_1` and
:math:`L_2` between channel :math:`c` and its group and :math:`a = L_1 y + b_1`. So
:math:`\log|\det \partial g/\partial y| = \sum_{c,p} \log \partial g_{c,p}/\partial y_{c,p}`
costs nothing beyond the pass itself, and :math:`g` is a bijection: each output is strictly
increasing in its own input given the earlier ones, and unbounded (:math:`g_{c,p} - s_c
y_{c,p}` is bounded in :math:`y_{c,p}`).

The sampling direction :math:`y = g^{-1}(x)` has no closed form. It is computed by MintNet's
fixed-point iteration with a per-channel step :math:`\alpha_c = 2 / (s_c + M_c)`,

.. math::

    y^{(t+1)} = y^{(t)} - \alpha \odot \big(g(y^{(t)}) - x\big),

whose Jacobian :math:`I - \alpha J` is lower triangular with diagonal in
:math:`[-\rho_c, \rho_c]`, :math:`\rho_c = (M_c - s_c)/(M_c + s_c) < 1`, so it converges (each
coordinate contracts once the earlier ones have converged). It stops when every residual
satisfies :math:`|g(y) - x| \le \mathrm{tol}\,(1 + |x|)` (default ``tol = 1e-6``, floored at 8
machine epsilons of the dtype so that it is reachable) or after ``max_iter`` iterations.
Gradients through the solve are exact by implicit differentiation:
:math:`\mathrm{d}y = J^{-1}(\mathrm{d}x - \partial_\theta g\, \mathrm{d}\theta)`, with the
transposed triangular system :math:`J^\top w = \bar y` solved by the same iteration in the
backward pass.

References:

- Y. Song, C. Meng, S. Ermon. *MintNet: Building Invertible Neural Networks with Masked
  Convolutions.* NeurIPS, 2019. https://arxiv.org/abs/1907.07945
- S. Bai, J. Z. Kolter, V. Koltun. *Deep Equilibrium Models.* NeurIPS, 2019 (implicit
  gradients of fixed points). https://arxiv.org/abs/1909.01377
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..._numbers import check_bool, check_positive_number, has_values
from ..._validation import check_positive_int
from ...nn.masked_conv import MaskedConv2d
from ..rescale import SOFTPLUS_INV_ONE
from .base import ImageShape, ImageTransform, as_batch_of_images, restore_batch

__all__ = ["MintNetLayer"]


class MintNetLayer(ImageTransform):
    r"""A masked-convolution invertible layer (MintNet); density is one pass, sampling iterates.

    Data :math:`\to` base (``inverse_and_log_det``, one network pass):

    .. math::

        x = g(y) = s \odot y + L_2 \tanh(L_1 y + b_1) + b_2, \qquad
        \log\left|\det\frac{\partial x}{\partial y}\right|
        = \sum_{c,h,w} \log \frac{\partial g_{c,h,w}}{\partial y_{c,h,w}},

    a lower-triangular Jacobian (channel-major raster order; upper triangular with
    ``reverse=True``) with positive diagonal (see the module docs). Base :math:`\to` data
    (``forward_and_log_det``) solves :math:`g(y) = x` by fixed-point iteration to the documented
    tolerance :math:`|g(y) - x| \le \mathrm{tol}(1 + |x|)`; its gradient is exact (implicit
    differentiation). :meth:`forward_log_det` (Pyro's ``log_abs_det_jacobian``) uses the data
    side, so scoring never iterates.

    Cost: inverse (density) 1 network pass; forward (sampling) one pass per iteration, at most
    ``max_iter`` (typically 10-60), plus 2 passes; its backward pass iterates likewise.

    :param shape: event shape ``(C, H, W)``.
    :param hidden_per_channel: hidden channels :math:`k` per input channel.
    :param kernel_size: odd kernel size of both masked convolutions.
    :param reverse: use the mirrored order (alternate it between layers).
    :param tol: relative tolerance of the fixed-point solve.
    :param max_iter: iteration cap of the solve (reached: the last iterate is returned).

    Example:

    >>> _ = torch.manual_seed(0)
    >>> t = MintNetLayer((1, 4, 4), hidden_per_channel=4, tol=1e-8)
    >>> y = torch.randn(3, 1, 4, 4)
    >>> x, log_det = t.inverse_and_log_det(y)  # density direction: one pass
    >>> y_back, forward_log_det = t.forward_and_log_det(x)  # sampling: fixed-point solve
    >>> torch.allclose(y_back, y, atol=1e-6), torch.allclose(forward_log_det, -log_det)
    (True, True)

    References:

    - Y. Song, C. Meng, S. Ermon. *MintNet: Building Invertible Neural Networks with Masked
      Convolutions.* NeurIPS, 2019. https://arxiv.org/abs/1907.07945
    """

    forward_is_iterative = True

    def __init__(
        self,
        shape: ImageShape,
        hidden_per_channel: int = 8,
        kernel_size: int = 3,
        reverse: bool = False,
        tol: float = 1e-6,
        max_iter: int = 500,
    ) -> None:
        super().__init__(shape)
        k = check_positive_int(hidden_per_channel, "hidden_per_channel")
        self.max_iter = check_positive_int(max_iter, "max_iter")
        self.tol = check_positive_number(tol, "tol")
        c = self.channels
        self.hidden_per_channel = k
        self.reverse = check_bool(reverse, "reverse")
        self.raw_scale = nn.Parameter(torch.full((c,), SOFTPLUS_INV_ONE))
        self.conv1 = MaskedConv2d(c, c * k, kernel_size, 1, k, reverse, diagonal_init=0.5)
        self.conv2 = MaskedConv2d(
            c * k, c, kernel_size, k, 1, reverse, scale=0.1, diagonal_init=0.05
        )
        self.iterations = 0  # of the last solve, for diagnostics

    # -- the density direction ----------------------------------------------------------------
    def _taps(self) -> Tensor:
        r""":math:`u_j v_j` per hidden channel, shape ``(C, k)``."""
        c, k = self.channels, self.hidden_per_channel
        w1 = self.conv1.masked_weight() * self.conv1.diagonal.to(self.raw_scale)
        w2 = self.conv2.masked_weight() * self.conv2.diagonal.to(self.raw_scale)
        v = w1.sum((1, 2, 3)).reshape(c, k)  # L1: hidden j <- its own channel
        u = w2.sum((2, 3)).sum(0).reshape(c, k)  # L2: own channel <- hidden j
        return u * v

    def _g(self, y: Tensor, with_diag: bool = True) -> tuple[Tensor, Tensor | None]:
        """``g(y)`` and its Jacobian diagonal for ``y`` of shape ``(N, C, H, W)``."""
        scale = F.softplus(self.raw_scale)[:, None, None]
        a = self.conv1(y)
        t = torch.tanh(a)
        x = scale * y + self.conv2(t)
        if not with_diag:
            return x, None
        n, _, h, w = y.shape
        slope = (1 - t.square()).reshape(n, self.channels, self.hidden_per_channel, h, w)
        diag = scale + (slope * self._taps()[None, :, :, None, None]).sum(2)
        return x, diag

    def _bounds(self) -> tuple[Tensor, Tensor]:
        """Per-channel bounds ``(s_c, M_c)`` of the Jacobian diagonal."""
        s = F.softplus(self.raw_scale)
        return s, s + self._taps().sum(1)

    def inverse_and_log_det(
        self, y: Tensor, context: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        """Data -> base: ``x = g(y)``, one pass; log-det ``sum log diag``."""
        y, _ = self._prepare(y, context, "y")
        flat, batch = as_batch_of_images(y)
        x, diag = self._g(flat)
        assert diag is not None
        return restore_batch(x, batch), torch.log(diag).sum((1, 2, 3)).reshape(batch)

    def forward_log_det(self, x: Tensor, y: Tensor, context: Tensor | None = None) -> Tensor:
        """``log|det dy/dx|`` from the data side ``y`` (one pass, no solve)."""
        return -self.inverse_and_log_det(y, context)[1]

    # -- the sampling direction ---------------------------------------------------------------
    def _step(self) -> Tensor:
        s, m = self._bounds()
        return (2.0 / (s + m)).detach()[:, None, None]

    def _tol(self, like: Tensor) -> float:
        """``tol``, floored at 8 machine epsilons of the working dtype (reachable)."""
        return max(self.tol, 8 * torch.finfo(like.dtype).eps)

    @torch.no_grad()
    def _solve(self, x: Tensor) -> Tensor:
        """``y`` with ``g(y) = x`` to the tolerance (no gradient); on the meta device, which
        has no values to iterate on, a tensor of the right shape."""
        y = x.clone()
        if not has_values(x):
            return y
        alpha = self._step()
        limit = self._tol(x) * (1 + x.abs())
        self.iterations = self.max_iter
        for i in range(self.max_iter):
            r = self._g(y, with_diag=False)[0] - x
            if bool((r.abs() <= limit).all()):
                self.iterations = i
                break
            y = y - alpha * r
        return y

    def _solve_transposed(self, y: Tensor, b: Tensor) -> Tensor:
        """``w`` with ``J(y)^T w = b`` by the same iteration (vector-Jacobian products)."""
        alpha = self._step()
        with torch.enable_grad():
            y = y.detach().requires_grad_(True)
            gy = self._g(y, with_diag=False)[0]
            w = b.clone()
            limit = self._tol(b) * (1 + b.abs())
            for _ in range(self.max_iter):
                (jtw,) = torch.autograd.grad(gy, y, w, retain_graph=True)
                r = jtw - b
                if bool((r.abs() <= limit).all()):
                    break
                w = w - alpha * r
        return w.detach()

    def _solve_with_grad(self, x: Tensor) -> Tensor:
        y_star = self._solve(x.detach())
        if not torch.is_grad_enabled():
            return y_star
        # y = y* - (r - r.detach()) has the value y* and, through the hook, the implicit
        # gradient: dL/dx = J^{-T} dL/dy, dL/dtheta = -(dg/dtheta)^T J^{-T} dL/dy.
        r = self._g(y_star, with_diag=False)[0] - x
        if not r.requires_grad:
            return y_star
        r.register_hook(lambda grad: None if grad is None else self._solve_transposed(y_star, grad))
        return y_star - (r - r.detach())

    def forward_and_log_det(
        self, x: Tensor, context: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        """Base -> data: solve ``g(y) = x``; log-det ``-sum log diag(y)``."""
        x, _ = self._prepare(x, context, "x")
        flat, batch = as_batch_of_images(x)
        y = self._solve_with_grad(flat)
        diag = self._g(y)[1]
        assert diag is not None
        return restore_batch(y, batch), -torch.log(diag).sum((1, 2, 3)).reshape(batch)

    def forward_without_log_det(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        x, _ = self._prepare(x, context, "x")
        flat, batch = as_batch_of_images(x)
        return restore_batch(self._solve_with_grad(flat), batch)

    def extra_repr(self) -> str:
        return (
            super().extra_repr()
            + f", hidden_per_channel={self.hidden_per_channel}, reverse={self.reverse}, "
            f"tol={self.tol:g}, max_iter={self.max_iter}"
        )
