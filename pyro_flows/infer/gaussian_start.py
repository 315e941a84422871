r"""A deterministic Gaussian start for flow guides: fit the guide's Gaussian stages before the
flow layers learn.

A flow guide whose layers start at the identity is a Gaussian
:math:`\zeta = \mu + \sigma \odot L\varepsilon` at the start. Stochastic gradient steps move
:math:`\mu` by about the learning rate per step whatever the scale of the problem, so a
regression intercept near 88 that starts at 0 takes Adam at ``lr=1e-2`` thousands of steps;
meanwhile the flow layers' networks, pushed by the same huge, consistent gradients, learn shifts
that grow faster than linearly, overshoot, and end in an infinite loss and NaN parameters. Both
problems go away when the Gaussian stages start where a Gaussian fit would end.

This module fits them on a *deterministic* objective (Giordano, Ingram and Broderick's DADVI):
with :math:`M` base draws :math:`\varepsilon_1, \dots, \varepsilon_M` fixed once,

.. math::

    \hat{\mathcal L}(\mu, \sigma, L) = \frac1M \sum_{m=1}^M
        \Big[\log p\big(x, T(\zeta_m)\big) + \log\big|\det J_T(\zeta_m)\big|\Big]
        + \sum_d \log \sigma_d + \text{const}, \qquad
    \zeta_m = \mu + \sigma \odot L \varepsilon_m,

is a smooth, deterministic function of the Gaussian parameters, so a quasi-Newton method
(L-BFGS with a strong-Wolfe line search) minimises :math:`-\hat{\mathcal L}` in tens of
iterations whatever the scale of the posterior, where first-order stochastic steps need
thousands. The fixed draws are the guide's own (drawn under a fixed seed), so the objective is
exactly the guide's ELBO estimate with common random numbers; trial points where the model's
density is not finite (or where a distribution refuses its parameters) count as "worse than
anything seen" so the line search backs off, and the best finite point is kept. When no point
improves on the start, nothing changes.

References:

- R. Giordano, M. Ingram, T. Broderick. *Black Box Variational Inference with a Deterministic
  Objective: Faster, More Accurate, and Even More Reliable.* JMLR 25, 2024.
  https://arxiv.org/abs/2304.05527
- J. Nocedal, S. J. Wright. *Numerical Optimization*, 2nd ed., ch. 7 (L-BFGS). Springer, 2006.
- A. Kucukelbir, D. Tran, R. Ranganath, A. Gelman, D. M. Blei. *Automatic Differentiation
  Variational Inference.* JMLR 18, 2017. https://arxiv.org/abs/1603.00788
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

__all__ = [
    "GaussianStart",
    "distinct_optima",
    "fit_deterministic",
    "fit_from_starts",
    "gradient_and_hessian",
    "has_barrier",
    "newton_step",
    "scale_and_unit_lower",
]


@dataclass(frozen=True)
class GaussianStart:
    """What the deterministic Gaussian start did.

    :ivar loss_before: :math:`-\\hat{\\mathcal L}` at the initial point (``inf`` if not finite).
    :ivar loss_after: :math:`-\\hat{\\mathcal L}` at the kept point.
    :ivar evaluations: objective evaluations spent (each one ``num_draws`` model evaluations).
    :ivar num_draws: the number :math:`M` of fixed base draws.
    :ivar accepted: whether the parameters were changed (the kept point improved on the start).
    :ivar reason: a short explanation when nothing was changed.
    :ivar optima: the losses of the distinct local optima that the searches from several
        starting points reached (:func:`fit_from_starts`), best first; one entry when they all
        met, empty when a single start was searched.
    """

    loss_before: float
    loss_after: float
    evaluations: int
    num_draws: int
    accepted: bool
    reason: str = ""
    optima: tuple[float, ...] = ()


_REFUSED = (ValueError, RuntimeError, AssertionError, NotImplementedError)


def fit_deterministic(
    loss_fn: Callable[[], Tensor],
    parameters: Sequence[nn.Parameter],
    *,
    num_draws: int,
    max_evaluations: int = 300,
    rounds: int = 6,
) -> GaussianStart:
    r"""Minimise a deterministic loss over ``parameters`` with L-BFGS, keeping the best finite
    point and treating non-finite or refused evaluations as worse than anything seen.

    :param loss_fn: a function of no arguments returning a scalar tensor that depends on
        ``parameters`` (it must be deterministic: same parameters, same value).
    :param parameters: the parameters to fit (changed in place; restored when no point improves).
    :param num_draws: recorded in the result (the :math:`M` behind ``loss_fn``).
    :param max_evaluations: a budget on calls of ``loss_fn`` in total.
    :param rounds: L-BFGS restarts (each with a fresh curvature history) while the loss improves.
    :returns: a :class:`GaussianStart`.

    Example:

    >>> import torch
    >>> p = torch.nn.Parameter(torch.zeros(2))
    >>> result = fit_deterministic(lambda: ((p - torch.tensor([88.0, -3.0])) ** 2).sum(), [p],
    ...                            num_draws=1)
    >>> result.accepted, [round(v) for v in p.tolist()]
    (True, [88, -3])
    """
    params = list(parameters)
    if not params:
        raise ValueError("fit_deterministic: expected at least one parameter to fit, got none")
    start = [p.detach().clone() for p in params]
    with torch.enable_grad():
        try:
            first = float(loss_fn().detach())
        except _REFUSED as error:
            return GaussianStart(math.inf, math.inf, 1, num_draws, False, f"start refused: {error}")
    if not math.isfinite(first):  # nan too: reported as inf, so "improved on it" compares
        return GaussianStart(math.inf, math.inf, 1, num_draws, False,
                             f"the start's loss is not finite ({first})")
    best = {"loss": first, "values": start}
    count = {"n": 1}

    def closure() -> Tensor:
        for p in params:
            p.grad = None
        count["n"] += 1
        try:
            with torch.enable_grad():
                loss = loss_fn()
                grads = torch.autograd.grad(loss, params, allow_unused=True)
        except _REFUSED:
            loss, grads = None, ()
        for p, g in zip(params, grads, strict=False):
            p.grad = torch.zeros_like(p) if g is None else g
        grads_ok = loss is not None and all(
            bool(torch.isfinite(g).all()) for g in grads if g is not None
        )
        if loss is None or not bool(torch.isfinite(loss)) or not grads_ok:
            # worse than anything seen, with a zero slope: the line search backs off
            for p in params:
                p.grad = torch.zeros_like(p)
            return torch.tensor(best["loss"] + 10.0 * max(1.0, abs(best["loss"])))
        value = float(loss.detach())
        if value < best["loss"]:
            best["loss"] = value
            best["values"] = [p.detach().clone() for p in params]
        return loss.detach()

    per_round = max(1, max_evaluations // rounds)
    for _ in range(rounds):
        if count["n"] >= max_evaluations:
            break
        before = best["loss"]
        with torch.no_grad():
            for p, v in zip(params, best["values"], strict=True):
                p.copy_(v)
        optimizer = torch.optim.LBFGS(
            params,
            lr=1.0,
            max_iter=per_round,
            max_eval=per_round + per_round // 4,
            history_size=20,
            tolerance_grad=1e-9,
            tolerance_change=1e-12,
            line_search_fn="strong_wolfe",
        )
        optimizer.step(closure)
        if not before - best["loss"] > 1e-6 * max(1.0, abs(before)):
            break
    with torch.no_grad():
        values = best["values"] if best["loss"] < first else start
        for p, v in zip(params, values, strict=True):
            p.copy_(v)
            p.grad = None
    accepted = best["loss"] < first
    return GaussianStart(
        first,
        best["loss"],
        count["n"],
        num_draws,
        accepted,
        "" if accepted else "no point improved on the start",
    )


def distinct_optima(
    found: Sequence[tuple[float, Tensor]],
    *,
    loss_gap: float = 0.5,
    distance: float = 1.0,
    barrier: Callable[[Tensor, Tensor], bool] | None = None,
) -> list[tuple[float, Tensor]]:
    r"""The distinct points among ``(loss, point)`` pairs, best (lowest loss) first. A point is
    the same optimum as a better one when its loss is within ``loss_gap`` nats of it and no
    coordinate differs by more than ``distance``, or, given ``barrier(a, b)``, when there is
    no barrier between them: two searches that stopped at different points of one long,
    narrow valley (an ill-conditioned regression) are one optimum, not two modes.

    >>> import torch
    >>> found = [(3.0, torch.zeros(2)), (1.0, torch.ones(2) * 5), (1.2, torch.ones(2) * 5.1)]
    >>> [loss for loss, _ in distinct_optima(found)]
    [1.0, 3.0]
    >>> [loss for loss, _ in distinct_optima(found, barrier=lambda a, b: False)]
    [1.0]
    """
    kept: list[tuple[float, Tensor]] = []
    for loss, point in sorted(found, key=lambda pair: pair[0]):
        same = any(
            (abs(loss - other) <= loss_gap and float((point - where).abs().max()) <= distance)
            or (barrier is not None and not barrier(where, point))
            for other, where in kept
        )
        if not same:
            kept.append((loss, point))
    return kept


def has_barrier(loss_fn: Callable[[], Tensor], parameter: nn.Parameter, a: Tensor, b: Tensor,
                *, rise: float = 0.1, points: int = 5) -> bool:
    r"""Whether the loss rises above both ends somewhere on the segment from ``a`` to ``b``,
    :math:`\max_{0<t<1} L((1-t)a + tb) > \max(L(a), L(b)) + \texttt{rise}`, checked at
    ``points`` interior points (``parameter`` is restored). Two local optima of one basin have
    no barrier on the segment when the basin is convex along it; separate modes have one.
    A non-finite or refused point counts as a barrier.

    >>> import torch
    >>> p = torch.nn.Parameter(torch.zeros(1))
    >>> wells = lambda: ((p**2 - 4.0) ** 2).sum()
    >>> has_barrier(wells, p, torch.tensor([-2.0]), torch.tensor([2.0]))
    True
    >>> has_barrier(wells, p, torch.tensor([1.9]), torch.tensor([2.1]))
    False
    """
    saved = parameter.detach().clone()
    try:
        with torch.no_grad():
            parameter.copy_(a.to(parameter))
            ends = float(loss_fn())
            parameter.copy_(b.to(parameter))
            ends = max(ends, float(loss_fn()))
            for i in range(1, points + 1):
                t = i / (points + 1)
                parameter.copy_(((1 - t) * a + t * b).to(parameter))
                value = float(loss_fn())
                if not math.isfinite(value) or value > ends + rise:
                    return True
        return False
    except _REFUSED:
        return True
    finally:
        with torch.no_grad():
            parameter.copy_(saved)


def fit_from_starts(
    loss_fn: Callable[[], Tensor],
    parameter: nn.Parameter,
    starts: Sequence[Tensor],
    *,
    num_draws: int,
    max_evaluations: int = 300,
) -> GaussianStart:
    r""":func:`fit_deterministic` of one ``parameter`` from each of several starting values,
    keeping the lowest loss reached: a local search from one point finds the optimum of its
    basin, and a posterior with several modes (an ODE's parameters, a mixture) has several.

    ``starts[0]`` is the reference start (``loss_before`` is its loss); starts whose loss is
    not finite are skipped. The distinct optima reached (:func:`distinct_optima`) are reported
    in ``optima``, so that a caller can say when a second mode carries real mass.

    :param loss_fn: a deterministic loss of ``parameter`` (see :func:`fit_deterministic`).
    :param parameter: the parameter searched (left at the best point found).
    :param starts: starting values, each of ``parameter``'s shape.
    :param num_draws: recorded in the result.
    :param max_evaluations: the budget of each search.

    Example:

    >>> import torch
    >>> p = torch.nn.Parameter(torch.zeros(1))
    >>> two_wells = lambda: ((p**2 - 4.0) ** 2).sum() + p.sum()   # minima near -2 and +2
    >>> result = fit_from_starts(two_wells, p, [torch.ones(1), -torch.ones(1)], num_draws=1)
    >>> round(float(p.detach()), 1), len(result.optima)   # the deeper well; the other one seen
    (-2.0, 2)
    """
    if not starts:
        raise ValueError("fit_from_starts: expected at least one starting value, got none")
    found: list[tuple[float, Tensor, GaussianStart]] = []
    evaluations = 0
    reference: GaussianStart | None = None
    for start in starts:
        with torch.no_grad():
            parameter.copy_(start.to(parameter))
        result = fit_deterministic(loss_fn, [parameter], num_draws=num_draws,
                                   max_evaluations=max_evaluations)
        evaluations += result.evaluations
        reference = reference or result
        if math.isfinite(result.loss_after):
            found.append((result.loss_after, parameter.detach().clone(), result))
    if not found:
        with torch.no_grad():
            parameter.copy_(starts[0].to(parameter))
        assert reference is not None
        return GaussianStart(reference.loss_before, reference.loss_after, evaluations,
                             num_draws, False, reference.reason)
    loss, point, _ = min(found, key=lambda item: item[0])
    with torch.no_grad():
        parameter.copy_(point)
    assert reference is not None
    before = reference.loss_before
    accepted = not math.isfinite(before) or loss < before
    optima = tuple(
        value
        for value, _ in distinct_optima(
            [(v, x) for v, x, _ in found],
            barrier=lambda a, b: has_barrier(loss_fn, parameter, a, b),
        )
    )
    if not accepted:  # no search improved on the reference start: it stays
        with torch.no_grad():
            parameter.copy_(starts[0].to(parameter))
    return GaussianStart(before, loss if accepted else before, evaluations, num_draws,
                         accepted, "" if accepted else "no point improved on the start",
                         optima if len(starts) > 1 else ())


def gradient_and_hessian(
    loss_fn: Callable[[], Tensor], param: nn.Parameter
) -> tuple[Tensor, Tensor] | None:
    r"""The gradient :math:`\nabla_\theta \ell` and Hessian :math:`\nabla^2_\theta \ell` of a
    scalar loss in one vector parameter (``D`` backward passes through the loss's graph), in
    float64, the Hessian symmetrised; ``None`` when they cannot be computed or are not finite.

    >>> import torch
    >>> p = torch.nn.Parameter(torch.tensor([1.0, 2.0]))
    >>> g, h = gradient_and_hessian(lambda: 2 * p[0] ** 2 + p[0] * p[1] + 3 * p[1] ** 2, p)
    >>> g.tolist(), h.tolist()
    ([6.0, 13.0], [[4.0, 1.0], [1.0, 6.0]])
    """
    try:
        with torch.enable_grad():
            (grad,) = torch.autograd.grad(loss_fn(), param, create_graph=True)
            flat = grad.reshape(-1)
            rows = [
                torch.autograd.grad(flat[i], param, retain_graph=True, allow_unused=True)[0]
                for i in range(flat.numel())
            ]
    except _REFUSED:
        return None
    if any(row is None for row in rows):
        return None
    hessian = torch.stack([row.reshape(-1) for row in rows]).double()
    hessian = 0.5 * (hessian + hessian.mT)
    gradient = flat.detach().double()
    if not (bool(torch.isfinite(hessian).all()) and bool(torch.isfinite(gradient).all())):
        return None
    return gradient, hessian


@torch.no_grad()
def newton_step(
    loss_fn: Callable[[], Tensor],
    param: nn.Parameter,
    gradient: Tensor,
    hessian: Tensor,
    max_halvings: int = 12,
) -> bool:
    r"""One damped Newton step :math:`\theta \leftarrow \theta - t H^{-1} g` with backtracking
    (:math:`t = 1, \tfrac12, \tfrac14, \dots`, the first that lowers the loss). Newton's step
    does not care how ill-conditioned :math:`H` is (a regression on years, correlation -0.9999),
    where L-BFGS in float32 stalls. Returns whether the parameter moved; ``False`` (unchanged)
    when :math:`H` is not positive definite or no step lowers the loss.

    >>> import torch
    >>> p = torch.nn.Parameter(torch.tensor([0.0, 0.0]))
    >>> f = lambda: (p[0] - 1) ** 2 + 1e6 * (p[0] + p[1]) ** 2
    >>> g = torch.tensor([-2.0, 0.0], dtype=torch.float64)
    >>> h = torch.tensor([[2.0 + 2e6, 2e6], [2e6, 2e6]], dtype=torch.float64)
    >>> newton_step(f, p, g, h), [round(v, 4) for v in p.tolist()]
    (True, [1.0, -1.0])
    """
    chol, info = torch.linalg.cholesky_ex(hessian)
    if int(info) != 0:
        return False
    step = -torch.cholesky_solve(gradient.reshape(-1, 1), chol).reshape(param.shape)
    start = param.detach().clone()
    try:
        before = float(loss_fn().detach())
    except _REFUSED:
        return False
    t = 1.0
    for _ in range(max_halvings):
        param.copy_((start.double() + t * step).to(param.dtype))
        try:
            after = float(loss_fn().detach())
        except _REFUSED:
            after = math.inf
        if math.isfinite(after) and after < before:
            return True
        t *= 0.5
    param.copy_(start)
    return False


def scale_and_unit_lower(precision: Tensor) -> tuple[Tensor, Tensor] | None:
    r"""Factor the covariance :math:`C = \Lambda^{-1}` of a precision matrix as
    :math:`C = \mathrm{diag}(\sigma)\, L L^\top \mathrm{diag}(\sigma)` with :math:`L` unit
    lower triangular (from the Cholesky factor :math:`K` of :math:`C`:
    :math:`\sigma = \mathrm{diag}(K)`, :math:`L = \mathrm{diag}(\sigma)^{-1} K`), the
    parametrisation of AutoFlow's linear and location-scale stages. ``None`` when
    :math:`\Lambda` is not positive definite.

    >>> import torch
    >>> sigma, lower = scale_and_unit_lower(torch.tensor([[2.0, 1.0], [1.0, 2.0]]).inverse())
    >>> [round(v, 4) for v in sigma.tolist()], [round(v, 4) for v in lower[1].tolist()]
    ([1.4142, 1.2247], [0.5774, 1.0])
    """
    chol, info = torch.linalg.cholesky_ex(precision.double())
    if int(info) != 0:
        return None
    covariance = torch.cholesky_inverse(chol)
    factor, info = torch.linalg.cholesky_ex(covariance)
    if int(info) != 0 or not bool(torch.isfinite(factor).all()):
        return None
    sigma = torch.diagonal(factor)
    return sigma, factor / sigma[:, None]
