r"""Fifteen real posteriors from posteriordb as faithful Pyro models, with the summaries of
posteriordb's reference draws to check samplers and guides against.

Each posterior is a :class:`PosteriorSpec` in :data:`POSTERIORS` (load one with
:func:`load_posterior`): ``spec.model`` is a Pyro model without arguments that translates the
Stan program ``spec.stan_code`` line by line (same priors and constraints, Stan's implicit flat
priors as ``ImproperUniform`` sites, ``target +=`` as ``pyro.factor``, site names = Stan's
parameter names), with the vendored data bound as tensors of torch's default dtype. Its log
joint is Stan's log density up to a constant:

.. math::

    \log p(\theta, y) = \log p(\theta) + \log p(y \mid \theta) + \text{const}.

:func:`reference_errors` compares draws (an MCMC run, a guide's samples) with the reference:
per element the mean error in reference sds and the sd ratio. The families: linear
regressions (:mod:`.regression`), ARMA(1, 1) (:mod:`.arma`), a Gaussian process
(:mod:`.gp`), two ODE models (:mod:`.lotka_volterra`, :mod:`.pharmacokinetics`, integrated by
:func:`~.ode.rk4`) and a hidden Markov model (:mod:`.hmm`). Data and reference files: BSD-3
licence of posteriordb (``data/README.md``).

Example:

>>> import pyro
>>> from pyro.infer.autoguide.initialization import InitMessenger
>>> spec = load_posterior("kidiq-kidscore_momiq")
>>> pyro.set_rng_seed(0)
>>> model = InitMessenger(init_to_unconstrained_uniform)(spec.model)
>>> trace = pyro.poutine.trace(model).get_trace()
>>> bool(torch.isfinite(trace.log_prob_sum()))
True

References:

- M. Magnusson, J. Torgander, P.-C. Bürkner, L. Zhang, B. Carpenter, A. Vehtari.
  *posteriordb: Testing, benchmarking and developing Bayesian inference algorithms.*
  arXiv:2407.04967, 2024 (https://github.com/stan-dev/posteriordb, BSD-3-Clause).
"""

from .common import flat, init_to_unconstrained_uniform
from .ode import rk4
from .registry import POSTERIORS, load_posterior, reference_errors
from .spec import DATA_DIR, PosteriorSpec, parse_element

__all__ = [
    "DATA_DIR",
    "POSTERIORS",
    "PosteriorSpec",
    "flat",
    "init_to_unconstrained_uniform",
    "load_posterior",
    "parse_element",
    "reference_errors",
    "rk4",
]
