r"""Diagnostics for samplers and flows, as pure functions with known answers, gathered here from
the modules that hold them, one idea per module (the maths and the references are in each
module's docstring):

- :mod:`pyro_flows.infer.importance_weights`: importance weights, :math:`\log\hat Z`, Kish's
  ESS and the PSIS :math:`\hat k` (:func:`log_mean_exp`, :func:`importance_log_Z`,
  :func:`ess_fraction`, :func:`psis_khat`, :func:`guide_psis_khat`);
- :mod:`pyro_flows.infer.chain_diagnostics`: MCMC bulk and tail ESS, rank-normalised
  :math:`\hat R`, ESS per second and per gradient (:func:`mcmc_diagnostics`);
- :mod:`pyro_flows.infer.moments`: errors of estimated means and standard deviations
  (:func:`moment_errors`, :func:`reference_moment_errors`);
- :mod:`pyro_flows.infer.importance`: :func:`flow_diagnostics` (importance sampling with the
  flow as the proposal, summarised).

Example:

>>> ess_fraction([0.0, 0.0, 0.0, 0.0])
1.0
"""

from __future__ import annotations

# private helpers re-exported for the code and tests that import them from here
from ._diagnostic_inputs import _arviz as _arviz
from ._diagnostic_inputs import _as_tensor as _as_tensor
from .chain_diagnostics import _chains_draws_dim as _chains_draws_dim
from .chain_diagnostics import mcmc_diagnostics
from .importance import flow_diagnostics
from .importance_weights import _EQUAL_ULPS as _EQUAL_ULPS
from .importance_weights import _log_weights as _log_weights
from .importance_weights import _max_plate_nesting as _max_plate_nesting
from .importance_weights import (
    ess_fraction,
    guide_psis_khat,
    importance_log_Z,
    log_mean_exp,
    psis_khat,
)
from .moments import _flat_draws as _flat_draws
from .moments import _vector as _vector
from .moments import _weighted_moments as _weighted_moments
from .moments import moment_errors, reference_moment_errors

__all__ = [
    "ess_fraction",
    "flow_diagnostics",
    "guide_psis_khat",
    "importance_log_Z",
    "log_mean_exp",
    "mcmc_diagnostics",
    "moment_errors",
    "psis_khat",
    "reference_moment_errors",
]
