"""Rows -> aligned text and Markdown tables; the mass-per-mode table."""

from __future__ import annotations

import math
import re

import pytest

from pyro_flows.compare.metrics import Row
from pyro_flows.compare.table import (
    COLUMNS,
    format_table,
    format_value,
    markdown_table,
    mode_mass_table,
)


def rows() -> list[Row]:
    return [
        Row(
            "flow",
            28.25,
            768000,
            log_Z_hat=1.8751,
            log_Z_error=-0.0024,
            kl=0.0131,
            ess_fraction=0.912,
            khat=0.31,
            mean_error=0.02,
            sd_error=0.01,
        ),
        Row(
            "nuts",
            23.7,
            15598,
            ess_bulk=2.93,
            ess_tail=40.0,
            ess_per_second=0.124,
            ess_per_grad=1.88e-4,
            rhat=1.829,
            divergences=0,
            mean_error=0.0198,
            sd_error=0.004,
        ),
    ]


def test_text_table_is_aligned_with_dashes_for_missing_values():
    text = format_table(rows())
    lines = text.splitlines()
    assert len(lines) == 5
    header, rule, flow, nuts, legend = lines
    # NUTS's R-hat 1.829 is marked, and the legend says what the mark means
    assert "1.829!" in nuts and "!" not in flow
    assert legend == "! marks: R-hat > 1.01"
    assert header.split("  ")[0] == "method"
    # every column starts where its rule starts: the rule has one dash run per column
    runs = rule.split()
    assert len(runs) == len(COLUMNS) and all(set(r) == {"-"} for r in runs)
    # right-aligned numbers end at the end of their column's rule
    end = [m.end() for m in re.finditer(r"-+", rule)][1]  # "wall s"
    assert flow[:end].endswith("28.2") or flow[:end].endswith("28.3")
    assert nuts[:end].endswith("23.7")
    assert "768,000" in flow and "15,598" in nuts
    assert "1.88e-04" in nuts and "1.829" in nuts
    # the flow has no MCMC numbers, NUTS no importance-sampling numbers
    assert flow.split()[3:9] == ["-"] * 6
    assert nuts.split()[-5:] == ["-"] * 5


def test_column_selection_and_errors():
    text = format_table(rows(), columns=("method", "k-hat"))
    assert text.splitlines()[0].split() == ["method", "k-hat"]
    assert text.splitlines()[2].split() == ["flow", "0.31"]
    with pytest.raises(ValueError, match="unknown column 'ESS'.*ESS bulk"):
        format_table(rows(), columns=("method", "ESS"))
    with pytest.raises(TypeError, match="Row objects, got dict"):
        format_table([{"method": "x"}])  # type: ignore[list-item]


def test_markdown_table_escapes_pipes_and_right_aligns_numbers():
    md = markdown_table(rows())
    table, legend = md.split("\n\n")
    assert legend == "! marks: R-hat > 1.01"
    lines = table.splitlines()
    assert lines[0].startswith("| method | wall s |")
    assert "max \\|mean err\\| (sd)" in lines[0]  # a pipe inside a header is escaped
    cells = lines[1].strip("| ").split(" | ")
    assert cells[0] == ":---" and set(cells[1:]) == {"---:"}
    assert len(cells) == len(COLUMNS)
    assert lines[2].startswith("| flow | 28.") and lines[3].startswith("| nuts | 23.7 |")
    # every line has the same number of unescaped cell separators
    counts = {line.replace("\\|", "").count("|") for line in lines}
    assert counts == {len(COLUMNS) + 1}


def test_format_value_of_special_numbers():
    assert format_value("k-hat", -math.inf) == "-inf"
    assert format_value("k-hat", math.inf) == "inf"
    assert format_value("R-hat max", math.nan) == "nan"
    assert format_value("divergences", None) == "-"
    assert format_value("log Z err", 0.01234) == "+0.0123"


def test_mode_mass_table_counts_found_modes():
    found = Row("flow", 1.0, 1, mode_masses=[0.05, 0.2, 0.3, 0.45])  # 0.05 = 0.5 x 0.1: found
    missed = Row("nuts", 1.0, 1, mode_masses=[0.0, 0.0, 0.0, 1.0])
    plain = Row("mh", 1.0, 1)  # no masses: not shown
    text = mode_mass_table([found, missed, plain], [0.1, 0.2, 0.3, 0.4])
    lines = text.splitlines()
    assert lines[0].split() == ["mode", "true", "flow", "nuts"]
    assert lines[2].split() == ["1", "0.100", "0.050", "0.000"]
    assert lines[-1].split() == ["modes", "found", "4", "4/4", "1/4"]
    md = mode_mass_table([found], [0.1, 0.2, 0.3, 0.4], markdown=True)
    assert md.splitlines()[-1] == "| modes found | 4 | 4/4 |"
    strict = mode_mass_table([found], [0.1, 0.2, 0.3, 0.4], found_fraction=0.6)
    assert strict.splitlines()[-1].split()[-1] == "3/4"
    with pytest.raises(ValueError, match="3 mode masses, expected 4"):
        mode_mass_table([Row("x", 1.0, 1, mode_masses=[0.2, 0.3, 0.5])], [0.1, 0.2, 0.3, 0.4])


def test_untrustworthy_values_are_marked_in_every_flagged_column():
    bad = Row("flow", 1.0, 10, khat=0.93, rhat=1.02, divergences=3)
    good = Row("nuts", 1.0, 10, khat=0.5, rhat=1.005, divergences=0)
    text = format_table([bad, good], columns=("method", "k-hat", "R-hat max", "divergences"))
    flow_line, nuts_line = text.splitlines()[2:4]
    assert flow_line.count("!") == 3 and "!" not in nuts_line
    assert text.splitlines()[-1] == "! marks: k-hat > 0.7, R-hat > 1.01, divergences"
    assert "!" not in format_table([good], columns=("method", "k-hat"))
