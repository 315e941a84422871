r"""The Gaussian start's location search from several points, run as *one* search over all of
them (:func:`search_together`).

The searches from the :math:`K` starting points :math:`\mu^{(1)}, \dots, \mu^{(K)}` of
:mod:`~pyro_flows.infer.autoflow_start` are independent minimisations of the deterministic
loss :math:`\ell` (:mod:`~pyro_flows.infer.gaussian_start`). On posteriordb's small posteriors one
evaluation of :math:`\ell` costs about the same for 32 draws as for 192 (Pyro's tracing, not the
arithmetic, dominates), so the :math:`K` searches cost about :math:`K` times what they need to.
Here they run as one L-BFGS minimisation of the separable sum

.. math::

    F(\mu^{(1)}, \dots, \mu^{(K)}) = \sum_{k=1}^K \ell_k(\mu^{(k)}),

whose minimiser is every block's own minimiser (the Hessian is block diagonal), with all
:math:`K M` draws in one vectorised model call: block :math:`k` has :math:`M` draws of its own
(:math:`\ell_k` is the loss on them). The block losses come from the per-draw log weights of
the traces, so a block whose loss is not finite at its starting point is dropped (as a single
search from it would be). Each distinct end point (:func:`~pyro_flows.infer.gaussian_start.\
distinct_optima`) is then polished on the reference loss :math:`\ell` (the guide's own :math:`M`
draws) by :func:`~pyro_flows.infer.gaussian_start.fit_deterministic`, so the losses reported
and compared are those of the single searches.

References:

- J. Nocedal, S. J. Wright. *Numerical Optimization*, 2nd ed., ch. 7 (L-BFGS) and ch. 7.4
  (partially separable functions). Springer, 2006.
- R. Giordano, M. Ingram, T. Broderick. *Black Box Variational Inference with a
  Deterministic Objective.* JMLR 25, 2024. https://arxiv.org/abs/2304.05527
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

from .gaussian_start import GaussianStart, distinct_optima, fit_deterministic, has_barrier

__all__ = ["per_draw", "search_together"]


def per_draw(log_prob: Tensor, dim: int, draws: int) -> Tensor:
    """A site's ``log_prob`` summed over every dimension but the draws' ``dim`` (negative,
    counted from the right), shape ``(draws,)``.

    >>> import torch
    >>> per_draw(torch.ones(4, 3), -2, 4).tolist(), per_draw(torch.ones(3), -2, 4).tolist()
    ([3.0, 3.0, 3.0, 3.0], [3.0, 3.0, 3.0, 3.0])
    """
    if log_prob.dim() < -dim:
        log_prob = log_prob.reshape((1,) * (-dim - log_prob.dim()) + tuple(log_prob.shape))
    at = log_prob.dim() + dim
    others = [d for d in range(log_prob.dim()) if d != at]
    summed = log_prob.sum(others) if others else log_prob
    return summed.reshape(-1).expand(draws) if summed.numel() == 1 else summed.reshape(draws)


def search_together(
    block_losses: Callable[[Tensor], Tensor],
    loss_fn: Callable[[], Tensor],
    parameter: nn.Parameter,
    starts: Sequence[Tensor],
    *,
    num_draws: int,
    max_evaluations: int = 300,
) -> GaussianStart | None:
    r"""The searches of :func:`~pyro_flows.infer.gaussian_start.fit_from_starts` from
    ``starts``, run together (see the module docstring); ``None`` when that cannot be done
    (the caller then searches from each start in turn).

    :param block_losses: ``block_losses(locs)`` for ``locs`` of shape ``(K, D)``: the :math:`K`
        block losses :math:`\ell_k(\mu^{(k)})`, shape ``(K,)`` (deterministic, differentiable).
    :param loss_fn: the reference loss :math:`\ell` of ``parameter`` (as for
        :func:`~pyro_flows.infer.gaussian_start.fit_from_starts`).
    :param parameter: the location (left at the best point found).
    :param starts: the starting values; ``starts[0]`` is the reference start.
    :param num_draws: recorded in the result.
    :param max_evaluations: the budget of the joint search and of each polish.
    :returns: a :class:`~pyro_flows.infer.gaussian_start.GaussianStart` as
        :func:`~pyro_flows.infer.gaussian_start.fit_from_starts` returns it, or ``None``.

    Example: two wells, searched from both sides at once:

    >>> import torch
    >>> p = torch.nn.Parameter(torch.zeros(1))
    >>> well = lambda x: ((x**2 - 4.0) ** 2).sum(-1) + x.sum(-1)   # minima near -2 and +2
    >>> result = search_together(well, lambda: well(p), p, [torch.ones(1), -torch.ones(1)],
    ...                          num_draws=1)
    >>> round(float(p.detach()), 1), len(result.optima)   # the deeper well; the other one seen
    (-2.0, 2)
    """
    reference = starts[0].detach().clone()
    with torch.no_grad():
        try:
            first = block_losses(torch.stack([s.to(parameter) for s in starts]))
        except (ValueError, RuntimeError, AssertionError, NotImplementedError):
            return None
    alive = [s for s, v in zip(starts, first.tolist(), strict=True) if math.isfinite(v)]
    if not alive:
        return None
    locs = nn.Parameter(torch.stack([s.to(parameter) for s in alive]).detach().clone())
    joint = fit_deterministic(lambda: block_losses(locs).sum(), [locs], num_draws=num_draws,
                              max_evaluations=max_evaluations)
    evaluations = 1 + joint.evaluations
    with torch.no_grad():
        ends = block_losses(locs.detach()).tolist()
    evaluations += 1
    found = [(v, x.clone()) for v, x in zip(ends, locs.detach(), strict=True) if math.isfinite(v)]
    # one polish per distinct end point; a barrier test on the reference loss merges the end
    # points of one long valley (an ill-conditioned regression) before they are polished
    candidates = [
        x for _, x in distinct_optima(
            found, barrier=lambda a, b: has_barrier(loss_fn, parameter, a, b)
        )
    ] or [alive[0].to(parameter)]
    polished: list[tuple[float, Tensor]] = []
    for point in candidates:
        with torch.no_grad():
            parameter.copy_(point)
        result = fit_deterministic(loss_fn, [parameter], num_draws=num_draws,
                                   max_evaluations=max_evaluations)
        evaluations += result.evaluations
        if math.isfinite(result.loss_after):
            polished.append((result.loss_after, parameter.detach().clone()))
    with torch.no_grad():
        parameter.copy_(reference.to(parameter))
        try:
            before = float(loss_fn().detach())
        except (ValueError, RuntimeError, AssertionError, NotImplementedError):
            before = math.inf
    # a start whose loss is nan is as bad as one refused: every finite end point improves on
    # it (left nan, no later comparison succeeded and AutoFlow threw the start's fit away)
    before = before if math.isfinite(before) else math.inf
    evaluations += 1
    if not polished:
        return None
    loss, point = min(polished, key=lambda item: item[0])
    accepted = not math.isfinite(before) or loss < before
    optima = tuple(
        value
        for value, _ in distinct_optima(
            polished, barrier=lambda a, b: has_barrier(loss_fn, parameter, a, b)
        )
    )
    with torch.no_grad():
        parameter.copy_(point if accepted else reference.to(parameter))
    return GaussianStart(before, loss if accepted else before, evaluations, num_draws, accepted,
                         "" if accepted else "no point improved on the start",
                         optima if len(starts) > 1 else ())
