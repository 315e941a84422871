r"""What every sampler returns: :class:`SampleResult`.

All samplers of :mod:`pyro_flows.infer` (random-walk Metropolis, MALA, ULA, NUTS, HMC, importance
sampling) return the same :class:`SampleResult`: draws of shape ``(num_chains, num_draws, dim)``,
the wall time (warm-up included) and the cost in target evaluations, so that methods can be
compared on effective sample size per second and per gradient evaluation,

.. math::

    \frac{\mathrm{ESS}}{\text{seconds}}, \qquad \frac{\mathrm{ESS}}{\#\nabla \log p},

and an ArviZ ``InferenceData`` for ``az.summary`` and the ``az.plot_*`` functions.

How a sampler reads its target (:func:`as_target`, :class:`TargetDensity`,
:class:`TargetOutputError`) is in :mod:`pyro_flows.infer.target_density`, how it starts its
chains (``INIT_STRATEGIES``, ``START_MASS_NATS``) in :mod:`pyro_flows.infer.chain_starts`;
both are re-exported here, where they have always been importable from.

References:

- R. Kumar, C. Carroll, A. Hartikainen, O. Martin. *ArviZ a unified library for exploratory
  analysis of Bayesian models in Python.* JOSS 4(33), 2019.
- M. D. Hoffman et al. *NeuTra-lizing Bad Geometry in Hamiltonian Monte Carlo Using Neural
  Transport.* 2019 (cost per gradient evaluation as the unit of comparison).
- A. Vehtari, A. Gelman, D. Simpson, B. Carpenter, P.-C. Bürkner. *Rank-normalization,
  folding, and localization: an improved R-hat.* Bayesian Analysis 16(2), 2021.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from torch import Tensor

# the names below were defined here before the adapter and the starts got their own modules:
# they stay importable from here (``x as x`` marks them as re-exports)
from ..targets.base import _same_device as _same_device
from ._device_and_rng import DeviceLike as DeviceLike
from ._device_and_rng import _check_device as _check_device
from ._device_and_rng import _check_int as _check_int
from ._device_and_rng import _draw as _draw
from ._device_and_rng import _fact as _fact
from ._device_and_rng import _forked_rng as _forked_rng
from ._device_and_rng import _generator as _generator
from ._device_and_rng import _held_tensors as _held_tensors
from ._device_and_rng import _module_device_and_dtype as _module_device_and_dtype
from ._device_and_rng import _stated_device_and_dtype as _stated_device_and_dtype
from ._diagnostic_inputs import _arviz
from .chain_diagnostics import mcmc_diagnostics
from .chain_starts import INIT_STRATEGIES as INIT_STRATEGIES
from .chain_starts import START_MASS_NATS as START_MASS_NATS
from .chain_starts import _half_nat_scales as _half_nat_scales
from .mode_search import search_modes as search_modes
from .moments import moment_errors, reference_moment_errors
from .target_density import TargetDensity as TargetDensity
from .target_density import TargetOutputError as TargetOutputError
from .target_density import TargetOutputTypeError as TargetOutputTypeError
from .target_density import _log_prob_of as _log_prob_of
from .target_density import as_target
from .target_density import target_dim as target_dim

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
