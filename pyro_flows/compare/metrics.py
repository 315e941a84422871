r"""One row of the comparison table per method: costs, mixing, accuracy, and the flow's fit.

How each column is computed (``-`` where it does not apply):

=====================  ==========================================================================
column                 definition
=====================  ==========================================================================
wall s                 seconds of the run; the flow-based methods include the training
grad evals             target gradients :math:`\#\nabla\log\tilde p`; the flow-based methods include
                       ``steps * batch_size`` of training; MH and IS take none
ESS bulk (min)         MCMC: :math:`\min_d` rank-normalised bulk ESS (ArviZ, Vehtari et al. 2021);
                       ``is``/``ais``: Kish's :math:`(\sum w)^2/\sum w^2`; ``flow``: ``-``
ESS tail (min)         MCMC: :math:`\min_d` tail ESS; else ``-``
ESS/s, ESS/grad        ESS bulk divided by wall s and by grad evals
R-hat max              :math:`\max_d` rank-normalised split :math:`\hat R` (MCMC with
                       :math:`\ge 2` chains)
divergences            NUTS and NeuTra divergent transitions after warm-up
max \|mean err\|       :math:`\max_d |\hat\mu_d - \mu_d| / \sigma_d` against the exact moments
max sd rel err         :math:`\max_d |\hat\sigma_d/\sigma_d - 1|`
log Z hat, log Z err   ``flow``/``is``/``ais``: :math:`\log\frac1n\sum_i w_i`, minus the exact
                       :math:`\log Z` (``ais``: the AIS weights of its particles)
log Z - ELBO           ``flow``/``is``: :math:`\log Z - \frac1n\sum_i\log w_i \approx
                       \mathrm{KL}(q\,\|\,p)`
IS ESS frac            ``flow``/``is``/``ais``: :math:`(\sum_i w_i)^2 / (n\sum_i w_i^2)`
k-hat                  ``flow``/``is``/``ais``: PSIS :math:`\hat k` of the weights (Vehtari et al.)
=====================  ==========================================================================

with :math:`w_i = \tilde p(x_i)/q(x_i)`, :math:`x_i \sim q` the trained flow. The moments of
``flow`` are those of :math:`q` itself (its bias shows), those of ``is`` are self-normalised
importance estimates (:math:`\sum_i \bar w_i f(x_i)`), ``ais`` the same with its final
particles and AIS weights, those of MCMC pool all chains. Every row keeps the standard error of
its :math:`\log\hat Z` (``log_Z_stderr``, not a column: the cross-check of
:func:`~pyro_flows.compare.checks.run_alerts` uses it). For a mixture target every row also gets
the mass per mode, :meth:`~pyro_flows.targets.GaussianMixture.mode_masses` of its draws
(``is``/``ais``: weighted); for the many-well target the mass of the right well of every pair
(``well_masses``) and the number of distinct modes among the draws (``modes_visited``).

References:

- A. Vehtari, A. Gelman, D. Simpson, B. Carpenter, P.-C. Bürkner. *Rank-normalization,
  folding, and localization: An improved R-hat for assessing convergence of MCMC.* Bayesian
  Analysis 16, 2021. https://arxiv.org/abs/1903.08008
- A. Vehtari, D. Simpson, A. Gelman, Y. Yao, J. Gabry. *Pareto Smoothed Importance Sampling.*
  JMLR 25, 2024. https://arxiv.org/abs/1507.02646
- L. Kish. *Survey Sampling.* Wiley, 1965.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch

from ..infer import mcmc_diagnostics, moment_errors
from ..targets import Target
from .methods import MethodRun

__all__ = ["Row", "row_for"]


@dataclass
class Row:
    r"""The numbers of one method on one target (``None`` where a column does not apply).

    See the module docstring for how each is computed; :func:`row_for` fills it from a
    :class:`~pyro_flows.compare.methods.MethodRun`.

    .. math::

        \text{ESS/grad} = \frac{\mathrm{ESS}}{\#\nabla\log\tilde p}, \qquad
        \text{log Z - ELBO} = \log Z - \frac1n\sum_i \log w_i.

    Example:

    >>> row = Row("nuts", wall_time=2.0, grad_evals=1000, ess_bulk=50.0)
    >>> row.ess_bulk / row.wall_time, row.as_dict()["khat"]
    (25.0, None)

    References: Vehtari et al., 2021 (see the module docstring).
    """

    method: str
    wall_time: float
    grad_evals: int
    ess_bulk: float | None = None
    ess_tail: float | None = None
    ess_per_second: float | None = None
    ess_per_grad: float | None = None
    rhat: float | None = None
    divergences: int | None = None
    mean_error: float | None = None
    sd_error: float | None = None
    log_Z_hat: float | None = None
    log_Z_error: float | None = None
    kl: float | None = None
    ess_fraction: float | None = None
    khat: float | None = None
    mode_masses: list[float] | None = None
    log_Z_stderr: float | None = None
    well_masses: list[float] | None = None
    modes_visited: int | None = None
    num_draws: int | None = None

    def as_dict(self) -> dict[str, Any]:
        """The row as a plain dict (for JSON)."""
        return asdict(self)


def _weighted(run: MethodRun) -> bool:
    return run.kind in ("is", "ais") and run.proposal is not None and run.log_weights is not None


def _mode_masses(run: MethodRun, target: Target) -> list[float] | None:
    masses = getattr(target, "mode_masses", None)
    if getattr(target, "modes", None) is None or not callable(masses):
        return None
    if _weighted(run):
        assert run.log_weights is not None and run.proposal is not None
        lw = run.log_weights.to(torch.float64)
        w = torch.exp(lw - lw.max())
        return [float(m) for m in masses(run.proposal.to(target.modes), weights=w)]
    draws = run.samples.reshape(-1, run.samples.shape[-1]).to(target.modes)
    return [float(m) for m in masses(draws)]


def row_for(run: MethodRun, target: Target) -> Row:
    r"""The table row of ``run`` on ``target`` (see the module docstring for each column).

    Example:

    >>> from dataclasses import replace
    >>> from pyro_flows.compare.methods import run_method
    >>> from pyro_flows.compare.settings import SamplerSettings, settings_for
    >>> from pyro_flows.targets import get_target
    >>> target = get_target("banana")
    >>> s = replace(settings_for("banana", quick=True), mh=SamplerSettings(200, 200, 2))
    >>> row = row_for(run_method("mh", target, s, progress=False, seed=0), target)
    >>> row.ess_per_grad > 0, row.rhat > 1.0, row.khat is None  # gradients: the start's search
    (True, True, True)

    References: Vehtari et al., 2021; Kish, 1965 (see the module docstring).
    """
    row = Row(run.method, wall_time=float(run.wall_time), grad_evals=int(run.grad_evals))
    if run.kind == "mcmc":
        d = mcmc_diagnostics(run.samples)
        row.ess_bulk, row.ess_tail = d["ess_bulk_min"], d["ess_tail_min"]
        # one chain: no R-hat (-); several chains: the value, nan included (constant chains)
        row.rhat = float(d["rhat_max"]) if run.samples.shape[0] >= 2 else None
        row.divergences = run.divergences
    elif run.kind in ("is", "ais"):
        row.ess_bulk = run.stats["ess"]
    if row.ess_bulk is not None:
        row.ess_per_second = row.ess_bulk / row.wall_time if row.wall_time > 0 else None
        row.ess_per_grad = row.ess_bulk / row.grad_evals if row.grad_evals > 0 else None
    if run.kind in ("flow", "is", "ais"):
        row.log_Z_hat = run.stats["log_Z_hat"]
        row.log_Z_stderr = run.stats.get("log_Z_stderr")
        row.ess_fraction = run.stats["ess_fraction"]
        row.khat = run.stats["khat"]
        if target.log_Z is not None:
            row.log_Z_error = row.log_Z_hat - target.log_Z
            if "elbo" in run.stats:  # not for ais: its mean log weight is no ELBO of q
                row.kl = target.log_Z - run.stats["elbo"]
    if target.mean is not None and target.std is not None:
        if _weighted(run):
            draws, lw = run.proposal, run.log_weights
        else:
            draws, lw = run.samples, None
        e = moment_errors(draws, target.mean, target.std, log_weights=lw)  # type: ignore[arg-type]
        row.mean_error, row.sd_error = e["mean_error_max"], e["std_error_max"]
    row.mode_masses = _mode_masses(run, target)
    _well_masses(row, run, target)
    return row


def _well_masses(row: Row, run: MethodRun, target: Target) -> None:
    """Many-well targets: mass of the right well per pair, modes visited, draws behind them."""
    if not (callable(getattr(target, "wells", None)) and hasattr(target, "well_masses")):
        return
    if _weighted(run):
        assert run.log_weights is not None and run.proposal is not None
        lw = run.log_weights.to(torch.float64)
        w = torch.exp(lw - lw.max())
        draws = run.proposal.to(target.well_masses.device)
        masses = target.mode_masses(draws, weights=w)  # type: ignore[operator]
        # the modes of the resampled particles: those a weighted sample actually carries
        visited = run.samples.reshape(-1, run.samples.shape[-1])
    else:
        visited = run.samples.reshape(-1, run.samples.shape[-1])
        masses = target.mode_masses(visited.to(target.well_masses.device))  # type: ignore[operator]
    row.well_masses = [float(m) for m in masses[:, 1]]
    row.modes_visited = int(target.modes_visited(visited.to(target.well_masses.device)))  # type: ignore[operator]
    row.num_draws = int(visited.shape[0])
