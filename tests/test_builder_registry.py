"""The one builder registry: every consumer reads it, and a bad name gets a clear error."""

from __future__ import annotations

import inspect

import pytest
import torch

import pyro_flows.flows as flows
from pyro_flows import Flow
from pyro_flows.compare.settings import FlowSettings
from pyro_flows.flows.registry import BuilderSpec, register_builder
from pyro_flows.infer import FLOW_BUILDERS


def test_every_builder_function_of_the_package_is_registered():
    api = {"builder_names", "get_builder", "register_builder"}
    functions = {
        name
        for name in flows.__all__
        if inspect.isfunction(getattr(flows, name)) and name not in api
    }
    assert functions == set(flows.BUILDERS)
    for name, spec in flows.BUILDERS.items():
        assert spec.name == name
        assert getattr(flows, name) is spec.build


def test_autoflow_and_compare_read_the_registry():
    assert set(FLOW_BUILDERS) == set(flows.builder_names(guide=True))
    assert {"iaf", "maf", "nsf", "realnvp", "planar", "radial", "nice"} <= set(FLOW_BUILDERS)
    for name in flows.builder_names(event="vector"):
        FlowSettings(builder=name)  # accepted by compare's settings


@pytest.mark.parametrize("name", ["nope", 3, None])
def test_unknown_names_are_refused_with_the_choices(name):
    with pytest.raises(ValueError, match="expected one of"):
        flows.get_builder(name)


def test_get_builder_filters_by_event():
    assert flows.get_builder("glow", event="image") is flows.glow
    with pytest.raises(ValueError, match="unknown vector flow builder 'glow'"):
        flows.get_builder("glow", event="vector")


def test_a_name_is_registered_once_and_events_are_checked():
    with pytest.raises(ValueError, match="already registered"):
        register_builder(BuilderSpec("maf", flows.maf))
    with pytest.raises(ValueError, match="'vector' or 'image'"):
        register_builder(BuilderSpec("bad-event", flows.maf, event="graph"))
    assert "bad-event" not in flows.BUILDERS


@pytest.mark.parametrize("name", flows.builder_names(event="vector"))
def test_every_vector_builder_builds_from_the_registry(name):
    torch.manual_seed(0)
    flow = flows.get_builder(name, event="vector")(2)
    assert isinstance(flow, Flow)
    assert flow.log_prob(torch.randn(3, 2)).shape == (3,)
