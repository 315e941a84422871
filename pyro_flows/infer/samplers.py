r"""Classic MCMC baselines, vectorised over chains: random-walk Metropolis, MALA and ULA.

All chains advance together: each iteration makes one batched call of the target's
``log_prob`` (and, for the Langevin samplers, one batched gradient) on a ``(num_chains, dim)``
tensor. With step size :math:`h` (per chain) and :math:`\xi \sim \mathcal N(0, I)`:

.. math::

    \text{RWM:}\quad z' = z + h\,\xi, \qquad
    \log\alpha = \log p(z') - \log p(z);

    \text{ULA:}\quad z' = z + \tfrac h2 \nabla\log p(z) + \sqrt h\,\xi \quad \text{(always kept)};

    \text{MALA:}\quad z' \text{ as ULA}, \qquad
    \log\alpha = \log p(z') - \log p(z) + \log q(z \mid z') - \log q(z' \mid z),
    \quad q(z' \mid z) = \mathcal N\bigl(z';\, z + \tfrac h2\nabla\log p(z),\, h I\bigr),

and the proposal is accepted when :math:`\log u < \log\alpha`, :math:`u \sim U(0, 1)`. The
Langevin step is :func:`~pyro_flows.infer._langevin_step.langevin_step`, which the chains of
contrastive divergence (:func:`pyro_flows.ebm.langevin_samples`) take too.

During warm-up the step size of each chain is tuned by dual averaging
(:class:`~pyro_flows.infer._adapt.DualAveraging`) towards a target acceptance rate (0.234 for
RWM, 0.574 for MALA: the optimal rates of Roberts & Rosenthal); it is restarted once, a quarter
into warm-up, to forget the initial transient, and frozen at its averaged value when warm-up ends,
so the draws kept come from a time-homogeneous Markov chain. Metropolis-adjusted chains leave the
target exactly invariant. ULA has no correction: its stationary law is biased by :math:`O(h)`.
For a Gaussian target :math:`\mathcal N(0, \Sigma)` the ULA chain is the linear recursion
:math:`z' = (I - \tfrac h2 \Sigma^{-1}) z + \sqrt h\,\xi`, whose stationary covariance solves
:math:`V = A V A^\top + h I`:

.. math::

    V = \Bigl(I - \frac h4 \Sigma^{-1}\Bigr)^{-1} \Sigma, \qquad
    \text{in 1-D: } v = \frac{s^2}{1 - h / (4 s^2)} > s^2 \quad (h < 4 s^2),

an inflation of the variance that vanishes linearly in :math:`h`.

References:

- N. Metropolis, A. Rosenbluth, M. Rosenbluth, A. Teller, E. Teller. *Equation of State
  Calculations by Fast Computing Machines.* J. Chem. Phys. 21, 1953.
- G. O. Roberts, R. L. Tweedie. *Exponential convergence of Langevin distributions and their
  discrete approximations.* Bernoulli 2(4), 1996.
- G. O. Roberts, J. S. Rosenthal. *Optimal scaling of discrete approximations to Langevin
  diffusions.* JRSS B 60, 1998; *Optimal scaling for various Metropolis-Hastings
  algorithms.* Statistical Science 16, 2001.
- A. Durmus, E. Moulines. *Nonasymptotic convergence analysis for the unadjusted Langevin
  algorithm.* Annals of Applied Probability 27(3), 2017.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from .._progress import progress_bar
from ._adapt import DualAveraging
from ._langevin_step import langevin_step
from .results import (
    DeviceLike,
    SampleResult,
    TargetDensity,
    _check_int,
    _draw,
    _generator,
    as_target,
)

__all__ = ["langevin", "mala", "random_walk_metropolis", "ula"]


def _check_accept(value: object, name: str = "target_accept") -> float:
    if not isinstance(value, int | float) or isinstance(value, bool) or not 0 < value < 1:
        raise ValueError(f"{name} must be a number in (0, 1), got {value!r}")
    return float(value)


def _step_tensor(
    step_size: float | Tensor, num_chains: int, dtype: torch.dtype, device: torch.device
) -> Tensor:
    """One step size per chain, checked (on the CPU) and put on the chains' device."""
    try:
        h = torch.as_tensor(step_size).detach().to("cpu", torch.float64).reshape(-1)
    except (TypeError, ValueError, RuntimeError):
        h = torch.empty(0, device="cpu")
    if h.numel() == 1:
        h = h.expand(num_chains).clone()
    if h.shape != (num_chains,) or not bool(torch.isfinite(h).all()) or not bool((h > 0).all()):
        raise ValueError(
            "step_size must be a positive finite float or a tensor of shape (num_chains,) = "
            f"({num_chains},), got {step_size!r}"
        )
    return h.to(device=device, dtype=dtype)


def _finite_or_minus_inf(lp: Tensor) -> Tensor:
    return torch.where(torch.isfinite(lp), lp, torch.full_like(lp, -math.inf))


class _State:
    """Current points, log densities and gradients of all chains."""

    def __init__(self, z: Tensor, lp: Tensor, grad: Tensor | None) -> None:
        self.z, self.lp, self.grad = z, lp, grad


Kernel = Callable[[_State, Tensor], tuple[_State, Tensor | None, Tensor | None]]


def _rwm_kernel(density: TargetDensity, gen: torch.Generator) -> Kernel:
    def step(s: _State, h: Tensor) -> tuple[_State, Tensor, Tensor]:
        noise = _draw("randn", s.z.shape, gen, dtype=s.z.dtype, device=s.z.device)
        prop = s.z + h[:, None] * noise
        with torch.no_grad():
            lp_p = _finite_or_minus_inf(density(prop).to(s.lp))
        log_alpha = lp_p - s.lp
        u = _draw("rand", s.lp.shape, gen, dtype=s.lp.dtype, device=s.lp.device)
        accept = u.log() < log_alpha
        z = torch.where(accept[:, None], prop, s.z)
        lp = torch.where(accept, lp_p, s.lp)
        return _State(z, lp, None), log_alpha.clamp(max=0.0).exp(), accept

    return step


def _langevin_proposal(s: _State, h: Tensor, gen: torch.Generator) -> tuple[Tensor, Tensor]:
    """The unadjusted Langevin step (:func:`~pyro_flows.infer._langevin_step.langevin_step`)
    from every chain with its own step size, and the standard normal noise it used."""
    noise = _draw("randn", s.z.shape, gen, dtype=s.z.dtype, device=s.z.device)
    assert s.grad is not None
    return langevin_step(s.z, s.grad, h[:, None], noise), noise


def _mala_kernel(density: TargetDensity, gen: torch.Generator) -> Kernel:
    def step(s: _State, h: Tensor) -> tuple[_State, Tensor, Tensor]:
        prop, noise = _langevin_proposal(s, h, gen)
        lp_p, g_p = density.value_and_grad(prop)
        lp_p = lp_p.to(s.lp)
        ok = torch.isfinite(lp_p) & torch.isfinite(g_p).all(-1)
        g_p = torch.where(ok[:, None], g_p, torch.zeros_like(g_p))
        log_fwd = -0.5 * (noise**2).sum(-1)
        back = s.z - prop - 0.5 * h[:, None] * g_p
        log_bwd = -(back**2).sum(-1) / (2.0 * h)
        log_alpha = lp_p - s.lp + log_bwd - log_fwd
        log_alpha = torch.where(ok, log_alpha, torch.full_like(log_alpha, -math.inf))
        u = _draw("rand", s.lp.shape, gen, dtype=s.lp.dtype, device=s.lp.device)
        accept = u.log() < log_alpha
        z = torch.where(accept[:, None], prop, s.z)
        lp = torch.where(accept, lp_p, s.lp)
        assert s.grad is not None
        grad = torch.where(accept[:, None], g_p, s.grad)
        return _State(z, lp, grad), log_alpha.clamp(max=0.0).exp(), accept

    return step


def _ula_kernel(density: TargetDensity, gen: torch.Generator, where: list[int]) -> Kernel:
    def step(s: _State, h: Tensor) -> tuple[_State, None, None]:
        prop, _ = _langevin_proposal(s, h, gen)
        lp, grad = density.value_and_grad(prop)
        ok = torch.isfinite(lp) & torch.isfinite(grad).all(-1)
        if not bool(ok.all()):
            chains = (~ok).nonzero().flatten().tolist()
            raise FloatingPointError(
                f"ULA diverged: non-finite log density or gradient in chain(s) {chains} at "
                f"iteration {where[0]} (step sizes {h[~ok].tolist()[:5]}); use a smaller "
                "step_size (ULA is stable on a Gaussian only for h < 4 * smallest variance)"
            )
        return _State(prop, lp.to(s.lp), grad), None, None

    return step


def _run(
    method: str,
    target: Any,
    *,
    dim: int | None,
    num_samples: int,
    warmup: int,
    num_chains: int,
    init: Tensor | str | None,
    step_size: float | Tensor | None,
    target_accept: float,
    progress: bool,
    seed: int | None,
    device: DeviceLike | None,
) -> SampleResult:
    _check_int(num_samples, "num_samples", 1)
    _check_int(warmup, "warmup", 0)
    _check_int(num_chains, "num_chains", 1)
    target_accept = _check_accept(target_accept)
    if step_size is None and warmup == 0:
        raise ValueError(
            "step_size=None means the step size is tuned during warm-up, but warmup=0: pass "
            "step_size= (kept fixed) or warmup > 0"
        )
    density = as_target(target, dim, device=device)
    gen, seed = _generator(seed, density.points_device(init))
    start = time.perf_counter()
    z, lp = density.initial_points(num_chains, init, gen)
    dtype, d, device = z.dtype, density.dim, z.device
    grad = None
    if method != "mh":
        lp, grad = density.value_and_grad(z)
        bad = ~(torch.isfinite(lp) & torch.isfinite(grad).all(-1))
        if bool(bad.any()):
            raise ValueError(
                f"the gradient of log_prob is not finite at the initial point of chain(s) "
                f"{bad.nonzero().flatten().tolist()}: start elsewhere (init=)"
            )
    lp = lp.to(dtype)
    state = _State(z, lp, grad)
    adapt = step_size is None
    if adapt:
        guess = 2.38 / math.sqrt(d) if method == "mh" else d ** (-1.0 / 3.0)
        h = torch.full((num_chains,), guess, dtype=dtype, device=device)
        adapter = DualAveraging(h, target_accept)
    else:
        h = _step_tensor(step_size, num_chains, dtype, device)  # type: ignore[arg-type]
    where = [0]
    tuned = _rwm_kernel(density, gen) if method == "mh" else _mala_kernel(density, gen)
    sampling = tuned if method != "ula" else _ula_kernel(density, gen, where)
    warming = tuned if adapt or method != "ula" else sampling

    samples = torch.empty(num_chains, num_samples, d, dtype=dtype, device=device)
    log_probs = torch.empty(num_chains, num_samples, dtype=dtype, device=device)
    accept_probs = torch.empty(num_chains, num_samples, dtype=dtype, device=device)
    accepted = torch.zeros(num_chains, dtype=torch.long, device=device)
    restart_at = warmup // 4 if warmup >= 20 else -1
    evals_after_warmup = (0, 0)
    bar = progress_bar(total=warmup + num_samples, desc=method, enabled=progress, leave=True)
    try:
        for i in range(warmup + num_samples):
            where[0] = i
            if i < warmup:
                state, accept_prob, _ = warming(state, h)
                if adapt:
                    assert accept_prob is not None
                    if i == restart_at:
                        adapter.restart(adapter.final_step_size)
                    h = adapter.update(accept_prob)
                    if i == warmup - 1:
                        h = adapter.final_step_size
            else:
                if i == warmup:
                    evals_after_warmup = (density.num_log_prob_evals, density.num_grad_evals)
                state, accept_prob, accept = sampling(state, h)
                j = i - warmup
                samples[:, j] = state.z
                log_probs[:, j] = state.lp
                if accept_prob is not None and accept is not None:
                    accept_probs[:, j] = accept_prob
                    accepted += accept.long()
            bar.update(1)
            if progress and (i + 1) % 100 == 0:
                bar.set_postfix(step=f"{float(h.mean()):.3g}")
    finally:
        bar.close()
    wall = time.perf_counter() - start
    extra: dict[str, Any] = {
        "log_prob": log_probs,
        "warmup": warmup,
        "seed": seed,
        "num_log_prob_evals_warmup": evals_after_warmup[0],
        "num_grad_evals_warmup": evals_after_warmup[1],
        "step_size_adapted": adapt,
    }
    accept_rate = None
    if method != "ula":
        extra["accept_prob"] = accept_probs
        accept_rate = float(accepted.sum()) / (num_chains * num_samples)
    extra.update(density.facts())
    extra.update(density.start_facts())
    return SampleResult(
        method=method,
        samples=samples,
        wall_time=wall,
        num_log_prob_evals=density.num_log_prob_evals,
        num_grad_evals=density.num_grad_evals,
        divergences=None,
        accept_rate=accept_rate,
        step_size=h.clone(),
        extra=extra,
    )


def random_walk_metropolis(
    target: Any,
    *,
    dim: int | None = None,
    num_samples: int = 1000,
    warmup: int = 1000,
    num_chains: int = 4,
    init: Tensor | str | None = None,
    step_size: float | Tensor | None = None,
    target_accept: float = 0.234,
    progress: bool = True,
    seed: int | None = None,
    device: DeviceLike | None = None,
) -> SampleResult:
    r"""Random-walk Metropolis with an isotropic Gaussian proposal, vectorised over chains.

    .. math::

        z' = z + h\,\xi,\ \xi \sim \mathcal N(0, I), \qquad
        \text{accept with probability } \min\Bigl(1, \frac{\tilde p(z')}{\tilde p(z)}\Bigr).

    Cost per iteration: one batched ``log_prob`` call for all chains, no gradient.

    :param target: an object with ``log_prob(z)`` (shape ``z.shape[:-1]``) and ``dim``, or a
        callable ``log_prob(z)`` (then pass ``dim=``).
    :param dim: the event size, when the target does not state it.
    :param num_samples: draws kept per chain, after warm-up.
    :param warmup: iterations discarded per chain, during which the step size is tuned.
    :param num_chains: chains run together.
    :param init: where the chains start. ``None`` (or ``"modes"``, the default): over-dispersed
        around the target's local maxima, given to the chains round-robin (Gelman & Rubin,
        1992), falling back to ``"uniform"`` where a search finds none (see
        :meth:`~pyro_flows.infer.results.TargetDensity.initial_points`); ``"uniform"``: Stan's
        :math:`U(-2, 2)^D` around the target's ``initial_params()`` (or 0), per chain; a tensor
        ``(dim,)`` or ``(num_chains, dim)``: used as given. The search's evaluations and time
        count in the costs; ``extra["init"]`` (and ``init_modes``, ``init_mode_of_chain`` or
        ``init_fallback``) say what was done.
    :param step_size: the proposal scale :math:`h`, a float or one per chain: kept fixed. Default
        ``None``: start at :math:`2.38/\sqrt D` and tune each chain's :math:`h` by dual averaging
        during warm-up, then freeze it.
    :param target_accept: the acceptance rate the tuning aims for (0.234 is optimal for
        high-dimensional product targets; about 0.44 in 1-D).
    :param progress: show a tqdm progress bar (``False``: silent).
    :param seed: seeds the run's own ``torch.Generator`` (the global RNG is untouched; ``None``:
        a seed drawn from the global RNG).
    :param device: where to run the chains, for a target that does not say (a plain function);
        by default the target's device (see :func:`~pyro_flows.infer.results.as_target`), else
        that of ``init``, else the CPU. Everything the sampler makes lives there.
    :returns: a :class:`~pyro_flows.infer.results.SampleResult` with ``method="mh"``,
        ``accept_rate``, ``step_size`` and ``extra["log_prob"]``, ``extra["accept_prob"]``.
    :raises ValueError: on a start with non-finite log density (naming the chains), a
        ``log_prob`` of the wrong shape, or bad arguments.

    Example:

    >>> import torch
    >>> r = random_walk_metropolis(lambda z: -0.5 * (z**2).sum(-1), dim=2, num_samples=200,
    ...                            warmup=200, progress=False, seed=0)
    >>> r.samples.shape, 0.1 < r.accept_rate < 0.4, r.extra["init"]
    (torch.Size([4, 200, 2]), True, 'modes')
    >>> r.num_grad_evals == r.extra["init_search_grad_evals"]  # only the start's mode search
    True
    >>> random_walk_metropolis(lambda z: -0.5 * (z**2).sum(-1), dim=2, num_samples=20,
    ...                        init="uniform", progress=False, seed=0).num_grad_evals
    0

    References:

    - N. Metropolis et al. *Equation of State Calculations by Fast Computing Machines.* 1953.
    - G. O. Roberts, A. Gelman, W. R. Gilks. *Weak convergence and optimal scaling of random walk
      Metropolis algorithms.* Annals of Applied Probability 7(1), 1997.
    - M. D. Hoffman, A. Gelman. *The No-U-Turn Sampler.* JMLR 2014 (dual averaging).
    """
    return _run(
        "mh",
        target,
        dim=dim,
        num_samples=num_samples,
        warmup=warmup,
        num_chains=num_chains,
        init=init,
        step_size=step_size,
        target_accept=target_accept,
        progress=progress,
        seed=seed,
        device=device,
    )


def langevin(
    target: Any,
    *,
    adjust: bool = True,
    dim: int | None = None,
    num_samples: int = 1000,
    warmup: int = 1000,
    num_chains: int = 4,
    init: Tensor | str | None = None,
    step_size: float | Tensor | None = None,
    target_accept: float = 0.574,
    progress: bool = True,
    seed: int | None = None,
    device: DeviceLike | None = None,
) -> SampleResult:
    r"""Langevin samplers: MALA (``adjust=True``) or ULA (``adjust=False``), vectorised.

    The Euler-Maruyama step of the Langevin diffusion
    :math:`dZ_t = \tfrac12\nabla\log p(Z_t)\,dt + dW_t` over a time :math:`h`,

    .. math::

        z' = z + \frac h2 \nabla\log p(z) + \sqrt h\,\xi, \qquad \xi\sim\mathcal N(0, I),

    is used as it is by ULA (biased by :math:`O(h)`; see the module docstring for the exact
    Gaussian case) and as a Metropolis-Hastings proposal by MALA (exact), accepted with
    probability :math:`\min\bigl(1, \frac{p(z') q(z\mid z')}{p(z) q(z'\mid z)}\bigr)`.

    Cost per iteration: one batched ``log_prob`` + gradient call for all chains (one gradient
    evaluation per chain, counted in ``num_grad_evals``).

    :param target: an object with a differentiable ``log_prob(z)`` and ``dim``, or a callable.
    :param adjust: ``True`` for MALA, ``False`` for ULA.
    :param dim: the event size, when the target does not state it.
    :param num_samples: draws kept per chain.
    :param warmup: iterations discarded per chain.
    :param num_chains: chains run together.
    :param init: where the chains start: ``None`` / ``"modes"`` (default: over-dispersed around
        the target's modes), ``"uniform"`` or a tensor (see :func:`random_walk_metropolis`).
    :param step_size: the time step :math:`h` (float or per chain), kept fixed. Default
        ``None``: start at :math:`D^{-1/3}` and tune by dual averaging during warm-up towards
        ``target_accept`` with MALA steps, then freeze; ULA then samples with that step (a
        MALA-tuned step keeps ULA's bias moderate). With a fixed ``step_size`` ULA's warm-up is
        plain ULA burn-in.
    :param target_accept: MALA acceptance rate aimed at (0.574 is optimal in high dimension).
    :param progress: show a tqdm progress bar.
    :param seed: seeds the run's own generator (``None``: drawn from the global RNG).
    :param device: where to run the chains, for a target that does not say (see
        :func:`random_walk_metropolis`).
    :returns: a :class:`~pyro_flows.infer.results.SampleResult` (``method="mala"`` or
        ``"ula"``; ULA has no ``accept_rate``).
    :raises ValueError: on a start with non-finite log density or gradient (naming the chains),
        a ``log_prob`` of the wrong shape, or bad arguments.
    :raises TypeError: when ``log_prob`` is not differentiable by autograd.
    :raises FloatingPointError: when ULA diverges (non-finite values: the step is too large).

    Example:

    >>> r = langevin(lambda z: -0.5 * (z**2).sum(-1), dim=3, num_samples=200, warmup=300,
    ...              progress=False, seed=0)
    >>> search = r.extra["init_search_grad_evals"]  # the default start's mode search
    >>> r.method, 0.45 < r.accept_rate < 0.7, r.num_grad_evals == search + 4 * (1 + 300 + 200)
    ('mala', True, True)

    References:

    - G. O. Roberts, R. L. Tweedie. *Exponential convergence of Langevin distributions and
      their discrete approximations.* Bernoulli 2(4), 1996.
    - G. O. Roberts, J. S. Rosenthal. *Optimal scaling of discrete approximations to Langevin
      diffusions.* JRSS B 60, 1998.
    - A. Durmus, E. Moulines. *Nonasymptotic convergence analysis for the unadjusted Langevin
      algorithm.* Annals of Applied Probability 27(3), 2017.
    """
    if not isinstance(adjust, bool):
        raise TypeError(
            f"adjust must be a bool (True: MALA, False: ULA), got {type(adjust).__name__} "
            f"{adjust!r}"
        )
    return _run(
        "mala" if adjust else "ula",
        target,
        dim=dim,
        num_samples=num_samples,
        warmup=warmup,
        num_chains=num_chains,
        init=init,
        step_size=step_size,
        target_accept=target_accept,
        progress=progress,
        seed=seed,
        device=device,
    )


def mala(target: Any, **kwargs: Any) -> SampleResult:
    r"""Metropolis-adjusted Langevin algorithm: :func:`langevin` with ``adjust=True``.

    .. math::

        z' = z + \tfrac h2 \nabla\log p(z) + \sqrt h\,\xi, \quad
        \alpha = \min\Bigl(1, \frac{p(z')\, q(z\mid z')}{p(z)\, q(z'\mid z)}\Bigr).

    Takes the keyword arguments of :func:`langevin` (``dim``, ``num_samples``, ``warmup``,
    ``num_chains``, ``init``, ``step_size``, ``target_accept=0.574``, ``progress``, ``seed``,
    ``device``).

    Example:

    >>> r = mala(lambda z: -0.5 * (z**2).sum(-1), dim=2, num_samples=50, warmup=50,
    ...          progress=False, seed=1)
    >>> r.method, r.samples.shape
    ('mala', torch.Size([4, 50, 2]))

    References: Roberts & Tweedie, Bernoulli 2(4), 1996.
    """
    if "adjust" in kwargs:
        raise TypeError("mala() is langevin(adjust=True): do not pass adjust=")
    return langevin(target, adjust=True, **kwargs)


def ula(target: Any, **kwargs: Any) -> SampleResult:
    r"""Unadjusted Langevin algorithm: :func:`langevin` with ``adjust=False``.

    .. math::

        z' = z + \tfrac h2 \nabla\log p(z) + \sqrt h\,\xi \quad \text{(no accept/reject:
        stationary law biased by } O(h)\text{)}.

    Takes the keyword arguments of :func:`langevin`; with ``step_size=None`` the step is tuned
    by MALA steps during warm-up.

    Example:

    >>> r = ula(lambda z: -0.5 * (z**2).sum(-1), dim=1, step_size=0.5, num_samples=50,
    ...         warmup=20, progress=False, seed=0)
    >>> r.method, r.accept_rate, r.step_size.tolist()
    ('ula', None, [0.5, 0.5, 0.5, 0.5])

    References: Durmus & Moulines, Annals of Applied Probability 27(3), 2017.
    """
    if "adjust" in kwargs:
        raise TypeError("ula() is langevin(adjust=False): do not pass adjust=")
    return langevin(target, adjust=False, **kwargs)
