r"""Diagnostics for samplers and flows, as pure functions with known answers.

**Importance sampling** with a proposal :math:`q` (a flow, a guide) and an unnormalised target
:math:`\tilde p = Z p` uses the log weights :math:`\log w_i = \log\tilde p(x_i) - \log q(x_i)`,
:math:`x_i \sim q`:

.. math::

    \hat Z = \frac1n \sum_{i=1}^n w_i, \qquad
    \operatorname{se}(\log \hat Z) \approx \frac{\operatorname{sd}(w)}{\sqrt n\, \bar w}
    \ \text{(delta method)}, \qquad
    \mathrm{ELBO} = \frac1n \sum_i \log w_i \le \log Z,

    \mathrm{ESS} = \frac{(\sum_i w_i)^2}{\sum_i w_i^2} \ \text{(Kish)}, \qquad
    \log Z - \mathrm{ELBO} \to \mathrm{KL}(q \,\|\, p).

The Pareto :math:`\hat k` of the largest weights (PSIS, Vehtari et al.) says whether the weights
have a finite variance: :math:`\hat k < 0.5` good, :math:`0.5`-:math:`0.7` usable, :math:`> 0.7`
unreliable (Yao et al., 2018).

**MCMC**: bulk and tail effective sample sizes and the rank-normalised split :math:`\hat R` of
Vehtari et al. (2021), computed by ArviZ; ESS per second and per gradient evaluation.

**Moments**: errors of estimated means (in units of the true standard deviation) and relative
errors of standard deviations, against known moments or reference draws.

ArviZ is imported on first use (it takes a second or two to import). Inputs on any device (a
GPU's draws or log weights) are copied to the CPU, where the summaries are computed.

This module gathers them from where they live, one idea per module:

- :mod:`pyro_flows.infer.importance_weights`: :func:`log_mean_exp`, :func:`importance_log_Z`,
  :func:`ess_fraction`, :func:`psis_khat`, :func:`guide_psis_khat`;
- :mod:`pyro_flows.infer.chain_diagnostics`: :func:`mcmc_diagnostics`;
- :mod:`pyro_flows.infer.moments`: :func:`moment_errors`, :func:`reference_moment_errors`;
- :mod:`pyro_flows.infer.importance`: :func:`flow_diagnostics` (importance sampling with the
  flow as the proposal, summarised).

Example:

>>> ess_fraction([0.0, 0.0, 0.0, 0.0])
1.0

References:

- A. Vehtari, D. Simpson, A. Gelman, Y. Yao, J. Gabry. *Pareto Smoothed Importance Sampling.*
  JMLR 25, 2024. https://arxiv.org/abs/1507.02646
- Y. Yao, A. Vehtari, D. Simpson, A. Gelman. *Yes, but Did It Work?: Evaluating Variational
  Inference.* ICML 2018. https://arxiv.org/abs/1802.02538
- A. Vehtari, A. Gelman, D. Simpson, B. Carpenter, P.-C. Bürkner. *Rank-normalization,
  folding, and localization: An improved R-hat for assessing convergence of MCMC.* Bayesian
  Analysis 16, 2021. https://arxiv.org/abs/1903.08008
- L. Kish. *Survey Sampling.* Wiley, 1965 (effective sample size of weighted samples).
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
from .importance_weights import _pyro_khat as _pyro_khat
from .importance_weights import _sequential_log_weights as _sequential_log_weights
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
