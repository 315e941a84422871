r"""Planar flow (Rezende & Mohamed, 2015) with an invertibility guarantee and a numerical inverse.

The maths as pure functions (:func:`planar_constrain`, :func:`planar_forward`,
:func:`planar_inverse`), and the module :class:`Planar` that holds (or predicts) the parameters.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .._validation import check_context, check_hidden_dims
from ..nn.mlp import MLP
from ._hypernet import HyperParametrised
from ._root_finding import implicit_root, solve_increasing

_LOG_E_MINUS_1 = math.log(math.e - 1.0)  # softplus(_LOG_E_MINUS_1) == 1, i.e. m(a) == 0


def _tanh_sech2(z: Tensor) -> tuple[Tensor, Tensor]:
    """``tanh(z)`` and ``sech(z)**2``, the latter as ``4t/(1+t)^2`` with ``t = exp(-2|z|)``."""
    t = torch.exp(-2 * z.abs())
    return torch.tanh(z), 4 * t / (1 + t) ** 2


def _log_slope(z: Tensor, softplus_a: Tensor) -> Tensor:
    r"""``log(1 + sech^2(z) (softplus(a) - 1))`` as ``log(tanh^2 z + sech^2(z) softplus(a))``.

    Both terms are non-negative, so the sum has no cancellation however close the slope gets to
    zero (``w^T u_hat`` near ``-1``).
    """
    tanh, sech2 = _tanh_sech2(z)
    slope = tanh * tanh + sech2 * softplus_a
    return torch.log(slope.clamp_min(torch.finfo(slope.dtype).tiny))


def planar_constrain(u: Tensor, w: Tensor) -> tuple[Tensor, Tensor]:
    r"""Map raw ``u`` to :math:`\hat u` with :math:`w^\top\hat u = m(w^\top u) > -1`.

    :math:`\hat u = u + (m(w^\top u) - w^\top u)\, w / \|w\|^2` with
    :math:`m(a) = -1 + \mathrm{softplus}(a)`; :math:`m(a) - a` is evaluated as
    :math:`\mathrm{softplus}(-a) - 1` (no cancellation for large :math:`a`). :math:`\|w\|^2` is
    clamped below at the dtype's smallest normal number, so :math:`w = 0` gives
    :math:`\hat u = u` (the layer is then a translation, invertible for any :math:`u`), and the
    returned slope term stays consistent with the :math:`\hat u` actually used.

    :param u: raw ``u``, shape ``(..., D)``.
    :param w: ``w``, shape ``(..., D)``.
    :return: ``(u_hat, softplus(w^T u))``; the second is :math:`1 + w^\top\hat u > 0`, kept
        separately because every stable formula below needs it rather than :math:`w^\top\hat u`.
    """
    a = (w * u).sum(-1)
    norm2 = (w * w).sum(-1)
    inv_norm2 = 1 / norm2.clamp_min(torch.finfo(w.dtype).tiny)
    u_hat = u + ((F.softplus(-a) - 1) * inv_norm2).unsqueeze(-1) * w
    # 1 + w^T u_hat = lam softplus(a) + (1 - lam)(1 + a) with lam = |w|^2 / max(|w|^2, tiny):
    # softplus(a) whenever |w|^2 is a normal number, 1 at w = 0 (a pure translation).
    lam = norm2 * inv_norm2
    return u_hat, lam * F.softplus(a) + (1 - lam) * (1 + a)


def planar_forward(
    x: Tensor, u_hat: Tensor, w: Tensor, b: Tensor, softplus_a: Tensor
) -> tuple[Tensor, Tensor]:
    r"""``y = x + u_hat tanh(w^T x + b)`` and ``log|det dy/dx|`` (see :class:`Planar`)."""
    z = (w * x).sum(-1) + b
    y = x + u_hat * torch.tanh(z).unsqueeze(-1)
    return y, _log_slope(z, softplus_a)


def planar_inverse(
    y: Tensor,
    u_hat: Tensor,
    w: Tensor,
    b: Tensor,
    softplus_a: Tensor,
    max_iter: int = 100,
) -> tuple[Tensor, Tensor]:
    r"""Invert :func:`planar_forward`: ``x`` and ``log|det dx/dy|`` by a scalar root solve.

    Solves :math:`\alpha + a\tanh\alpha = c` with :math:`c = w^\top y + b`, :math:`a = w^\top\hat
    u` (see :class:`Planar` for the tolerance), then :math:`x = y - \hat u\tanh\alpha`.
    """
    c = (w * y).sum(-1) + b
    a = softplus_a - 1
    c, a, softplus_a = torch.broadcast_tensors(c, a, softplus_a)

    def fun(alpha: Tensor) -> tuple[Tensor, Tensor]:
        tanh, sech2 = _tanh_sech2(alpha)
        return alpha + a * tanh - c, tanh * tanh + sech2 * softplus_a

    with torch.no_grad():
        tiny = torch.finfo(c.dtype).tiny
        eps = torch.finfo(c.dtype).eps
        # tanh linearised at 0: a good start near the origin; far out, Newton converges at once.
        init = c / softplus_a.clamp_min(tiny)
        ftol = 8 * eps * (1 + c.abs() + a.abs())
        root = solve_increasing(fun, c - a.abs(), c + a.abs(), init, ftol, max_iter)
    alpha = implicit_root(fun, root)
    x = y - u_hat * torch.tanh(alpha).unsqueeze(-1)
    return x, -_log_slope(alpha, softplus_a)


class Planar(HyperParametrised):
    r"""Planar flow :math:`y = x + \hat u \tanh(w^\top x + b)`, invertible by construction.

    Rezende & Mohamed's contraction/expansion along a hyperplane. The raw parameters
    :math:`u, w \in \mathbb{R}^D, b \in \mathbb{R}` are mapped to

    .. math::

        \hat u = u + \big(m(w^\top u) - w^\top u\big)\frac{w}{\|w\|^2},
        \qquad m(a) = -1 + \mathrm{softplus}(a),

    so that :math:`w^\top\hat u = m(w^\top u) > -1` for *any* raw values: the map is strictly
    increasing along :math:`w` and hence a bijection. With :math:`z = w^\top x + b`,

    .. math::

        \log\left|\det\frac{\partial y}{\partial x}\right|
        = \log\big(1 + \mathrm{sech}^2(z)\, w^\top\hat u\big)
        = \log\big(\tanh^2 z + \mathrm{sech}^2(z)\,\mathrm{softplus}(w^\top u)\big),

    the second form being a sum of non-negative terms (no cancellation, never the log of a
    non-positive number).

    **Inverse.** Projecting :math:`y = x + \hat u\tanh z` on :math:`w` gives the scalar equation

    .. math::

        f(\alpha) = \alpha + a\tanh\alpha - c = 0, \qquad c = w^\top y + b,\quad a = w^\top\hat u,

    whose solution is :math:`\alpha = z`; :math:`f' = 1 + a\,\mathrm{sech}^2\alpha \ge 0`, so
    :math:`f` is monotone with the root in :math:`[c - |a|, c + |a|]`. It is solved elementwise by
    Newton's method safeguarded by bisection, under :func:`torch.no_grad`, until
    :math:`|f(\alpha)| \le 8\varepsilon(1 + |c| + |a|)` with :math:`\varepsilon` the machine
    epsilon of the dtype (about :math:`1.8\times10^{-15}(1 + |c| + |a|)` in float64 and
    :math:`9.5\times10^{-7}(1 + |c| + |a|)` in float32), or the bracket has shrunk to rounding
    level; at most 100 iterations. Then :math:`x = y - \hat u\tanh\alpha`. Any point can be
    scored, not only the flow's own samples (Pyro's ``Planar`` raises there).

    **Gradients of the inverse.** The solved root is re-attached with one Newton step whose value
    is zero at the root, :math:`\alpha \leftarrow \alpha^* - (f(\alpha^*) -
    \mathrm{sg}[f(\alpha^*)])/f'(\alpha^*)` (:math:`\mathrm{sg}` = stop-gradient): the value is
    the solver's, the gradient is exactly the implicit-function-theorem gradient
    :math:`\partial\alpha/\partial\theta = -(\partial f/\partial\theta)/f'(\alpha)`, so the
    inverse (and ``log_prob``) is differentiable with respect to ``y``, the parameters and the
    context, without backpropagating through the iterations.

    **Cost.** forward (sampling): closed form, :math:`O(D)` per sample; inverse (density): one
    scalar root solve per sample, typically 3-8 Newton iterations of :math:`O(1)` each after an
    :math:`O(D)` projection (at most 100, vectorised over the batch). Conditional layers add one
    MLP pass on the context in either direction.

    **Initialisation.** :math:`w` is a random unit vector and :math:`u = \log(e-1)\,w + `
    :math:`\mathcal{U}(-0.01, 0.01)` noise, which makes :math:`\hat u` small: the layer starts
    close to the identity while every parameter gets a gradient.

    :param input_dim: event size :math:`D`.
    :param context_dim: context size; if given, :math:`u, w, b` are predicted per sample by an
        :class:`~pyro_flows.nn.MLP` on the context (its output bias initialised as above).
    :param hidden_dims: hidden sizes of that MLP (conditional layers only).

    Example::

        >>> flow = Planar(2)
        >>> x = torch.randn(5, 2)
        >>> y, log_det = flow.forward_and_log_det(x)
        >>> x_back, inv_log_det = flow.inverse_and_log_det(y)
        >>> bool(torch.allclose(x_back, x, atol=1e-5)), log_det.shape
        (True, torch.Size([5]))
        >>> cond = Planar(2, context_dim=3)
        >>> cond.forward_and_log_det(torch.randn(4, 7, 2), torch.randn(7, 3))[0].shape
        torch.Size([4, 7, 2])

    References:

    * D. J. Rezende, S. Mohamed, "Variational Inference with Normalizing Flows", ICML 2015,
      arXiv:1505.05770 (the transform and the :math:`\hat u` reparametrisation, appendix A.1).
    """

    forward_map = staticmethod(planar_forward)
    inverse_map = staticmethod(planar_inverse)

    def __init__(
        self,
        input_dim: int,
        context_dim: int | None = None,
        hidden_dims: Sequence[int] = (64, 64),
    ) -> None:
        super().__init__(input_dim, context_dim)
        self.hidden_dims = check_hidden_dims(hidden_dims)
        u, w, b = self._initial_values(self.input_dim)
        if self.context_dim is None:
            self.u = nn.Parameter(u)
            self.w = nn.Parameter(w)
            self.bias = nn.Parameter(b)
            self.net: MLP | None = None
        else:
            self.net = self._hypernet(torch.cat([u, w, b]))

    @staticmethod
    def _initial_values(dim: int) -> tuple[Tensor, Tensor, Tensor]:
        w = torch.randn(dim)
        w = w / w.norm()
        u = _LOG_E_MINUS_1 * w + torch.empty(dim).uniform_(-0.01, 0.01)
        b = torch.empty(1).uniform_(-0.01, 0.01)
        return u, w, b

    def _params(self, context: Tensor | None) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """``(u_hat, w, b, softplus(w^T u))``, per sample for conditional layers."""
        if self.net is None:
            u, w, b = self.u, self.w, self.bias[0]
        else:
            out = self.net(None, context)
            d = self.input_dim
            u, w, b = out[..., :d], out[..., d : 2 * d], out[..., 2 * d]
        u_hat, softplus_a = planar_constrain(u, w)
        return u_hat, w, b, softplus_a

    def u_hat(self, context: Tensor | None = None) -> Tensor:
        r""":math:`\hat u` (shape ``(D,)``, or ``(*B, D)`` for a context ``(*B, C)``)."""
        return self._params(check_context(context, self.context_dim, type(self).__name__))[0]
