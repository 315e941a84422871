r"""The targets ``pyro-flows compare`` holds each method to, printed PASS/FAIL under the table.

=========  ==================================================================================
target     requirement
=========  ==================================================================================
u1         the flow: :math:`\log Z - \mathrm{ELBO} < 0.02` nats and IS ESS fraction
           :math:`> 0.8`
funnel     NeuTra's ESS per gradient (training included) :math:`\ge 3\times` plain NUTS's;
           NeuTra: no divergences, :math:`\max_d \hat R_d < 1.01`
mixture    the flow finds every mode: its mass near mode :math:`k` is at least half the true
           weight, :math:`\hat m_k \ge 0.5\,\pi_k` for all :math:`k` (the mass per mode of every
           method is reported against :math:`\pi` in a table)
=========  ==================================================================================

A requirement whose methods were not run is reported as ``SKIP``. Other targets have no fixed
requirements (their table is the result).

References:

- D. J. Rezende, S. Mohamed. *Variational Inference with Normalizing Flows.* ICML 2015 (U1).
- M. D. Hoffman et al. *NeuTra-lizing Bad Geometry in Hamiltonian Monte Carlo Using Neural
  Transport.* 2019 (ESS per gradient on the funnel). https://arxiv.org/abs/1903.03704
- A. Vehtari et al. *Rank-normalization, folding, and localization: An improved R-hat.*
  Bayesian Analysis 16, 2021 (:math:`\hat R < 1.01`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from .metrics import Row
from .table import check_rows, check_true_weights

__all__ = [
    "Check",
    "U1_MAX_KL",
    "U1_MIN_ESS_FRACTION",
    "FUNNEL_MIN_SPEEDUP",
    "FUNNEL_MAX_RHAT",
    "MODE_FOUND_FRACTION",
    "check_u1",
    "check_funnel",
    "check_mixture",
    "run_checks",
    "format_checks",
]

#: U1: largest :math:`\log Z - \mathrm{ELBO}` (nats) of the flow.
U1_MAX_KL = 0.02
#: U1: smallest importance-sampling ESS fraction of the flow.
U1_MIN_ESS_FRACTION = 0.8
#: Funnel: smallest ratio of NeuTra's ESS per gradient to plain NUTS's.
FUNNEL_MIN_SPEEDUP = 3.0
#: Funnel: largest NeuTra :math:`\hat R`.
FUNNEL_MAX_RHAT = 1.01
#: Mixture: a mode counts as found when its mass is at least this fraction of its true weight.
MODE_FOUND_FRACTION = 0.5


@dataclass(frozen=True)
class Check:
    r"""One requirement and its outcome: ``status`` is ``"PASS"``, ``"FAIL"`` or ``"SKIP"``.

    .. math::

        \text{status} = \begin{cases}\text{PASS} & \text{measured value meets the bar}\\
        \text{FAIL} & \text{otherwise}\\ \text{SKIP} & \text{method(s) not run}\end{cases}

    Example:

    >>> str(Check("u1: flow log Z - ELBO < 0.02", "PASS", "0.0131"))
    '[PASS] u1: flow log Z - ELBO < 0.02: 0.0131'

    References: see the module docstring.
    """

    name: str
    status: str
    detail: str = ""

    def __post_init__(self) -> None:
        if self.status not in ("PASS", "FAIL", "SKIP"):
            raise ValueError(f"status must be 'PASS', 'FAIL' or 'SKIP', got {self.status!r}")

    @property
    def passed(self) -> bool:
        """``True`` for ``PASS``."""
        return self.status == "PASS"

    def __str__(self) -> str:
        return f"[{self.status}] {self.name}" + (f": {self.detail}" if self.detail else "")


def _rows(rows: Mapping[str, Row] | Sequence[Row]) -> dict[str, Row]:
    if isinstance(rows, Mapping):
        check_rows(rows.values())
        return dict(rows)
    return {r.method: r for r in check_rows(rows)}


def _verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def check_u1(rows: Mapping[str, Row] | Sequence[Row]) -> list[Check]:
    r"""U1: the flow's :math:`\log Z - \mathrm{ELBO} < 0.02` and IS ESS fraction :math:`> 0.8`.

    Example:

    >>> from pyro_flows.compare.metrics import Row
    >>> [c.status for c in check_u1([Row("flow", 1.0, 1, kl=0.013, ess_fraction=0.91)])]
    ['PASS', 'PASS']
    >>> [c.status for c in check_u1([Row("flow", 1.0, 1, kl=0.05, ess_fraction=0.91)])]
    ['FAIL', 'PASS']

    References: Rezende & Mohamed, ICML 2015.
    """
    flow = _rows(rows).get("flow")
    name_kl = f"u1: flow log Z - ELBO < {U1_MAX_KL} nats"
    name_ess = f"u1: flow IS ESS fraction > {U1_MIN_ESS_FRACTION}"
    if flow is None or flow.kl is None or flow.ess_fraction is None:
        return [Check(name_kl, "SKIP", "flow not run"), Check(name_ess, "SKIP", "flow not run")]
    return [
        Check(name_kl, _verdict(flow.kl < U1_MAX_KL), f"{flow.kl:.4f}"),
        Check(
            name_ess, _verdict(flow.ess_fraction > U1_MIN_ESS_FRACTION), f"{flow.ess_fraction:.3f}"
        ),
    ]


def check_funnel(rows: Mapping[str, Row] | Sequence[Row]) -> list[Check]:
    r"""Funnel: NeuTra's ESS/grad :math:`\ge 3\times` NUTS's, no divergences, :math:`\hat R <
    1.01`.

    Example:

    >>> from pyro_flows.compare.metrics import Row
    >>> rows = [Row("nuts", 60.0, 60000, ess_per_grad=1e-4, rhat=1.2, divergences=3),
    ...         Row("neutra", 90.0, 86000, ess_per_grad=8e-3, rhat=1.004, divergences=0)]
    >>> [c.status for c in check_funnel(rows)]
    ['PASS', 'PASS', 'PASS']
    >>> print(check_funnel(rows)[0])
    [PASS] funnel: NeuTra ESS/grad >= 3x NUTS: 80.0x (8.00e-03 vs 1.00e-04)

    References: Hoffman et al., 2019; Vehtari et al., 2021.
    """
    by = _rows(rows)
    neutra, nuts = by.get("neutra"), by.get("nuts")
    name_speed = f"funnel: NeuTra ESS/grad >= {FUNNEL_MIN_SPEEDUP:g}x NUTS"
    name_div = "funnel: NeuTra has no divergences"
    name_rhat = f"funnel: NeuTra R-hat < {FUNNEL_MAX_RHAT}"
    out: list[Check] = []
    if neutra is None or nuts is None or neutra.ess_per_grad is None or not nuts.ess_per_grad:
        missing = [m for m, r in (("neutra", neutra), ("nuts", nuts)) if r is None]
        out.append(Check(name_speed, "SKIP", f"{' and '.join(missing) or 'ESS/grad'} not run"))
    else:
        ratio = neutra.ess_per_grad / nuts.ess_per_grad
        out.append(
            Check(
                name_speed,
                _verdict(ratio >= FUNNEL_MIN_SPEEDUP),
                f"{ratio:.1f}x ({neutra.ess_per_grad:.2e} vs {nuts.ess_per_grad:.2e})",
            )
        )
    if neutra is None:
        out += [
            Check(name_div, "SKIP", "neutra not run"),
            Check(name_rhat, "SKIP", "neutra not run"),
        ]
        return out
    div = neutra.divergences
    out.append(Check(name_div, _verdict(div == 0), f"{div}"))
    if neutra.rhat is None:
        out.append(Check(name_rhat, "SKIP", "R-hat needs 2 or more chains"))
    else:
        out.append(Check(name_rhat, _verdict(neutra.rhat < FUNNEL_MAX_RHAT), f"{neutra.rhat:.4f}"))
    return out


def check_mixture(
    rows: Mapping[str, Row] | Sequence[Row], true_weights: Sequence[float]
) -> list[Check]:
    r"""Mixture: the flow's mass near every mode :math:`\hat m_k \ge 0.5\,\pi_k`.

    Example:

    >>> from pyro_flows.compare.metrics import Row
    >>> good = Row("flow", 1.0, 1, mode_masses=[0.09, 0.22, 0.27, 0.42])
    >>> bad = Row("flow", 1.0, 1, mode_masses=[0.10, 0.00, 0.33, 0.57])
    >>> check_mixture([good], [0.1, 0.2, 0.3, 0.4])[0].status
    'PASS'
    >>> print(check_mixture([bad], [0.1, 0.2, 0.3, 0.4])[0].detail)
    3/4 modes; missed mode 2 (0.000 vs 0.200)

    References: Minka, 2005 (reverse KL is mode seeking).
    """
    flow = _rows(rows).get("flow")
    name = f"mixture: flow finds every mode (mass >= {MODE_FOUND_FRACTION:g} x true weight)"
    if flow is None or flow.mode_masses is None:
        return [Check(name, "SKIP", "flow not run")]
    weights = check_true_weights(true_weights)
    if len(flow.mode_masses) != len(weights):
        raise ValueError(
            f"the flow row has {len(flow.mode_masses)} mode masses but there are "
            f"{len(weights)} true weights"
        )
    missed = [
        (k, m, w)
        for k, (m, w) in enumerate(zip(flow.mode_masses, weights, strict=True))
        if m < MODE_FOUND_FRACTION * w
    ]
    detail = f"{len(weights) - len(missed)}/{len(weights)} modes"
    if missed:
        detail += "; missed " + ", ".join(
            f"mode {k + 1} ({m:.3f} vs {w:.3f})" for k, m, w in missed
        )
    return [Check(name, _verdict(not missed), detail)]


def run_checks(
    target: str,
    rows: Mapping[str, Row] | Sequence[Row],
    true_weights: Sequence[float] | None = None,
) -> list[Check]:
    r"""The checks of ``target`` (``"u1"``, ``"funnel"``, ``"mixture"``; others have none).

    Example:

    >>> run_checks("banana", [])
    []

    References: see the module docstring.
    """
    if not isinstance(target, str):
        raise TypeError(f"target must be a target's name (a str), got {type(target).__name__}")
    key = target.strip().lower()
    if key == "u1":
        return check_u1(rows)
    if key == "funnel":
        return check_funnel(rows)
    if key == "mixture":
        if true_weights is None:
            raise ValueError("the mixture checks need true_weights (target.true_mode_weights)")
        return check_mixture(rows, true_weights)
    return []


def format_checks(checks: Sequence[Check]) -> str:
    """One line per check, then a count: ``"2 PASS, 1 FAIL"``.

    >>> print(format_checks([Check("a", "PASS"), Check("b", "FAIL", "1.2")]))
    [PASS] a
    [FAIL] b: 1.2
    1 PASS, 1 FAIL

    References: see the module docstring.
    """
    for check in checks:
        if not isinstance(check, Check):
            raise TypeError(f"checks must be Check objects, got {type(check).__name__}")
    if not checks:
        return "no fixed targets for this target"
    counts = {s: sum(c.status == s for c in checks) for s in ("PASS", "FAIL", "SKIP")}
    summary = ", ".join(f"{n} {s}" for s, n in counts.items() if n)
    return "\n".join([*map(str, checks), summary])
