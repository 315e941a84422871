r"""The Gaussian start of an :class:`~pyro_flows.infer.autoflow.AutoFlow` guide: its location,
scale and whitening fitted on a deterministic ELBO before the flow layers learn.

With the flow layers at the identity the guide is the Gaussian
:math:`\zeta = \mu + \sigma \odot L\varepsilon`. On :math:`M` fixed base draws the ELBO is a
deterministic function :math:`\hat{\mathcal L}(\mu, \sigma, L)` (Giordano et al.'s DADVI, see
:mod:`~pyro_flows.infer.gaussian_start`), fitted in three steps:

1. the location alone (a smoothed MAP, :math:`\sigma` at ``init_scale``), by L-BFGS from
   ``init_loc_fn``'s point and from :data:`START_POINTS` - 1 more points drawn from
   :math:`U(-2, 2)^D` (Stan's inits); a second distinct optimum within
   :data:`SECOND_MODE_NATS` nats of the best is reported with a warning. The searches run
   together, as one L-BFGS minimisation of the sum of their losses on one vectorised model
   call, each distinct end point then polished alone (:mod:`~pyro_flows.infer._start_search`:
   on posteriordb's 3- to 8-D regressions, 110-170 loss evaluations in place of 300-360 for
   six searches one after the other, each costing about the same);
2. with the linear stage (whitening), rounds of a Laplace step: a damped Newton step of
   :math:`\mu`, then :math:`\sigma` and :math:`L` from the inverse Hessian
   :math:`H^{-1} = \mathrm{diag}(\sigma) L L^\top \mathrm{diag}(\sigma)` of
   :math:`-\hat{\mathcal L}` at :math:`\mu`, repeated (the location refitted at the new
   smoothing) while a round gains more than :data:`LAPLACE_SETTLED` nats, at most
   :data:`LAPLACE_ROUNDS` times;
3. location and scale together by L-BFGS (:math:`L` stays the Laplace step's: fitted on
   :math:`M` draws, its :math:`D(D-1)/2` entries would overfit them unless :math:`M \gg D`).

Before step 1, where the loss or its gradient is not finite at the start (draws at
``init_scale`` that overflow the model: ``exp(X @ beta)`` of a count regression with a raw
predictor in the hundreds overflows float32 at :math:`\beta_1 \approx 0.2`), the scale is
divided by :data:`SCALE_BACKOFF` until both are, at most :data:`MAX_BACKOFFS` times
(:func:`narrow_until_finite`); step 3 fits it from there.

The stages before these (flow layers, tail stage, the trained location-scale step) are still
the identity during the start, and are not run (:func:`identity_stages`): the start takes
0.69-0.79 of the time it took through them on five posteriordb posteriors (kidiq momhs, arma,
gp_pois_regr, nes1996, sblrc; one thread, three runs each, median).

References:

- R. Giordano, M. Ingram, T. Broderick. *Black Box Variational Inference with a
  Deterministic Objective.* JMLR 25, 2024. https://arxiv.org/abs/2304.05527
- J. Nocedal, S. J. Wright. *Numerical Optimization*, 2nd ed. Springer, 2006 (L-BFGS, damped
  Newton steps).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pyro
import torch
from pyro import poutine
from pyro.poutine.runtime import _DIM_ALLOCATOR
from torch import Tensor

from ..flow import Flow
from ..transforms.rescale import softplus_inverse
from ._particle_dims import watch_particle_dims
from ._start_search import search_together
from ._vmapped_model import per_draw_log_weights
from .gaussian_start import (
    _REFUSED,
    GaussianStart,
    fit_deterministic,
    fit_from_starts,
    gradient_and_hessian,
    newton_step,
    scale_and_unit_lower,
)
from .results import _forked_rng, _module_device_and_dtype

__all__ = [
    "LAPLACE_ROUNDS",
    "LAPLACE_SETTLED",
    "SECOND_MODE_NATS",
    "START_POINTS",
    "fit_gaussian_start",
    "identity_stages",
    "identity_stages_skipped",
    "kept_start",
    "laplace_step",
    "narrow_until_finite",
    "particle_mode",
    "plate_nesting",
    "start_points",
]

#: at most this many Laplace steps of the Gaussian start (each re-smoothed at the last one's scales)
LAPLACE_ROUNDS = 10
#: ... and stops when a round improves the deterministic loss by less than this (nats)
LAPLACE_SETTLED = 0.5
#: the Gaussian start searches the location from ``init_loc_fn``'s point and from this many
#: more points drawn uniformly in [-2, 2]^D of the unconstrained space (Stan's inits): on
#: Lotka-Volterra, init_to_median's basin is a mode 34 nats worse than the posterior's, and
#: 2 of 4 uniform starts found the right one
START_POINTS = 6
#: where the start's loss or gradient is not finite at ``init_scale``, the scale is divided by
#: this ...
SCALE_BACKOFF = 10.0
#: ... at most this many times (down to ``init_scale * 1e-6``)
MAX_BACKOFFS = 6
#: a second local optimum of the start's loss within this many nats of the best (a mass ratio
#: above about e^-3 = 5%) is reported with a warning: a unimodal fit will miss a mode
SECOND_MODE_NATS = 3.0


@contextmanager
def outside_enclosing_plates() -> Iterator[None]:
    """Within the block, plates allocate their dims as if no plate were open.

    The guide's first call, which runs the start, often happens inside the caller's plates:
    ``Trace_ELBO(vectorize_particles=True, max_plate_nesting=n)`` runs the guide inside its
    ``num_particles_vectorized`` plate, and the start's own vectorised ELBO opens a plate of
    that name, which Pyro's global dim allocator refused ("duplicate plate"): the start was
    skipped whenever a user gave ``max_plate_nesting``. The start's computations run under
    ``poutine.block`` (the enclosing plates never see its sites), so its plates may reuse the
    names and dims of the enclosing ones; the allocator's state is put back afterwards.
    """
    saved = _DIM_ALLOCATOR._stack
    _DIM_ALLOCATOR._stack = []
    try:
        yield
    finally:
        _DIM_ALLOCATOR._stack = saved


def fit_gaussian_start(
    model: Callable[..., Any],
    guide: Callable[..., Any],
    flow: Flow,
    *,
    linear_stage: bool,
    num_draws: int,
    num_points: int,
    args: tuple,
    kwargs: dict,
) -> GaussianStart:
    """Fit the Gaussian stages of ``guide``'s ``flow`` (location-scale, and the linear stage
    when ``linear_stage``) on the deterministic ELBO of :mod:`~pyro_flows.infer.gaussian_start`
    with ``num_draws`` fixed draws, the location searched from ``num_points`` starts (the
    steps: see the module docstring)."""
    affine = flow.transforms[-1]
    linear = flow.transforms[-2] if linear_stage else None
    device = _module_device_and_dtype(flow)[0]
    with poutine.block(), _forked_rng(0, [device]), torch.no_grad():
        nesting = plate_nesting(model, guide, args, kwargs)
    mode = particle_mode(model, guide, num_draws, nesting, device, args, kwargs)
    elbo = pyro.infer.Trace_ELBO(
        num_particles=num_draws, vectorize_particles=mode != "loop", max_plate_nesting=nesting
    )

    def loss() -> Tensor:
        with poutine.block(), _forked_rng(0, [device]):
            if mode == "vmap":
                return -per_draw_log_weights(model, guide, num_draws, nesting, args,
                                             kwargs).mean()
            return elbo.differentiable_loss(model, guide, *args, **kwargs)

    def block_losses(locs: Tensor) -> Tensor:
        return _block_losses(model, guide, affine, locs, num_draws=num_draws, nesting=nesting,
                             device=device, args=args, kwargs=kwargs, vmapped=mode == "vmap")

    # the start fits the ELBO's value with its full gradient: a guide that takes path-only
    # gradients (``path_gradient``) would give L-BFGS the gradient of another function (on a
    # 4-D funnel the start then ended 2.9 nats worse than with the full gradient)
    path_gradient = getattr(guide, "path_gradient", None)
    if isinstance(path_gradient, bool):
        guide.path_gradient = False  # type: ignore[attr-defined]
    fitted = 2 if linear is not None else 1
    try:
        with identity_stages_skipped(flow, identity_stages(flow, len(flow.transforms) - fitted)):
            return _fit_stages(loss, None if mode == "loop" else block_losses, flow, affine,
                               linear, num_draws, num_points)
    finally:
        if isinstance(path_gradient, bool):
            guide.path_gradient = path_gradient  # type: ignore[attr-defined]


def identity_stages(flow: Flow, stop: int, *, tolerance: float = 1e-5) -> list[int]:
    """The indices of ``flow``'s first ``stop`` stages that are the identity map: their output
    is their input and their log-determinant zero, within ``tolerance``, on 256 seeded draws
    of three times the base's spread (the flow layers and tail stages of a guide before
    training; a permutation or a trained layer is not).

    Example:

    >>> import torch
    >>> from pyro_flows import flows
    >>> from pyro_flows.transforms.identity_init import identity_init_
    >>> identity_stages(identity_init_(flows.iaf(3, num_transforms=2, hidden_dims=(8,))), 3)
    [0, 2]
    """
    device, dtype = _module_device_and_dtype(flow)
    generator = torch.Generator(device=device or "cpu").manual_seed(0)
    probe = 3.0 * torch.randn(256, flow.input_dim, generator=generator, device=device,
                              dtype=dtype or torch.get_default_dtype())
    found = []
    with torch.no_grad():
        for index, stage in enumerate(list(flow.transforms)[:stop]):
            if stage.context_dim:
                continue
            out, log_det = stage.forward_and_log_det(probe, None)
            if out.shape == probe.shape and bool(
                (out - probe).abs().max() <= tolerance * (1.0 + probe.abs().max())
                and torch.as_tensor(log_det).abs().max() <= tolerance
            ):
                found.append(index)
    return found


@contextmanager
def identity_stages_skipped(flow: Flow, indices: list[int]) -> Iterator[None]:
    """Within the block, ``flow`` does not run its stages at ``indices`` (identity maps, see
    :func:`identity_stages`): the start fits the Gaussian stages through them, and they cost a
    fifth of its time (five IAF layers and the tail stage on posteriordb's regressions)."""
    stages = [flow.transforms[i] for i in indices]
    for stage in stages:
        stage.zero_log_det = True
        stage.forward_without_log_det = _unchanged
    try:
        yield
    finally:
        for stage in stages:
            del stage.zero_log_det
            del stage.forward_without_log_det


def _unchanged(x: Tensor, context: Tensor | None = None) -> Tensor:
    return x


def particle_mode(model: Callable[..., Any], guide: Callable[..., Any], num_draws: int,
                  nesting: int, device: Any, args: tuple, kwargs: dict) -> str:
    """How the start's draws run: ``"vectorised"`` (one model call with a draws' dim, Pyro's
    ``vectorize_particles``) when the model broadcasts over it, else ``"vmap"`` (the model once
    per draw under ``torch.func.vmap``, :mod:`~pyro_flows.infer._vmapped_model`: ``X @ beta``
    and ``beta @ X.T`` regressions), else ``"loop"`` (one model call per draw) when that runs.
    A model that runs vectorised but sums the draws into one another (a site with dims left of
    the draws' plate, :mod:`~pyro_flows.infer._particle_dims`) would fit the posterior of
    ``num_draws`` copies of the data: it is not run vectorised. When nothing runs the answer is
    ``"vectorised"``, and the start reports the failure of its loss."""
    vectorised = pyro.infer.Trace_ELBO(num_particles=num_draws, vectorize_particles=True,
                                       max_plate_nesting=nesting)
    looped = pyro.infer.Trace_ELBO(num_particles=num_draws, vectorize_particles=False,
                                   max_plate_nesting=nesting)
    extra: list = []
    probes: list[tuple[str, Callable[[], Any]]] = [
        ("vectorised", lambda: vectorised.differentiable_loss(model, guide, *args, **kwargs)),
        ("vmap", lambda: per_draw_log_weights(model, guide, num_draws, nesting, args, kwargs)),
        ("loop", lambda: looped.differentiable_loss(model, guide, *args, **kwargs)),
    ]
    for mode, probe in probes:
        try:
            with poutine.block(), _forked_rng(0, [device]), torch.no_grad(), \
                    watch_particle_dims(nesting) as extra:
                probe()
        except Exception:  # noqa: BLE001 - the next way is tried; the start reports the last
            continue
        if not (mode == "vectorised" and extra):
            return mode
    return "vectorised"


def _block_losses(model: Callable[..., Any], guide: Callable[..., Any], affine: Any,
                  locs: Tensor, *, num_draws: int, nesting: int, device: Any, args: tuple,
                  kwargs: dict, vmapped: bool = False) -> Tensor:
    """The deterministic loss at each row of ``locs`` (shape ``(K, D)``), from one vectorised
    run of guide and model on :math:`K M` draws (the location-scale stage's :math:`\\mu` set
    per draw: block :math:`k`'s :math:`M` draws at ``locs[k]``), shape ``(K,)``: the
    negative mean over each block's draws of :math:`\\log p(x, z) - \\log q(z)`, as Pyro's
    ``Trace_ELBO`` sums it (see :mod:`~pyro_flows.infer._start_search`)."""
    blocks = locs.shape[0]
    draws = blocks * num_draws
    # one row per draw, at the draws' dim left of the model's plates (the latent's batch shape)
    per_loc = locs.repeat_interleave(num_draws, dim=0).reshape(
        (draws,) + (1,) * nesting + tuple(locs.shape[1:])
    )
    with poutine.block(), _forked_rng(0, [device]), _located(affine, per_loc):
        log_w = per_draw_log_weights(model, guide, draws, nesting, args, kwargs,
                                     vmapped=vmapped)
    return -log_w.reshape(blocks, num_draws).mean(1)


@contextmanager
def _located(affine: Any, loc: Tensor) -> Iterator[None]:
    """Within the block, ``affine`` maps with the location ``loc`` (one row per draw)."""
    affine._loc_and_raw = lambda: (loc, affine.raw_scale)
    try:
        yield
    finally:
        del affine._loc_and_raw


def _fit_stages(loss: Callable[[], Tensor], block_losses: Callable[[Tensor], Tensor] | None,
                flow: Flow, affine: Any, linear: Any, num_draws: int,
                num_points: int) -> GaussianStart:
    """The three steps of the module docstring on the deterministic ``loss``."""
    # 1. the location alone (a smoothed MAP: the scale stays at init_scale), 2. with the
    # linear stage, scale and correlations from the inverse Hessian there (a Laplace step
    # that preconditions the ill-conditioned directions), 3. location and scale. The
    # correlations stay the Laplace step's: fitted on M fixed draws, the D(D-1)/2 entries of
    # L overfit them unless M >> D (on a 31-D logistic regression with M = 32, sd ratios up
    # to 30; with the Laplace L and step 3 on location and scale, 0.86-1.18)
    narrow_until_finite(loss, affine)
    starts = start_points(affine.loc, num_points)
    first = (search_together(block_losses, loss, affine.loc, starts, num_draws=num_draws)
             if len(starts) > 1 and block_losses is not None else None)
    if first is None:  # one start, or the model cannot run them together: one at a time
        first = fit_from_starts(loss, affine.loc, starts, num_draws=num_draws)
    _warn_second_mode(first)
    evaluations = first.evaluations
    # the location was smoothed at init_scale in every direction, far too wide where the
    # posterior is narrow (kilpisjarvi's slope: sd 0.0075 against 0.1): the Hessian there is
    # not the posterior's; repeat the Laplace step at the smoothing it found until it settles
    previous = first.loss_after
    for round_ in range(LAPLACE_ROUNDS if linear is not None and first.accepted else 0):
        if round_ > 0:  # the location again, at the new smoothing (L-BFGS, then Newton)
            again = fit_deterministic(loss, [affine.loc], num_draws=num_draws)
            evaluations += again.evaluations
        evaluations += affine.loc.numel() + 4
        if not laplace_step(loss, affine, linear):
            break
        current = float(loss().detach())
        if not previous - current > LAPLACE_SETTLED:
            break
        previous = current
    last = fit_deterministic(loss, [affine.loc, affine.raw_scale], num_draws=num_draws)
    for p in flow.parameters():
        p.grad = None
    improved = last.loss_after < first.loss_before
    affine.frozen = improved  # the anchor; a failed start leaves it trainable
    return GaussianStart(
        loss_before=first.loss_before,
        loss_after=last.loss_after if improved else first.loss_before,
        evaluations=evaluations + last.evaluations,
        num_draws=num_draws,
        accepted=improved,
        reason="" if improved else (first.reason or last.reason),
        optima=first.optima,
    )


def narrow_until_finite(loss: Callable[[], Tensor], affine: Any) -> int:
    """Divide the location-scale stage's scale by :data:`SCALE_BACKOFF` while the
    deterministic ``loss`` or its gradient in the location and the scale is not finite (or
    the model refuses the draws), at most :data:`MAX_BACKOFFS` times; returns the number of
    divisions. When no scale down to the last is finite, the scale is put back and the start
    goes on from it (and reports its failure as before).

    Example:

    >>> import torch
    >>> from pyro_flows.transforms import ElementwiseAffine
    >>> affine = ElementwiseAffine(1, scale=0.1)
    >>> draws = torch.linspace(-2.0, 2.0, 5)
    >>> loss = lambda: torch.exp(4500.0 * (affine.loc + affine.scale * draws)).mean()
    >>> narrow_until_finite(loss, affine), round(float(affine.scale.detach()), 6)
    (2, 0.001)
    """
    params = [affine.loc, affine.raw_scale]
    initial = affine.raw_scale.detach().clone()
    for divisions in range(MAX_BACKOFFS + 1):
        if _finite_with_gradient(loss, params):
            return divisions
        if divisions < MAX_BACKOFFS:
            with torch.no_grad():
                scale = torch.nn.functional.softplus(affine.raw_scale) / SCALE_BACKOFF
                affine.raw_scale.copy_(softplus_inverse(scale))
    with torch.no_grad():
        affine.raw_scale.copy_(initial)
    return 0


def _finite_with_gradient(loss: Callable[[], Tensor], params: list[Tensor]) -> bool:
    """Whether ``loss()`` and its gradient in ``params`` are finite (``False`` where the model
    refuses the draws)."""
    try:
        with torch.enable_grad():
            value = loss()
            grads = torch.autograd.grad(value, params, allow_unused=True)
    except _REFUSED:
        return False
    return bool(torch.isfinite(value.detach())) and all(
        g is None or bool(torch.isfinite(g).all()) for g in grads
    )


def kept_start(num_draws: int) -> GaussianStart:
    """The start not made: Pyro's param store already holds the guide's parameters."""
    return GaussianStart(
        math.nan,
        math.nan,
        0,
        num_draws,
        False,
        "Pyro's param store already holds this guide's parameters (loaded or "
        "trained before): they are kept",
    )


def start_points(loc: Tensor, num_points: int) -> list[Tensor]:
    """The location's starting points: ``init_loc_fn``'s (``loc``), then ``num_points - 1``
    draws from :math:`U(-2, 2)^D` (seeded on the CPU: the global RNG is left alone)."""
    generator = torch.Generator().manual_seed(0)
    extra = num_points - 1
    uniform = torch.rand(extra, loc.numel(), generator=generator, dtype=torch.float64)
    return [loc.detach().clone(), *(4.0 * uniform - 2.0).to(loc).unbind(0)]


def _warn_second_mode(start: GaussianStart) -> None:
    if len(start.optima) > 1 and start.optima[1] - start.optima[0] < SECOND_MODE_NATS:
        warnings.warn(
            f"AutoFlow: the Gaussian start found {len(start.optima)} distinct local optima "
            f"of the smoothed posterior; the second best is only "
            f"{start.optima[1] - start.optima[0]:.2f} nats worse than the best (losses "
            f"{', '.join(f'{v:.2f}' for v in start.optima[:4])}), so the posterior "
            "probably has several modes that carry mass, and a guide trained by reverse KL "
            "tends to keep one of them. The fit starts in the best; check it against MCMC "
            "run from several over-dispersed starts.",
            UserWarning,
            stacklevel=4,
        )


def plate_nesting(
    model: Callable[..., Any], guide: Callable[..., Any], args: tuple, kwargs: dict
) -> int:
    """The model's plate nesting, from a model trace replayed on the guide's values (as
    Pyro's ELBOs guess it, without their log line; the prototype trace hides the observed
    sites and so their plates)."""
    guide_trace = poutine.trace(guide).get_trace(*args, **kwargs)
    replayed = poutine.replay(model, trace=guide_trace)
    model_trace = poutine.trace(replayed).get_trace(*args, **kwargs)
    dims = [
        frame.dim
        for trace in (model_trace, guide_trace)
        for site in trace.nodes.values()
        if site["type"] == "sample"
        for frame in site["cond_indep_stack"]
        if frame.vectorized
    ]
    return -min(dims) if dims else 0


@torch.no_grad()
def laplace_step(loss: Callable[[], Tensor], affine: Any, linear: Any) -> bool:
    """A damped Newton step of the location on the deterministic loss, then the scale
    and the unit lower-triangular stage from the inverse Hessian (kept only if the loss
    does not get worse)."""
    derivatives = gradient_and_hessian(loss, affine.loc)
    if derivatives is None:
        return False
    gradient, hessian = derivatives
    newton_step(loss, affine.loc, gradient, hessian)
    factors = scale_and_unit_lower(hessian)
    if factors is None:
        return False
    sigma, lower = factors
    saved = [p.detach().clone() for p in (affine.raw_scale, linear.lower)]
    before = float(loss().detach())
    idx = linear.lower_index
    affine.raw_scale.copy_(softplus_inverse(sigma.clamp_min(1e-30)).to(affine.raw_scale))
    linear.lower.copy_(lower[idx[0], idx[1]].to(linear.lower))
    try:
        after = float(loss().detach())
    except (ValueError, RuntimeError):
        after = math.inf
    if math.isfinite(after) and after <= before:
        return True
    for p, value in zip((affine.raw_scale, linear.lower), saved, strict=True):
        p.copy_(value)
    return False
