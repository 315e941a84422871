r"""Over-dispersed starting points of MCMC chains around a target's modes.

Used by :meth:`~pyro_flows.infer.target_density.TargetDensity.initial_points`, hence by every
MCMC sampler's ``init=``. Gelman and Rubin (1992) start the chains *over-dispersed* relative to
the target, at points drawn around its modes, so that chains which stay in different modes, or
have not yet forgotten their starts, disagree and the potential scale reduction :math:`\hat R`
exceeds 1. Stan draws
:math:`z_0 = c + U(-2, 2)^D` around one point :math:`c`; all chains of a multimodal target
then usually fall into one basin, agree with each other, and :math:`\hat R \approx 1` hides
the modes they never visit. The default ``init=None`` (also ``"modes"``) therefore

1. searches the local maxima :math:`m_1, m_2, \ldots` of :math:`\log\tilde p` by climbing
   from :math:`\max(64, 8C)` points spread over scales 1 to 50 around :math:`c`
   (:func:`~pyro_flows.infer.mode_search.search_modes`, seeded from the sampler's seed);
2. measures each maximum's local scale per coordinate, the distance :math:`\sigma_{ki}` along
   :math:`\pm e_i` at which :math:`\log\tilde p` has fallen by half a nat (the standard
   deviation for a Gaussian; the mean of the two sides, found on the grid :math:`2^{-15}, \ldots,
   2^{6}` and interpolated in :math:`\sqrt{2\,\Delta\log\tilde p}`, exact for a Gaussian),
   and its Laplace mass :math:`\log M_k \approx \log\tilde p(m_k) + \sum_i \log\sigma_{ki}`;
3. gives chains to every maximum with :math:`\log M_k \ge \max_j \log M_j -`
   ``START_MASS_NATS`` (:math:`\log 1000`: a mode with a thousandth of the heaviest one's
   mass or more gets chains; a height threshold would drop a broad mode of equal mass, since
   in :math:`D` dimensions equal masses differ in height by :math:`D\log(\sigma_1/\sigma_2)`),
   round-robin, heaviest first: chain :math:`c` goes to maximum :math:`c \bmod K`;
4. draws chain :math:`c`'s start :math:`z_0 = m_k + 2\,\sigma_k \odot U(-1, 1)^D`, Stan's
   :math:`U(-2, 2)^D` in the units of the mode (for a standard normal it is Stan's draw), with
   the non-finite ones redrawn, the radius halved every ten tries.

With fewer chains than such modes only the heaviest get chains. It falls back to Stan's draw
around :math:`c` when the search raises (a target without gradients), finds no converged
maximum (a density that grows without bound, such as Neal's funnel's neck in 10-D) or finds
only flat ones (a boxed or piecewise-constant target: :math:`\log\tilde p` jumps from flat to
half a nat lower within a factor 2 of distance in every direction). ``init="uniform"`` asks
for Stan's draw directly; a tensor is used as given. The search's evaluations count in the
sampler's costs (``num_log_prob_evals``, ``num_grad_evals``) and its wall time in
``wall_time``; what it did is in the result's ``extra["init"]``, ``extra["init_modes"]``,

The functions here take the :class:`~pyro_flows.infer.target_density.TargetDensity` whose
:meth:`~pyro_flows.infer.target_density.TargetDensity.initial_points` calls them (any object
with its attributes, :class:`DensityForStarts`), count their evaluations on it and record what
they did in its ``start`` dict.

Example:

>>> import torch
>>> from pyro_flows.infer.target_density import as_target
>>> two_modes = lambda z: torch.logaddexp(-0.5 * ((z - 4) ** 2).sum(-1),
...                                       -0.5 * ((z + 4) ** 2).sum(-1))
>>> density = as_target(two_modes, dim=2)
>>> z, lp = density.initial_points(4, None, torch.Generator().manual_seed(0))
>>> z.shape, density.start_facts()["init"], len(density.start_facts()["init_modes"])
(torch.Size([4, 2]), 'modes', 2)

References:

- A. Gelman, D. B. Rubin. *Inference from iterative simulation using multiple sequences.*
  Statistical Science 7(4), 1992 (over-dispersed starts around the modes; :math:`\hat R`).
- Stan Development Team. *Stan Reference Manual*, "Initialization": uniform draws in
  :math:`(-2, 2)` on the unconstrained scale. https://mc-stan.org/docs/reference-manual/
- A. Vehtari, A. Gelman, D. Simpson, B. Carpenter, P.-C. Bürkner. *Rank-normalization,
  folding, and localization: an improved R-hat.* Bayesian Analysis 16(2), 2021.
"""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Callable
from typing import Any, Protocol

import numpy as np
import torch
from torch import Tensor

from ._device_and_rng import _draw, _forked_rng
from .mode_search import search_modes

__all__ = ["INIT_STRATEGIES", "START_MASS_NATS", "DensityForStarts"]

#: the ways of drawing starts that ``init=`` names (``None`` is ``"modes"``)
INIT_STRATEGIES = ("modes", "uniform")
#: a local maximum gets chains when its Laplace mass is within this many nats of the heaviest
START_MASS_NATS = math.log(1000.0)
#: the mode search climbs from max(_SEARCH_MIN_STARTS, _SEARCH_STARTS_PER_CHAIN * chains) points
_SEARCH_MIN_STARTS, _SEARCH_STARTS_PER_CHAIN = 64, 8
#: the grid of distances 2^-15 .. 2^6 on which a maximum's half-nat scale is looked for
_SCALE_EXPONENTS = (-15, 6)
#: a direction in which log p falls from less than this to half a nat within one grid step is a
#: jump (the edge of a plateau), not the side of a smooth maximum (a Gaussian falls by >= 1/8)
_JUMP_NATS = 0.01
#: the search's start points are seeded with the sampler's seed plus this (another stream)
_SEARCH_SEED_OFFSET = 0x5EED_0F_DA7A


class DensityForStarts(Protocol):
    """What the start functions use of a :class:`~pyro_flows.infer.target_density.TargetDensity`:
    the event size, the known dtype, the object that has ``log_prob`` (for ``initial_params``),
    the record of the last start, the evaluation counters, the checked and counted
    ``log_prob`` and the device of points made for it."""

    dim: int
    dtype: torch.dtype | None
    target: Any
    start: dict[str, Any]
    num_log_prob_evals: int
    num_grad_evals: int

    def __call__(self, z: Tensor) -> Tensor: ...

    def points_device(self, given: object = None) -> torch.device: ...


def _half_nat_scales(
    log_prob: Callable[[Tensor], Tensor], modes: Tensor, heights: Tensor
) -> tuple[Tensor, Tensor]:
    r"""Each maximum's scale per coordinate and whether it is flat.

    For the maximum :math:`m_k` and the coordinate :math:`i`, :math:`\log\tilde p` is evaluated
    at :math:`m_k \pm t_j e_i` on the grid :math:`t_j = 2^{j}`, :math:`j = -15, \ldots, 6`; the
    fall :math:`\Delta_j = \log\tilde p(m_k) - \log\tilde p(m_k \pm t_j e_i)` (non-finite:
    :math:`+\infty`) first reaches half a nat between :math:`t_{j-1}` and :math:`t_j`, where
    :math:`\sqrt{2\Delta}` (linear in :math:`t` for a Gaussian, equal to 1 at its standard
    deviation) is interpolated linearly:

    .. math::

        \sigma_\pm = t_{j-1} + \frac{1 - a}{b - a}(t_j - t_{j-1}), \qquad
        a = \sqrt{2\Delta_{j-1}},\ b = \sqrt{2\Delta_j}, \qquad
        \sigma_{ki} = \tfrac12(\sigma_+ + \sigma_-),

    :math:`t_0` when the first grid point already falls by half a nat, :math:`t_{\max}` when no
    point does. A maximum is *flat* when in every direction the fall jumps from under
    ``_JUMP_NATS`` to half a nat within one grid step (a boxed or piecewise-constant density).

    Cost: :math:`2 D \times 22` evaluations per maximum, batched, without gradients.

    :returns: ``(scales (K, D), flat (K,) bool)``, on the modes' device.
    """
    num, dim = modes.shape
    lo, hi = _SCALE_EXPONENTS
    t = 2.0 ** torch.arange(lo, hi + 1, dtype=modes.dtype, device=modes.device)
    size = len(t)
    per_mode = 2 * dim * size
    chunk = max(1, (1 << 22) // dim)  # points per call: at most ~4M numbers
    sign = torch.tensor([1.0, -1.0], dtype=modes.dtype, device=modes.device)
    falls = torch.empty(num, 2, dim, size, dtype=modes.dtype, device=modes.device)
    with torch.no_grad():
        for k in range(num):
            values = []
            for first in range(0, per_mode, chunk):
                idx = torch.arange(first, min(first + chunk, per_mode), device=modes.device)
                points = modes[k].expand(len(idx), dim).clone()
                step = sign[idx // (dim * size)] * t[idx % size]
                points[torch.arange(len(idx), device=modes.device), (idx // size) % dim] += step
                values.append(log_prob(points).to(modes.dtype))
            lp = torch.cat(values).reshape(2, dim, size)
            fall = (heights[k].to(modes.dtype) - lp).clamp_min(0.0)
            falls[k] = torch.where(torch.isfinite(lp), fall, torch.full_like(fall, math.inf))
    hit = falls >= 0.5
    reached = hit.any(-1)
    j = hit.to(torch.uint8).argmax(-1)  # the first grid point half a nat down (0 if none)
    before = (j - 1).clamp_min(0)
    fall_j = falls.gather(-1, j[..., None]).squeeze(-1)
    fall_before = falls.gather(-1, before[..., None]).squeeze(-1)
    a, b = (2.0 * fall_before).sqrt(), (2.0 * fall_j).sqrt()
    frac = torch.where(torch.isfinite(b) & (b > a), (1.0 - a) / (b - a), torch.zeros_like(a))
    sigma = t[before] + frac.clamp(0.0, 1.0) * (t[j] - t[before])
    sigma = torch.where(j == 0, t[0].expand_as(sigma), sigma)
    sigma = torch.where(reached, sigma, t[-1].expand_as(sigma))
    jump = reached & (j > 0) & (fall_before < _JUMP_NATS)
    return sigma.mean(1), jump.flatten(1).all(-1)


def _initial_dtype(density: DensityForStarts, device: torch.device) -> torch.dtype:
    """The target's dtype, else the precision it computes in (at least the default)."""
    if density.dtype is not None:
        return density.dtype
    with torch.no_grad():
        out = density(torch.zeros(1, density.dim, device=device))
    return torch.promote_types(torch.get_default_dtype(), out.dtype)


def _center(density: DensityForStarts, dtype: torch.dtype, device: torch.device) -> Tensor:
    """The target's ``initial_params()["z"]`` (its first row), else the origin."""
    center = torch.zeros(density.dim, dtype=dtype, device=device)
    initial_params = getattr(density.target, "initial_params", None)
    if callable(initial_params):
        found = initial_params()
        if isinstance(found, dict):
            found = found.get("z")
        if found is not None:
            found = torch.as_tensor(found, dtype=dtype, device=device).detach()
            if found.shape[-1:] != (density.dim,):
                raise ValueError(
                    f"the target's initial_params() must give z of shape (..., {density.dim}), "
                    f"got {tuple(found.shape)}"
                )
            center = found.reshape(-1, density.dim)[0]
    return center


def _given_initial_points(
    density: DensityForStarts,
    num_chains: int,
    init: object,
    dtype: torch.dtype,
    device: torch.device,
) -> tuple[Tensor, Tensor]:
    """``init`` (shape ``(dim,)`` or ``(num_chains, dim)``) as the chains' starts, checked to be
    finite with a finite log density."""
    if isinstance(init, Tensor):
        z = init.detach().to(dtype=dtype, device=device)
    else:
        try:
            z = torch.as_tensor(np.asarray(init, dtype=np.float64), dtype=dtype, device=device)
        except (TypeError, ValueError):
            raise TypeError(
                f"init must be a tensor or array of shape ({density.dim},) or (num_chains, dim), "
                f"got {type(init).__name__}"
            ) from None
    if z.shape == (density.dim,):
        z = z.expand(num_chains, density.dim).clone()
    if z.shape != (num_chains, density.dim):
        raise ValueError(
            f"init must have shape ({density.dim},) or (num_chains, dim) = "
            f"({num_chains}, {density.dim}), got {tuple(z.shape)}"
        )
    finite = torch.isfinite(z).all(-1)
    if z.device.type != "meta" and not bool(finite.all()):  # meta: no values to check
        chains = (~finite).nonzero().flatten().tolist()
        raise ValueError(
            f"init must be finite, got non-finite (NaN or inf) values in the initial point "
            f"of chain(s) {chains}: {z[~finite].tolist()[:5]}"
        )
    with torch.no_grad():
        lp = density(z)
    bad = ~torch.isfinite(lp)
    if bool(bad.any()):
        chains = bad.nonzero().flatten().tolist()
        raise ValueError(
            f"log_prob is not finite at the initial point of chain(s) {chains} "
            f"(values {lp[bad].tolist()[:10]}): start those chains where the target "
            "has positive density"
        )
    return z.detach(), lp.detach()


def _uniform_points(
    density: DensityForStarts, num_chains: int, generator: torch.Generator, center: Tensor,
    radius: float, max_tries: int,
) -> tuple[Tensor, Tensor]:
    """Stan's draw :math:`c + U(-r, r)^D`, non-finite chains redrawn."""
    dtype, device = center.dtype, center.device
    shape = (num_chains, density.dim)
    u = _draw("rand", shape, generator, dtype=dtype, device=device)
    z = center + radius * (2.0 * u - 1.0)
    with torch.no_grad():
        lp = density(z).to(dtype)
    for _ in range(max_tries - 1):
        todo = ~torch.isfinite(lp)
        if not bool(todo.any()):
            return z, lp
        u = _draw("rand", (int(todo.sum()), density.dim), generator, dtype=dtype, device=device)
        z[todo] = center + radius * (2.0 * u - 1.0)
        with torch.no_grad():
            lp[todo] = density(z[todo]).to(dtype)
    todo = ~torch.isfinite(lp)
    if not bool(todo.any()):
        return z, lp
    chains = todo.nonzero().flatten().tolist()
    raise ValueError(
        f"log_prob is not finite at the initial point of chain(s) {chains} after "
        f"{max_tries} uniform draws in [-{radius}, {radius}]^{density.dim} around "
        f"{center.tolist()[:5]}: pass init="
    )


def _counted(density: DensityForStarts, z: Tensor) -> Tensor:
    """``density(z)``, also counting a gradient evaluation per point when ``z`` needs grad
    (and the target's output depends on it)."""
    out = density(z)
    if z.requires_grad and torch.is_grad_enabled() and out.requires_grad:
        density.num_grad_evals += z.shape[:-1].numel()
    return out


def _mode_starts(
    density: DensityForStarts, num_chains: int, generator: torch.Generator, center: Tensor,
    radius: float, max_tries: int,
) -> tuple[Tensor, Tensor] | str:
    """The over-dispersed starts around the modes (see the module docstring), or why there are
    none (then Stan's uniform draw is used)."""
    dtype, device = center.dtype, center.device
    num_starts = max(_SEARCH_MIN_STARTS, _SEARCH_STARTS_PER_CHAIN * num_chains)
    seed = (generator.initial_seed() + _SEARCH_SEED_OFFSET) % 2**63
    evals, grads, began = density.num_log_prob_evals, density.num_grad_evals, time.perf_counter()
    failed = None
    counted: Callable[[Tensor], Tensor] = functools.partial(_counted, density)
    try:
        with _forked_rng(seed, [device]):  # a target may draw from the global RNG
            search = search_modes(counted, density.dim, centre=center,
                                  num_starts=num_starts, seed=seed)
            modes, heights = search.modes, search.log_p
            scales, flat = (_half_nat_scales(counted, modes, heights) if len(modes)
                            else (modes, torch.zeros(0, dtype=torch.bool, device=device)))
    except (RuntimeError, ValueError, TypeError, ArithmeticError, NotImplementedError) as err:
        failed = (str(err).strip().splitlines() or [""])[0]
        failed = f"the mode search failed ({type(err).__name__}: {failed[:200]})"
    density.start = {
        "init": "modes",
        "init_search_log_prob_evals": density.num_log_prob_evals - evals,
        "init_search_grad_evals": density.num_grad_evals - grads,
        "init_search_seconds": time.perf_counter() - began,
    }
    if failed is not None:
        return failed
    if len(modes) == 0:
        return (f"no local maximum converged from {num_starts} over-dispersed starts (a "
                "density that grows without bound, as in Neal's funnel's neck, or a ridge)")
    keep = ~flat
    if not bool(keep.any()):
        return ("the local maxima found are flat (a boxed or piecewise-constant density: "
                "log p jumps from flat to half a nat lower in every direction)")
    modes, heights, scales = modes[keep], heights[keep], scales[keep]
    log_mass = heights.to(scales.dtype) + scales.log().sum(-1)
    order = torch.argsort(log_mass, descending=True)
    order = order[log_mass[order] >= log_mass[order[0]] - START_MASS_NATS]
    modes, scales = modes[order].to(dtype), scales[order].to(dtype)
    which = torch.arange(num_chains, device=device) % len(modes)
    centre, scale = modes[which], scales[which]
    u = _draw("rand", (num_chains, density.dim), generator, dtype=dtype, device=device)
    z = centre + radius * scale * (2.0 * u - 1.0)
    with torch.no_grad():
        lp = density(z).to(dtype)
    for attempt in range(1, max_tries):
        todo = ~torch.isfinite(lp)
        if not bool(todo.any()):
            break
        shrink = 0.5 ** (attempt // 10)
        u = _draw("rand", (int(todo.sum()), density.dim), generator, dtype=dtype, device=device)
        z[todo] = centre[todo] + shrink * radius * scale[todo] * (2.0 * u - 1.0)
        with torch.no_grad():
            lp[todo] = density(z[todo]).to(dtype)
    todo = ~torch.isfinite(lp)
    if bool(todo.any()):  # the maxima themselves (finite: the search converged there)
        z[todo] = centre[todo]
        with torch.no_grad():
            lp[todo] = density(z[todo]).to(dtype)
    if not bool(torch.isfinite(lp).all()):
        return "the log density is not finite at the local maxima found"
    density.start.update(init_modes=modes, init_mode_of_chain=which)
    return z, lp
