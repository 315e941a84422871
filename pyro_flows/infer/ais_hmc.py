r"""The transition kernel of annealed importance sampling: Metropolis-corrected HMC on the
annealed density :math:`f_\beta`, all particles at once.

At inverse temperature :math:`\beta` the particles move by Hamiltonian Monte Carlo on

.. math::

    \log f_\beta(x) = (1 - \beta)\log q(x) + \beta\log\tilde p(x), \qquad
    H(x, \rho) = -\log f_\beta(x) + \tfrac12\lVert\rho\rVert^2,

(:math:`0\cdot\log q = 0` at :math:`\beta = 1`): a momentum :math:`\rho \sim \mathcal N(0, I)`,
``num_leapfrog`` leapfrog steps of size :math:`h`,

.. math::

    \rho_{1/2} = \rho + \tfrac h2\nabla\log f_\beta(x), \quad
    x' = x + h\rho_{1/2}, \quad
    \rho' = \rho_{1/2} + \tfrac h2\nabla\log f_\beta(x'),

and acceptance with probability :math:`\min(1, e^{H(x, \rho) - H(x', \rho')})`, which leaves
:math:`f_\beta` invariant. Each particle draws its own step size uniformly in
:math:`h\,[1 - j, 1 + j]` with :math:`j = 0.2` (a mixture of valid kernels, independent of the
state), which smooths the drop of the acceptance at the leapfrog's stability limit (Neal 2011).
A trajectory that meets a non-finite density, gradient or position, a ``ValueError`` of the
target or the proposal at some of its points, or an energy that varies by more than 1000 along
it (a divergence, as in Stan) is rejected: the particle stays where it was.

References:

- R. M. Neal. *MCMC using Hamiltonian dynamics.* Handbook of Markov Chain Monte Carlo, 2011.
- R. M. Neal. *Annealed importance sampling.* Statistics and Computing 11, 125-139, 2001.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from .ais_proposal import _Proposal
from .results import TargetDensity, TargetOutputError, _draw

__all__: list[str] = []

#: a trajectory whose energy varies by more than this is a divergence (rejected, as in Stan)
_MAX_ENERGY_ERROR = 1000.0
#: the relative spread of the per-particle step size around :math:`h_t`
_STEP_JITTER = 0.2


@dataclass
class _State:
    """The particles ``x`` with the target's log density ``lp`` and gradient ``glp`` and the
    proposal's ``lq`` and ``glq`` there."""

    x: Tensor
    lp: Tensor
    glp: Tensor
    lq: Tensor
    glq: Tensor


def _evaluate(
    density: TargetDensity, q: _Proposal, x: Tensor, need_q: bool
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    lp, glp = density.value_and_grad(x)
    lp, glp = lp.to(x.dtype), glp.to(x.dtype)
    if need_q:
        lq, glq = q.value_and_grad(x)
    else:  # beta = 1: the proposal's density does not enter
        lq, glq = torch.zeros_like(lp), torch.zeros_like(glp)
    return lp, glp, lq, glq


def _by_rows(fn: Callable[[Tensor], tuple[Tensor, Tensor]], x: Tensor) -> tuple[Tensor, Tensor]:
    """``fn(x)``; where it raises a ``ValueError`` (a flow refusing a point too far out, say),
    the rows at fault are found by bisection and come back as NaN (to be rejected)."""
    try:
        return fn(x)
    except TargetOutputError:  # the target's output is malformed: not a property of a point
        raise
    except ValueError:
        if x.shape[0] == 1:
            return torch.full((1,), math.nan, dtype=x.dtype, device=x.device), torch.full_like(
                x, math.nan
            )
    k = x.shape[0] // 2
    v1, g1 = _by_rows(fn, x[:k])
    v2, g2 = _by_rows(fn, x[k:])
    return torch.cat([v1.to(x.dtype), v2.to(x.dtype)]), torch.cat([g1.to(x.dtype), g2.to(x.dtype)])


def _evaluate_moved(
    density: TargetDensity, q: _Proposal, x: Tensor, need_q: bool
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """:func:`_evaluate` at points a trajectory reached: a ``ValueError`` of the target or the
    proposal at some of them marks those rows NaN (rejected) instead of ending the run; one
    raised at every row is raised."""
    try:
        return _evaluate(density, q, x, need_q)
    except TargetOutputError:
        raise
    except ValueError as err:
        lp, glp = _by_rows(density.value_and_grad, x)
        lq, glq = _by_rows(q.value_and_grad, x) if need_q else (lp * 0.0, glp * 0.0)
        if not bool((torch.isfinite(lp) & torch.isfinite(lq)).any()):
            raise err
        return lp.to(x.dtype), glp.to(x.dtype), lq.to(x.dtype), glq.to(x.dtype)


def _annealed(beta: float, lp: Tensor, lq: Tensor) -> Tensor:
    """:math:`\\log f_\\beta`, with :math:`0 \\cdot \\log q = 0` at :math:`\\beta = 1`."""
    return lp if beta == 1.0 else (1.0 - beta) * lq + beta * lp


def _hmc_move(
    density: TargetDensity,
    q: _Proposal,
    s: _State,
    alive: Tensor,
    beta: float,
    h: float | Tensor,
    num_leapfrog: int,
    generator: torch.Generator,
) -> tuple[_State, Tensor]:
    """One Metropolis-corrected HMC move of every particle, leaving :math:`f_\\beta` invariant;
    returns the new state and the acceptance probabilities (0 for dead particles and for
    trajectories that met a non-finite density or gradient, which are rejected)."""
    n, d = s.x.shape
    dtype, device = s.x.dtype, s.x.device
    need_q = beta < 1.0
    f0 = _annealed(beta, s.lp, s.lq)
    g = _annealed(beta, s.glp, s.glq)
    p0 = _draw("randn", (n, d), generator, dtype=dtype, device=device)
    # one step size per particle, h * U(1 - j, 1 + j): a kernel drawn independently of the state
    # (a mixture of valid kernels) that smooths the acceptance's cliff at the stability limit
    u = _draw("rand", (n, 1), generator, dtype=dtype, device=device)
    h = h * (1.0 + _STEP_JITTER * (2.0 * u - 1.0))
    bad = ~alive
    p = p0 + 0.5 * h * g
    x = s.x
    lp, glp, lq, glq = s.lp, s.glp, s.lq, s.glq
    e0 = (0.5 * (p0 * p0).sum(-1) - f0).to(torch.float64)  # the energy H = -log f + |p|^2 / 2
    e_min, e_max, e_end = e0, e0, e0
    for i in range(num_leapfrog):
        x = x + h * p
        bad = bad | ~torch.isfinite(x).all(-1)
        x = torch.where(bad[:, None], s.x, x)  # never hand the target a non-finite point
        lp, glp, lq, glq = _evaluate_moved(density, q, x, need_q)
        f = _annealed(beta, lp, lq)
        g = _annealed(beta, glp, glq)
        bad = bad | ~torch.isfinite(f) | ~torch.isfinite(g).all(-1)
        g = torch.where(bad[:, None], torch.zeros_like(g), g)
        p = p + 0.5 * h * g  # the momentum at x: the energy there is that of the reverse path
        e_end = (0.5 * (p * p).sum(-1) - f).to(torch.float64)
        e_end = torch.where(bad, e0, e_end)
        e_min, e_max = torch.minimum(e_min, e_end), torch.maximum(e_max, e_end)
        # a divergence: the energy varies by more than _MAX_ENERGY_ERROR along the trajectory
        # (a criterion on the set of points visited, the same for the reverse trajectory)
        bad = bad | (e_max - e_min > _MAX_ENERGY_ERROR)
        if i < num_leapfrog - 1:
            p = p + 0.5 * h * g
    log_alpha = e0 - e_end
    log_alpha = torch.where(
        bad | torch.isnan(log_alpha), torch.full_like(log_alpha, -math.inf), log_alpha
    )
    log_u = torch.log(_draw("rand", (n,), generator, dtype=torch.float64, device=device))
    accept = log_u < log_alpha
    keep = accept[:, None]
    new = _State(
        x=torch.where(keep, x, s.x),
        lp=torch.where(accept, lp, s.lp),
        glp=torch.where(keep, glp, s.glp),
        lq=torch.where(accept, lq, s.lq) if need_q else s.lq,
        glq=torch.where(keep, glq, s.glq) if need_q else s.glq,
    )
    return new, torch.exp(log_alpha.clamp(max=0.0))
