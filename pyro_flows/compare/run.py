r"""``compare(target, methods)``: run the methods on a target, tabulate, check, write the report.

For a target :math:`\tilde p = Z p` of :data:`~pyro_flows.targets.TARGETS` each method
produces draws and a cost (:mod:`~pyro_flows.compare.methods`); each draw set becomes a row of
costs and errors against the exact facts of the target (:mod:`~pyro_flows.compare.metrics`),
for example

.. math::

    \frac{\mathrm{ESS}}{\#\nabla\log\tilde p}, \qquad
    \max_d \frac{|\hat\mu_d - \mu_d|}{\sigma_d}, \qquad \log Z - \mathrm{ELBO};

the rows are printed as a table (:mod:`~pyro_flows.compare.table`), held to the target's
requirements (:mod:`~pyro_flows.compare.checks`) and written with figures to a report folder
(:mod:`~pyro_flows.compare.report`).

References:

- M. D. Hoffman et al. *NeuTra-lizing Bad Geometry in Hamiltonian Monte Carlo Using Neural
  Transport.* 2019. https://arxiv.org/abs/1903.03704
- A. Vehtari et al. *Rank-normalization, folding, and localization: An improved R-hat.*
  Bayesian Analysis 16, 2021.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from pathlib import Path

# Comparison lives in .comparison (which report.py reads without importing this module); it and
# the names it used here stay importable from this module
from ..targets import TARGETS, get_target
from ..targets import Target as Target
from .checks import Alert, run_alerts, run_checks
from .checks import Check as Check
from .checks import format_alerts as format_alerts
from .checks import format_checks as format_checks
from .comparison import Comparison
from .methods import FLOW_ROWS, MethodRun, TrainedFlow, parse_methods, run_methods
from .metrics import Row as Row
from .metrics import row_for
from .report import check_report_folder, write_report
from .settings import TargetSettings, settings_for
from .table import format_table as format_table
from .table import markdown_table as markdown_table
from .table import mode_mass_table as mode_mass_table
from .table import well_mass_table as well_mass_table

__all__ = ["Comparison", "compare"]


def _missed_modes(trained: TrainedFlow | None, runs: dict[str, MethodRun]) -> list[Alert]:
    """The missed modes (fit_target's mode probe) of the shared trained flow and of
    ``flow_mcmc``'s own flow, as alerts."""
    histories = [("flow", "the trained flow", getattr(trained, "history", None))]
    histories += [
        (m, f"the flow of {m} (fit_target(method={fit!r}))", runs[m].history)
        for m, fit in FLOW_ROWS.items()
        if fit is not None and m in runs and runs[m].history is not histories[0][2]
    ]
    alerts = []
    for method, which, history in histories:
        missed = getattr(history, "missed_modes", None)
        if missed:
            alerts.append(Alert(
                "missed modes", (method,),
                f"{which} misses {len(missed)} mode(s) found by climbing the target from "
                f"over-dispersed points: {history.mode_check}",  # type: ignore[union-attr]
            ))
    return alerts


def compare(
    target: str,
    methods: str | Iterable[str] | None = None,
    *,
    quick: bool = False,
    seed: int = 0,
    out: str | Path | None = None,
    progress: bool = True,
    settings: TargetSettings | None = None,
    overwrite: bool = False,
) -> Comparison:
    r"""Run ``methods`` (default: the seven of the default set) on the target called
    ``target``, tabulate and check them, and write the report folder ``out`` (Markdown + PNGs +
    JSON) when given.

    :param target: a name of :data:`~pyro_flows.targets.TARGETS` (case-insensitive).
    :param methods: ``"flow,nuts"`` or a sequence of names from
        :data:`~pyro_flows.compare.methods.ALL_METHODS`; ``None``: the default set,
        :data:`~pyro_flows.compare.methods.METHODS` (all but ``flow_mcmc``).
    :param quick: the small ``--quick`` budget (CI).
    :param seed: seeds the flow's initialisation, its training and every sampler.
    :param out: report folder (created with its parents before anything runs), or ``None``
        for no report.
    :param overwrite: replace the report a previous run left in ``out``; without it such a
        folder is refused with a ``FileExistsError`` before anything runs.
    :param progress: progress bars (``False``: silent).
    :param settings: overrides the per-target defaults of
        :func:`~pyro_flows.compare.settings.settings_for`.
    :returns: a :class:`Comparison`.
    :raises ValueError: an unknown target or method, listing the valid names.
    :raises FileExistsError: ``out`` already holds a report and ``overwrite`` is ``False``.
    :raises NotADirectoryError: ``out``, or a folder above it, is a file (also before anything
        runs; ``PermissionError`` when it cannot be created or written).

    Example:

    >>> from dataclasses import replace
    >>> from pyro_flows.compare.settings import SamplerSettings, settings_for
    >>> s = replace(settings_for("banana", quick=True), mh=SamplerSettings(200, 200, 2))
    >>> c = compare("banana", "mh", settings=s, progress=False)
    >>> [r.method for r in c.rows], c.checks
    (['mh'], [])

    References: see the module docstring.
    """
    if not isinstance(target, str):
        raise TypeError(f"target must be a target name (str), got {type(target).__name__}")
    name = target.strip().lower()
    if name not in TARGETS:
        raise ValueError(f"unknown target {target!r}; valid targets: {', '.join(TARGETS)}")
    names = parse_methods(methods)
    if out is not None:
        check_report_folder(out, overwrite)  # before minutes of sampling, not after
    chosen = settings if settings is not None else settings_for(name, quick=quick)
    start = time.perf_counter()
    target_obj = get_target(name, **chosen.target_options)
    runs, trained = run_methods(target_obj, names, chosen, seed=seed, progress=progress)
    rows = [row_for(runs[m], target_obj) for m in names]
    weights = target_obj.true_mode_weights
    if weights is None:
        weights = getattr(target_obj, "well_masses", None)
    checks = run_checks(
        name, rows, None if weights is None else weights.tolist(), log_Z=target_obj.log_Z
    )
    result = Comparison(
        target_name=name,
        target=target_obj,
        methods=names,
        quick=quick,
        seed=seed,
        settings=chosen,
        runs=runs,
        rows=rows,
        checks=checks,
        trained=trained,
        wall_time=time.perf_counter() - start,
        alerts=run_alerts(rows) + _missed_modes(trained, runs),
    )
    if out is not None:
        write_report(result, out, overwrite=overwrite)
    return result
