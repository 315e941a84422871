r"""The one adapter through which every consumer reads "a target": :func:`as_target` and the
:class:`TargetDensity` it returns.

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

Starting points for MCMC chains (:meth:`TargetDensity.initial_points`) are drawn by
:mod:`pyro_flows.infer.chain_starts` (over-dispersed around the target's modes by default).

Example:

>>> import torch
>>> density = as_target(lambda z: -0.5 * (z**2).sum(-1), dim=2)
>>> density(torch.ones(3, 2)).tolist(), density.num_log_prob_evals, density.device
([-1.0, -1.0, -1.0], 3, None)

References:

- A. Gelman, D. B. Rubin. *Inference from iterative simulation using multiple sequences.*
  Statistical Science 7(4), 1992 (over-dispersed starts, :meth:`TargetDensity.initial_points`).
- PyTorch documentation, ``torch.distributions`` (the ``log_prob`` / ``event_shape``
  protocol a target may follow). https://pytorch.org/docs/stable/distributions.html
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from ..targets.base import _same_device
from . import chain_starts
from ._device_and_rng import (
    DeviceLike,
    _check_device,
    _check_int,
    _fact,
    _stated_device_and_dtype,
)

__all__ = [
    "TargetDensity",
    "TargetOutputError",
    "TargetOutputTypeError",
    "as_target",
    "target_dim",
]


class TargetOutputError(ValueError):
    """A target's ``log_prob`` failed on its first evaluation, returned something other than a
    tensor of real log densities of shape ``z.shape[:-1]``, or was given points on another device
    than the one it lives on. Not-a-tensor and non-real outputs raise
    :class:`TargetOutputTypeError`, which is also a ``TypeError``;
    :func:`~pyro_flows.infer.fit_target.fit_target` raises its subclass
    :class:`~pyro_flows.infer.fit_target.TargetError` (for non-finite values too)."""


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
        return chain_starts._initial_dtype(self, device)

    def _center(self, dtype: torch.dtype, device: torch.device) -> Tensor:
        """The target's ``initial_params()["z"]`` (its first row), else the origin."""
        return chain_starts._center(self, dtype, device)

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
          half-nat scale per coordinate (Gelman & Rubin, 1992; see
          :mod:`pyro_flows.infer.chain_starts` for the search, the scales and when it falls back
          to ``"uniform"``). The search is seeded from ``generator``'s seed, draws nothing from
          it and leaves torch's global RNG as it was; only the jitter is drawn from
          ``generator``.
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
        if isinstance(init, str) and init not in chain_starts.INIT_STRATEGIES:
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
            return chain_starts._given_initial_points(self, num_chains, init, dtype, device)
        dtype = dtype or self._initial_dtype(device)
        center = self._center(dtype, device)
        if init == "uniform":
            self.start = {"init": "uniform"}
        else:
            found = chain_starts._mode_starts(
                self, num_chains, generator, center, radius, max_tries
            )
            if isinstance(found, tuple):
                return found
            self.start.update(init="uniform", init_fallback=found)
        return chain_starts._uniform_points(self, num_chains, generator, center, radius, max_tries)

    def start_facts(self) -> dict[str, Any]:
        """What :meth:`initial_points` did last, for a result's ``extra``: ``init`` (``"given"``,
        ``"uniform"`` or ``"modes"``) and, after a search, ``init_search_log_prob_evals``,
        ``init_search_grad_evals``, ``init_search_seconds`` and either ``init_modes``
        ``(K, D)`` (the maxima given chains, heaviest first) with ``init_mode_of_chain``
        ``(num_chains,)``, or ``init_fallback`` (why Stan's uniform draw was used instead)."""
        return dict(self.start)


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
