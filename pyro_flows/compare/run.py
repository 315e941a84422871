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
from dataclasses import dataclass, field
from pathlib import Path

from ..targets import TARGETS, Target, get_target
from .checks import Alert, Check, format_alerts, format_checks, run_alerts, run_checks
from .methods import FLOW_ROWS, MethodRun, TrainedFlow, parse_methods, run_methods
from .metrics import Row, row_for
from .report import check_report_folder, write_report
from .settings import TargetSettings, settings_for
from .table import format_table, markdown_table, mode_mass_table, well_mass_table

__all__ = ["Comparison", "compare"]


@dataclass
class Comparison:
    r"""The outcome of :func:`compare`: runs, rows, checks and where the report went.

    :ivar target_name: the registry name (``"u1"``, ...).
    :ivar target: the :class:`~pyro_flows.targets.Target` object.
    :ivar methods: the methods run, in order.
    :ivar quick: whether the ``--quick`` budget was used.
    :ivar seed: the seed of every run.
    :ivar settings: the :class:`~pyro_flows.compare.settings.TargetSettings` used.
    :ivar runs: ``{method: MethodRun}``.
    :ivar rows: one :class:`~pyro_flows.compare.metrics.Row` per method.
    :ivar checks: the target's :class:`~pyro_flows.compare.checks.Check` outcomes.
    :ivar alerts: the cross-checks that fired (:func:`~pyro_flows.compare.checks.run_alerts`:
        IS from the flow vs AIS on :math:`\log Z`, :math:`\hat k > 0.7`, :math:`\hat R > 1.01`),
        printed as ``! ...`` lines.
    :ivar trained: the shared trained flow (``None`` when no flow-based method ran).
    :ivar wall_time: seconds for everything (report excluded).
    :ivar report: the report's Markdown file, or ``None``.

    The table in Markdown is ``comparison.table(markdown=True)``; ESS per gradient of a method
    is ``comparison.row(method).ess_per_grad`` :math:`= \mathrm{ESS}/\#\nabla\log\tilde p`.

    Example:

    >>> from dataclasses import replace
    >>> from pyro_flows.compare.settings import SamplerSettings, settings_for
    >>> s = replace(settings_for("ring", quick=True), mh=SamplerSettings(100, 100, 2))
    >>> c = compare("ring", ["mh"], settings=s, progress=False)
    >>> c.row("mh").grad_evals, c.summary().splitlines()[0].startswith("pyro-flows compare ring")
    (19264, True)

    References: see the module docstring.
    """

    target_name: str
    target: Target
    methods: tuple[str, ...]
    quick: bool
    seed: int
    settings: TargetSettings
    runs: dict[str, MethodRun]
    rows: list[Row]
    checks: list[Check]
    trained: TrainedFlow | None = None
    wall_time: float = 0.0
    report: Path | None = None
    figures: dict[str, Path] = field(default_factory=dict)
    alerts: list[Alert] = field(default_factory=list)

    def row(self, method: str) -> Row:
        """The row of ``method`` (``KeyError`` naming the methods run otherwise)."""
        for r in self.rows:
            if r.method == method:
                return r
        raise KeyError(f"method {method!r} was not run; ran: {', '.join(self.methods)}")

    def table(self, markdown: bool = False) -> str:
        """The comparison table (aligned text, or Markdown)."""
        return markdown_table(self.rows) if markdown else format_table(self.rows)

    def mode_table(self, markdown: bool = False) -> str | None:
        """Mass per mode vs the true weights (mixture targets: mixture, gmm40), the right-well
        mass per pair and the modes visited (many_well), else ``None``."""
        weights = self.target.true_mode_weights
        if weights is not None and any(r.mode_masses is not None for r in self.rows):
            return mode_mass_table(self.rows, weights.tolist(), markdown=markdown)
        wells = getattr(self.target, "well_masses", None)
        if wells is not None and any(r.well_masses is not None for r in self.rows):
            expected = {
                r.method: self.target.expected_modes_visited(r.num_draws)  # type: ignore[operator]
                for r in self.rows
                if r.num_draws is not None
            }
            return well_mass_table(
                self.rows, float(wells[1]), expected_visited=expected, markdown=markdown
            )
        return None

    def mode_table_title(self) -> str:
        """The heading of :meth:`mode_table`."""
        if self.target.true_mode_weights is not None:
            return "mass per mode (found: mass >= 0.5 x true weight)"
        return (
            "modes found: mass of the right well per pair (exact "
            f"{float(self.target.well_masses[1]):.3f}), modes visited vs expected for as many "
            "exact draws"
        )

    def summary(self) -> str:
        """What the command prints: a title, the table, the warnings (``! ...``), the mode table,
        the checks."""
        t = self.target
        log_z = "unknown" if t.log_Z is None else f"{t.log_Z:.4f}"
        title = (
            f"pyro-flows compare {self.target_name}: {type(t).__name__}, dim {t.dim}, "
            f"log Z {log_z}{' (quick)' if self.quick else ''}, seed {self.seed}, "
            f"{self.wall_time:.0f} s"
        )
        parts = [title, "", self.table()]
        if self.alerts:
            parts += ["", "warnings:", format_alerts(self.alerts)]
        modes = self.mode_table()
        if modes is not None:
            parts += ["", self.mode_table_title(), modes]
        parts += ["", "targets:", format_checks(self.checks)]
        return "\n".join(parts)


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
    :param out: report folder (created), or ``None`` for no report.
    :param overwrite: replace the report a previous run left in ``out``; without it such a
        folder is refused with a ``FileExistsError`` before anything runs.
    :param progress: progress bars (``False``: silent).
    :param settings: overrides the per-target defaults of
        :func:`~pyro_flows.compare.settings.settings_for`.
    :returns: a :class:`Comparison`.
    :raises ValueError: an unknown target or method, listing the valid names.
    :raises FileExistsError: ``out`` already holds a report and ``overwrite`` is ``False``.

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
