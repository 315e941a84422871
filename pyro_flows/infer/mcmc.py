r"""NUTS and HMC baselines: Pyro's kernels on any target or Pyro model, with honest costs.

Hamiltonian Monte Carlo samples :math:`p(z) \propto e^{-U(z)}` by simulating
:math:`H(z, r) = U(z) + \tfrac12 r^\top M^{-1} r` with the leapfrog integrator (step
:math:`\epsilon`),

.. math::

    r_{1/2} = r - \tfrac\epsilon2 \nabla U(z), \quad z' = z + \epsilon M^{-1} r_{1/2}, \quad
    r' = r_{1/2} - \tfrac\epsilon2 \nabla U(z'),

and accepting the end point with probability :math:`\min(1, e^{H(z, r) - H(z', r')})`. NUTS
(Hoffman & Gelman, 2014) doubles the trajectory until it makes a U-turn and samples a point of
it. Both use Pyro's ``pyro.infer.mcmc.NUTS``/``HMC`` kernels with ``potential_fn``
:math:`U(z) = -\log\tilde p(z)` and ``MCMC(..., initial_params=...)``; the step size and a
diagonal (or dense) mass matrix :math:`M` are adapted during warm-up only (Stan's windowed
scheme). A transition whose energy error exceeds 1000 is *divergent* (Pyro's threshold). An
HMC trajectory has at most ``max_num_steps`` leapfrog steps (default :math:`2^{10}`, like NUTS's
``max_tree_depth=10``), so that a step size the adaptation drives to zero cannot make warm-up
endless; the trajectories cut are counted and warned of (:func:`hmc`). A target whose
``log_prob`` autograd cannot differentiate is a ``TypeError`` naming that.

Chains run **one after another in this process** (no multiprocessing): Pyro's parallel chains
spawn worker processes, which is fragile (pickling of closures, start-up cost) and buys nothing
on a machine with two cores. The potential is wrapped by a counter, so ``num_grad_evals`` is the
number of points at which :math:`\nabla U` was computed, warm-up and step-size search included:
the cost unit of ESS per gradient evaluation (Hoffman et al., 2019).

This module runs the kernels on a target's log density; the chain runner and its recorders are
in :mod:`~pyro_flows.infer.mcmc_chains`, NUTS on a Pyro model in
:mod:`~pyro_flows.infer.mcmc_model`.

References:

- R. M. Neal. *MCMC using Hamiltonian dynamics.* Handbook of MCMC, 2011.
  https://arxiv.org/abs/1206.1901
- M. D. Hoffman, A. Gelman. *The No-U-Turn Sampler.* JMLR 15, 2014.
- M. Betancourt. *A Conceptual Introduction to Hamiltonian Monte Carlo.* 2017.
  https://arxiv.org/abs/1701.02434
- E. Bingham et al. *Pyro: Deep Universal Probabilistic Programming.* JMLR 20, 2019.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable
from typing import Any

import torch
from pyro.infer.mcmc import HMC
from torch import Tensor

from .._progress import progress_bar as progress_bar
from .mcmc_chains import _Counter, _run_chains
from .mcmc_model import nuts_model as nuts_model
from .results import DeviceLike, SampleResult, _check_int, _generator, as_target
from .samplers import _check_accept

__all__ = ["hmc", "nuts", "nuts_model"]

#: the most leapfrog steps of one HMC trajectory by default: NUTS's cap at its default
#: ``max_tree_depth=10``
MAX_NUM_STEPS = 2**10


class _CappedHMC(HMC):
    r"""Pyro's HMC with at most ``max_num_steps`` leapfrog steps per trajectory.

    Pyro keeps the trajectory length :math:`\epsilon L` fixed and takes
    :math:`L = \lfloor \text{trajectory\_length} / \epsilon \rfloor` steps: where the step
    size adaptation drives :math:`\epsilon \to 0` (a hard boundary, a funnel), :math:`L` grows
    without bound and warm-up never ends. Here :math:`L` is capped (a shorter trajectory), and
    the transitions cut are counted: ``num_capped_warmup`` and ``num_capped`` (kept draws)."""

    def __init__(self, *args: Any, max_num_steps: int, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.max_num_steps = max_num_steps
        self.num_capped_warmup = 0
        self.num_capped = 0

    @property
    def uncapped_num_steps(self) -> int:
        r"""Pyro's :math:`L = \max(1, \lfloor \text{trajectory\_length}/\epsilon\rfloor)`."""
        return HMC.num_steps.fget(self)  # type: ignore[attr-defined]

    @property
    def num_steps(self) -> int:
        """The leapfrog steps of the next trajectory, at most ``max_num_steps``."""
        return min(self.uncapped_num_steps, self.max_num_steps)

    def sample(self, params: dict[str, Tensor]) -> dict[str, Tensor]:
        """One HMC transition, counted when its trajectory is cut to ``max_num_steps``."""
        if self.uncapped_num_steps > self.max_num_steps:
            if self._t < self._warmup_steps:
                self.num_capped_warmup += 1
            else:
                self.num_capped += 1
        return super().sample(params)


def _needs_grad(method: str, potential_fn: Callable[[dict[str, Tensor]], Tensor]
                ) -> Callable[[dict[str, Tensor]], Tensor]:
    """``potential_fn``, checked to depend on its input through autograd whenever Pyro asks for
    a gradient (a clear ``TypeError`` instead of autograd's "element 0 of tensors does not
    require grad" from deep inside Pyro's integrator)."""

    def checked(params: dict[str, Tensor]) -> Tensor:
        out = potential_fn(params)
        wanted = torch.is_grad_enabled() and any(v.requires_grad for v in params.values())
        if wanted and not out.requires_grad:
            raise TypeError(
                f"{method} needs gradients, but the target's log_prob(z) is not differentiable "
                "with torch.autograd (it returned a tensor without grad: a constant, or computed "
                "outside torch with numpy, .item() or .detach()); use a gradient-free sampler "
                "(random-walk Metropolis) or make log_prob differentiable"
            )
        return out

    return checked


def _check_bool(value: object, name: str) -> bool:
    if not isinstance(value, bool):
        raise TypeError(
            f"{name} must be a bool (True or False), got {type(value).__name__} {value!r}"
        )
    return value


def _check_positive_finite(value: object, name: str) -> float:
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise TypeError(
            f"{name} must be a positive finite number, got {type(value).__name__} {value!r}"
        )
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a positive finite number, got {value!r}")
    return float(value)


def _sample_target(
    method: str,
    target: Any,
    make_kernel: Callable[[Callable], Any],
    *,
    dim: int | None,
    num_samples: int,
    warmup: int,
    num_chains: int,
    init: Tensor | str | None,
    progress: bool,
    seed: int | None,
    device: DeviceLike | None,
) -> SampleResult:
    r"""Run ``make_kernel``'s chains on ``target``'s potential :math:`U = -\log\tilde p` from
    :meth:`~pyro_flows.infer.results.TargetDensity.initial_points` and collect the draws, the
    per-draw statistics and the costs in a :class:`~pyro_flows.infer.results.SampleResult`.
    A target whose ``log_prob`` autograd cannot differentiate is a ``TypeError`` at the first
    gradient Pyro asks for."""
    _check_int(num_samples, "num_samples", 1)
    _check_int(warmup, "warmup", 0)
    _check_int(num_chains, "num_chains", 1)
    density = as_target(target, dim, device=device)
    gen, seed = _generator(seed, density.points_device(init))
    start = time.perf_counter()
    z0, _ = density.initial_points(num_chains, init, gen)
    potential = _Counter(_needs_grad(method, density.potential_fn))
    run = _run_chains(
        method,
        make_kernel,
        potential,
        [{"z": z0[c]} for c in range(num_chains)],
        num_samples=num_samples,
        warmup=warmup,
        progress=progress,
        seed=seed,
        device=z0.device,
    )
    wall = time.perf_counter() - start
    samples = torch.stack([d["z"] for d in run["draws"]])
    extra: dict[str, Any] = {
        "accept_prob": run["accept_prob"].to(samples.dtype),
        "num_steps": run["num_steps"],
        "diverging": run["diverging"],
        "warmup": warmup,
        "seed": seed,
    }
    extra.update(density.facts())
    extra.update(density.start_facts())
    return SampleResult(
        method=method,
        samples=samples,
        wall_time=wall,
        num_log_prob_evals=density.num_log_prob_evals,
        num_grad_evals=density.num_grad_evals,
        divergences=run["divergences"],
        accept_rate=float(run["accept_prob"].nanmean()),
        step_size=run["step_size"],
        extra=extra,
    )


def nuts(
    target: Any,
    *,
    dim: int | None = None,
    num_samples: int = 1000,
    warmup: int = 1000,
    num_chains: int = 2,
    init: Tensor | str | None = None,
    target_accept: float = 0.8,
    max_tree_depth: int = 10,
    dense_mass: bool = False,
    progress: bool = True,
    seed: int | None = None,
    device: DeviceLike | None = None,
) -> SampleResult:
    r"""Pyro's No-U-Turn sampler on a target's log density, chains run one after another.

    .. math::

        U(z) = -\log\tilde p(z), \qquad
        \text{trajectory doubled until } (z^+ - z^-)\cdot r^{\pm} < 0,

    with the step size tuned to ``target_accept`` and a diagonal (``dense_mass=True``: dense)
    mass matrix adapted during warm-up (see the module docstring).

    Cost: :math:`2^{\text{depth}}` leapfrog steps (gradients) per draw, at most
    :math:`2^{\text{max\_tree\_depth}}`; the per-draw count is ``extra["num_steps"]``.

    :param target: an object with a differentiable ``log_prob(z)`` and ``dim`` (or a callable
        with ``dim=``).
    :param dim: the event size, when the target does not state it.
    :param num_samples: draws kept per chain.
    :param warmup: adaptation iterations per chain (discarded).
    :param num_chains: chains, run sequentially in this process.
    :param init: where the chains start. ``None`` (or ``"modes"``, the default): over-dispersed
        around the target's local maxima, found by a search from :math:`\max(64, 8C)` points
        and given to the chains round-robin, heaviest first (Gelman & Rubin, 1992), so that
        chains in different modes make :math:`\hat R` exceed 1; falls back to ``"uniform"``
        where the search finds no converged maximum (see
        :meth:`~pyro_flows.infer.results.TargetDensity.initial_points`). ``"uniform"``: Stan's
        :math:`U(-2, 2)^D` around the target's ``initial_params()`` or 0. A tensor
        ``(dim,)`` or ``(num_chains, dim)``: used as given. ``extra["init"]``,
        ``extra["init_modes"]``, ``extra["init_mode_of_chain"]`` or ``extra["init_fallback"]``
        say what was done; the search's evaluations and time count in the costs.
    :param target_accept: the mean acceptance probability the step size aims for.
    :param max_tree_depth: the largest number of trajectory doublings.
    :param dense_mass: adapt a dense instead of a diagonal mass matrix.
    :param progress: show Pyro's progress bar per chain.
    :param seed: chain :math:`c` runs with ``torch.manual_seed(seed + c)`` inside a forked RNG
        (the global RNG is left as it was); ``None``: a seed drawn from the global RNG.
    :param device: where to run the chains, for a target that does not say (a plain function);
        by default the target's device (see :func:`~pyro_flows.infer.results.as_target`), else
        that of ``init``, else the CPU.
    :returns: a :class:`~pyro_flows.infer.results.SampleResult` (``method="nuts"``) with
        ``divergences``, ``accept_rate`` (mean tree acceptance), ``step_size`` per chain and
        ``extra["diverging"]``, ``extra["accept_prob"]``, ``extra["num_steps"]`` per draw.
    :raises ValueError: on a non-finite start (naming the chain), a ``log_prob`` of the wrong
        shape, or bad arguments.

    Example:

    >>> import torch
    >>> r = nuts(lambda z: -0.5 * (z**2).sum(-1), dim=2, num_samples=50, warmup=50,
    ...          num_chains=1, progress=False, seed=0)
    >>> r.samples.shape, r.divergences, r.num_grad_evals > 100
    (torch.Size([1, 50, 2]), 0, True)

    Two modes that no chain crosses between: the default starts put chains in both, and
    :math:`\hat R` says so (started all around the origin, they would agree on one mode):

    >>> from pyro_flows.infer import mcmc_diagnostics
    >>> def two_modes(z):   # Gaussians at (+-4, 0), sd 0.7
    ...     a = -0.5 * (((z - torch.tensor([4.0, 0.0])) / 0.7) ** 2).sum(-1)
    ...     return torch.logaddexp(a, -0.5 * (((z + torch.tensor([4.0, 0.0])) / 0.7) ** 2).sum(-1))
    >>> r = nuts(two_modes, dim=2, num_samples=100, warmup=100, progress=False, seed=0)
    >>> r.extra["init_modes"][:, 0].abs().round().tolist(), r.extra["init_mode_of_chain"].tolist()
    ([4.0, 4.0], [0, 1])
    >>> bool(mcmc_diagnostics(r.samples)["rhat_max"] > 1.01)
    True

    References:

    - M. D. Hoffman, A. Gelman. *The No-U-Turn Sampler: Adaptively Setting Path Lengths in
      Hamiltonian Monte Carlo.* JMLR 15, 2014.
    - M. Betancourt. *A Conceptual Introduction to Hamiltonian Monte Carlo.* 2017.
    - A. Gelman, D. B. Rubin. *Inference from iterative simulation using multiple sequences.*
      Statistical Science 7(4), 1992 (over-dispersed starts).
    """
    from pyro.infer.mcmc import NUTS

    target_accept = _check_accept(target_accept)
    _check_int(max_tree_depth, "max_tree_depth", 1)
    _check_bool(dense_mass, "dense_mass")

    def make_kernel(potential: Callable) -> Any:
        return NUTS(
            potential_fn=potential,
            target_accept_prob=target_accept,
            max_tree_depth=max_tree_depth,
            full_mass=dense_mass,
            adapt_step_size=True,
            adapt_mass_matrix=warmup > 0,
        )

    return _sample_target(
        "nuts",
        target,
        make_kernel,
        dim=dim,
        num_samples=num_samples,
        warmup=warmup,
        num_chains=num_chains,
        init=init,
        progress=progress,
        seed=seed,
        device=device,
    )


def hmc(
    target: Any,
    *,
    dim: int | None = None,
    num_samples: int = 1000,
    warmup: int = 1000,
    num_chains: int = 2,
    init: Tensor | str | None = None,
    step_size: float = 1.0,
    num_steps: int = 10,
    trajectory_length: float | None = None,
    max_num_steps: int = MAX_NUM_STEPS,
    adapt_step_size: bool = True,
    target_accept: float = 0.8,
    dense_mass: bool = False,
    progress: bool = True,
    seed: int | None = None,
    device: DeviceLike | None = None,
) -> SampleResult:
    r"""Pyro's Hamiltonian Monte Carlo with a fixed trajectory length, chains one after another.

    .. math::

        (z, r) \xrightarrow{L \text{ leapfrog steps of size } \epsilon} (z', r'), \qquad
        \alpha = \min\bigl(1, e^{H(z, r) - H(z', r')}\bigr).

    Pyro keeps the trajectory length :math:`\epsilon L` fixed (``trajectory_length``, default
    ``step_size * num_steps``); when ``adapt_step_size`` tunes :math:`\epsilon` during warm-up,
    the number of steps becomes :math:`L = \lfloor \text{trajectory\_length}/\epsilon\rfloor`,
    capped at ``max_num_steps``:

    .. math::

        L = \min\bigl(\max(1, \lfloor \text{trajectory\_length}/\epsilon\rfloor),
            \text{max\_num\_steps}\bigr).

    Where the adaptation drives :math:`\epsilon \to 0` (a hard boundary, a funnel's neck, bad
    scaling) the uncapped :math:`L` would grow without bound and warm-up never end; capped, the
    trajectories are shorter than ``trajectory_length`` (like NUTS's ``max_tree_depth``). The
    transitions cut are counted in ``extra["capped_warmup"]`` and ``extra["capped_draws"]``
    (kept draws, all chains), and a ``RuntimeWarning`` says when kept draws were cut: the step
    size collapsed, and the chains hardly move.

    Cost: :math:`L` gradients per draw (``extra["num_steps"]``), at most ``max_num_steps``.

    :param target: an object with a differentiable ``log_prob(z)`` and ``dim`` (or a callable
        with ``dim=``).
    :param dim: the event size, when the target does not state it.
    :param num_samples: draws kept per chain.
    :param warmup: adaptation iterations per chain (discarded).
    :param num_chains: chains, run sequentially in this process.
    :param init: where the chains start: ``None`` / ``"modes"`` (over-dispersed around the
        target's modes), ``"uniform"`` or a tensor (see :func:`nuts`).
    :param step_size: the (initial) leapfrog step :math:`\epsilon`.
    :param num_steps: leapfrog steps :math:`L` per draw (with ``step_size``, sets the length).
    :param trajectory_length: :math:`\epsilon L`, overriding ``num_steps``.
    :param max_num_steps: the most leapfrog steps per trajectory (default :math:`2^{10}`,
        NUTS's at ``max_tree_depth=10``); ``num_steps`` and ``trajectory_length / step_size``
        must not exceed it.
    :param adapt_step_size: tune :math:`\epsilon` (and the mass matrix) during warm-up.
    :param target_accept: the acceptance probability the tuning aims for.
    :param dense_mass: adapt a dense mass matrix.
    :param progress: show Pyro's progress bar per chain.
    :param seed: chain :math:`c` runs with ``torch.manual_seed(seed + c)`` in a forked RNG
        (``None``: a seed drawn from the global RNG).
    :param device: where to run the chains, for a target that does not say (see :func:`nuts`).
    :returns: a :class:`~pyro_flows.infer.results.SampleResult` (``method="hmc"``), with
        ``extra["max_num_steps"]``, ``extra["capped_warmup"]`` and ``extra["capped_draws"]``.
    :raises ValueError: on a non-finite start, a ``log_prob`` of the wrong shape, bad arguments.
    :raises TypeError: a ``log_prob`` that autograd cannot differentiate, arguments of the
        wrong type.

    Example:

    >>> r = hmc(lambda z: -0.5 * (z**2).sum(-1), dim=2, step_size=0.3, num_steps=5,
    ...         adapt_step_size=False, num_samples=40, warmup=0, num_chains=1,
    ...         init="uniform", progress=False, seed=0)
    >>> r.num_grad_evals == 1 + 40 * 5, r.step_size.tolist(), r.extra["capped_draws"]
    (True, [0.3], 0)

    References:

    - S. Duane, A. D. Kennedy, B. J. Pendleton, D. Roweth. *Hybrid Monte Carlo.* Physics
      Letters B 195, 1987.
    - R. M. Neal. *MCMC using Hamiltonian dynamics.* Handbook of MCMC, 2011.
    """
    target_accept = _check_accept(target_accept)
    _check_int(num_steps, "num_steps", 1)
    _check_positive_finite(step_size, "step_size")
    if trajectory_length is not None:
        _check_positive_finite(trajectory_length, "trajectory_length")
    _check_bool(adapt_step_size, "adapt_step_size")
    _check_bool(dense_mass, "dense_mass")
    # Pyro computes L = int(trajectory_length / step_size): a length of exactly step * L can
    # round down to L - 1 steps (0.7 * 3 / 0.7 < 3 in floating point), hence the tiny margin
    length = trajectory_length or float(step_size) * num_steps * (1.0 + 1e-9)
    _check_max_num_steps(max_num_steps, max(1, int(length / float(step_size))))
    kernels: list[_CappedHMC] = []

    def make_kernel(potential: Callable) -> Any:
        kernels.append(_CappedHMC(
            potential_fn=potential,
            step_size=float(step_size),
            trajectory_length=length,
            max_num_steps=max_num_steps,
            adapt_step_size=adapt_step_size and warmup > 0,
            adapt_mass_matrix=adapt_step_size and warmup > 0,
            full_mass=dense_mass,
            target_accept_prob=target_accept,
        ))
        return kernels[-1]

    result = _sample_target(
        "hmc",
        target,
        make_kernel,
        dim=dim,
        num_samples=num_samples,
        warmup=warmup,
        num_chains=num_chains,
        init=init,
        progress=progress,
        seed=seed,
        device=device,
    )
    _record_caps(result, kernels, max_num_steps, length)
    return result


def _check_max_num_steps(max_num_steps: object, num_steps: int) -> None:
    """``max_num_steps`` a positive int, at least the ``num_steps`` asked for."""
    _check_int(max_num_steps, "max_num_steps", 1)
    if num_steps > max_num_steps:  # type: ignore[operator]
        raise ValueError(
            f"max_num_steps={max_num_steps} is below the {num_steps} leapfrog steps asked for "
            "(num_steps, or trajectory_length / step_size): raise max_num_steps or ask for fewer"
        )


def _record_caps(result: SampleResult, kernels: list[_CappedHMC], max_num_steps: int,
                 length: float) -> None:
    """Put the counts of trajectories cut to ``max_num_steps`` into ``result.extra`` and warn
    when kept draws were cut (the adapted step size collapsed)."""
    capped = sum(k.num_capped for k in kernels)
    result.extra.update(
        max_num_steps=max_num_steps,
        capped_warmup=sum(k.num_capped_warmup for k in kernels),
        capped_draws=capped,
    )
    if capped:
        smallest = min(float(k.step_size) for k in kernels)
        warnings.warn(
            f"hmc: the adapted step size collapsed (down to {smallest:.3g}; trajectory_length "
            f"{length:.3g} would need {int(length / smallest)} leapfrog steps): {capped} of "
            f"{result.num_chains * result.num_draws} kept draws had their trajectories cut to "
            f"max_num_steps={max_num_steps} steps, so the chains hardly move. The target may "
            "have a hard boundary, a funnel or bad scaling: check divergences and R-hat, try "
            "nuts(), or reparametrise",
            RuntimeWarning,
            stacklevel=3,
        )
