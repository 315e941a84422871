r"""Vectorised scalar root finding for numerical inverses, with implicit gradients.

Two pieces, used together:

* :func:`solve_increasing` finds, for a batch of independent scalar equations, the root of a
  non-decreasing function :math:`f` inside a bracket :math:`[lo, hi]` with
  :math:`f(lo) \le 0 \le f(hi)`, by Newton's method safeguarded by bisection (Numerical Recipes'
  ``rtsafe``). It runs under :func:`torch.no_grad`: iterations are never recorded.
* :func:`implicit_root` re-attaches the solved root to the autograd graph with one Newton step
  whose *value* is zero at the root,

  .. math::

      \alpha \leftarrow \alpha^* - \frac{f(\alpha^*; \theta) - \mathrm{sg}[f(\alpha^*;\theta)]}
      {f'(\alpha^*; \theta)},

  where :math:`\mathrm{sg}` stops the gradient. The value stays exactly :math:`\alpha^*` (so no
  rounding from an extra step near a nearly singular root), while the gradient is
  :math:`-(\partial f/\partial\theta)/f'`, which is the implicit-function-theorem gradient of
  the root with respect to every tensor :math:`f` depends on.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

RootFunction = Callable[[Tensor], tuple[Tensor, Tensor]]
"""``fun(alpha) -> (f(alpha), f'(alpha))``, elementwise over a batch."""


def solve_increasing(
    fun: RootFunction,
    lo: Tensor,
    hi: Tensor,
    init: Tensor | None = None,
    ftol: Tensor | float = 0.0,
    max_iter: int = 100,
) -> Tensor:
    r"""Solve ``f(alpha) = 0`` elementwise for a non-decreasing ``f`` bracketed by ``[lo, hi]``.

    Each element stops once :math:`|f(\alpha)| \le` ``ftol`` or its bracket has shrunk to
    :math:`4\varepsilon\max(|lo|, |hi|)` (:math:`\varepsilon` the dtype's machine epsilon), i.e.
    to rounding level; the loop ends when every element has stopped or after ``max_iter``
    iterations. Newton steps that leave the bracket or fail to halve the previous step are
    replaced by bisection, so convergence is guaranteed (at least linear, typically quadratic).

    :param fun: returns ``(f(alpha), f'(alpha))``; called on tensors shaped like ``lo``.
    :param lo: lower end of the bracket (``f(lo) <= 0``).
    :param hi: upper end of the bracket (``f(hi) >= 0``).
    :param init: starting point (clamped into the bracket); the midpoint if ``None``.
    :param ftol: absolute residual tolerance (broadcastable to ``lo``).
    :param max_iter: iteration cap.
    :return: the roots, detached, shaped like ``lo``.
    """
    with torch.no_grad():
        lo = lo.detach().clone()
        hi = hi.detach().clone()
        eps = torch.finfo(lo.dtype).eps
        tiny = torch.finfo(lo.dtype).tiny
        alpha = 0.5 * (lo + hi) if init is None else init.detach()
        alpha = torch.minimum(torch.maximum(alpha, lo), hi)
        step_old = hi - lo
        done = torch.zeros_like(alpha, dtype=torch.bool)
        for _ in range(max_iter):
            f, fprime = fun(alpha)
            pos = f > 0
            hi = torch.where(pos, alpha, hi)
            lo = torch.where(pos, lo, alpha)
            width = 4 * eps * torch.maximum(lo.abs(), hi.abs()) + tiny
            done = done | (f.abs() <= ftol) | (hi - lo <= width)
            # no early exit under tracing (the trace would freeze one input's iteration count)
            # or on 'meta' (no values to test)
            if not torch.jit.is_tracing() and done.device.type != "meta" and bool(done.all()):
                break
            newton = alpha - f / fprime.clamp_min(tiny)
            ok = (newton >= lo) & (newton <= hi) & torch.isfinite(newton)
            ok = ok & (2 * (newton - alpha).abs() <= step_old.abs())
            new = torch.where(ok, newton, 0.5 * (lo + hi))
            step_old = torch.where(done, step_old, new - alpha)
            alpha = torch.where(done, alpha, new)
        return alpha


def implicit_root(fun: RootFunction, root: Tensor) -> Tensor:
    r"""Return ``root`` (value unchanged) with the implicit-function-theorem gradient attached.

    ``fun`` must be built from the differentiable tensors the root depends on; it is evaluated
    once, with autograd, at the detached ``root``. See the module docstring for the formula.
    """
    root = root.detach()
    f, fprime = fun(root)
    tiny = torch.finfo(root.dtype).tiny
    return root - (f - f.detach()) / fprime.clamp_min(tiny)
