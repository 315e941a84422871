"""Every public name of pyro_flows.targets documents its maths, a runnable example and references
(the doctests themselves run under pytest's --doctest-modules)."""

from __future__ import annotations

import inspect

import pytest

import pyro_flows.targets as targets

PUBLIC = [getattr(targets, name) for name in targets.__all__ if name != "TARGETS"]


@pytest.mark.parametrize("obj", PUBLIC, ids=lambda o: o.__name__)
def test_docstring_has_maths_example_and_references(obj):
    doc = inspect.getdoc(obj) or ""
    assert ">>>" in doc, f"{obj.__name__} has no example"
    assert ":math:" in doc or ".. math::" in doc, f"{obj.__name__} has no maths"
    assert "References:" in doc, f"{obj.__name__} cites nothing"


CLASSES = [o for o in PUBLIC if isinstance(o, type)]


@pytest.mark.parametrize("obj", CLASSES, ids=lambda o: o.__name__)
def test_classes_state_their_cost(obj):
    assert "Cost" in (inspect.getdoc(obj) or ""), obj.__name__


def test_registry_is_documented():
    assert "gaussian100" in (inspect.getdoc(targets.registry) or "")
