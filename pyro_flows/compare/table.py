r"""Rows of numbers as an aligned text table (for the terminal) and as a Markdown table.

Each column has a header, the :class:`~pyro_flows.compare.metrics.Row` field it shows and a
format; a missing value prints as ``-``. Numbers are right-aligned so that magnitudes line up:

.. math::

    \text{width}_j = \max\bigl(|\text{header}_j|, \max_i |\text{cell}_{ij}|\bigr).

Example:

>>> from pyro_flows.compare.metrics import Row
>>> print(format_table([Row("nuts", 1.5, 1200, ess_bulk=80.0)], columns=("method", "wall s",
...                    "grad evals", "ESS bulk (min)", "k-hat")))
method  wall s  grad evals  ESS bulk (min)  k-hat
------  ------  ----------  --------------  -----
nuts       1.5       1,200              80      -

References:

- J. Gruber. *Markdown* (2004) and the GitHub Flavored Markdown specification (tables).
  https://github.github.com/gfm/#tables-extension-
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from .._numbers import check_finite_number, check_fraction
from .metrics import Row

__all__ = [
    "COLUMNS",
    "FLAG",
    "FLAGGED",
    "flag_legend",
    "flagged_value",
    "format_table",
    "format_value",
    "markdown_table",
    "mode_mass_table",
    "well_mass_table",
]


def _num(fmt: str) -> Callable[[Any], str]:
    def show(value: Any) -> str:
        if value is None:
            return "-"
        if isinstance(value, float) and math.isinf(value):
            return "-inf" if value < 0 else "inf"
        if isinstance(value, float) and math.isnan(value):
            return "nan"
        return format(value, fmt)

    return show


#: ``(header, Row field, formatter)`` of every column, in order.
COLUMNS: tuple[tuple[str, str, Callable[[Any], str]], ...] = (
    ("method", "method", str),
    ("wall s", "wall_time", _num(".1f")),
    ("grad evals", "grad_evals", _num(",d")),
    ("ESS bulk (min)", "ess_bulk", _num(".0f")),
    ("ESS tail (min)", "ess_tail", _num(".0f")),
    ("ESS/s", "ess_per_second", _num(".3g")),
    ("ESS/grad", "ess_per_grad", _num(".2e")),
    ("R-hat max", "rhat", _num(".3f")),
    ("divergences", "divergences", _num("d")),
    ("max |mean err| (sd)", "mean_error", _num(".3f")),
    ("max sd rel err", "sd_error", _num(".3f")),
    ("log Z hat", "log_Z_hat", _num(".4f")),
    ("log Z err", "log_Z_error", _num("+.4f")),
    ("log Z - ELBO", "kl", _num(".4f")),
    ("IS ESS frac", "ess_fraction", _num(".3f")),
    ("k-hat", "khat", _num(".2f")),
)

_BY_HEADER = {header: (key, fmt) for header, key, fmt in COLUMNS}

#: the mark appended to a cell whose value says the result is not to be trusted
FLAG = "!"

#: ``header -> (test, meaning)``: cells that get :data:`FLAG` (Vehtari et al.'s thresholds:
#: PSIS k-hat above 0.7, split R-hat above 1.01; any divergent transition)
FLAGGED: dict[str, tuple[Callable[[Any], bool], str]] = {
    "k-hat": (lambda v: v is not None and not math.isnan(v) and v > 0.7, "k-hat > 0.7"),
    "R-hat max": (lambda v: v is not None and not math.isnan(v) and v > 1.01, "R-hat > 1.01"),
    "divergences": (lambda v: v is not None and v > 0, "divergences"),
}


def flagged_value(header: str, value: Any) -> str:
    """``value`` formatted for the column ``header``, with :data:`FLAG` appended where the
    value marks an untrustworthy result (:data:`FLAGGED`).

    >>> flagged_value("k-hat", 0.93), flagged_value("k-hat", 0.41), flagged_value("R-hat max", 1.2)
    ('0.93!', '0.41', '1.200!')
    """
    text = format_value(header, value)
    test = FLAGGED.get(header)
    return text + FLAG if test is not None and test[0](value) else text


def flag_legend(headers: Sequence[str], cells: Sequence[Sequence[str]]) -> str:
    """One line naming what the marks in a table mean ("" when nothing is marked)."""
    used = [
        FLAGGED[h][1]
        for j, h in enumerate(headers)
        if h in FLAGGED and any(row[j].endswith(FLAG) for row in cells)
    ]
    return f"{FLAG.strip()} marks: {', '.join(used)}" if used else ""


def format_value(header: str, value: Any) -> str:
    """``value`` formatted as in the column ``header`` (``-`` for ``None``).

    >>> format_value("ESS/grad", 0.00812), format_value("log Z err", -0.0021)
    ('8.12e-03', '-0.0021')
    """
    if header not in _BY_HEADER:
        raise ValueError(f"unknown column {header!r}; columns: {', '.join(_BY_HEADER)}")
    return _BY_HEADER[header][1](value)


def check_rows(rows: object) -> list[Row]:
    """``rows`` as a list of :class:`Row` (``TypeError`` naming what was given otherwise)."""
    if isinstance(rows, Row | str | bytes) or not isinstance(rows, Iterable):
        raise TypeError(f"rows must be a sequence of Row objects, got {type(rows).__name__}")
    rows = list(rows)
    for row in rows:
        if not isinstance(row, Row):
            raise TypeError(f"rows must be Row objects, got {type(row).__name__} ({row!r})")
    return rows


def check_true_weights(true_weights: object) -> list[float]:
    """``true_weights`` as a list of finite non-negative floats."""
    if isinstance(true_weights, str | bytes) or not isinstance(true_weights, Iterable):
        raise TypeError(
            f"true_weights must be a sequence of numbers, got {type(true_weights).__name__}"
        )
    weights = [check_finite_number(w, "true_weights") for w in true_weights]
    if any(w < 0 for w in weights):
        raise ValueError(f"true_weights must be >= 0, got {weights}")
    return weights


def _select(
    rows: Sequence[Row], columns: Sequence[str] | None
) -> tuple[list[str], list[list[str]]]:
    if isinstance(columns, str | bytes):
        raise TypeError(f"columns must be a sequence of headers, got str ({columns!r})")
    headers = list(columns) if columns is not None else [h for h, _, _ in COLUMNS]
    for h in headers:
        if h not in _BY_HEADER:
            raise ValueError(f"unknown column {h!r}; columns: {', '.join(_BY_HEADER)}")
    rows = check_rows(rows)
    cells = [[flagged_value(h, getattr(row, _BY_HEADER[h][0])) for h in headers] for row in rows]
    return headers, cells


def _aligned(headers: list[str], cells: list[list[str]]) -> str:
    widths = [max([len(h)] + [len(r[j]) for r in cells]) for j, h in enumerate(headers)]

    def line(values: list[str]) -> str:
        parts = [
            v.ljust(w) if j == 0 else v.rjust(w)
            for j, (v, w) in enumerate(zip(values, widths, strict=True))
        ]
        return "  ".join(parts).rstrip()

    return "\n".join([line(headers), line(["-" * w for w in widths]), *map(line, cells)])


def format_table(rows: Sequence[Row], columns: Sequence[str] | None = None) -> str:
    r"""An aligned plain-text table of ``rows`` (all :data:`COLUMNS`, or the headers given).

    :param rows: :class:`~pyro_flows.compare.metrics.Row` objects, one line each.
    :param columns: headers of :data:`COLUMNS` to show, in order (default: all).
    :raises ValueError: for an unknown column, listing the valid ones.

    Example:

    >>> print(format_table([Row("mh", 0.52, 0, ess_bulk=110.0)], columns=("method", "ESS/grad")))
    method  ESS/grad
    ------  --------
    mh             -

    References: see the module docstring.
    """
    headers, cells = _select(rows, columns)
    legend = flag_legend(headers, cells)
    return _aligned(headers, cells) + (f"\n{legend}" if legend else "")


def markdown_table(rows: Sequence[Row], columns: Sequence[str] | None = None) -> str:
    r"""The same table in GitHub-flavoured Markdown (numbers right-aligned).

    >>> print(markdown_table([Row("mh", 0.5, 0, ess_bulk=12.0)], columns=("method", "ESS/grad")))
    | method | ESS/grad |
    | :--- | ---: |
    | mh | - |

    References: see the module docstring.
    """
    headers, cells = _select(rows, columns)
    legend = flag_legend(headers, cells)
    return _markdown(headers, cells) + (f"\n\n{legend}" if legend else "")


def _markdown(headers: list[str], cells: list[list[str]]) -> str:
    def esc(s: str) -> str:
        return s.replace("|", "\\|")

    align = [":---"] + ["---:"] * (len(headers) - 1)
    lines = ["| " + " | ".join(map(esc, headers)) + " |", "| " + " | ".join(align) + " |"]
    lines += ["| " + " | ".join(map(esc, r)) + " |" for r in cells]
    return "\n".join(lines)


def mode_mass_table(
    rows: Sequence[Row],
    true_weights: Sequence[float],
    *,
    found_fraction: float = 0.5,
    markdown: bool = False,
) -> str:
    r"""Mass per mode of every method against the true weights, and the modes each one found.

    Mode :math:`k` counts as found when :math:`\hat m_k \ge f\,\pi_k` (``found_fraction``
    :math:`f`, default one half of its true weight).

    :param rows: rows whose ``mode_masses`` are set (others are skipped).
    :param true_weights: :math:`\pi_k`.
    :param found_fraction: :math:`f`.
    :param markdown: Markdown instead of aligned text.

    Example:

    >>> rows = [Row("flow", 1.0, 10, mode_masses=[0.3, 0.7]), Row("nuts", 1.0, 10,
    ...         mode_masses=[0.0, 1.0])]
    >>> print(mode_mass_table(rows, [0.25, 0.75]))
    mode          true   flow   nuts
    -----------  -----  -----  -----
    1            0.250  0.300  0.000
    2            0.750  0.700  1.000
    modes found      2    2/2    1/2

    References: T. Minka. *Divergence measures and message passing.* 2005 (reverse KL is mode
    seeking).
    """
    weights = check_true_weights(true_weights)
    found_fraction = check_fraction(found_fraction, "found_fraction")
    used = [r for r in check_rows(rows) if r.mode_masses is not None]
    for r in used:
        if len(r.mode_masses) != len(weights):  # type: ignore[arg-type]
            raise ValueError(
                f"row {r.method!r} has {len(r.mode_masses)} mode masses, "  # type: ignore[arg-type]
                f"expected {len(weights)} (one per true weight)"
            )
    headers = ["mode", "true"] + [r.method for r in used]
    cells = [
        [str(k + 1), f"{w:.3f}"] + [f"{r.mode_masses[k]:.3f}" for r in used]  # type: ignore[index]
        for k, w in enumerate(weights)
    ]
    found = [
        sum(m >= found_fraction * w for m, w in zip(r.mode_masses, weights, strict=True))  # type: ignore[arg-type]
        for r in used
    ]
    cells.append(["modes found", str(len(weights))] + [f"{n}/{len(weights)}" for n in found])
    return _markdown(headers, cells) if markdown else _narrow(headers, cells)


def _narrow(headers: list[str], cells: list[list[str]]) -> str:
    widths = [max([len(h)] + [len(r[j]) for r in cells]) for j, h in enumerate(headers)]
    widths = [max(w, 5) for w in widths]

    def line(values: list[str]) -> str:
        return "  ".join(
            v.ljust(w) if j == 0 else v.rjust(w)
            for j, (v, w) in enumerate(zip(values, widths, strict=True))
        ).rstrip()

    return "\n".join([line(headers), line(["-" * w for w in widths]), *map(line, cells)])


def well_mass_table(
    rows: Sequence[Row],
    right_mass: float,
    *,
    expected_visited: dict[str, float] | None = None,
    tolerance: float = 0.05,
    markdown: bool = False,
) -> str:
    r"""Many-well targets: the mass of the right well of every pair for every method, against
    the exact :math:`m_\mathrm{right}`, the pairs off by more than ``tolerance``, and the modes
    visited against the number expected of as many exact draws.

    A mode is a choice of well per pair (:math:`2^{D/2}` of them); a method that visits far fewer
    than expected is stuck in a few (MCMC draws are correlated, so even a good chain visits
    fewer than exact draws would).

    :param rows: rows whose ``well_masses`` are set (others are skipped).
    :param right_mass: :math:`m_\mathrm{right}` (``target.well_masses[1]``, 0.8443).
    :param expected_visited: ``{method: E[modes visited]}`` for its number of draws
        (:meth:`~pyro_flows.targets.ManyWell.expected_modes_visited`); ``-`` where missing.
    :param tolerance: a pair is *off* when :math:`|\hat m_{i,\mathrm{right}} -
        m_\mathrm{right}| >` ``tolerance``.
    :param markdown: Markdown instead of aligned text.

    Example:

    >>> rows = [Row("nuts", 1.0, 10, well_masses=[1.0, 1.0], modes_visited=1),
    ...         Row("is", 1.0, 10, well_masses=[0.85, 0.82], modes_visited=4)]
    >>> print(well_mass_table(rows, 0.8443, expected_visited={"nuts": 3.9, "is": 4.0}))
    pair                 exact   nuts     is
    -------------------  -----  -----  -----
    1                    0.844  1.000  0.850
    2                    0.844  1.000  0.820
    pairs off (> 0.05)       0    2/2    0/2
    modes visited (exp)         1 (4)  4 (4)

    References: Midgley et al., *Flow Annealed Importance Sampling Bootstrap*, ICLR 2023
    (many-well: modes and well masses).
    """
    right_mass = check_finite_number(right_mass, "right_mass")
    tolerance = check_fraction(tolerance, "tolerance")
    used = [r for r in check_rows(rows) if r.well_masses is not None]
    pairs = {len(r.well_masses) for r in used}  # type: ignore[arg-type]
    if len(pairs) > 1:
        raise ValueError(f"the rows have different numbers of pairs: {sorted(pairs)}")
    num_pairs = pairs.pop() if pairs else 0
    expected = expected_visited or {}
    headers = ["pair", "exact"] + [r.method for r in used]
    cells = [
        [str(i + 1), f"{right_mass:.3f}"] + [f"{r.well_masses[i]:.3f}" for r in used]  # type: ignore[index]
        for i in range(num_pairs)
    ]
    off = [
        sum(abs(m - right_mass) > tolerance for m in r.well_masses)  # type: ignore[union-attr]
        for r in used
    ]
    cells.append([f"pairs off (> {tolerance:g})", "0"] + [f"{n}/{num_pairs}" for n in off])

    def visited(r: Row) -> str:
        seen = "-" if r.modes_visited is None else str(r.modes_visited)
        e = expected.get(r.method)
        return seen if e is None else f"{seen} ({e:.0f})"

    cells.append(["modes visited (exp)", ""] + [visited(r) for r in used])
    return _markdown(headers, cells) if markdown else _narrow(headers, cells)
