r"""What every sampler returns (:class:`SampleResult`) and how it sees a target
(:class:`TargetDensity`).

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
event shape ``(dim,)``), or a plain callable ``log_prob(z)`` together with ``dim=``.

References:

- R. Kumar, C. Carroll, A. Hartikainen, O. Martin. *ArviZ a unified library for exploratory
  analysis of Bayesian models in Python.* JOSS 4(33), 2019.
- M. D. Hoffman et al. *NeuTra-lizing Bad Geometry in Hamiltonian Monte Carlo Using Neural
  Transport.* 2019 (cost per gradient evaluation as the unit of comparison).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor

from .diagnostics import (
    _arviz,
    mcmc_diagnostics,
    moment_errors,
    reference_moment_errors,
)

__all__ = ["SampleResult", "TargetDensity"]


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


class TargetDensity:
    r"""A target as the samplers see it: a log density with checked shapes and counted calls.

    .. math::

        z \in \mathbb R^{\ldots \times D} \mapsto \log \tilde p(z) \in \mathbb R^{\ldots},
        \qquad \tilde p = Z\, p.

    Every call checks that ``log_prob`` returned a tensor of shape ``z.shape[:-1]`` and counts
    the points evaluated (:attr:`num_log_prob_evals`) and the points whose gradient was taken
    (:attr:`num_grad_evals`), so a batched call over :math:`C` chains counts :math:`C`.

    :param target: an object with ``log_prob(z)`` (a :mod:`pyro_flows.targets` target, a
        ``torch.distributions`` distribution with event shape ``(dim,)``, a
        :class:`~pyro_flows.Flow`) or a callable ``log_prob(z)``.
    :param dim: the event size :math:`D`; required for a plain callable, checked against the
        target's own ``dim`` / ``input_dim`` / ``event_shape`` otherwise.

    Attributes ``log_Z``, ``mean``, ``std`` hold what the target knows (``None`` otherwise;
    a normalised distribution has ``log_Z = 0``).

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

    def __init__(self, target: Any, dim: int | None = None) -> None:
        log_prob = getattr(target, "log_prob", None)
        if callable(log_prob):
            self.fn: Callable[[Tensor], Tensor] = log_prob
            self.target: Any = target
        elif callable(target):
            self.fn, self.target = target, None
        else:
            raise TypeError(
                "target must be an object with a log_prob(z) method or a callable "
                f"log_prob(z), got {type(target).__name__}"
            )
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
        obj = self.target
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
        t = torch.as_tensor(value, dtype=torch.float64).detach().reshape(-1)
        if t.numel() == 1:
            t = t.expand(self.dim).clone()
        if t.numel() != self.dim:
            raise ValueError(
                f"the target's {name} has {t.numel()} entries, expected dim={self.dim}"
            )
        return t

    def __call__(self, z: Tensor) -> Tensor:
        """``log_prob(z)``, checked to be a tensor of shape ``z.shape[:-1]``."""
        out = self.fn(z)
        if not isinstance(out, Tensor):
            raise TypeError(
                f"the target's log_prob must return a torch.Tensor, got {type(out).__name__}"
            )
        expected = z.shape[:-1]
        if out.shape != expected:
            raise ValueError(
                f"the target's log_prob must return shape z.shape[:-1] = {tuple(expected)} "
                f"for z of shape {tuple(z.shape)}, got shape {tuple(out.shape)}"
            )
        self.num_log_prob_evals += expected.numel()
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

    def initial_points(
        self,
        num_chains: int,
        init: Tensor | None,
        generator: torch.Generator,
        *,
        dtype: torch.dtype | None = None,
        radius: float = 2.0,
        max_tries: int = 100,
    ) -> tuple[Tensor, Tensor]:
        r"""Starting points ``(num_chains, dim)`` and their log densities.

        ``init`` of shape ``(dim,)`` (shared) or ``(num_chains, dim)`` is used as given (its
        dtype is the draws' dtype);
        ``None`` draws :math:`z_0 = c + U(-r, r)^D` per chain around the target's
        ``initial_params()["z"]`` (or the origin), redrawing chains with a non-finite
        log density up to ``max_tries`` times (Stan's convention, :math:`r = 2`), in the
        dtype the target's ``log_prob`` returns (at least torch's default dtype).

        :raises ValueError: when a start has a non-finite log density, naming the chains.
        """
        if dtype is None and isinstance(init, Tensor) and init.is_floating_point():
            dtype = init.dtype
        if init is not None:
            dtype = dtype or torch.get_default_dtype()
            z = torch.as_tensor(init, dtype=dtype)
            if z.shape == (self.dim,):
                z = z.expand(num_chains, self.dim).clone()
            if z.shape != (num_chains, self.dim):
                raise ValueError(
                    f"init must have shape ({self.dim},) or (num_chains, dim) = "
                    f"({num_chains}, {self.dim}), got {tuple(z.shape)}"
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
        if dtype is None:  # the precision the target computes in (float64 targets -> float64)
            with torch.no_grad():
                out = self(torch.zeros(1, self.dim))
            dtype = torch.promote_types(torch.get_default_dtype(), out.dtype)
        center = torch.zeros(self.dim, dtype=dtype)
        initial_params = getattr(self.target, "initial_params", None)
        if callable(initial_params):
            found = initial_params()
            if isinstance(found, dict):
                found = found.get("z")
            if found is not None:
                found = torch.as_tensor(found, dtype=dtype).detach()
                if found.shape[-1:] != (self.dim,):
                    raise ValueError(
                        f"the target's initial_params() must give z of shape (..., {self.dim}), "
                        f"got {tuple(found.shape)}"
                    )
                center = found.reshape(-1, self.dim)[0]
        z = torch.empty(num_chains, self.dim, dtype=dtype)
        lp = torch.full((num_chains,), -math.inf, dtype=dtype)
        todo = torch.ones(num_chains, dtype=torch.bool)
        for _ in range(max_tries):
            n = int(todo.sum())
            u = torch.rand(n, self.dim, generator=generator, dtype=dtype)
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
    :ivar num_grad_evals: points at which its gradient was evaluated (0 for MH and IS).
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
        ``target_std``, ``target_log_Z``.

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
            facts = TargetDensity(reference, dim=self.dim)
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
