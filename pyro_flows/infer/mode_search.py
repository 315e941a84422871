r"""Local maxima of an unnormalised log density, found by climbing from over-dispersed points.

Starting points are spread over many length scales around a centre :math:`c` (the target's
``initial_params()`` or the origin):

.. math::

    z_0^{(i)} = c + s_i\,\varepsilon_i, \qquad \varepsilon_i \sim \mathcal N(0, I), \qquad
    \log s_i \sim U(0, \log s_{\max}),

so that a target whose modes sit at distance 1 or 50 from the centre is searched without
knowing its scale. Each point climbs :math:`\log\tilde p` by Adam in its own units
:math:`z = z_0^{(i)} + s_i u`, with a learning rate cosine-decayed to zero (a far start takes
long strides first, then refines). A point whose gradient is still large at the end (a ridge,
or a density growing without bound such as the funnel's neck) has not converged and is dropped.

Converged points are merged into distinct maxima, highest first: two maxima are the *same*
unless :math:`\log\tilde p` dips on the straight segment between them by more than
``dip_nats`` below the lower of the two. This needs no length scale either: points stopped at
different places of one flat ridge or one narrow valley are one maximum, two Gaussians are two.
A continuum of maxima (a ring's crest) gives several, a few arcs apart.

:func:`climb` and :func:`merge_maxima` are shared with
:func:`~pyro_flows.infer.mode_probe.probe_modes`, which climbs from a trained flow's draws.

Example:

>>> import torch
>>> def two_modes(z):   # Gaussians at (+-4, 0), sd 0.7
...     a = -0.5 * (((z - torch.tensor([4.0, 0.0])) / 0.7) ** 2).sum(-1)
...     b = -0.5 * (((z + torch.tensor([4.0, 0.0])) / 0.7) ** 2).sum(-1)
...     return torch.logaddexp(a, b)
>>> found = search_modes(two_modes, 2, seed=0)
>>> sorted(round(v) for v in found.modes[:, 0].tolist())
[-4, 4]

References:

- A. Gelman, D. B. Rubin. *Inference from iterative simulation using multiple sequences.*
  Statistical Science 7, 1992 (over-dispersed starting points from the modes).
- D. P. Kingma, J. Ba. *Adam: A Method for Stochastic Optimization.* ICLR 2015.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from ._steps import check_int, check_number, check_seed

__all__ = ["ModeSearch", "climb", "merge_maxima", "search_modes"]

LogDensity = Callable[[Tensor], Tensor]

#: two maxima are distinct when log p dips by more than this on the segment between them
DIP_NATS = 1.0
#: points of the segment at which the dip is looked for
_SEGMENT_POINTS = 9


@dataclass(frozen=True)
class ModeSearch:
    r"""What :func:`search_modes` found.

    :ivar modes: ``(K, D)`` distinct local maxima, highest first.
    :ivar log_p: ``(K,)`` :math:`\log\tilde p` there.
    :ivar num_starts: starting points climbed; ``num_converged`` of them converged.
    """

    modes: Tensor
    log_p: Tensor
    num_starts: int
    num_converged: int

    def summary(self) -> str:
        """One line: how many maxima from how many starts."""
        return (f"{len(self.modes)} distinct local maxima from {self.num_converged} converged "
                f"of {self.num_starts} over-dispersed starts")


def climb(
    log_prob: LogDensity,
    z0: Tensor,
    scale: Tensor,
    *,
    steps: int = 300,
    lr: float = 0.1,
    tolerance: float = 0.05,
) -> tuple[Tensor, Tensor, Tensor]:
    r"""Adam ascent of ``log_prob`` from ``z0`` in units of ``scale``: :math:`z = z_0 + s\,u`,
    :math:`u_0 = 0`, ``steps`` steps with a learning rate ``lr`` cosine-decayed to zero.

    :param z0: ``(N, D)`` starting points.
    :param scale: broadcastable to ``(N, D)``: per point (``(N, 1)``) or per coordinate.
    :param tolerance: a point has converged when every coordinate of
        :math:`s\,\nabla\log\tilde p` is below this (the gradient in the climb's units).
    :returns: ``(z, log_p, converged)``: the end points ``(N, D)`` (detached), their log
        densities ``(N,)`` and a bool mask ``(N,)`` on the CPU. A point where ``log_prob`` is
        ever NaN or infinite is not converged (its gradient there is ignored).
    :raises ValueError: ``log_prob`` does not return one value per point, or its value does not
        depend on the points through autograd (a constant, or computed outside torch).
    """
    base = z0.detach()
    scale = scale.detach().to(base)
    u = torch.zeros_like(base, requires_grad=True)
    optimizer = torch.optim.Adam([u], lr=lr)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps)
    alive = torch.ones(len(base), dtype=torch.bool, device="cpu")
    with torch.enable_grad():
        for _ in range(steps):
            optimizer.zero_grad()
            value = _differentiable(log_prob, base + scale * u)
            finite = torch.isfinite(value)
            alive &= finite.cpu()
            (-torch.where(finite, value, torch.zeros_like(value)).sum()).backward()
            with torch.no_grad():
                u.grad[~torch.isfinite(u.grad)] = 0.0
            optimizer.step()
            schedule.step()
        z = (base + scale * u).detach().requires_grad_(True)
        value = _differentiable(log_prob, z)
        (gradient,) = torch.autograd.grad(value.sum(), z)
    with torch.no_grad():
        steep = (scale * gradient).abs().amax(-1)
        converged = alive & torch.isfinite(value).cpu() & (steep < tolerance).cpu()
    return z.detach(), value.detach(), converged


def _values(log_prob: LogDensity, z: Tensor) -> Tensor:
    """``log_prob(z)``, checked to be a tensor with one value per point of ``z`` (``(..., D)``)."""
    value = log_prob(z)
    if not isinstance(value, Tensor) or value.shape != z.shape[:-1]:
        got = tuple(value.shape) if isinstance(value, Tensor) else type(value).__name__
        raise ValueError(
            f"log_prob must return a tensor of shape {tuple(z.shape[:-1])} (one log density per "
            f"point of shape {tuple(z.shape)}), got {got}"
        )
    return value


def _differentiable(log_prob: LogDensity, z: Tensor) -> Tensor:
    """:func:`_values` at points ``z`` that require grad, checked to depend on them."""
    value = _values(log_prob, z)
    if not value.requires_grad:
        raise ValueError(
            "log_prob must be differentiable in z (the climb follows its gradient), but its value "
            "does not depend on z through autograd: a constant log density has no modes to find, "
            "and one computed outside torch (numpy, .item(), .detach()) has no gradient"
        )
    return value


def check_climb_options(num_starts: object, max_spread: object, steps: object, lr: object,
                        seed: object) -> None:
    """The climb's options, shared by :func:`search_modes` and
    :func:`~pyro_flows.infer.mode_probe.probe_modes`: positive int counts, a finite
    ``max_spread >= 1``, a positive finite ``lr``, an int ``seed``.

    >>> check_climb_options(64, 20.0, 300, 0.0, 0)
    Traceback (most recent call last):
    ...
    ValueError: lr must be a positive finite number, got 0.0 (float)
    """
    check_int(num_starts, "num_starts")
    check_int(steps, "steps")
    check_number(max_spread, "max_spread")
    if max_spread < 1:  # type: ignore[operator]
        raise ValueError(f"max_spread must be a finite number >= 1, got {max_spread!r}")
    check_number(lr, "lr")
    check_seed(seed)


def _dips(log_prob: LogDensity, point: Tensor, height: Tensor, kept: Tensor,
          kept_heights: Tensor) -> Tensor:
    """How far ``log_prob`` falls on the segments from ``point`` to each of ``kept`` below the
    lower end, ``(K,)``."""
    t = torch.linspace(0.0, 1.0, _SEGMENT_POINTS + 2, dtype=point.dtype, device=point.device)[1:-1]
    segment = point + t[None, :, None] * (kept[:, None, :] - point)  # (K, S, D)
    with torch.no_grad():
        values = _values(log_prob, segment.reshape(-1, point.shape[-1])).reshape(len(kept), -1)
    values = torch.where(torch.isfinite(values), values, torch.full_like(values, -math.inf))
    return torch.minimum(kept_heights, height) - values.amin(-1)


def merge_maxima(
    log_prob: LogDensity, points: Tensor, heights: Tensor, *, dip_nats: float = DIP_NATS,
    same: float = 1e-3,
) -> tuple[Tensor, Tensor]:
    r"""Distinct maxima among converged ``points``, highest first: a point is a new maximum
    when ``log_prob`` dips by more than ``dip_nats`` on the segment to every kept one (points
    within ``same`` times the spread of all points, in every coordinate, of a kept one are the
    same without a look). Returns ``(modes (K, D), heights (K,))``."""
    if len(points) == 0:
        return points, heights
    order = torch.argsort(heights, descending=True)
    points, heights = points[order], heights[order]
    spread = (points.amax(0) - points.amin(0)).amax().clamp_min(1e-12)
    kept = [0]
    for i in range(1, len(points)):
        k = torch.tensor(kept, device=points.device)
        near = ((points[k] - points[i]).abs().amax(-1) <= same * spread)
        if bool(near.any()):
            continue
        if bool((_dips(log_prob, points[i], heights[i], points[k], heights[k]) > dip_nats).all()):
            kept.append(i)
    index = torch.tensor(kept, device=points.device)
    return points[index], heights[index]


def search_modes(
    log_prob: LogDensity,
    dim: int,
    *,
    centre: Tensor | None = None,
    num_starts: int = 256,
    max_spread: float = 50.0,
    steps: int = 300,
    lr: float = 0.1,
    dip_nats: float = DIP_NATS,
    seed: int = 0,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
) -> ModeSearch:
    r"""Climb ``log_prob`` from ``num_starts`` points spread over scales 1 to ``max_spread``
    around ``centre`` (default the origin) and return the distinct local maxima reached (see
    the module docstring for the maths).

    :param log_prob: an unnormalised log density, batched over leading dimensions.
    :param dim: the dimension :math:`D`.
    :param centre: ``(D,)`` the centre of the starting cloud.
    :param num_starts: starting points.
    :param max_spread: the largest start scale :math:`s_{\max}`.
    :param steps: Adam steps of the climb.
    :param lr: Adam's initial learning rate, in each start's scale units.
    :param dip_nats: how far log p must dip between two maxima for them to be distinct (a
        finite number >= 0).
    :param seed: seeds the starting points (a private generator; the global RNG is untouched).
    :returns: a :class:`ModeSearch` (no modes when no start converged: a density unbounded
        above, or NaN/infinite everywhere the climbs went).
    :raises TypeError: counts that are not ints, a non-int ``seed``, non-numbers.
    :raises ValueError: counts below 1, ``max_spread < 1``, ``lr <= 0``, a negative or
        non-finite ``dip_nats``, a ``centre`` of the wrong shape, or a ``log_prob`` that does
        not return one differentiable value per point.
    """
    check_int(dim, "dim")
    check_climb_options(num_starts, max_spread, steps, lr, seed)
    check_number(dip_nats, "dip_nats", positive=False)
    dtype = dtype or (centre.dtype if centre is not None else torch.get_default_dtype())
    if centre is None:
        centre = torch.zeros(dim, dtype=dtype, device=device if device is not None else "cpu")
    centre = centre.detach().to(dtype=dtype, device=device if device is not None else centre.device)
    if centre.shape != (dim,):
        raise ValueError(f"centre must have shape ({dim},), got {tuple(centre.shape)}")
    generator = torch.Generator().manual_seed(seed)
    spread = torch.exp(torch.rand(num_starts, 1, generator=generator, dtype=torch.float64,
                                  device="cpu") * math.log(max_spread))
    noise = torch.randn(num_starts, dim, generator=generator, dtype=torch.float64, device="cpu")
    spread, noise = spread.to(centre), noise.to(centre)
    z, value, converged = climb(log_prob, centre + spread * noise, spread, steps=steps, lr=lr)
    keep = converged.to(z.device)
    modes, heights = merge_maxima(log_prob, z[keep], value[keep], dip_nats=dip_nats)
    return ModeSearch(modes, heights, num_starts, int(converged.sum()))
