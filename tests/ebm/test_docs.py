"""Every public name of pyro_flows.ebm documents its maths, a runnable example and references."""

from __future__ import annotations

import inspect

import pytest

import pyro_flows.ebm as ebm

RECORDS = {"EBMHistory", "METHODS"}
PUBLIC = [getattr(ebm, n) for n in ebm.__all__ if n not in RECORDS]


@pytest.mark.parametrize("obj", PUBLIC, ids=lambda o: o.__name__)
def test_has_maths_example_and_references(obj):
    doc = inspect.getdoc(obj) or ""
    assert ">>>" in doc, f"{obj.__name__} has no doctest example"
    assert ":math:" in doc or ".. math::" in doc, f"{obj.__name__} has no maths"
    assert "Reference" in doc, f"{obj.__name__} cites nothing"


def test_every_method_is_documented_on_the_docs_page():
    from pathlib import Path

    page = (Path(__file__).resolve().parents[2] / "docs" / "ebm.rst").read_text()
    for name in ebm.METHODS:
        assert f'``"{name}"``' in page
