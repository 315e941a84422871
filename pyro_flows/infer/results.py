r"""What every sampler returns (:class:`SampleResult`) and how it reads a target
(:func:`as_target` / :class:`TargetDensity`).

All samplers of :mod:`pyro_flows.infer` (random-walk Metropolis, MALA, ULA, NUTS, HMC, importance
sampling) return the same :class:`SampleResult`: draws of shape ``(num_chains, num_draws, dim)``,
the wall time (warm-up included) and the cost in target evaluations, so that methods can be
compared on effective sample size per second and per gradient evaluation,

.. math::

    \frac{\mathrm{ESS}}{\text{seconds}}, \qquad \frac{\mathrm{ESS}}{\#\nabla \log p},

and an ArviZ ``InferenceData`` for ``az.summary`` and the ``az.plot_*`` functions.

A target is either an object with ``log_prob(z)`` (of shape ``z.shape[:-1]``), ``dim`` and,
where known, ``log_Z``, ``mean``, ``std`` and ``initial_params()`` (the
:mod:`pyro_flows.targets` protocol, also met by a ``torch.distributions`` distribution with
event shape ``(dim,)``), or a plain callable ``log_prob(z)`` together with ``dim=``. Every
consumer (the samplers, importance sampling, NeuTra, ``fit_target``) reads it through
:func:`as_target`, which checks the dimension, the first evaluation and every output, and
finds the target's device:

1. the ``device=`` a sampler was given (checked against what the target says, when it says);
2. the target's ``device`` attribute (every :class:`~pyro_flows.targets.Target` has one: it
   follows ``target.to(...)``), else the device of the tensors it holds (an ``nn.Module``'s
   parameters and buffers, a ``torch.distributions`` distribution's parameters, or those of the
   object of a bound method such as ``module.log_prob``);
3. the device of the points it is given (``init``, the flow's or proposal's draws);
4. the CPU.

The dtype is found the same way (a ``dtype`` attribute, else the floating tensors held, else
the dtype the target returns). Tensors the library creates for the target (initial points,
noise, step sizes, buffers of draws) are made on that device and in that dtype; random numbers
come from a ``torch.Generator`` on that device where one exists (CUDA), else from a CPU
generator and are then moved.

**Starting points** (:meth:`TargetDensity.initial_points`, every MCMC sampler's ``init=``).
Gelman and Rubin (1992) start the chains *over-dispersed* relative to the target, at points
drawn around its modes, so that chains which stay in different modes, or have not yet forgotten
their starts, disagree and the potential scale reduction :math:`\hat R` exceeds 1. Stan draws
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
``extra["init_mode_of_chain"]``, ``extra["init_fallback"]``.

References:

- R. Kumar, C. Carroll, A. Hartikainen, O. Martin. *ArviZ a unified library for exploratory
  analysis of Bayesian models in Python.* JOSS 4(33), 2019.
- M. D. Hoffman et al. *NeuTra-lizing Bad Geometry in Hamiltonian Monte Carlo Using Neural
  Transport.* 2019 (cost per gradient evaluation as the unit of comparison).
- A. Gelman, D. B. Rubin. *Inference from iterative simulation using multiple sequences.*
  Statistical Science 7(4), 1992 (over-dispersed starts around the modes; :math:`\hat R`).
- Stan Development Team. *Stan Reference Manual*, "Initialization": uniform draws in
  :math:`(-2, 2)` on the unconstrained scale. https://mc-stan.org/docs/reference-manual/
- A. Vehtari, A. Gelman, D. Simpson, B. Carpenter, P.-C. Bürkner. *Rank-normalization,
  folding, and localization: an improved R-hat.* Bayesian Analysis 16(2), 2021.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from ..targets.base import _same_device
from .diagnostics import (
    _arviz,
    mcmc_diagnostics,
    moment_errors,
    reference_moment_errors,
)
from .mode_search import search_modes

__all__ = [
    "INIT_STRATEGIES",
    "START_MASS_NATS",
    "SampleResult",
    "TargetDensity",
    "TargetOutputError",
    "TargetOutputTypeError",
    "as_target",
    "target_dim",
]

DeviceLike = torch.device | str

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


def _check_int(value: object, name: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__} ({value!r})")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return value


def _fact(obj: object, *names: str) -> Any:
    """A known fact of the target (``None`` when absent, unknown or not a value)."""
    for name in names:
        try:
            value = getattr(obj, name, None)
        except (NotImplementedError, AttributeError, RuntimeError, ValueError):
            value = None
        if value is not None and not callable(value):
            return value
    return None


# -- devices ------------------------------------------------------------------------------------
def _check_device(device: object, name: str = "device") -> torch.device | None:
    """``device`` as a ``torch.device`` (``None`` stays ``None``), or a clear error."""
    if device is None or isinstance(device, torch.device):
        return device
    if not isinstance(device, str):
        raise TypeError(
            f"{name} must be a torch.device, a string such as 'cuda' or None, got "
            f"{type(device).__name__} ({device!r})"
        )
    try:
        return torch.device(device)
    except RuntimeError:
        raise ValueError(f"{name}={device!r} is not a device torch knows") from None


def _held_tensors(obj: object) -> Iterator[Tensor]:
    """Tensors a target holds: an ``nn.Module``'s parameters and buffers, a distribution's
    tensors, or those of the object of a bound method (``module.log_prob``)."""
    if isinstance(obj, Tensor):
        yield obj
    elif isinstance(obj, nn.Module):
        yield from obj.parameters()
        yield from obj.buffers()
    elif isinstance(obj, torch.distributions.Distribution):
        yield from (v for v in vars(obj).values() if isinstance(v, Tensor))
    else:
        owner = getattr(obj, "__self__", None)
        if isinstance(owner, nn.Module | torch.distributions.Distribution):
            yield from _held_tensors(owner)


def _stated_device_and_dtype(obj: object) -> tuple[torch.device | None, torch.dtype | None]:
    """Where ``obj`` computes, as far as it says: its ``device`` / ``dtype`` attributes, else
    the device of the tensors it holds and the dtype of the floating ones (``None``: unknown)."""
    device, dtype = None, None
    for owner in (obj, getattr(obj, "__self__", None)):
        if owner is None:
            continue
        stated = _fact(owner, "device")
        if isinstance(stated, torch.device | str) and device is None:
            device = _check_device(stated, "the target's device")
        stated = _fact(owner, "dtype")
        if isinstance(stated, torch.dtype) and stated.is_floating_point and dtype is None:
            dtype = stated
    if device is None or dtype is None:
        for t in _held_tensors(obj):
            device = device or t.device
            if dtype is None and t.is_floating_point():
                dtype = t.dtype
            if dtype is not None:
                break
    return device, dtype


def _generator(seed: int | None, device: DeviceLike | None = None) -> tuple[torch.Generator, int]:
    """A ``torch.Generator`` seeded with ``seed`` (``None``: a seed drawn from the global RNG),
    on ``device`` where torch has generators (CPU, CUDA), else on the CPU."""
    if seed is None:
        seed = int(torch.randint(0, 2**62, (1,), device="cpu").item())  # the CPU RNG
    elif isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"seed must be an int or None, got {type(seed).__name__} ({seed!r})")
    device = _check_device(device)
    generator = None
    if device is not None and device.type != "cpu":
        try:
            generator = torch.Generator(device=device)
        except RuntimeError:  # e.g. 'meta': no generator there; draw on the CPU and move
            generator = None
    return (generator or torch.Generator()).manual_seed(seed), seed


def _draw(
    kind: str,
    shape: tuple[int, ...] | torch.Size,
    generator: torch.Generator,
    *,
    dtype: torch.dtype,
    device: torch.device,
) -> Tensor:
    """``torch.rand`` (``kind="rand"``) or ``torch.randn`` from ``generator``, drawn on the
    generator's device and moved to ``device``."""
    sample = torch.rand if kind == "rand" else torch.randn
    out = sample(tuple(shape), generator=generator, dtype=dtype, device=generator.device)
    return out.to(device)


@contextlib.contextmanager
def _forked_rng(seed: int | None, devices: Iterable[torch.device | None] = ()) -> Iterator[None]:
    """Seed torch's global RNGs with ``seed`` inside a fork that restores them afterwards: the
    CPU's and those of the CUDA devices among ``devices`` (``seed=None``: no fork, no seed)."""
    if seed is None:
        yield
        return
    cuda = sorted(
        {
            d.index if d.index is not None else torch.cuda.current_device()
            for d in devices
            if d is not None and d.type == "cuda"
        }
    )
    with torch.random.fork_rng(devices=cuda, device_type="cuda"):
        torch.manual_seed(seed)
        yield


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


def _module_device_and_dtype(module: object) -> tuple[torch.device | None, torch.dtype | None]:
    """The device of a module's first parameter or buffer and the dtype of its first floating
    one (``None`` for a module without tensors or a non-module)."""
    if not isinstance(module, nn.Module):
        return None, None
    return _stated_device_and_dtype(module)


# -- the adapter --------------------------------------------------------------------------------
class TargetOutputError(ValueError):
    """A target's ``log_prob`` failed on its first evaluation, returned something other than a
    tensor of real log densities of shape ``z.shape[:-1]``, or was given points on another device
    than the one it lives on. Not-a-tensor and non-real outputs raise
    :class:`TargetOutputTypeError`, which is also a ``TypeError``."""


class TargetOutputTypeError(TargetOutputError, TypeError):
    """:class:`TargetOutputError` for an output that is not a real floating-point tensor."""


def target_dim(target: Any) -> int | None:
    r"""The event size :math:`D` a target states (``dim``, ``input_dim`` or ``event_shape``
    ``(D,)``), ``None`` for a plain callable that does not say.

    :raises TypeError: when ``target`` is neither callable nor has a ``log_prob``.
    :raises ValueError: for an ``event_shape`` other than ``(D,)``.

    >>> import torch
    >>> target_dim(torch.distributions.MultivariateNormal(torch.zeros(3), torch.eye(3)))
    3
    >>> target_dim(lambda z: -(z**2).sum(-1)) is None
    True
    """
    _log_prob_of(target)
    return TargetDensity._own_dim(target if callable(getattr(target, "log_prob", None)) else None)


def _log_prob_of(target: Any) -> tuple[Callable[[Tensor], Tensor], Any]:
    """``(log_prob, the object that has it or None)``, or a ``TypeError``."""
    log_prob = getattr(target, "log_prob", None)
    if callable(log_prob):
        return log_prob, target
    if callable(target):
        return target, None
    raise TypeError(
        "target must be an object with a log_prob(z) method or a callable log_prob(z) "
        f"(a log density), got {type(target).__name__}"
    )


class TargetDensity:
    r"""A target as the samplers see it: a log density with checked shapes and counted calls.

    .. math::

        z \in \mathbb R^{\ldots \times D} \mapsto \log \tilde p(z) \in \mathbb R^{\ldots},
        \qquad \tilde p = Z\, p.

    Every call checks that ``log_prob`` returned a real floating-point tensor of shape
    ``z.shape[:-1]`` (:class:`TargetOutputError` otherwise) and counts the points evaluated
    (:attr:`num_log_prob_evals`) and the points whose gradient was taken
    (:attr:`num_grad_evals`), so a batched call over :math:`C` chains counts :math:`C`. The
    first evaluation is the probe: an error the target raises there (a ``RuntimeError``,
    ``ValueError`` or ``IndexError``, typically a target written for another dimension or
    device) comes back as a :class:`TargetOutputError` naming the shape, dtype and device it
    was called with, chained to the original. Points on another device than the target's are
    refused before the call.

    Build it with :func:`as_target` (which also passes a ``TargetDensity`` through).

    :param target: an object with ``log_prob(z)`` (a :mod:`pyro_flows.targets` target, a
        ``torch.distributions`` distribution with event shape ``(dim,)``, a
        :class:`~pyro_flows.Flow`) or a callable ``log_prob(z)``.
    :param dim: the event size :math:`D`; required for a plain callable, checked against the
        target's own ``dim`` / ``input_dim`` / ``event_shape`` otherwise.
    :param device: where to evaluate the target; checked against the device the target
        states (see the module docstring for how it is found). ``None``: what the target says.
    :param dtype: the floating dtype of the points made for the target (initial points).
        ``None``: what the target says, else what it returns.

    Attributes ``log_Z``, ``mean``, ``std`` hold what the target knows (``None`` otherwise;
    a normalised distribution has ``log_Z = 0``); ``device`` and ``dtype`` what is known of
    where it computes (``None``: unknown, the points given decide).

    Example:

    >>> import torch
    >>> density = TargetDensity(lambda z: -0.5 * (z**2).sum(-1), dim=2)
    >>> density(torch.zeros(4, 2)).shape, density.num_log_prob_evals
    (torch.Size([4]), 4)
    >>> lp, grad = density.value_and_grad(torch.ones(3, 2))
    >>> grad[0].tolist(), density.num_grad_evals
    ([-1.0, -1.0], 3)

    References: see the module docstring.
    """

    def __init__(
        self,
        target: Any,
        dim: int | None = None,
        *,
        device: DeviceLike | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        fn, obj = _log_prob_of(target)
        self.fn: Callable[[Tensor], Tensor] = fn
        self.target: Any = obj
        own = self._own_dim(self.target)
        if dim is None and own is None:
            raise ValueError(
                "the target does not say its dimension (no dim, input_dim or event_shape): "
                "pass dim="
            )
        if dim is not None:
            _check_int(dim, "dim", 1)
            if own is not None and own != dim:
                raise ValueError(f"dim={dim} but the target has dimension {own}")
        self.dim: int = int(dim if dim is not None else own)  # type: ignore[arg-type]
        self.device, self.dtype = self._where(target, device, dtype)
        self.name: str = str(
            _fact(obj, "name") or getattr(target, "__name__", None) or type(target).__name__
        )
        self.log_Z: float | None = None
        log_Z = _fact(obj, "log_Z")
        if log_Z is None and isinstance(obj, torch.distributions.Distribution):
            log_Z = 0.0
        if log_Z is not None:
            self.log_Z = float(log_Z)
        self.mean: Tensor | None = self._vector(_fact(obj, "mean"), "mean")
        self.std: Tensor | None = self._vector(_fact(obj, "std", "stddev"), "std")
        self.num_log_prob_evals = 0
        self.num_grad_evals = 0
        self._probed = False
        #: what :meth:`initial_points` did last (see :meth:`start_facts`)
        self.start: dict[str, Any] = {}

    @staticmethod
    def _where(
        target: Any, device: DeviceLike | None, dtype: torch.dtype | None
    ) -> tuple[torch.device | None, torch.dtype | None]:
        asked = _check_device(device)
        if dtype is not None and not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
            raise TypeError(f"dtype must be a floating torch.dtype or None, got {dtype!r}")
        stated, stated_dtype = _stated_device_and_dtype(target)
        if asked is not None and stated is not None and not _same_device(asked, stated):
            raise ValueError(
                f"the target lives on {stated} but device={str(asked)!r} was asked for: move "
                f"the target there (target.to({str(asked)!r})) or leave device= out"
            )
        return asked or stated, dtype or stated_dtype

    @staticmethod
    def _own_dim(obj: Any) -> int | None:
        if obj is None:
            return None
        for name in ("dim", "input_dim"):
            value = getattr(obj, name, None)
            if isinstance(value, int) and not isinstance(value, bool):
                return value
        shape = getattr(obj, "event_shape", None)
        if shape is not None:
            if len(shape) != 1:
                raise ValueError(f"the target's event_shape must be (dim,), got {tuple(shape)}")
            return int(shape[0])
        return None

    def _vector(self, value: Any, name: str) -> Tensor | None:
        if value is None:
            return None
        if isinstance(value, Tensor):
            t = value.detach().to(torch.float64).reshape(-1)
        else:
            t = torch.as_tensor(value, dtype=torch.float64, device="cpu").reshape(-1)
        if t.numel() == 1:
            t = t.expand(self.dim).clone()
        if t.numel() != self.dim:
            raise ValueError(
                f"the target's {name} has {t.numel()} entries, expected dim={self.dim}"
            )
        return t

    def points_device(self, given: object = None) -> torch.device:
        """The device of points made for the target: its own, else that of ``given`` (a
        tensor, e.g. ``init``), else the CPU."""
        if self.device is not None:
            return self.device
        if isinstance(given, Tensor):
            return given.device
        return torch.device("cpu")

    def _evaluate(self, z: Tensor) -> Tensor:
        """``fn(z)``; on the first evaluation an error of the target names what it was given."""
        if self.device is not None and not _same_device(z.device, self.device):
            raise TargetOutputError(
                f"the target lives on {self.device} but was given points on {z.device} "
                f"(shape {tuple(z.shape)}): move the target, or the flow / proposal / init, so "
                "that both are on one device"
            )
        if self._probed:
            return self.fn(z)
        try:
            return self.fn(z)
        except TargetOutputError:  # a target read by as_target inside this one: said already
            raise
        except (RuntimeError, ValueError, IndexError) as err:
            first = (str(err).strip().splitlines() or [""])[0].rstrip(".")
            hint = (
                " If the target lives on another device, pass device= (or move the target)."
                if "device" in first
                else ""
            )
            raise TargetOutputError(
                f"the target's log_prob raised {type(err).__name__} on its first evaluation, at "
                f"z of shape {tuple(z.shape)} (dim={self.dim}, {z.dtype}, on {z.device}): "
                f"{first}. A target must take points of shape (..., {self.dim}); is it written "
                f"for another dimension?{hint}"
            ) from err

    def _check_output(self, out: object, z: Tensor) -> Tensor:
        expected = tuple(z.shape[:-1])
        if not isinstance(out, Tensor):
            raise TargetOutputTypeError(
                f"the target's log_prob must return a Tensor of shape z.shape[:-1] = {expected} "
                f"(a torch.Tensor of log densities), got {type(out).__name__}"
            )
        if tuple(out.shape) != expected:
            raise TargetOutputError(
                f"the target's log_prob returned shape {tuple(out.shape)} for z of shape "
                f"{tuple(z.shape)} (dim={self.dim}); expected {expected} = z.shape[:-1], one "
                "log density per point"
            )
        if not out.is_floating_point():
            raise TargetOutputTypeError(
                f"the target's log_prob must return real floating-point log densities, got "
                f"dtype {out.dtype}"
            )
        return out

    def __call__(self, z: Tensor) -> Tensor:
        """``log_prob(z)``, checked to be a real floating-point tensor of shape ``z.shape[:-1]``."""
        out = self._check_output(self._evaluate(z), z)
        self._probed = True
        self.num_log_prob_evals += z.shape[:-1].numel()
        return out

    def value_and_grad(self, z: Tensor) -> tuple[Tensor, Tensor]:
        r"""``(log p(z), grad_z log p(z))``, both detached, from one batched call."""
        with torch.enable_grad():
            z = z.detach().requires_grad_(True)
            lp = self(z)
            if not lp.requires_grad:
                raise TypeError(
                    "this sampler needs gradients, but the target's log_prob(z) is not "
                    "differentiable with torch.autograd (it returned a tensor without grad)"
                )
            (grad,) = torch.autograd.grad(lp.sum(), z)
        self.num_grad_evals += z.shape[:-1].numel()
        return lp.detach(), grad.detach()

    def facts(self) -> dict[str, Any]:
        """The target's known facts for a result's ``extra``: ``target_mean``, ``target_std``
        and ``target_log_Z``, where known."""
        known = {
            "target_mean": self.mean,
            "target_std": self.std,
            "target_log_Z": self.log_Z,
        }
        return {key: value for key, value in known.items() if value is not None}

    def potential_fn(self, params: dict[str, Tensor]) -> Tensor:
        r"""Pyro's potential energy :math:`U = -\log\tilde p(\text{params["z"]})`; calls made
        with gradients on count as gradient evaluations."""
        z = params["z"]
        if z.requires_grad and torch.is_grad_enabled():
            self.num_grad_evals += z.shape[:-1].numel()
        return -self(z)

    def _initial_dtype(self, device: torch.device) -> torch.dtype:
        """The target's dtype, else the precision it computes in (at least the default)."""
        if self.dtype is not None:
            return self.dtype
        with torch.no_grad():
            out = self(torch.zeros(1, self.dim, device=device))
        return torch.promote_types(torch.get_default_dtype(), out.dtype)

    def _center(self, dtype: torch.dtype, device: torch.device) -> Tensor:
        """The target's ``initial_params()["z"]`` (its first row), else the origin."""
        center = torch.zeros(self.dim, dtype=dtype, device=device)
        initial_params = getattr(self.target, "initial_params", None)
        if callable(initial_params):
            found = initial_params()
            if isinstance(found, dict):
                found = found.get("z")
            if found is not None:
                found = torch.as_tensor(found, dtype=dtype, device=device).detach()
                if found.shape[-1:] != (self.dim,):
                    raise ValueError(
                        f"the target's initial_params() must give z of shape (..., {self.dim}), "
                        f"got {tuple(found.shape)}"
                    )
                center = found.reshape(-1, self.dim)[0]
        return center

    def _given_initial_points(
        self, num_chains: int, init: object, dtype: torch.dtype, device: torch.device
    ) -> tuple[Tensor, Tensor]:
        if isinstance(init, Tensor):
            z = init.detach().to(dtype=dtype, device=device)
        else:
            try:
                z = torch.as_tensor(np.asarray(init, dtype=np.float64), dtype=dtype, device=device)
            except (TypeError, ValueError):
                raise TypeError(
                    f"init must be a tensor or array of shape ({self.dim},) or (num_chains, dim), "
                    f"got {type(init).__name__}"
                ) from None
        if z.shape == (self.dim,):
            z = z.expand(num_chains, self.dim).clone()
        if z.shape != (num_chains, self.dim):
            raise ValueError(
                f"init must have shape ({self.dim},) or (num_chains, dim) = "
                f"({num_chains}, {self.dim}), got {tuple(z.shape)}"
            )
        finite = torch.isfinite(z).all(-1)
        if z.device.type != "meta" and not bool(finite.all()):  # meta: no values to check
            chains = (~finite).nonzero().flatten().tolist()
            raise ValueError(
                f"init must be finite, got non-finite (NaN or inf) values in the initial point "
                f"of chain(s) {chains}: {z[~finite].tolist()[:5]}"
            )
        with torch.no_grad():
            lp = self(z)
        bad = ~torch.isfinite(lp)
        if bool(bad.any()):
            chains = bad.nonzero().flatten().tolist()
            raise ValueError(
                f"log_prob is not finite at the initial point of chain(s) {chains} "
                f"(values {lp[bad].tolist()[:10]}): start those chains where the target "
                "has positive density"
            )
        return z.detach(), lp.detach()

    def initial_points(
        self,
        num_chains: int,
        init: Tensor | str | None,
        generator: torch.Generator,
        *,
        dtype: torch.dtype | None = None,
        radius: float = 2.0,
        max_tries: int = 100,
    ) -> tuple[Tensor, Tensor]:
        r"""Starting points ``(num_chains, dim)`` and their log densities, on the target's
        device (:meth:`points_device`), over-dispersed around the target's modes by default.

        - ``None`` or ``"modes"``: chains go round-robin to the local maxima :math:`m_k` of
          non-negligible Laplace mass (within ``START_MASS_NATS`` of the heaviest) and start at
          :math:`z_0 = m_k + r\,\sigma_k \odot U(-1, 1)^D`, :math:`\sigma_k` the maximum's
          half-nat scale per coordinate (Gelman & Rubin, 1992; see the module docstring for
          the search, the scales and when it falls back to ``"uniform"``). The search is
          seeded from ``generator``'s seed, draws nothing from it and leaves torch's global
          RNG as it was; only the jitter is drawn from ``generator``.
        - ``"uniform"``: :math:`z_0 = c + U(-r, r)^D` per chain around the target's
          ``initial_params()["z"]`` (or the origin), Stan's convention (:math:`r = 2`).
        - a tensor or array of shape ``(dim,)`` (shared) or ``(num_chains, dim)``: used as given
          (its dtype is the draws' dtype), moved to the target's device.

        Drawn starts with a non-finite log density are redrawn, up to ``max_tries`` times; they
        are in the target's dtype (else the dtype its ``log_prob`` returns, at least torch's
        default). What was done is in :attr:`start` (see :meth:`start_facts`).

        :raises ValueError: when a start has a non-finite log density, naming the chains, or
            for a string other than ``"modes"`` / ``"uniform"``.
        :raises TypeError: for an ``init`` that is neither of these nor array-like.
        """
        if isinstance(init, str) and init not in INIT_STRATEGIES:
            raise ValueError(
                "init must be None or 'modes' (the default: over-dispersed around the target's "
                f"modes), 'uniform' (U(-{radius}, {radius})^D around its initial point) or a "
                f"tensor of shape ({self.dim},) or (num_chains, dim); got the str {init!r}"
            )
        device = self.points_device(None if isinstance(init, str) else init)
        if dtype is None and isinstance(init, Tensor) and init.is_floating_point():
            dtype = init.dtype
        if init is not None and not isinstance(init, str):
            dtype = dtype or self.dtype or torch.get_default_dtype()
            self.start = {"init": "given"}
            return self._given_initial_points(num_chains, init, dtype, device)
        dtype = dtype or self._initial_dtype(device)
        center = self._center(dtype, device)
        if init == "uniform":
            self.start = {"init": "uniform"}
        else:
            found = self._mode_starts(num_chains, generator, center, radius, max_tries)
            if isinstance(found, tuple):
                return found
            self.start.update(init="uniform", init_fallback=found)
        return self._uniform_points(num_chains, generator, center, radius, max_tries)

    def start_facts(self) -> dict[str, Any]:
        """What :meth:`initial_points` did last, for a result's ``extra``: ``init`` (``"given"``,
        ``"uniform"`` or ``"modes"``) and, after a search, ``init_search_log_prob_evals``,
        ``init_search_grad_evals``, ``init_search_seconds`` and either ``init_modes``
        ``(K, D)`` (the maxima given chains, heaviest first) with ``init_mode_of_chain``
        ``(num_chains,)``, or ``init_fallback`` (why Stan's uniform draw was used instead)."""
        return dict(self.start)

    def _uniform_points(
        self, num_chains: int, generator: torch.Generator, center: Tensor, radius: float,
        max_tries: int,
    ) -> tuple[Tensor, Tensor]:
        """Stan's draw :math:`c + U(-r, r)^D`, non-finite chains redrawn."""
        dtype, device = center.dtype, center.device
        shape = (num_chains, self.dim)
        u = _draw("rand", shape, generator, dtype=dtype, device=device)
        z = center + radius * (2.0 * u - 1.0)
        with torch.no_grad():
            lp = self(z).to(dtype)
        for _ in range(max_tries - 1):
            todo = ~torch.isfinite(lp)
            if not bool(todo.any()):
                return z, lp
            u = _draw("rand", (int(todo.sum()), self.dim), generator, dtype=dtype, device=device)
            z[todo] = center + radius * (2.0 * u - 1.0)
            with torch.no_grad():
                lp[todo] = self(z[todo]).to(dtype)
        todo = ~torch.isfinite(lp)
        if not bool(todo.any()):
            return z, lp
        chains = todo.nonzero().flatten().tolist()
        raise ValueError(
            f"log_prob is not finite at the initial point of chain(s) {chains} after "
            f"{max_tries} uniform draws in [-{radius}, {radius}]^{self.dim} around "
            f"{center.tolist()[:5]}: pass init="
        )

    def _counted(self, z: Tensor) -> Tensor:
        """``self(z)``, also counting a gradient evaluation per point when ``z`` needs grad
        (and the target's output depends on it)."""
        out = self(z)
        if z.requires_grad and torch.is_grad_enabled() and out.requires_grad:
            self.num_grad_evals += z.shape[:-1].numel()
        return out

    def _mode_starts(
        self, num_chains: int, generator: torch.Generator, center: Tensor, radius: float,
        max_tries: int,
    ) -> tuple[Tensor, Tensor] | str:
        """The over-dispersed starts around the modes (see :meth:`initial_points`), or why
        there are none (then Stan's uniform draw is used)."""
        dtype, device = center.dtype, center.device
        num_starts = max(_SEARCH_MIN_STARTS, _SEARCH_STARTS_PER_CHAIN * num_chains)
        seed = (generator.initial_seed() + _SEARCH_SEED_OFFSET) % 2**63
        evals, grads, began = self.num_log_prob_evals, self.num_grad_evals, time.perf_counter()
        failed = None
        try:
            with _forked_rng(seed, [device]):  # a target may draw from the global RNG
                search = search_modes(self._counted, self.dim, centre=center,
                                      num_starts=num_starts, seed=seed)
                modes, heights = search.modes, search.log_p
                scales, flat = (_half_nat_scales(self._counted, modes, heights) if len(modes)
                                else (modes, torch.zeros(0, dtype=torch.bool, device=device)))
        except (RuntimeError, ValueError, TypeError, ArithmeticError, NotImplementedError) as err:
            failed = (str(err).strip().splitlines() or [""])[0]
            failed = f"the mode search failed ({type(err).__name__}: {failed[:200]})"
        self.start = {
            "init": "modes",
            "init_search_log_prob_evals": self.num_log_prob_evals - evals,
            "init_search_grad_evals": self.num_grad_evals - grads,
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
        u = _draw("rand", (num_chains, self.dim), generator, dtype=dtype, device=device)
        z = centre + radius * scale * (2.0 * u - 1.0)
        with torch.no_grad():
            lp = self(z).to(dtype)
        for attempt in range(1, max_tries):
            todo = ~torch.isfinite(lp)
            if not bool(todo.any()):
                break
            shrink = 0.5 ** (attempt // 10)
            u = _draw("rand", (int(todo.sum()), self.dim), generator, dtype=dtype, device=device)
            z[todo] = centre[todo] + shrink * radius * scale[todo] * (2.0 * u - 1.0)
            with torch.no_grad():
                lp[todo] = self(z[todo]).to(dtype)
        todo = ~torch.isfinite(lp)
        if bool(todo.any()):  # the maxima themselves (finite: the search converged there)
            z[todo] = centre[todo]
            with torch.no_grad():
                lp[todo] = self(z[todo]).to(dtype)
        if not bool(torch.isfinite(lp).all()):
            return "the log density is not finite at the local maxima found"
        self.start.update(init_modes=modes, init_mode_of_chain=which)
        return z, lp


def as_target(
    target: Any,
    dim: int | None = None,
    *,
    device: DeviceLike | None = None,
    dtype: torch.dtype | None = None,
) -> TargetDensity:
    r"""Read a user's target once, the way every sampler and ``fit_target`` does.

    .. math::

        \texttt{target} \;\mapsto\; \bigl(z \in \mathbb R^{\ldots\times D} \mapsto
        \log\tilde p(z) \in \mathbb R^{\ldots}\bigr) \text{ on one device}.

    ``target`` is an object with ``log_prob(z)`` (a :class:`~pyro_flows.targets.Target`, a
    ``torch.distributions`` distribution with event shape ``(D,)``, a flow) or a callable
    ``log_prob(z)``; a :class:`TargetDensity` is passed through (its ``dim`` and ``device``
    checked). The result checks every output (a real floating tensor of shape
    ``z.shape[:-1]``), turns an error of the first evaluation into a
    :class:`TargetOutputError` naming the dimension it was called with, counts evaluations and
    knows the target's ``device`` and ``dtype`` (see the module docstring for the order in
    which they are found).

    :param target: the target.
    :param dim: the event size :math:`D`; needed for a callable that does not say it,
        checked against the target's own otherwise.
    :param device: where the target is to be evaluated (``None``: where it says it lives,
        else where the points given to it are).
    :param dtype: the dtype of points made for it (``None``: its own, else what it returns).
    :raises TypeError: for an object without ``log_prob`` that is not callable, a bad
        ``device`` / ``dtype`` type.
    :raises ValueError: for a dimension that disagrees with the target's, a missing dimension,
        a device that disagrees with the target's.

    Example:

    >>> import torch
    >>> gauss = torch.distributions.MultivariateNormal(torch.zeros(3), torch.eye(3))
    >>> density = as_target(gauss)
    >>> density.dim, density.device, density.log_Z
    (3, device(type='cpu'), 0.0)
    >>> as_target(lambda z: -(z**2).sum(-1), dim=3)(torch.zeros(5, 3)).shape
    torch.Size([5])
    >>> as_target(gauss, dim=2)
    Traceback (most recent call last):
    ...
    ValueError: dim=2 but the target has dimension 3

    References: see the module docstring.
    """
    if isinstance(target, TargetDensity):
        if dim is not None and _check_int(dim, "dim", 1) != target.dim:
            raise ValueError(f"dim={dim} but the target has dimension {target.dim}")
        asked = _check_device(device)
        if asked is not None:
            if target.device is not None and not _same_device(asked, target.device):
                raise ValueError(
                    f"the target lives on {target.device} but device={str(asked)!r} was asked for"
                )
            target.device = target.device or asked
        if dtype is not None and target.dtype is None:
            target.dtype = dtype
        return target
    return TargetDensity(target, dim, device=device, dtype=dtype)


def _numpy(t: Tensor) -> np.ndarray:
    return t.detach().cpu().numpy()


@dataclass
class SampleResult:
    r"""Draws and costs of one sampling run, shared by all methods of :mod:`pyro_flows.infer`.

    .. math::

        \texttt{samples}[c, n] \approx z^{(c)}_n \sim p, \qquad
        \text{cost} = (\texttt{wall\_time}, \#\log p, \#\nabla\log p).

    :ivar method: ``"mh"``, ``"mala"``, ``"ula"``, ``"nuts"``, ``"hmc"`` or ``"is"``.
    :ivar samples: draws of shape ``(num_chains, num_draws, dim)`` (unconstrained for a Pyro
        model; importance sampling: one chain of resampled, equally weighted draws, or of the
        raw proposal draws with ``resample=False``).
    :ivar wall_time: seconds, ``time.perf_counter``, warm-up and initialisation included.
    :ivar num_log_prob_evals: points at which the target's log density was evaluated.
    :ivar num_grad_evals: points at which its gradient was evaluated (0 for IS, and for MH
        apart from the mode search of its default start: ``extra["init_search_grad_evals"]``).
    :ivar divergences: divergent transitions after warm-up (NUTS/HMC), else ``None``.
    :ivar accept_rate: fraction of accepted proposals after warm-up (MH, MALA, HMC; NUTS: the
        mean tree acceptance probability), else ``None``.
    :ivar step_size: the frozen step size per chain, shape ``(num_chains,)``, or ``None``.
    :ivar log_weights: importance sampling's log weights of the proposal draws, shape ``(n,)``.
    :ivar extra: method-specific arrays and numbers: ``log_prob`` and ``accept_prob``
        (``(chains, draws)``), ``diverging``, ``num_steps``; IS: ``log_Z_hat``,
        ``log_Z_stderr``, ``ess``, ``ess_fraction``, ``khat``, ``elbo``,
        ``proposal_samples``; a Pyro model: ``constrained`` (site -> ``(chains, draws,
        *shape)``) and ``sites`` (site -> shape); the target's known ``target_mean``,
        ``target_std``, ``target_log_Z``; the MCMC samplers' starts: ``init``, ``init_modes``,
        ``init_mode_of_chain`` or ``init_fallback``, ``init_search_*``
        (:meth:`TargetDensity.start_facts`).

    Example:

    >>> import torch
    >>> r = SampleResult("mh", torch.zeros(2, 10, 3), wall_time=0.1, num_log_prob_evals=20,
    ...                  num_grad_evals=0, accept_rate=0.3)
    >>> r.num_chains, r.num_draws, r.dim
    (2, 10, 3)
    >>> idata = r.to_inference_data()
    >>> dict(idata.posterior["z"].sizes)
    {'chain': 2, 'draw': 10, 'z_dim': 3}

    References:

    - R. Kumar et al. *ArviZ a unified library for exploratory analysis of Bayesian models in
      Python.* JOSS 4(33), 2019.
    """

    method: str
    samples: Tensor
    wall_time: float
    num_log_prob_evals: int
    num_grad_evals: int
    divergences: int | None = None
    accept_rate: float | None = None
    step_size: Tensor | None = None
    log_weights: Tensor | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.samples, Tensor) or self.samples.dim() != 3:
            shape = tuple(self.samples.shape) if isinstance(self.samples, Tensor) else None
            raise ValueError(
                "samples must be a tensor of shape (num_chains, num_draws, dim), got "
                f"{shape if shape is not None else type(self.samples).__name__}"
            )

    @property
    def num_chains(self) -> int:
        """Number of chains."""
        return int(self.samples.shape[0])

    @property
    def num_draws(self) -> int:
        """Draws per chain (after warm-up)."""
        return int(self.samples.shape[1])

    @property
    def dim(self) -> int:
        """Event size of the (flattened, unconstrained) draws."""
        return int(self.samples.shape[2])

    def _sample_stats(self) -> dict[str, np.ndarray]:
        shape = (self.num_chains, self.num_draws)
        stats: dict[str, np.ndarray] = {}
        names = {
            "log_prob": "lp",
            "accept_prob": "acceptance_rate",
            "diverging": "diverging",
            "num_steps": "n_steps",
        }
        for key, name in names.items():
            value = self.extra.get(key)
            if isinstance(value, Tensor) and tuple(value.shape) == shape:
                stats[name] = _numpy(value)
        if isinstance(self.step_size, Tensor) and self.step_size.shape == (self.num_chains,):
            stats["step_size"] = _numpy(self.step_size[:, None].expand(shape))
        if self.log_weights is not None and not self.extra.get("resampled", True):
            stats["log_weight"] = _numpy(self.log_weights.reshape(shape))
        return stats

    def to_inference_data(self, var_name: str = "z") -> Any:
        """An ArviZ ``InferenceData``: ``posterior`` with dims ``(chain, draw, <var>_dim)`` (or
        one variable per site of a Pyro model, constrained) and, where recorded,
        ``sample_stats`` (``lp``, ``acceptance_rate``, ``diverging``, ``n_steps``,
        ``step_size``, ``log_weight``); the costs go into the attributes (of the
        ``InferenceData`` and of its ``posterior`` group)."""
        az = _arviz()
        constrained = self.extra.get("constrained")
        if isinstance(constrained, dict) and constrained:
            posterior = {k: _numpy(v) for k, v in constrained.items()}
            dims, coords = None, None
        else:
            posterior = {var_name: _numpy(self.samples)}
            dims = {var_name: [f"{var_name}_dim"]}
            coords = {f"{var_name}_dim": np.arange(self.dim)}
        attrs: dict[str, Any] = {
            "method": self.method,
            "wall_time": float(self.wall_time),
            "num_log_prob_evals": int(self.num_log_prob_evals),
            "num_grad_evals": int(self.num_grad_evals),
            "inference_library": "pyro_flows",
        }
        if self.divergences is not None:
            attrs["divergences"] = int(self.divergences)
        if self.accept_rate is not None:
            attrs["accept_rate"] = float(self.accept_rate)
        for key in ("log_Z_hat", "log_Z_stderr", "ess", "ess_fraction", "khat", "elbo"):
            if key in self.extra:
                attrs[key] = float(self.extra[key])
        stats = self._sample_stats()
        idata = az.from_dict(
            posterior=posterior,
            sample_stats=stats or None,
            coords=coords,
            dims=dims,
            attrs=attrs,
        )
        idata.posterior.attrs.update(attrs)  # where ArviZ's converters put them
        return idata

    def _moments(self, reference: Any) -> dict[str, Any]:
        if self.log_weights is not None and "proposal_samples" in self.extra:
            draws, lw = self.extra["proposal_samples"], self.log_weights
        else:
            draws, lw = self.samples, None
        if reference is None:
            mean, std = self.extra.get("target_mean"), self.extra.get("target_std")
            if mean is None or std is None:
                return {}
            return moment_errors(draws, mean, std, log_weights=lw)
        if isinstance(reference, Tensor | np.ndarray):
            return reference_moment_errors(draws, reference, log_weights=lw)
        if isinstance(reference, dict):
            mean, std = reference.get("mean"), reference.get("std")
        elif hasattr(reference, "log_prob"):
            facts = as_target(reference, dim=self.dim)
            mean, std = facts.mean, facts.std
        else:
            mean, std = getattr(reference, "mean", None), getattr(reference, "std", None)
        if mean is None or std is None:
            raise ValueError(
                "reference must be reference draws (a tensor of shape (..., dim)), a dict with "
                "'mean' and 'std', or a target that knows its mean and std; got "
                f"{type(reference).__name__} without them"
            )
        return moment_errors(draws, mean, std, log_weights=lw)

    def diagnostics(self, reference: Any = None) -> dict[str, Any]:
        """Costs, sampler statistics, ESS/R-hat (MCMC) or log Z/ESS/k-hat (IS), and moment
        errors against ``reference`` (draws, a ``{"mean", "std"}`` dict or a target; default:
        the moments the sampled target knows, if any).

        The common keys ``ess``, ``ess_per_second`` and ``ess_per_grad`` use the minimum bulk
        ESS over coordinates for MCMC and Kish's ESS for importance sampling."""
        out: dict[str, Any] = {
            "method": self.method,
            "num_chains": self.num_chains,
            "num_draws": self.num_draws,
            "wall_time": float(self.wall_time),
            "num_log_prob_evals": int(self.num_log_prob_evals),
            "num_grad_evals": int(self.num_grad_evals),
            "divergences": self.divergences,
            "accept_rate": self.accept_rate,
        }
        if self.log_weights is not None:
            for key in ("log_Z_hat", "log_Z_stderr", "log_Z", "log_Z_error", "elbo", "kl_q_p"):
                if key in self.extra:
                    out[key] = self.extra[key]
            ess = float(self.extra.get("ess", math.nan))
            out.update(
                ess=ess,
                ess_fraction=self.extra.get("ess_fraction"),
                khat=self.extra.get("khat"),
                ess_per_second=ess / self.wall_time if self.wall_time > 0 else None,
                ess_per_grad=ess / self.num_grad_evals if self.num_grad_evals else None,
            )
        elif self.num_draws >= 4:
            mc = mcmc_diagnostics(
                self.samples, wall_time=self.wall_time, num_grad_evals=self.num_grad_evals
            )
            out.update(mc)
            out["ess"] = mc["ess_bulk_min"]
        out.update(self._moments(reference))
        return out
