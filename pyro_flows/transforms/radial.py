r"""Radial flow (Tabak & Turner 2013; Rezende & Mohamed 2015) with a closed-form inverse.

The maths as pure functions (:func:`radial_forward`, :func:`radial_inverse`), and the module
:class:`Radial` that holds (or predicts) the parameters.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .._validation import check_hidden_dims
from ..nn.mlp import MLP
from ._hypernet import HyperParametrised


def safe_norm(z: Tensor) -> Tensor:
    """Euclidean norm over the last dim whose gradient at ``z = 0`` is 0 instead of NaN."""
    sq = (z * z).sum(-1)
    pos = sq > 0
    return torch.where(pos, torch.sqrt(torch.where(pos, sq, torch.ones_like(sq))), 0.0 * sq)


def _radial_log_det(r: Tensor, alpha: Tensor, gamma: Tensor, dim: int) -> Tensor:
    r"""``log|det dy/dx|`` at radius ``r = |x - x0|``; every log is of a positive quantity."""
    log_ar = torch.log(alpha + r)
    return (
        (dim - 1) * (torch.log(r + gamma) - log_ar)
        + torch.log(r * (r + 2 * alpha) + alpha * gamma)
        - 2 * log_ar
    )


def radial_forward(x: Tensor, x0: Tensor, alpha: Tensor, gamma: Tensor) -> tuple[Tensor, Tensor]:
    r"""``y = x0 + (x - x0)(r + gamma)/(alpha + r)`` and ``log|det dy/dx|`` (see :class:`Radial`).

    :param alpha: :math:`\alpha > 0`, shape ``x.shape[:-1]`` or broadcastable.
    :param gamma: :math:`\gamma = \alpha + \beta > 0`, same shape.
    """
    z = x - x0
    r = safe_norm(z)
    y = x0 + z * ((r + gamma) / (alpha + r)).unsqueeze(-1)
    return y, _radial_log_det(r, alpha, gamma, x.shape[-1])


def radial_inverse(y: Tensor, x0: Tensor, alpha: Tensor, gamma: Tensor) -> tuple[Tensor, Tensor]:
    r"""Invert :func:`radial_forward` in closed form: ``x`` and ``log|det dx/dy|``."""
    v = y - x0
    r_y = safe_norm(v)
    b = gamma - r_y  # = alpha + beta - r_y
    disc = torch.sqrt(b * b + 4 * r_y * alpha)
    tiny = torch.finfo(y.dtype).tiny
    r = torch.where(
        b > 0,
        2 * r_y * alpha / (b + disc).clamp_min(tiny),  # no cancellation when b > 0
        0.5 * (disc - b),  # no cancellation when b <= 0
    )
    x = x0 + v * ((alpha + r) / (r + gamma)).unsqueeze(-1)
    return x, -_radial_log_det(r, alpha, gamma, y.shape[-1])


class Radial(HyperParametrised):
    r"""Radial flow :math:`y = x + \beta h(\alpha, r)(x - x_0)`, invertible by construction.

    Contraction/expansion around a centre :math:`x_0 \in \mathbb{R}^D`, with
    :math:`r = \|x - x_0\|`, :math:`h(\alpha, r) = 1/(\alpha + r)`,
    :math:`\alpha = \mathrm{softplus}(\alpha') > 0` and
    :math:`\beta = -\alpha + \mathrm{softplus}(\beta')`, so :math:`\beta > -\alpha` for any raw
    :math:`\alpha', \beta'` and the map is a bijection. Writing
    :math:`\gamma = \alpha + \beta = \mathrm{softplus}(\beta') > 0`, the radial factor is
    :math:`1 + \beta h = (r + \gamma)/(\alpha + r) > 0`, and

    .. math::

        \log\left|\det\frac{\partial y}{\partial x}\right|
        = (D - 1)\log(1 + \beta h) + \log(1 + \beta h + \beta h' r)
        = (D - 1)\log\frac{r + \gamma}{\alpha + r}
          + \log\frac{r^2 + 2\alpha r + \alpha\gamma}{(\alpha + r)^2},

    from :math:`\partial y/\partial x = (1 + \beta h) I + \beta h'(r)\,(x - x_0)(x - x_0)^\top / r`
    with :math:`h' = -1/(\alpha + r)^2` (one eigenvalue along :math:`x - x_0`, :math:`D - 1`
    across). Every logarithm is of a positive quantity, also at :math:`r = 0`.

    **Inverse** (closed form). Taking norms, :math:`r_y = \|y - x_0\| = r (r + \gamma)/(\alpha +
    r)`, i.e. :math:`r^2 + b r - \alpha r_y = 0` with :math:`b = \gamma - r_y = \alpha + \beta -
    r_y`, whose only non-negative root is evaluated without cancellation as

    .. math::

        r = \frac{2\alpha r_y}{b + \sqrt{b^2 + 4\alpha r_y}} \;(b > 0), \qquad
        r = \frac{-b + \sqrt{b^2 + 4\alpha r_y}}{2} \;(b \le 0),

    then :math:`x = x_0 + (y - x_0)(\alpha + r)/(r + \gamma)`. It is exact to rounding and scores
    any point (Pyro's ``Radial`` raises there). The norm uses a safe square root, so
    :math:`y = x_0` (or :math:`x = x_0`) gives finite values *and* finite gradients.

    **Cost.** forward (sampling): closed form, :math:`O(D)` per sample; inverse (density): closed
    form, :math:`O(D)` per sample (one square root). Conditional layers add one MLP pass on the
    context in either direction.

    **Initialisation.** :math:`x_0 \sim \mathcal{U}(\pm 1/\sqrt{D})`,
    :math:`\alpha', \beta' \sim \mathcal{U}(\pm 0.01)` (so :math:`\beta \approx 0`): the layer
    starts close to the identity while every parameter gets a gradient.

    :param input_dim: event size :math:`D`.
    :param context_dim: context size; if given, :math:`x_0, \alpha', \beta'` are predicted per
        sample by an :class:`~pyro_flows.nn.MLP` on the context.
    :param hidden_dims: hidden sizes of that MLP (conditional layers only).

    Example::

        >>> flow = Radial(3)
        >>> x = torch.randn(5, 3)
        >>> y, log_det = flow.forward_and_log_det(x)
        >>> x_back, inv_log_det = flow.inverse_and_log_det(y)
        >>> ok = torch.allclose(inv_log_det, -log_det, atol=1e-6)
        >>> bool(torch.allclose(x_back, x, atol=1e-5)), bool(ok)
        (True, True)
        >>> cond = Radial(3, context_dim=2)
        >>> cond.inverse_and_log_det(torch.randn(4, 7, 3), torch.randn(7, 2))[0].shape
        torch.Size([4, 7, 3])

    References:

    * E. G. Tabak, C. V. Turner, "A Family of Nonparametric Density Estimation Algorithms",
      Communications on Pure and Applied Mathematics 66(2), 2013 (radial expansions).
    * D. J. Rezende, S. Mohamed, "Variational Inference with Normalizing Flows", ICML 2015,
      arXiv:1505.05770 (the radial flow and the :math:`\beta \ge -\alpha` condition).
    """

    forward_map = staticmethod(radial_forward)
    inverse_map = staticmethod(radial_inverse)

    def __init__(
        self,
        input_dim: int,
        context_dim: int | None = None,
        hidden_dims: Sequence[int] = (64, 64),
    ) -> None:
        super().__init__(input_dim, context_dim)
        self.hidden_dims = check_hidden_dims(hidden_dims)
        stdv = 1.0 / math.sqrt(self.input_dim)
        x0 = torch.empty(self.input_dim).uniform_(-stdv, stdv)
        if self.context_dim is None:
            self.x0 = nn.Parameter(x0)
            self.alpha_prime = nn.Parameter(torch.empty(1).uniform_(-0.01, 0.01))
            self.beta_prime = nn.Parameter(torch.empty(1).uniform_(-0.01, 0.01))
            self.net: MLP | None = None
        else:
            self.net = self._hypernet(torch.cat([x0, torch.zeros(2)]))

    def _params(self, context: Tensor | None) -> tuple[Tensor, Tensor, Tensor]:
        """``(x0, alpha, gamma)`` with ``gamma = alpha + beta``, per sample if conditional."""
        if self.net is None:
            x0, alpha_p, beta_p = self.x0, self.alpha_prime[0], self.beta_prime[0]
        else:
            out = self.net(None, context)
            d = self.input_dim
            x0, alpha_p, beta_p = out[..., :d], out[..., d], out[..., d + 1]
        tiny = torch.finfo(x0.dtype).tiny
        return x0, F.softplus(alpha_p).clamp_min(tiny), F.softplus(beta_p).clamp_min(tiny)
