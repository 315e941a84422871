"""The docs and docstrings hold no control characters: a ``"\\v"`` in a non-raw docstring turns
``\\varepsilon`` into a vertical tab, and the page renders "arepsilon"."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CONTROL = {chr(c) for c in range(32)} - {"\n", "\t"}


def _text_files() -> list[Path]:
    files = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.rst"))]
    return [f for f in files if f.exists()]


@pytest.mark.parametrize("path", _text_files(), ids=lambda p: p.name)
def test_docs_pages_hold_no_control_characters(path):
    bad = [
        (i + 1, repr(line))
        for i, line in enumerate(path.read_text().splitlines())
        if CONTROL & set(line)
    ]
    assert not bad, f"{path.name}: control characters on lines {bad}"


def test_string_literals_in_the_package_hold_no_control_characters():
    bad = []
    for path in sorted((ROOT / "pyro_flows").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                found = CONTROL & set(node.value) - {"\r"}
                if found:
                    bad.append(f"{path.relative_to(ROOT)}:{node.lineno} {sorted(map(repr, found))}")
    assert not bad, "escape sequences that should be raw strings: " + ", ".join(bad)
