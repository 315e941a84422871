r"""The outcome of ``pyro-flows compare`` on one target, :class:`Comparison`: the runs of the
methods, their rows of costs and errors, the checks and the warnings, and how they print
(the table, the mode table, the summary). :func:`~pyro_flows.compare.run.compare` makes one;
:func:`~pyro_flows.compare.report.write_report` writes it to a report folder.

A row's headline cost is ESS per gradient,

.. math::

    \frac{\mathrm{ESS}}{\#\nabla\log\tilde p}
    \quad (\texttt{comparison.row(method).ess\_per\_grad}).

Example: see the docstring of :class:`~pyro_flows.compare.run.Comparison` (the same class,
importable from both modules).

References:

- M. D. Hoffman et al. *NeuTra-lizing Bad Geometry in Hamiltonian Monte Carlo Using Neural
  Transport.* 2019. https://arxiv.org/abs/1903.03704
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..targets import Target
from .checks import Alert, Check, format_alerts, format_checks
from .methods import MethodRun, TrainedFlow
from .metrics import Row
from .settings import TargetSettings
from .table import format_table, markdown_table, mode_mass_table, well_mass_table

__all__ = ["Comparison"]


@dataclass
class Comparison:
    r"""The outcome of :func:`~pyro_flows.compare.run.compare`: runs, rows, checks and where the
    report went.

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
    >>> from pyro_flows.compare.run import compare
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
