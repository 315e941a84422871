"""Fuzz: the building blocks of ``pyro-flows compare`` (settings, method names, rows, tables,
checks, figures) and :mod:`pyro_flows.plots` on bad arguments."""

from __future__ import annotations

import pytest
import torch

from pyro_flows import flows
from pyro_flows.compare import (
    Check,
    FlowSettings,
    Row,
    SamplerSettings,
    TargetSettings,
    format_checks,
    format_table,
    markdown_table,
    mode_mass_table,
    parse_methods,
    run_checks,
    settings_for,
    train_flow,
)
from pyro_flows.compare.figures import density_on_grid
from pyro_flows.compare.methods import box_starts, run_method
from pyro_flows.plots import density_grid, plot_density_2d
from pyro_flows.targets import get_target

from ._cases import INF, NAN, bad_positive_ints, raises_naming


# -- names --------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "target, fragments",
    [("nope", ("'nope'", "u1")), (3, ("target", "int")), (None, ("target", "NoneType"))],
)
def test_settings_for_bad_target(target, fragments):
    with raises_naming(fragments):
        settings_for(target)


@pytest.mark.parametrize("quick", ["yes", 1, None])
def test_settings_for_bad_quick(quick):
    with raises_naming(("quick", type(quick).__name__)):
        settings_for("u1", quick=quick)


@pytest.mark.parametrize(
    "methods, fragments",
    [
        ("flow,gibbs", ("'gibbs'", "nuts")),
        ("", ("no method",)),
        (" , ", ("no method",)),
        ([], ("no method",)),
        (3, ("methods", "int")),
        (["nuts", 3], ("'3'",)),
    ],
)
def test_parse_methods_bad(methods, fragments):
    with raises_naming(fragments):
        parse_methods(methods)


# -- settings -----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "kwargs, fragments",
    [
        pytest.param({"builder": "glow"}, ("builder", "'glow'"), id="builder"),
        pytest.param({"builder": 3}, ("builder", "3"), id="builder-int"),
        pytest.param({"options": "num_transforms=2"}, ("options", "str"), id="options"),
        *[pytest.param({"steps": p.values[0]}, p.values[1], id=f"steps-{p.id}")
          for p in bad_positive_ints("steps")],
        *[pytest.param({"batch_size": p.values[0]}, p.values[1], id=f"batch-{p.id}")
          for p in bad_positive_ints("batch_size")],
        pytest.param({"lr": 0.0}, ("lr", "0"), id="lr-0"),
        pytest.param({"lr": NAN}, ("lr", "nan"), id="lr-nan"),
        pytest.param({"lr": INF}, ("lr", "inf"), id="lr-inf"),
        pytest.param({"lr": "0.1"}, ("lr", "str"), id="lr-str"),
        pytest.param({"anneal": 1.5}, ("anneal", "1.5"), id="anneal-big"),
        pytest.param({"anneal": 0.0}, ("anneal", "0"), id="anneal-0"),
        pytest.param({"anneal": NAN}, ("anneal", "nan"), id="anneal-nan"),
    ],
)
def test_flow_settings_bad(kwargs, fragments):
    options = {"builder": "realnvp", **kwargs}
    with raises_naming(fragments):
        FlowSettings(**options)


def test_flow_settings_bad_builder_option_named_at_build():
    s = FlowSettings("realnvp", {"num_transforms": 0})
    with raises_naming(("num_transforms", "0")):
        s.build(2)
    with raises_naming(("dim", "0")):
        FlowSettings("realnvp", {"num_transforms": 1}).build(0)


@pytest.mark.parametrize(
    "kwargs, fragments",
    [
        *[pytest.param({"num_samples": p.values[0]}, p.values[1], id=f"samples-{p.id}")
          for p in bad_positive_ints("num_samples")],
        pytest.param({"warmup": -1}, ("warmup", "-1"), id="warmup-negative"),
        pytest.param({"warmup": 1.5}, ("warmup", "1.5"), id="warmup-float"),
        pytest.param({"num_chains": 0}, ("num_chains", "0"), id="chains-0"),
        pytest.param({"num_chains": True}, ("num_chains", "True"), id="chains-bool"),
        pytest.param({"options": ["target_accept"]}, ("options", "list"), id="options"),
    ],
)
def test_sampler_settings_bad(kwargs, fragments):
    with raises_naming(fragments):
        SamplerSettings(**kwargs)


@pytest.mark.parametrize(
    "kwargs, fragments",
    [
        pytest.param({"flow": "realnvp"}, ("flow", "str"), id="flow"),
        pytest.param({"nuts": 100}, ("nuts", "int"), id="nuts"),
        pytest.param({"flow_samples": 0}, ("flow_samples", "0"), id="flow-samples"),
        pytest.param({"is_samples": -5}, ("is_samples", "-5"), id="is-samples"),
        pytest.param({"target_options": "dim=3"}, ("target_options", "str"), id="target-opts"),
    ],
)
def test_target_settings_bad(kwargs, fragments):
    options = {"flow": FlowSettings("realnvp"), **kwargs}
    with raises_naming(fragments):
        TargetSettings(**options)


@pytest.mark.parametrize("method", ["flow", "is", "gibbs", 3])
def test_target_settings_sampler_bad_method(method):
    with raises_naming(repr(method)):
        settings_for("u1").sampler(method)


# -- runs ---------------------------------------------------------------------------------------
def test_train_flow_bad_arguments():
    s = FlowSettings("realnvp", {"num_transforms": 1, "hidden_dims": (4,)}, steps=1,
                     batch_size=4)
    with raises_naming(("target", "str")):
        train_flow("banana", s, progress=False)
    with raises_naming(("settings", "dict")):
        train_flow(get_target("banana"), {"builder": "realnvp"}, progress=False)
    with raises_naming(("seed", "str")):
        train_flow(get_target("banana"), s, seed="0", progress=False)


def test_run_method_bad_arguments():
    s = settings_for("banana", quick=True)
    with raises_naming(("'gibbs'", "nuts")):
        run_method("gibbs", get_target("banana"), s, progress=False)
    with raises_naming(("trained", "flow")):
        run_method("neutra", get_target("banana"), s, progress=False)
    with raises_naming(("settings", "dict")):
        run_method("mh", get_target("banana"), {}, progress=False)


@pytest.mark.parametrize(
    "kwargs, fragments",
    [
        ({"num_chains": 0}, ("num_chains", "0")),
        ({"num_chains": 1.5}, ("num_chains", "1.5")),
        ({"radius": -1.0}, ("radius", "-1")),
        ({"radius": NAN}, ("radius", "nan")),
        ({"seed": "0"}, ("seed", "str")),
    ],
)
def test_box_starts_bad(kwargs, fragments):
    options = {"num_chains": 2, **kwargs}
    with raises_naming(fragments):
        box_starts(get_target("u3"), **options)


# -- rows, tables, checks -----------------------------------------------------------------------
def test_check_bad_status():
    with raises_naming(("status", "'OK'")):
        Check("x", "OK")


@pytest.mark.parametrize(
    "columns, fragments",
    [(("method", "ESS/min"), ("'ESS/min'", "ESS/grad")), ("method", ("columns", "str"))],
)
@pytest.mark.parametrize("table", [format_table, markdown_table])
def test_table_bad_columns(table, columns, fragments):
    with raises_naming(fragments):
        table([Row("mh", 1.0, 0)], columns=columns)


@pytest.mark.parametrize("table", [format_table, markdown_table])
def test_table_bad_rows(table):
    with raises_naming(("Row", "dict")):
        table([{"method": "mh"}])
    with raises_naming(("rows", "Row")):
        table(Row("mh", 1.0, 0))


@pytest.mark.parametrize("table", [format_table, markdown_table])
def test_table_of_no_rows_and_non_finite_values(table):
    assert "method" in table([])
    text = table([Row("mh", NAN, 0, rhat=INF, kl=-INF)])
    assert "nan" in text and "inf" in text


@pytest.mark.parametrize(
    "weights, kwargs, fragments",
    [
        ([0.5], {}, ("2 mode masses", "1")),
        ([0.5, NAN], {}, ("true_weights", "nan")),
        ([0.5, -0.5], {}, ("true_weights", "-0.5")),
        ([0.5, 0.5], {"found_fraction": 0.0}, ("found_fraction", "0")),
        ([0.5, 0.5], {"found_fraction": 1.5}, ("found_fraction", "1.5")),
        ("ab", {}, ("true_weights",)),
    ],
)
def test_mode_mass_table_bad(weights, kwargs, fragments):
    rows = [Row("flow", 1.0, 1, mode_masses=[0.4, 0.6])]
    with raises_naming(fragments):
        mode_mass_table(rows, weights, **kwargs)


@pytest.mark.parametrize(
    "target, rows, kwargs, fragments",
    [
        ("mixture", [], {}, ("true_weights",)),
        (3, [], {}, ("target", "int")),
        ("u1", [{"method": "flow"}], {}, ("Row", "dict")),
        ("mixture", [Row("flow", 1.0, 1, mode_masses=[0.5])], {"true_weights": [0.5, 0.5]},
         ("1 mode masses", "2")),
    ],
)
def test_run_checks_bad(target, rows, kwargs, fragments):
    with raises_naming(fragments):
        run_checks(target, rows, **kwargs)


def test_run_checks_with_nan_values_fail_rather_than_pass():
    checks = run_checks("u1", [Row("flow", 1.0, 1, kl=NAN, ess_fraction=NAN)])
    assert [c.status for c in checks] == ["FAIL", "FAIL"]


def test_format_checks_bad():
    with raises_naming(("Check", "str")):
        format_checks(["[PASS] a"])


# -- figures ------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "bounds, resolution, fragments",
    [
        (((-4, 4),), 10, ("bounds", "2")),
        (((4, -4), (-4, 4)), 10, ("bounds", "(4, -4)")),
        (((-4, NAN), (-4, 4)), 10, ("bounds", "nan")),
        (((-4, 4), (-4, 4)), 1, ("resolution", "1")),
        (((-4, 4), (-4, 4)), 2.5, ("resolution", "2.5")),
    ],
)
def test_density_on_grid_bad(bounds, resolution, fragments):
    with raises_naming(fragments):
        density_on_grid(get_target("u1"), bounds, resolution)


def test_density_on_grid_wrong_dim():
    with raises_naming(("2-D", "dim=4")):
        density_on_grid(get_target("funnel", dim=4), ((-4, 4), (-4, 4)), 10)


def _flow2d():
    torch.manual_seed(0)
    return flows.realnvp(2, num_transforms=1, hidden_dims=(4,))


@pytest.mark.parametrize(
    "bounds, resolution, fragments",
    [
        ((4.0, -4.0), 10, ("bounds", "(4.0, -4.0)")),
        ((-4.0, INF), 10, ("bounds", "inf")),
        ((-4.0,), 10, ("bounds", "(-4.0,)")),
        ((-4.0, 4.0), 0, ("resolution", "0")),
        ((-4.0, 4.0), 1.5, ("resolution", "1.5")),
    ],
)
def test_density_grid_bad(bounds, resolution, fragments):
    with raises_naming(fragments):
        density_grid(_flow2d(), bounds, resolution)


def test_density_grid_bad_flow():
    with raises_naming(("2-D", "input_dim=3")):
        density_grid(flows.realnvp(3, num_transforms=1, hidden_dims=(4,)))
    with raises_naming(("flow", "Linear")):
        density_grid(torch.nn.Linear(2, 2))


def test_plot_density_2d_bad_data(tmp_path):
    with raises_naming(("(rows, 2)", "(5, 3)")):
        plot_density_2d(_flow2d(), torch.zeros(5, 3), tmp_path / "a.png")
    with raises_naming(("num_samples", "0")):
        plot_density_2d(_flow2d(), torch.zeros(5, 2), tmp_path / "a.png", num_samples=0)
    assert not (tmp_path / "a.png").exists()


def test_plot_density_2d_numpy_data(tmp_path):
    path = plot_density_2d(_flow2d(), torch.randn(20, 2).numpy(), tmp_path / "b.png",
                           num_samples=50)
    assert path.exists()
