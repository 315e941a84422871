r"""``pyro-flows compare``: flows (trained by reverse KL and by flow-assisted MCMC), NUTS, NeuTra,
MH, MALA, importance sampling and annealed importance sampling on one target, with the same
costs and errors for all, PASS/FAIL against fixed targets, warnings where the methods disagree
(a mode the flow misses), and a report folder.

- :func:`compare` (:mod:`~pyro_flows.compare.run`): everything for one target.
- :mod:`~pyro_flows.compare.settings`: per-target flows and budgets (:func:`settings_for`).
- :mod:`~pyro_flows.compare.methods`: the runners (:data:`METHODS`, the default set;
  :data:`ALL_METHODS`, with ``flow_mcmc``; :func:`train_flow`).
- :mod:`~pyro_flows.compare.metrics`: one :class:`Row` per method, e.g.
  :math:`\mathrm{ESS}/\#\nabla\log\tilde p` and :math:`\log Z - \mathrm{ELBO}`.
- :mod:`~pyro_flows.compare.table`, :mod:`~pyro_flows.compare.checks`,
  :mod:`~pyro_flows.compare.figures`, :mod:`~pyro_flows.compare.report`: output.
- :mod:`~pyro_flows.compare.bayesian`: a flow guide against NUTS on eight schools.

Example:

>>> from pyro_flows.compare import ALL_METHODS, METHODS
>>> METHODS
('flow', 'nuts', 'neutra', 'mh', 'mala', 'is', 'ais')
>>> ALL_METHODS[len(METHODS):]   # run only when named
('flow_mcmc',)

References:

- M. D. Hoffman et al. *NeuTra-lizing Bad Geometry in Hamiltonian Monte Carlo Using Neural
  Transport.* 2019. https://arxiv.org/abs/1903.03704
"""

from .checks import Alert, Check, format_alerts, format_checks, run_alerts, run_checks
from .methods import (
    ALL_METHODS,
    EXTRA_METHODS,
    METHODS,
    MethodRun,
    TrainedFlow,
    parse_methods,
    run_methods,
    train_flow,
)
from .metrics import Row, row_for
from .run import Comparison, compare
from .settings import (
    SETTINGS,
    AISSettings,
    FlowSettings,
    SamplerSettings,
    TargetSettings,
    settings_for,
)
from .table import format_table, markdown_table, mode_mass_table, well_mass_table

__all__ = [
    "ALL_METHODS",
    "EXTRA_METHODS",
    "METHODS",
    "SETTINGS",
    "AISSettings",
    "Alert",
    "Check",
    "Comparison",
    "FlowSettings",
    "MethodRun",
    "Row",
    "SamplerSettings",
    "TargetSettings",
    "TrainedFlow",
    "compare",
    "format_alerts",
    "format_checks",
    "format_table",
    "markdown_table",
    "mode_mass_table",
    "parse_methods",
    "row_for",
    "run_alerts",
    "run_checks",
    "run_methods",
    "settings_for",
    "train_flow",
    "well_mass_table",
]
