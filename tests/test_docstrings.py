"""Every public name documents its maths, costs, a runnable example and references."""

from __future__ import annotations

import inspect

import pytest

import pyro_flows
from pyro_flows import flows, nn, transforms

ABSTRACT = {
    "FlowTransform",
    "ConditionedTransform",
    "CouplingTransform",
    "WrappedTransform",
    "ImageTransform",
}
LAYERS = [getattr(transforms, n) for n in transforms.__all__ if n not in ABSTRACT]
BUILDERS = [spec.build for spec in flows.BUILDERS.values()]
PUBLIC = [*LAYERS, *BUILDERS, pyro_flows.Flow, nn.MADE, nn.MLP]


@pytest.mark.parametrize("obj", PUBLIC, ids=lambda o: o.__name__)
def test_has_a_runnable_example(obj):
    doc = inspect.getdoc(obj) or ""
    assert ">>>" in doc, f"{obj.__name__} has no doctest example"


@pytest.mark.parametrize("obj", LAYERS + BUILDERS, ids=lambda o: o.__name__)
def test_states_the_cost_of_each_direction(obj):
    doc = inspect.getdoc(obj) or ""
    assert "Cost" in doc or "cost" in doc, f"{obj.__name__} does not state its costs"


@pytest.mark.parametrize("obj", LAYERS + [nn.MADE], ids=lambda o: o.__name__)
def test_has_maths_and_references(obj):
    doc = inspect.getdoc(obj) or ""
    module_doc = inspect.getdoc(inspect.getmodule(obj)) or ""
    assert ":math:" in doc or ".. math::" in doc or ".. math::" in module_doc, obj.__name__
    assert "Reference" in doc or "Reference" in module_doc, f"{obj.__name__} cites nothing"


# Records and exceptions document themselves by their fields; every function and model class of
# the inference and target packages needs the full treatment.
RECORDS = {"FitHistory", "NonFiniteLossError", "TargetError", "TargetFitHistory", "SampleResult",
           "TargetDensity", "TargetOutputError", "FLOW_BUILDERS", "TARGETS",
           "DistillHistory"}
INFERENCE = [
    getattr(module, n)
    for module in (pyro_flows.infer, pyro_flows.targets)
    for n in module.__all__
    if n not in RECORDS and callable(getattr(module, n))
]


@pytest.mark.parametrize("obj", INFERENCE, ids=lambda o: o.__name__)
def test_inference_and_targets_have_examples_maths_and_references(obj):
    doc = inspect.getdoc(obj) or ""
    module_doc = inspect.getdoc(inspect.getmodule(obj)) or ""
    assert ">>>" in doc or ">>>" in module_doc, f"{obj.__name__} has no doctest example"
    assert ":math:" in doc or ".. math::" in doc or ".. math::" in module_doc, obj.__name__
    assert "Reference" in doc or "Reference" in module_doc, f"{obj.__name__} cites nothing"
