r"""Annealed importance sampling (AIS): an estimate of :math:`\log Z` that does not need the
proposal to cover every mode of the target.

Plain importance sampling (:func:`~pyro_flows.infer.importance.importance_sample`) weights draws
of a proposal :math:`q` by :math:`\tilde p / q`; a mode of :math:`\tilde p` that :math:`q` misses
contributes nothing until a draw lands in it, so :math:`\log\hat Z` comes out low, by
:math:`\log 2` for one missed mode out of two of equal mass, with a small standard error that
hides it. AIS (Neal 2001) walks the particles from :math:`q` to :math:`\tilde p` through the
geometric path

.. math::

    \log f_\beta(x) = (1 - \beta)\log q(x) + \beta\log\tilde p(x), \qquad
    0 = \beta_0 < \beta_1 < \dots < \beta_T = 1,

with a Markov transition :math:`K_t` leaving :math:`f_{\beta_t}` invariant after each step
(here Hamiltonian Monte Carlo, Metropolis-corrected), and weights each particle by the product
of the density ratios it met on the way:

.. math::

    w = \prod_{t=1}^{T}\frac{f_{\beta_t}(x_{t-1})}{f_{\beta_{t-1}}(x_{t-1})}, \qquad
    \log w = \sum_{t=1}^{T}(\beta_t - \beta_{t-1})
    \bigl[\log\tilde p(x_{t-1}) - \log q(x_{t-1})\bigr],
    \qquad x_0 \sim q,\ x_t \sim K_t(x_{t-1}, \cdot).

*Unbiased.* :math:`w` is an importance weight on the extended space of whole trajectories
:math:`(x_0, \dots, x_{T-1})`: the proposal is the forward chain
:math:`q(x_0)\prod_{t<T} K_t(x_{t-1}, x_t)`, the target is the unnormalised
:math:`f_{\beta_T}(x_{T-1})\prod_{t<T}\tilde K_t(x_t, x_{t-1})` with the reversed kernels
:math:`\tilde K_t(x', x) = K_t(x, x') f_{\beta_t}(x) / f_{\beta_t}(x')`, which integrate to one,
so that the target's mass is :math:`\int\tilde p = Z` (:math:`q` is normalised). Their ratio
telescopes to the product above, hence :math:`\mathbb E[w] = Z` for any number of
temperatures and any mixing of the kernels, and :math:`\hat Z = \frac1n\sum_i w_i` is
unbiased; :math:`\log\hat Z` is biased low by about :math:`\operatorname{se}^2/2` (Jensen).

*Variance.* With transitions that mix perfectly at every temperature,

.. math::

    \operatorname{Var}(\log w) \approx \sum_{t=1}^{T}(\beta_t - \beta_{t-1})^2
    \operatorname{Var}_{f_{\beta_t}}\bigl[\log\tilde p - \log q\bigr] = O(1/T),

so more temperatures drive the weights to equality. Across well separated modes the
transitions do not mix: particles are shared between the modes in the proportions of
:math:`f_\beta` at the temperature where the barrier between them rises, and the weights
correct these proportions afterwards, which works as long as some particles reach every mode
(a broad :math:`q`, or a flow trained on the target, as in FAB).

The standard error reported is the delta-method one of :math:`\log\hat Z`,
:math:`\operatorname{sd}(w) / (\sqrt n\,\bar w)`
(:func:`~pyro_flows.infer.diagnostics.importance_log_Z`); like every importance-sampling
error bar it cannot see mass that no particle reached.

References:

- R. M. Neal. *Annealed importance sampling.* Statistics and Computing 11, 125-139, 2001.
- L. I. Midgley, V. Stimper, G. N. C. Simm, B. Schölkopf, J. M. Hernández-Lobato. *Flow
  Annealed Importance Sampling Bootstrap.* ICLR 2023 (AIS from a flow, HMC transitions with a
  step size tuned towards an acceptance of 0.65).
- R. M. Neal. *MCMC using Hamiltonian dynamics.* Handbook of Markov Chain Monte Carlo, 2011.
- R. B. Grosse, C. J. Maddison, R. R. Salakhutdinov. *Annealing between distributions by
  averaging moments.* NeurIPS 2013 (the geometric path and its variance).
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from .._progress import progress_bar
from .._validation import check_positive_int
from .diagnostics import ess_fraction, importance_log_Z, psis_khat
from .results import (
    TargetDensity,
    TargetOutputError,
    _draw,
    _forked_rng,
    _generator,
    _stated_device_and_dtype,
    as_target,
)

__all__ = ["AISResult", "annealed_importance_sampling", "ais_betas"]

#: the smallest non-zero inverse temperature of the ``"geometric"`` schedule
GEOMETRIC_BETA_MIN = 1e-3
#: gain of the step-size update :math:`\log h \mathrel{+}= \gamma(\bar a - a^*)`
_STEP_GAIN = 0.5
#: a trajectory whose energy varies by more than this is a divergence (rejected, as in Stan)
_MAX_ENERGY_ERROR = 1000.0
#: the relative spread of the per-particle step size around :math:`h_t`
_STEP_JITTER = 0.2


@dataclass
class AISResult:
    r"""What one run of :func:`annealed_importance_sampling` returns.

    .. math::

        \log\hat Z = \log\frac1n\sum_{i=1}^{n} w_i, \qquad
        \operatorname{se} = \frac{\operatorname{sd}(w)}{\sqrt n\,\bar w}, \qquad
        \mathrm{ESS} = \frac{(\sum_i w_i)^2}{\sum_i w_i^2}.

    :ivar log_Z: :math:`\log\hat Z`, the log-mean-exp of ``log_weights``.
    :ivar log_Z_stderr: its delta-method standard error.
    :ivar log_weights: the AIS log weights, shape ``(n,)``, float64 (``-inf``: a particle whose
        first draw had zero target density).
    :ivar ess: Kish's effective sample size of the weights.
    :ivar ess_fraction: ``ess / n``.
    :ivar khat: the PSIS :math:`\hat k` of the weights (< 0.7: the variance estimate is
        trustworthy).
    :ivar samples: the particles after the last temperature, shape ``(n, dim)``: draws from the
        target *when weighted by* ``log_weights`` (resample them with
        :func:`~pyro_flows.infer.importance.systematic_resample` for equal weights).
    :ivar betas: the inverse temperatures :math:`\beta_0 = 0, \dots, \beta_T = 1`, shape
        ``(T + 1,)``.
    :ivar step_sizes: the leapfrog step size used at each temperature, shape ``(T,)``; pass it
        back as ``step_size=`` to rerun with these kernels fixed in advance.
    :ivar accept_rates: the mean Metropolis acceptance probability at each temperature, shape
        ``(T,)`` (NaN where no HMC move was made).
    :ivar wall_time: seconds, ``time.perf_counter``.
    :ivar num_log_prob_evals: points at which the target's log density was evaluated.
    :ivar num_grad_evals: points at which its gradient was evaluated.
    :ivar num_zero_weights: particles with weight 0 (``-inf`` log weight).
    :ivar seed: the seed used.
    :ivar target_log_Z: the target's known :math:`\log Z`, else ``None``.

    Example:

    >>> import math
    >>> r = AISResult(log_Z=0.1, log_Z_stderr=0.02, log_weights=torch.zeros(3), ess=3.0,
    ...               ess_fraction=1.0, khat=-math.inf, samples=torch.zeros(3, 2),
    ...               betas=torch.tensor([0.0, 1.0]), step_sizes=torch.ones(1),
    ...               accept_rates=torch.ones(1), wall_time=0.0, num_log_prob_evals=3,
    ...               num_grad_evals=0, num_zero_weights=0, seed=0, target_log_Z=0.0)
    >>> r.log_Z_error, r.num_samples, r.num_temperatures
    (0.1, 3, 1)

    References: see :func:`annealed_importance_sampling`.
    """

    log_Z: float
    log_Z_stderr: float
    log_weights: Tensor
    ess: float
    ess_fraction: float
    khat: float
    samples: Tensor
    betas: Tensor
    step_sizes: Tensor
    accept_rates: Tensor
    wall_time: float
    num_log_prob_evals: int
    num_grad_evals: int
    num_zero_weights: int
    seed: int
    target_log_Z: float | None = None

    @property
    def log_Z_error(self) -> float | None:
        r""":math:`\log\hat Z - \log Z` where the target knows :math:`\log Z`, else ``None``."""
        if self.target_log_Z is None:
            return None
        return self.log_Z - self.target_log_Z

    @property
    def num_samples(self) -> int:
        """The number of particles :math:`n`."""
        return int(self.log_weights.numel())

    @property
    def num_temperatures(self) -> int:
        r"""The number of annealing steps :math:`T`."""
        return int(self.betas.numel() - 1)


# -- arguments ------------------------------------------------------------------------------------
def ais_betas(num_steps: int, schedule: str | Sequence[float] | Tensor = "linear") -> Tensor:
    r"""The inverse temperatures :math:`0 = \beta_0 < \dots < \beta_T = 1` of an AIS run.

    .. math::

        \text{geometric:}\ \beta_t = \beta_{\min}^{(T - t)/(T - 1)}\ (t \ge 1), \qquad
        \text{linear:}\ \beta_t = t / T,

    with :math:`\beta_{\min} = 10^{-3}` (:data:`GEOMETRIC_BETA_MIN`). The variance of the log
    weights is about :math:`\sum_t \Delta\beta_t^2\,\operatorname{Var}_{f_{\beta_t}}[\log\tilde p
    - \log q]`, so the steps should be short where that variance is large. The linear schedule
    (the default) suits a proposal of about the target's scale (a trained flow, a standard
    Normal for a target of unit scale): measured on unnormalised Gaussians, mixtures and U1
    from a standard Normal with 128 steps its :math:`\log Z` error was the smallest or
    within noise of it. The geometric one, linear in :math:`\log\beta`, spends its steps at
    small :math:`\beta`, where the variance is largest when the target is much narrower than
    the proposal (there it did better, at :math:`\sigma_p = 0.1\,\sigma_q` in 10-D). A
    sequence or tensor gives
    :math:`\beta_1, \dots, \beta_T` directly (strictly increasing in :math:`(0, 1]`, ending at
    1; a leading 0 is allowed); ``num_steps`` must then equal its length :math:`T`.

    :returns: a float64 tensor of shape ``(T + 1,)``, starting at 0.
    :raises ValueError: for an unknown schedule name or betas that are not increasing to 1.

    Example:

    >>> ais_betas(3, "linear").tolist()
    [0.0, 0.3333333333333333, 0.6666666666666666, 1.0]
    >>> [round(b, 6) for b in ais_betas(3, "geometric").tolist()]
    [0.0, 0.001, 0.031623, 1.0]

    References: Neal 2001, section 3; Grosse et al. 2013.
    """
    check_positive_int(num_steps, "num_steps")
    if isinstance(schedule, str):
        if schedule == "linear":
            b = torch.arange(1, num_steps + 1, dtype=torch.float64) / num_steps
        elif schedule == "geometric":
            if num_steps == 1:
                b = torch.ones(1, dtype=torch.float64)
            else:
                b = torch.logspace(
                    math.log10(GEOMETRIC_BETA_MIN), 0.0, num_steps, dtype=torch.float64
                )
        else:
            raise ValueError(
                f"schedule must be 'linear', 'geometric' or a sequence of betas, got {schedule!r}"
            )
        b[-1] = 1.0
        return torch.cat([torch.zeros(1, dtype=torch.float64), b])
    try:
        b = torch.as_tensor(schedule).detach().to("cpu", torch.float64).reshape(-1)
    except (TypeError, ValueError, RuntimeError):
        raise TypeError(
            "schedule must be 'linear', 'geometric' or a sequence of betas in (0, 1], got "
            f"{type(schedule).__name__}"
        ) from None
    if b.numel() > 0 and b[0] == 0.0:
        b = b[1:]
    if b.numel() > 0 and abs(float(b[-1]) - 1.0) <= 1e-9:  # rounding of a computed schedule
        b[-1] = 1.0
    if b.numel() == 0 or not bool(torch.isfinite(b).all()):
        raise ValueError(f"schedule must hold finite betas in (0, 1], got {b.tolist()}")
    if not (bool((b[1:] > b[:-1]).all()) and b[0] > 0 and b[-1] == 1.0):
        raise ValueError(
            "schedule must be strictly increasing in (0, 1] and end at 1, got "
            f"{b.tolist()[:8]}{'...' if b.numel() > 8 else ''}"
        )
    if b.numel() != num_steps:
        raise ValueError(
            f"num_steps={num_steps} but the schedule has {b.numel()} betas (after 0): pass "
            f"num_steps={b.numel()}"
        )
    return torch.cat([torch.zeros(1, dtype=torch.float64), b])


def _check_step_size(step_size: object, num_steps: int) -> Tensor | None:
    """``None`` (adapt), or one step size per temperature, float64 on the CPU."""
    if step_size is None:
        return None
    if isinstance(step_size, bool):
        raise TypeError(f"step_size must be a positive float, a tensor or None, got {step_size!r}")
    try:
        if isinstance(step_size, Tensor):
            h = step_size.detach().to("cpu", torch.float64).reshape(-1)
        else:
            h = torch.as_tensor(step_size, dtype=torch.float64).reshape(-1)
    except (TypeError, ValueError, RuntimeError):
        raise TypeError(
            "step_size must be a positive float, a tensor of shape (num_steps,) or None, got "
            f"{type(step_size).__name__}"
        ) from None
    if h.numel() == 1:
        h = h.expand(num_steps).clone()
    if h.numel() != num_steps:
        raise ValueError(
            f"step_size must be one number or one per temperature (num_steps={num_steps}), got "
            f"{h.numel()} values"
        )
    if not bool((torch.isfinite(h) & (h > 0)).all()):
        raise ValueError(f"step_size must be positive and finite, got {h.tolist()[:8]}")
    return h


def _check_proposal(proposal: Any) -> None:
    if proposal is None:
        return
    can_draw = callable(getattr(proposal, "rsample_and_log_prob", None)) or callable(
        getattr(proposal, "sample", None)
    )
    if not (can_draw and callable(getattr(proposal, "log_prob", None))):
        raise TypeError(
            "proposal must be None (a standard Normal), a pyro_flows Flow or a distribution with "
            "sample(sample_shape) (or rsample_and_log_prob) and a differentiable log_prob(x), "
            f"got {type(proposal).__name__}"
        )


# -- the proposal ---------------------------------------------------------------------------------
class _Proposal:
    """The proposal's draws and its log density with gradient; ``None`` is a standard Normal
    drawn from the run's generator."""

    def __init__(self, proposal: Any, dim: int) -> None:
        self.proposal = proposal
        self.dim = dim
        self._log_norm = 0.5 * dim * math.log(2.0 * math.pi)

    def draw(
        self,
        n: int,
        generator: torch.Generator | None = None,
        dtype: torch.dtype | None = None,
        device: torch.device | None = None,
    ) -> tuple[Tensor, Tensor]:
        """``n`` draws and their log densities: the standard Normal's from ``generator`` (in
        ``dtype`` on ``device``), a given proposal's from the global RNG (seeded by the caller)."""
        if self.proposal is None:
            assert generator is not None and dtype is not None and device is not None
            x = _draw("randn", (n, self.dim), generator, dtype=dtype, device=device)
            return x, -0.5 * (x * x).sum(-1) - self._log_norm
        if callable(getattr(self.proposal, "rsample_and_log_prob", None)):
            x, log_q = self.proposal.rsample_and_log_prob((n,))
        else:
            x = self.proposal.sample((n,))
            log_q = self.proposal.log_prob(x)
        if not isinstance(x, Tensor) or not isinstance(log_q, Tensor):
            raise TypeError(
                "the proposal must return tensors from sample / log_prob, got "
                f"{type(x).__name__} and {type(log_q).__name__}"
            )
        if x.shape != (n, self.dim) or log_q.shape != (n,):
            raise ValueError(
                f"the proposal must give draws of shape (n, dim) = ({n}, {self.dim}) and log "
                f"densities of shape ({n},), got {tuple(x.shape)} and {tuple(log_q.shape)}"
            )
        return x.detach(), log_q.detach()

    def value_and_grad(self, x: Tensor) -> tuple[Tensor, Tensor]:
        if self.proposal is None:
            return -0.5 * (x * x).sum(-1) - self._log_norm, -x
        with torch.enable_grad():
            xg = x.detach().requires_grad_(True)
            lq = self.proposal.log_prob(xg)
            if not isinstance(lq, Tensor) or lq.shape != x.shape[:-1]:
                raise ValueError(
                    f"the proposal's log_prob must return shape {tuple(x.shape[:-1])}, got "
                    f"{tuple(lq.shape) if isinstance(lq, Tensor) else type(lq).__name__}"
                )
            if not lq.requires_grad:
                raise TypeError(
                    "AIS moves the particles by HMC on (1 - beta) log q + beta log p, but the "
                    "proposal's log_prob(x) is not differentiable in x with torch.autograd"
                )
            (grad,) = torch.autograd.grad(lq.sum(), xg)
        return lq.detach().to(x.dtype), grad.detach().to(x.dtype)


# -- HMC on the annealed densities ----------------------------------------------------------------
@dataclass
class _State:
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


# -- the estimator --------------------------------------------------------------------------------
def annealed_importance_sampling(
    target: Any,
    proposal: Any = None,
    *,
    dim: int | None = None,
    num_samples: int = 1024,
    num_steps: int = 128,
    schedule: str | Sequence[float] | Tensor = "linear",
    num_hmc_steps: int = 1,
    num_leapfrog_steps: int = 5,
    step_size: float | Tensor | None = None,
    initial_step_size: float | None = None,
    target_accept: float = 0.65,
    progress: bool = True,
    seed: int | None = None,
) -> AISResult:
    r"""Estimate :math:`\log Z = \log\int\tilde p` by annealed importance sampling (Neal 2001)
    from ``proposal`` to ``target``.

    .. math::

        \log w_i = \sum_{t=1}^{T}(\beta_t - \beta_{t-1})
        \bigl[\log\tilde p(x^i_{t-1}) - \log q(x^i_{t-1})\bigr], \qquad
        \log\hat Z = \log\frac1n\sum_{i=1}^{n} w_i, \qquad \mathbb E[\hat Z] = Z,

    with :math:`x^i_0 \sim q` and :math:`x^i_t` the result of ``num_hmc_steps`` HMC moves
    leaving :math:`f_{\beta_t} \propto q^{1-\beta_t}\tilde p^{\beta_t}` invariant (the maths,
    why it is unbiased and its variance: see :mod:`pyro_flows.infer.ais`). ``T = num_steps``
    annealing steps follow ``schedule`` (:func:`ais_betas`; default linear,
    :math:`\beta_t = t/T`; ``"geometric"`` for a target much narrower than the proposal). With
    ``num_hmc_steps=0`` this is plain importance sampling.

    Each HMC move draws a momentum :math:`\rho \sim \mathcal N(0, I)`, takes
    ``num_leapfrog_steps`` leapfrog steps of size :math:`h_t` on
    :math:`\log f_{\beta_t}` and accepts with probability
    :math:`\min(1, e^{-\Delta H})`, all particles at once (one batched call of the target and
    of the proposal per leapfrog step), each particle with its own step size drawn uniformly
    in :math:`h_t\,[0.8, 1.2]` (Neal 2011: this smooths the drop of the acceptance at the
    leapfrog's stability limit). A trajectory that meets a non-finite density, gradient or
    position, a point where the target or the proposal raises a ``ValueError`` (a flow refusing
    a point too far out), or an energy that varies by more than 1000 along it (a divergence,
    as in Stan) is rejected: the particle stays where it was, so a NaN of the target never
    reaches the weights. With ``step_size=None`` the step size is adapted from one
    temperature to the next, :math:`\log h_{t+1} = \log h_t + 0.5(\bar a_t - a^*)` with
    :math:`\bar a_t` the mean acceptance probability over the particles at temperature
    :math:`t` and :math:`a^* =` ``target_accept`` (0.65, as in FAB). The kernels then depend
    on the whole population, a coupling of the particles whose effect on
    :math:`\mathbb E[\hat Z]` vanishes as :math:`n` grows; for kernels fixed in advance (and
    :math:`\hat Z` exactly unbiased) rerun with ``step_size=result.step_sizes``.

    Cost: :math:`n` proposal draws, then ``num_steps * num_hmc_steps * num_leapfrog_steps``
    batched evaluations of :math:`\log\tilde p` and its gradient at the :math:`n` particles
    (and of :math:`\log q` and its gradient for :math:`\beta < 1`; a flow's ``log_prob`` is its
    data -> base direction).

    :param target: an object with ``log_prob(z)`` (and ``dim``, optional ``log_Z``) or a
        callable ``log_prob(z)`` with ``dim=``, differentiable in ``z``.
    :param proposal: a :class:`~pyro_flows.Flow` (e.g. trained by
        :func:`~pyro_flows.infer.fit_target`) or a distribution with ``sample`` (or
        ``rsample_and_log_prob``) and a ``log_prob`` differentiable in its argument, event
        shape ``(dim,)``; ``None``: the standard Normal :math:`\mathcal N(0, I_D)` (scale the
        target's coordinates, or pass a wider Normal, when its modes lie far from the
        origin).
    :param dim: the event size, when the target does not state it.
    :param num_samples: particles :math:`n` (at least 10).
    :param num_steps: annealing steps :math:`T` (intermediate distributions plus the target).
    :param schedule: ``"linear"``, ``"geometric"`` or the betas :math:`\beta_1 .. \beta_T`.
    :param num_hmc_steps: HMC moves per temperature (0: plain importance sampling).
    :param num_leapfrog_steps: leapfrog steps per HMC move.
    :param step_size: ``None`` (adapted) or a fixed leapfrog step size: one number, or one per
        temperature (shape ``(num_steps,)``).
    :param initial_step_size: the first step size when adapting (default
        :math:`0.5\,D^{-1/4}`).
    :param target_accept: the acceptance probability the adaptation aims at, in (0, 1).
    :param progress: show progress over the temperatures (a bar on a terminal, a line every
        ten seconds otherwise).
    :param seed: seeds the proposal draws (in a forked RNG: the global RNGs are left as they
        were), the momenta and the Metropolis uniforms; ``None``: a seed drawn from the global
        RNG.
    :returns: an :class:`AISResult` (``log_Z``, ``log_Z_stderr``, ``log_weights``, ``ess``,
        final ``samples``, ``accept_rates`` and ``step_sizes`` per temperature, ``wall_time``,
        ``num_log_prob_evals``, ``num_grad_evals``, and ``log_Z_error`` when the target knows
        its ``log_Z``).
    :raises ValueError: for bad arguments, a proposal whose draws have the wrong shape or a
        non-finite log density at its own draws, a target whose log density is NaN or
        :math:`+\infty` at a proposal draw, or no particle with positive weight.
    :raises TypeError: for arguments of the wrong type, a proposal without ``log_prob`` or a
        way to draw, or a target or proposal that is not differentiable.

    A particle whose first draw has zero target density (``log_prob = -inf``) keeps weight 0
    and is counted in ``num_zero_weights``, with a ``RuntimeWarning``.

    Example: an unnormalised Gaussian :math:`e^{1}\,\mathcal N(0, 2^2 I_2)` times
    :math:`2\pi\cdot 4`, i.e. :math:`\log Z = 1 + \log 8\pi`:

    >>> import math, torch
    >>> log_p = lambda z: 1.0 - 0.125 * (z**2).sum(-1)
    >>> r = annealed_importance_sampling(log_p, dim=2, num_samples=500, num_steps=32,
    ...                                  progress=False, seed=0)
    >>> abs(r.log_Z - (1.0 + math.log(8 * math.pi))) < 4 * r.log_Z_stderr + 0.02
    True
    >>> r.samples.shape, r.accept_rates.shape
    (torch.Size([500, 2]), torch.Size([32]))

    References:

    - R. M. Neal. *Annealed importance sampling.* Statistics and Computing 11, 125-139, 2001.
    - L. I. Midgley et al. *Flow Annealed Importance Sampling Bootstrap.* ICLR 2023.
    """
    check_positive_int(num_samples, "num_samples", 10)
    check_positive_int(num_steps, "num_steps")
    check_positive_int(num_hmc_steps, "num_hmc_steps", 0)
    check_positive_int(num_leapfrog_steps, "num_leapfrog_steps")
    betas = ais_betas(num_steps, schedule)
    fixed_h = _check_step_size(step_size, num_steps)
    if initial_step_size is not None:
        if isinstance(initial_step_size, bool) or not isinstance(initial_step_size, int | float):
            raise TypeError(
                "initial_step_size must be a positive float or None, got "
                f"{type(initial_step_size).__name__} ({initial_step_size!r})"
            )
        if not (math.isfinite(initial_step_size) and initial_step_size > 0):
            raise ValueError(
                f"initial_step_size must be positive and finite, got {initial_step_size!r}"
            )
    if isinstance(target_accept, bool) or not isinstance(target_accept, int | float):
        raise TypeError(
            f"target_accept must be a number in (0, 1), got {type(target_accept).__name__} "
            f"({target_accept!r})"
        )
    if not 0 < target_accept < 1:
        raise ValueError(f"target_accept must be a number in (0, 1), got {target_accept!r}")
    if not isinstance(progress, bool):
        raise TypeError(
            f"progress must be a bool (True or False), got {type(progress).__name__} {progress!r}"
        )
    _check_proposal(proposal)
    density = as_target(target, dim)
    d = density.dim
    q = _Proposal(proposal, d)
    _, seed = _generator(seed)
    start = time.perf_counter()
    module = proposal if isinstance(proposal, nn.Module) else None
    was_training = module.training if module is not None else False
    if module is not None:
        module.eval()  # BatchNorm layers must use their running statistics
    try:
        if proposal is None:
            device = density.points_device()
            dtype = density._initial_dtype(device)
            gen, _ = _generator(seed, device)
            x, lq = q.draw(num_samples, gen, dtype, device)
        else:
            proposal_device, _ = _stated_device_and_dtype(proposal)
            with _forked_rng(seed, [proposal_device, density.device]), torch.no_grad():
                x, lq = q.draw(num_samples)
            gen, _ = _generator(seed, x.device)
        result = _anneal(
            density,
            q,
            x,
            lq,
            betas,
            fixed_h,
            initial_step_size,
            float(target_accept),
            num_hmc_steps,
            num_leapfrog_steps,
            gen,
            progress,
        )
    finally:
        if module is not None:
            module.train(was_training)
    lw, samples, step_sizes, accept_rates = result
    wall = time.perf_counter() - start
    zero = int((lw == -math.inf).sum())
    if zero == num_samples:
        raise ValueError(
            f"all {num_samples} particles have zero weight: the target's log density is -inf "
            "at every proposal draw (is the proposal on the target's support?)"
        )
    if zero:
        warnings.warn(
            f"{zero} of {num_samples} AIS particles have weight 0: the target's log density is "
            "-inf at their proposal draws (outside its support)",
            RuntimeWarning,
            stacklevel=2,
        )
    log_Z, stderr = importance_log_Z(lw)
    frac = ess_fraction(lw)
    return AISResult(
        log_Z=log_Z,
        log_Z_stderr=stderr,
        log_weights=lw,
        ess=frac * num_samples,
        ess_fraction=frac,
        khat=psis_khat(lw),
        samples=samples,
        betas=betas,
        step_sizes=step_sizes,
        accept_rates=accept_rates,
        wall_time=wall,
        num_log_prob_evals=density.num_log_prob_evals,
        num_grad_evals=density.num_grad_evals,
        num_zero_weights=zero,
        seed=seed,
        target_log_Z=density.log_Z,
    )


def _anneal(
    density: TargetDensity,
    q: _Proposal,
    x: Tensor,
    lq0: Tensor,
    betas: Tensor,
    fixed_h: Tensor | None,
    initial_step_size: float | None,
    target_accept: float,
    num_hmc_steps: int,
    num_leapfrog: int,
    gen: torch.Generator,
    progress: bool,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """The annealing loop: ``(log_weights, samples, step_sizes, accept_rates)``."""
    n, d = x.shape
    if not x.is_floating_point():
        raise TypeError(f"the proposal's draws must be floating-point, got dtype {x.dtype}")
    bad_q = ~torch.isfinite(lq0)
    if bool(bad_q.any()):
        raise ValueError(
            f"the proposal's log density is not finite at {int(bad_q.sum())} of {n} of its own "
            f"draws, e.g. draws {bad_q.nonzero().flatten()[:5].tolist()}"
        )
    bad_x = ~torch.isfinite(x).all(-1)
    if bool(bad_x.any()):
        raise ValueError(
            f"the proposal drew {int(bad_x.sum())} non-finite points of {n}, e.g. draws "
            f"{bad_x.nonzero().flatten()[:5].tolist()}"
        )
    num_steps = betas.numel() - 1
    need_grad = num_hmc_steps > 0
    if need_grad:
        lp, glp, lq, glq = _evaluate(density, q, x, need_q=betas[1].item() < 1.0)
        if betas[1].item() == 1.0:
            lq = lq0.to(x.dtype)
    else:
        with torch.no_grad():
            lp = density(x).detach().to(x.dtype)
        lq, glp, glq = lq0.to(x.dtype), torch.zeros_like(x), torch.zeros_like(x)
    bad_p = torch.isnan(lp) | (lp == math.inf)
    if bool(bad_p.any()):
        raise ValueError(
            f"the target's log density is NaN or +inf at {int(bad_p.sum())} of {n} proposal "
            f"draws, e.g. draws {bad_p.nonzero().flatten()[:5].tolist()}: AIS needs a log "
            "density that is finite or -inf (zero density)"
        )
    alive = torch.isfinite(lp)
    state = _State(x.detach(), lp, glp, lq, glq)
    lw = torch.where(
        alive,
        torch.zeros(n, dtype=torch.float64, device=x.device),
        torch.full((n,), -math.inf, dtype=torch.float64, device=x.device),
    )
    h = float(initial_step_size) if initial_step_size is not None else 0.5 * d ** (-0.25)
    step_sizes = torch.full((num_steps,), math.nan, dtype=torch.float64)
    accept_rates = torch.full((num_steps,), math.nan, dtype=torch.float64)
    num_alive = max(int(alive.sum()), 1)
    bar = progress_bar(total=num_steps, desc="ais", unit="temperature", enabled=progress)
    try:
        for t in range(1, num_steps + 1):
            beta, previous = float(betas[t]), float(betas[t - 1])
            increment = (beta - previous) * (
                state.lp.to(torch.float64) - state.lq.to(torch.float64)
            )
            lw = lw + torch.where(alive, increment, torch.zeros_like(increment))
            if fixed_h is not None:
                h = float(fixed_h[t - 1])
            step_sizes[t - 1] = h
            if num_hmc_steps:
                total = 0.0
                for _ in range(num_hmc_steps):
                    state, accept_prob = _hmc_move(
                        density, q, state, alive, beta, h, num_leapfrog, gen
                    )
                    total += float(accept_prob.sum()) / num_alive
                mean_accept = total / num_hmc_steps
                accept_rates[t - 1] = mean_accept
                if fixed_h is None:
                    h = h * math.exp(_STEP_GAIN * (mean_accept - target_accept))
            bar.update(1)
            if progress and (t % 10 == 0 or t == num_steps):
                bar.set_postfix(
                    beta=f"{beta:.3g}", step=f"{h:.3g}", accept=f"{accept_rates[t - 1]:.2f}"
                )
    finally:
        bar.close()
    bad = torch.isnan(lw) | (lw == math.inf)
    if bool(bad.any()):
        raise ValueError(
            f"{int(bad.sum())} of {n} AIS log weights are NaN or +inf (the target's or the "
            f"proposal's log density at an accepted point), e.g. particles "
            f"{bad.nonzero().flatten()[:5].tolist()}"
        )
    return lw, state.x, step_sizes, accept_rates
