r"""The targets ``pyro-flows compare`` holds each method to, printed PASS/FAIL under the table.

=========  ==================================================================================
target     requirement
=========  ==================================================================================
u1         the flow: :math:`\log Z - \mathrm{ELBO} < 0.02` nats and IS ESS fraction
           :math:`> 0.8`
funnel     NeuTra's ESS per gradient (training included) :math:`\ge 3\times` plain NUTS's;
           NeuTra: no divergences, :math:`\max_d \hat R_d < 1.01`
mixture    each flow (``flow``, ``flow_mcmc``) finds every mode, :math:`\hat m_k \ge 0.5\,\pi_k`
           for all :math:`k`; ``flow_mcmc`` (its chains' draws): :math:`\max_k |\hat m_k -
           \pi_k| \le 0.01` (every method's mass per mode is reported in a table)
gmm40      every method with draws finds every one of the 40 modes (:math:`\hat m_k \ge
           0.5/40`; the number found is the detail); ``flow_mcmc``: :math:`\max_k |\hat m_k -
           \pi_k| \le 0.01`; ``flow``, ``flow_mcmc``, ``is`` and ``ais`` estimate
           :math:`\log Z = 0` within 0.05 nats
many_well  ``flow``, ``flow_mcmc``, ``is`` and ``ais`` estimate :math:`\log Z` within 0.1 nats;
           every method with draws puts the exact mass in the right well of every pair,
           :math:`\max_i |\hat m_{i,\mathrm{right}} - 0.8443| \le 0.02`
=========  ==================================================================================

A requirement whose methods were not run is reported as ``SKIP``. Other targets have no fixed
requirements (their table is the result). The gmm40 and many-well requirements are FAB's
(Midgley et al., 2023); reverse KL is expected to fail them, ``flow_mcmc`` (mass-covering; its
masses come from its chains' post-burn-in states) is the row meant to pass them.

Besides the requirements, :func:`run_alerts` cross-checks the methods on any target and returns
warnings (printed under the table with the table's ``!`` mark): the flow's importance-sampling
:math:`\log\hat Z` and the AIS one disagree by more than
:math:`\max(0.05, 3\sqrt{\mathrm{se}_\mathrm{IS}^2 + \mathrm{se}_\mathrm{AIS}^2})` nats
(with AIS higher by :math:`g`, the flow probably misses a mode that holds about
:math:`1 - e^{-g}` of the mass), a PSIS :math:`\hat k > 0.7`, or MCMC chains that disagree,
:math:`\hat R > 1.01`.

References:

- D. J. Rezende, S. Mohamed. *Variational Inference with Normalizing Flows.* ICML 2015 (U1).
- M. D. Hoffman et al. *NeuTra-lizing Bad Geometry in Hamiltonian Monte Carlo Using Neural
  Transport.* 2019 (ESS per gradient on the funnel). https://arxiv.org/abs/1903.03704
- A. Vehtari et al. *Rank-normalization, folding, and localization: An improved R-hat.*
  Bayesian Analysis 16, 2021 (:math:`\hat R < 1.01`).
- L. I. Midgley et al. *Flow Annealed Importance Sampling Bootstrap.* ICLR 2023 (gmm40,
  many-well). https://arxiv.org/abs/2208.01893
- R. M. Neal. *Annealed importance sampling.* Statistics and Computing 11, 2001.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from .methods import FLOW_ROWS
from .metrics import Row
from .table import FLAG, check_rows, check_true_weights

__all__ = [
    "Alert", "Check", "U1_MAX_KL", "U1_MIN_ESS_FRACTION", "FUNNEL_MIN_SPEEDUP", "FUNNEL_MAX_RHAT",
    "MODE_FOUND_FRACTION", "MODE_MASS_MAX_ERROR", "MIXTURE_METHODS",
    "LOG_Z_METHODS", "check_u1", "check_funnel", "check_mixture", "check_gmm40", "check_many_well",
    "run_checks", "format_checks", "run_alerts", "format_alerts", "GMM40_MAX_LOG_Z_ERROR",
    "MANY_WELL_MAX_LOG_Z_ERROR", "MANY_WELL_MAX_WELL_ERROR", "LOG_Z_GAP_MIN", "LOG_Z_GAP_SIGMAS",
    "KHAT_MAX", "RHAT_MAX",
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
#: Mixture: the rows held to finding every mode (the trained flows' own draws).
MIXTURE_METHODS: tuple[str, ...] = tuple(FLOW_ROWS)
#: Mixture, gmm40: the largest :math:`|\hat m_k - \pi_k|` of ``flow_mcmc`` (its chains' draws).
MODE_MASS_MAX_ERROR = 0.01
#: gmm40: largest :math:`|\log\hat Z - \log Z|` (nats) of the :data:`LOG_Z_METHODS`.
GMM40_MAX_LOG_Z_ERROR = 0.05
#: many_well: largest :math:`|\log\hat Z - \log Z|` (nats) of the :data:`LOG_Z_METHODS`.
MANY_WELL_MAX_LOG_Z_ERROR = 0.1
#: many_well: largest :math:`|\hat m_{i,\mathrm{right}} - m_\mathrm{right}|` over the pairs.
MANY_WELL_MAX_WELL_ERROR = 0.02
#: Cross-check: the smallest IS-vs-AIS :math:`\log\hat Z` gap (nats) that is reported ...
LOG_Z_GAP_MIN = 0.05
#: ... and the number of combined standard errors it must exceed as well.
LOG_Z_GAP_SIGMAS = 3.0
#: Cross-check: PSIS :math:`\hat k` above this marks unreliable importance weights.
KHAT_MAX = 0.7
#: Cross-check: split :math:`\hat R` above this marks chains that disagree.
RHAT_MAX = 1.01
#: The methods whose :math:`\log\hat Z` the gmm40 and many-well requirements hold to the truth.
LOG_Z_METHODS: tuple[str, ...] = (*FLOW_ROWS, "is", "ais")


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
    r"""Mixture: each flow row of :data:`MIXTURE_METHODS` (``flow``, ``flow_mcmc``) puts mass
    near every mode, :math:`\hat m_k \ge 0.5\,\pi_k`; one check per row (``SKIP`` when the
    row did not run); then ``flow_mcmc``: :math:`\max_k |\hat m_k - \pi_k| \le 0.01`.

    Example:

    >>> from pyro_flows.compare.metrics import Row
    >>> good = Row("flow_mcmc", 1.0, 1, mode_masses=[0.09, 0.22, 0.27, 0.42])
    >>> bad = Row("flow", 1.0, 1, mode_masses=[0.10, 0.00, 0.33, 0.57])
    >>> [c.status for c in check_mixture([bad, good], [0.1, 0.2, 0.3, 0.4])]
    ['FAIL', 'PASS', 'FAIL']
    >>> print(check_mixture([bad], [0.1, 0.2, 0.3, 0.4])[0].detail)
    3/4 modes; missed mode 2 (0.000 vs 0.200)

    References: Minka, 2005 (reverse KL is mode seeking); Gabrié et al., PNAS 2022
    (``flow_mcmc``, mass-covering).
    """
    by = _rows(rows)
    weights = check_true_weights(true_weights)
    found = [_mixture_check(method, by.get(method), weights) for method in MIXTURE_METHODS]
    return found + _mass_checks(by, "mixture", weights)


def _mass_checks(by: dict[str, Row], target: str, weights: list[float]) -> list[Check]:
    r"""``flow_mcmc``: :math:`\max_k |\hat m_k - \pi_k| \le` :data:`MODE_MASS_MAX_ERROR`."""
    row, bar = by.get("flow_mcmc"), MODE_MASS_MAX_ERROR
    name = f"{target}: flow_mcmc every mode's mass within {bar:g}"
    if row is None or row.mode_masses is None:
        return [Check(name, "SKIP", "flow_mcmc not run")]
    err = [abs(m - w) for m, w in zip(row.mode_masses, weights, strict=True)]
    k = max(range(len(err)), key=err.__getitem__)
    detail = f"worst {err[k]:.4f} (mode {k + 1}: {row.mode_masses[k]:.3f} vs {weights[k]:.3f})"
    return [Check(name, _verdict(err[k] <= bar), detail)]


def _mixture_check(method: str, row: Row | None, weights: list[float]) -> Check:
    name = f"mixture: {method} finds every mode (mass >= {MODE_FOUND_FRACTION:g} x true weight)"
    if row is None or row.mode_masses is None:
        return Check(name, "SKIP", f"{method} not run")
    if len(row.mode_masses) != len(weights):
        raise ValueError(
            f"the {method} row has {len(row.mode_masses)} mode masses but there are "
            f"{len(weights)} true weights"
        )
    missed = [
        (k, m, w)
        for k, (m, w) in enumerate(zip(row.mode_masses, weights, strict=True))
        if m < MODE_FOUND_FRACTION * w
    ]
    detail = f"{len(weights) - len(missed)}/{len(weights)} modes"
    if missed:
        detail += "; missed " + ", ".join(
            f"mode {k + 1} ({m:.3f} vs {w:.3f})" for k, m, w in missed
        )
    return Check(name, _verdict(not missed), detail)


def _log_z_checks(by: dict[str, Row], target: str, log_Z: float | None, tol: float) -> list[Check]:
    out = []
    for method in LOG_Z_METHODS:
        name = f"{target}: {method} log Z within {tol:g} nats"
        row = by.get(method)
        if row is None or row.log_Z_hat is None:
            out.append(Check(name, "SKIP", f"{method} not run"))
            continue
        error = row.log_Z_error
        if error is None and log_Z is not None:
            error = row.log_Z_hat - log_Z
        if error is None:
            out.append(Check(name, "SKIP", "the target's log Z is unknown"))
            continue
        detail = f"{error:+.4f}"
        if row.log_Z_stderr is not None:
            detail += f" (se {row.log_Z_stderr:.4f})"
        out.append(Check(name, _verdict(math.isfinite(error) and abs(error) <= tol), detail))
    return out


def check_gmm40(
    rows: Mapping[str, Row] | Sequence[Row],
    true_weights: Sequence[float],
    log_Z: float | None = 0.0,
) -> list[Check]:
    r"""gmm40 (FAB's 40 modes): every method with draws finds all modes,
    :math:`\hat m_k \ge 0.5\,\pi_k`; ``flow_mcmc``: :math:`\max_k |\hat m_k - \pi_k| \le
    0.01`; :data:`LOG_Z_METHODS`: :math:`|\log\hat Z| \le 0.05`.

    Example:

    >>> from pyro_flows.compare.metrics import Row
    >>> rows = [Row("nuts", 1.0, 1, mode_masses=[1.0] + [0.0] * 39),
    ...         Row("ais", 1.0, 1, log_Z_hat=-1.3, log_Z_error=-1.3, log_Z_stderr=0.03)]
    >>> for c in check_gmm40(rows, [1 / 40] * 40):
    ...     print(c)
    [FAIL] gmm40: nuts finds every mode (mass >= 0.5 x 1/40): 1/40 modes
    [SKIP] gmm40: flow_mcmc every mode's mass within 0.01: flow_mcmc not run
    [SKIP] gmm40: flow log Z within 0.05 nats: flow not run
    [SKIP] gmm40: flow_mcmc log Z within 0.05 nats: flow_mcmc not run
    [SKIP] gmm40: is log Z within 0.05 nats: is not run
    [FAIL] gmm40: ais log Z within 0.05 nats: -1.3000 (se 0.0300)

    References: Midgley et al., ICLR 2023, section 4.1.
    """
    by = _rows(rows)
    weights = check_true_weights(true_weights)
    out: list[Check] = []
    for method, row in by.items():
        if row.mode_masses is None:
            continue
        if len(row.mode_masses) != len(weights):
            raise ValueError(
                f"the {method} row has {len(row.mode_masses)} mode masses but there are "
                f"{len(weights)} true weights"
            )
        found = sum(
            m >= MODE_FOUND_FRACTION * w for m, w in zip(row.mode_masses, weights, strict=True)
        )
        out.append(
            Check(
                f"gmm40: {method} finds every mode (mass >= {MODE_FOUND_FRACTION:g} x "
                f"1/{len(weights)})",
                _verdict(found == len(weights)),
                f"{found}/{len(weights)} modes",
            )
        )
    if not out:
        out.append(Check("gmm40: every method finds every mode", "SKIP", "no method with draws"))
    out += _mass_checks(by, "gmm40", weights)
    return out + _log_z_checks(by, "gmm40", log_Z, GMM40_MAX_LOG_Z_ERROR)


def check_many_well(
    rows: Mapping[str, Row] | Sequence[Row],
    well_masses: Sequence[float],
    log_Z: float | None = None,
) -> list[Check]:
    r"""many_well (32-D): :data:`LOG_Z_METHODS`: :math:`|\log\hat Z - \log Z| \le 0.1`;
    every method with draws: :math:`\max_i |\hat m_{i,\mathrm{right}} - m_\mathrm{right}| \le
    0.02` over the pairs, :math:`(m_\mathrm{left}, m_\mathrm{right}) = (0.156, 0.844)`.

    Example:

    >>> from pyro_flows.compare.metrics import Row
    >>> rows = [Row("nuts", 1.0, 1, well_masses=[1.0, 0.84]),
    ...         Row("is", 1.0, 1, log_Z_hat=20.1, log_Z_error=-0.49, well_masses=[0.85, 0.83])]
    >>> for c in check_many_well(rows, [0.1557, 0.8443], 20.59):
    ...     print(c)
    [FAIL] many_well: nuts right-well mass per pair within 0.02 of 0.844: 1/2 pairs off, worst 1.000
    [PASS] many_well: is right-well mass per pair within 0.02 of 0.844: 0/2 pairs off, worst 0.830
    [SKIP] many_well: flow log Z within 0.1 nats: flow not run
    [SKIP] many_well: flow_mcmc log Z within 0.1 nats: flow_mcmc not run
    [FAIL] many_well: is log Z within 0.1 nats: -0.4900
    [SKIP] many_well: ais log Z within 0.1 nats: ais not run

    References: Midgley et al., ICLR 2023, section 4.2.
    """
    by = _rows(rows)
    exact = check_true_weights(well_masses)
    if len(exact) != 2:
        raise ValueError(f"well_masses must be (left, right), got {exact}")
    right = exact[1]
    out: list[Check] = []
    for method, row in by.items():
        if row.well_masses is None:
            continue
        errors = [abs(m - right) for m in row.well_masses]
        worst = max(range(len(errors)), key=errors.__getitem__)
        off = sum(e > MANY_WELL_MAX_WELL_ERROR for e in errors)
        detail = f"{off}/{len(errors)} pairs off, worst {row.well_masses[worst]:.3f}"
        out.append(
            Check(
                f"many_well: {method} right-well mass per pair within "
                f"{MANY_WELL_MAX_WELL_ERROR:g} of {right:.3f}",
                _verdict(off == 0),
                detail,
            )
        )
    if not out:
        out.append(Check("many_well: well masses per pair", "SKIP", "no method with draws"))
    return out + _log_z_checks(by, "many_well", log_Z, MANY_WELL_MAX_LOG_Z_ERROR)


def run_checks(
    target: str,
    rows: Mapping[str, Row] | Sequence[Row],
    true_weights: Sequence[float] | None = None,
    log_Z: float | None = None,
) -> list[Check]:
    r"""The checks of ``target`` (``"u1"``, ``"funnel"``, ``"mixture"``, ``"gmm40"``,
    ``"many_well"``; others have none). ``true_weights`` are the mixtures' mode weights, the
    many-well's ``(left, right)`` well masses; ``log_Z`` the exact :math:`\log Z` (used where a
    row has no ``log_Z_error``).

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
    if key in ("gmm40", "many_well"):
        if true_weights is None:
            raise ValueError(
                f"the {key} checks need true_weights (the mode weights / the well masses)"
            )
        if key == "gmm40":
            return check_gmm40(rows, true_weights, 0.0 if log_Z is None else log_Z)
        return check_many_well(rows, true_weights, log_Z)
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


@dataclass(frozen=True)
class Alert:
    r"""A cross-check that failed: the methods disagree, or a diagnostic says not to trust one.

    :ivar kind: ``"log Z gap"`` (IS from the flow vs AIS), ``"k-hat"``, ``"R-hat"`` or
        ``"missed modes"`` (the trained flow's mode probe, see
        :func:`~pyro_flows.infer.mode_probe.probe_modes`).
    :ivar methods: the methods concerned.
    :ivar message: what was measured and what it likely means.

    Printed with the table's mark, ``"! "`` (:data:`~pyro_flows.compare.table.FLAG`).

    Example:

    >>> str(Alert("R-hat", ("nuts",), "chains disagree"))
    '! chains disagree'

    References: see the module docstring.
    """

    kind: str
    methods: tuple[str, ...]
    message: str

    def __str__(self) -> str:
        return f"{FLAG} {self.message}"


def _finite(value: float | None) -> bool:
    return value is not None and not math.isnan(value)


def _log_z_gap(by: dict[str, Row]) -> list[Alert]:
    ais = by.get("ais")
    ref = by.get("is") or by.get("flow")
    if ais is None or ref is None or not (_finite(ais.log_Z_hat) and _finite(ref.log_Z_hat)):
        return []
    assert ais.log_Z_hat is not None and ref.log_Z_hat is not None
    se_ais = ais.log_Z_stderr if _finite(ais.log_Z_stderr) else 0.0
    se_ref = ref.log_Z_stderr if _finite(ref.log_Z_stderr) else 0.0
    se = math.sqrt(se_ais**2 + se_ref**2)  # type: ignore[operator]
    bar = max(LOG_Z_GAP_MIN, LOG_Z_GAP_SIGMAS * se)
    gap = ais.log_Z_hat - ref.log_Z_hat
    if not math.isfinite(gap) or abs(gap) <= bar:
        return []
    what = (
        f"log Z: AIS {ais.log_Z_hat:.4f} (se {se_ais:.4f}) vs IS from the flow ({ref.method}) "
        f"{ref.log_Z_hat:.4f} (se {se_ref:.4f}): "
    )
    if gap > 0:
        missing = -math.expm1(-gap)
        why = (
            f"AIS is higher by {gap:.3f} nats (> {bar:.3f} = max({LOG_Z_GAP_MIN:g}, "
            f"{LOG_Z_GAP_SIGMAS:g} combined se)): the flow probably misses a mode that holds "
            f"about 1 - exp(-{gap:.3f}) = {missing:.0%} of the mass (reverse KL is "
            "mode-seeking; its IS ESS fraction cannot see it). See the modes table; train with "
            "anneal= or a wider flow"
        )
    else:
        why = (
            f"AIS is lower by {-gap:.3f} nats (> {bar:.3f}): the annealing is probably too "
            "short (more temperatures), or the flow's weights are heavy-tailed (see k-hat)"
        )
    return [Alert("log Z gap", (ref.method, "ais"), what + why)]


def run_alerts(rows: Mapping[str, Row] | Sequence[Row]) -> list[Alert]:
    r"""The cross-checks of a comparison's rows, on any target: the list of warnings (empty when
    nothing disagrees).

    - ``log Z gap``: ``is`` (else ``flow``) and ``ais`` both ran and
      :math:`|\log\hat Z_\mathrm{AIS} - \log\hat Z_\mathrm{IS}| >
      \max(0.05, 3\sqrt{\mathrm{se}_\mathrm{IS}^2 + \mathrm{se}_\mathrm{AIS}^2})`; AIS higher by
      :math:`g` nats is the signature of a dropped mode holding about :math:`1 - e^{-g}` of the
      mass, which the flow's own IS ESS fraction cannot see.
    - ``k-hat``: a PSIS :math:`\hat k > 0.7` (``flow``, ``is``, ``ais``).
    - ``R-hat``: MCMC chains that disagree, :math:`\hat R > 1.01` (chains in different modes,
      or not mixed). Chains that all sit in the same mode agree: :math:`\hat R = 1.00` does not
      show a mode that none of them found.

    Example:

    >>> from pyro_flows.compare.metrics import Row
    >>> rows = [Row("is", 1.0, 1, log_Z_hat=-0.693, log_Z_stderr=0.002, khat=0.1),
    ...         Row("ais", 1.0, 1, log_Z_hat=-0.01, log_Z_stderr=0.03, khat=0.3)]
    >>> [a.kind for a in run_alerts(rows)], "holds about 1 - exp(-0.683) = 49%" in str(
    ...     run_alerts(rows)[0])
    (['log Z gap'], True)
    >>> run_alerts([Row("nuts", 1.0, 1, rhat=1.003), Row("is", 1.0, 1, khat=0.4)])
    []

    References: Neal, 2001; Vehtari et al., 2021 and 2024.
    """
    by = _rows(rows)
    alerts = _log_z_gap(by)
    heavy = [(m, r.khat) for m, r in by.items() if _finite(r.khat) and r.khat > KHAT_MAX]  # type: ignore[operator]
    if heavy:
        values = ", ".join(f"{m} {k:.2f}" for m, k in heavy)
        alerts.append(
            Alert(
                "k-hat",
                tuple(m for m, _ in heavy),
                f"k-hat > {KHAT_MAX:g} ({values}): the importance weights are heavy-tailed, so "
                "log Z hat, its se and the weighted moments are not to be trusted (the flow's "
                "tails are too light or it misses mass; for ais: too few temperatures)",
            )
        )
    split = [(m, r.rhat) for m, r in by.items() if _finite(r.rhat) and r.rhat > RHAT_MAX]  # type: ignore[operator]
    if split:
        values = ", ".join(f"{m} {v:.3f}" for m, v in split)
        alerts.append(
            Alert(
                "R-hat",
                tuple(m for m, _ in split),
                f"MCMC chains disagree (R-hat > {RHAT_MAX:g}: {values}): the chains sit in "
                "different regions (different modes, or not mixed yet); their pooled draws are "
                "not a sample of p. See the modes table and the trace plots",
            )
        )
    return alerts


def format_alerts(alerts: Sequence[Alert]) -> str:
    """One ``! ...`` line per alert ("" when there is none).

    >>> print(format_alerts([Alert("R-hat", ("mh",), "chains disagree")]))
    ! chains disagree

    References: see the module docstring.
    """
    for alert in alerts:
        if not isinstance(alert, Alert):
            raise TypeError(f"alerts must be Alert objects, got {type(alert).__name__}")
    return "\n".join(map(str, alerts))
