"""The ``flow_mcmc`` row: a flow trained by ``fit_target(method="flow_mcmc")`` (forward KL on
flow-assisted tempered MALA chains), run when named, held to the mode and log Z checks."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from pyro_flows import cli
from pyro_flows.compare import compare
from pyro_flows.compare.checks import (
    LOG_Z_METHODS,
    MIXTURE_METHODS,
    check_gmm40,
    check_mixture,
)
from pyro_flows.compare.figures import _label
from pyro_flows.compare.methods import (
    ALL_METHODS,
    EXTRA_METHODS,
    FLOW_ROWS,
    METHODS,
    MethodRun,
    TrainedFlow,
    flow_settings,
    parse_methods,
    run_method,
)
from pyro_flows.compare.metrics import Row
from pyro_flows.compare.run import _missed_modes
from pyro_flows.compare.settings import FlowSettings, settings_for
from pyro_flows.flow import Flow
from pyro_flows.infer import TargetFitHistory
from pyro_flows.targets import get_target
from pyro_flows.transforms.linear import InvertibleLinear

# A small budget on the 4-mode mixture (weights 0.1-0.4, modes 8 apart): 200 steps x 64, a
# 2-layer RealNVP. Measured (mass per mode, found = mass >= half the true weight):
#   seed 0: flow_mcmc [0.130, 0.233, 0.305, 0.333] 4/4; annealed reverse KL [0.006, 0.000,
#           0.076, 0.918] 2/4
#   seed 1: flow_mcmc [0.132, 0.186, 0.296, 0.385] 4/4; annealed reverse KL [0.012, 0.000,
#           0.102, 0.886] 2/4
# flow_mcmc spends ~336 000 gradients (77 000 of them the mode search's) against 12 800.
SMALL = FlowSettings(
    "realnvp", {"num_transforms": 2, "hidden_dims": (32, 32)}, steps=200, batch_size=64,
    anneal=0.5,
)


def small_settings():
    return replace(settings_for("mixture", quick=True), flow=SMALL, flow_samples=2000)


def test_flow_mcmc_is_run_when_named():
    assert "flow_mcmc" not in METHODS and EXTRA_METHODS == ("flow_mcmc",)
    assert ALL_METHODS == METHODS + EXTRA_METHODS and set(FLOW_ROWS) == {"flow", "flow_mcmc"}
    assert parse_methods(None) == METHODS  # the default set leaves it out
    assert parse_methods("FLOW_MCMC, flow") == ("flow_mcmc", "flow")
    with pytest.raises(ValueError, match="valid methods: flow, nuts.*ais, flow_mcmc"):
        parse_methods("flow_mcm")
    # the command line's lists are the package's
    assert cli._ALL_METHODS == ",".join(METHODS)
    assert cli._EXTRA_METHODS == ",".join(EXTRA_METHODS)
    assert cli.build_parser().parse_args(["compare", "u1"]).methods == ",".join(METHODS)
    # checks and figures know the row
    assert "flow_mcmc" in LOG_Z_METHODS and "flow_mcmc" in MIXTURE_METHODS
    run = MethodRun("flow_mcmc", "flow", torch.zeros(1, 3, 2), 1.0, 1)
    assert _label(run) == "flow q (flow MCMC, forward KL)"


def test_flow_settings_of_the_row():
    s = settings_for("gmm40", quick=True)
    own = flow_settings("flow_mcmc", s)
    assert (own.method, own.anneal) == ("flow_mcmc", None) and s.flow.anneal == 0.5
    assert replace(own, method=s.flow.method, anneal=s.flow.anneal) == s.flow  # same flow, budget
    assert flow_settings("flow", s) is s.flow and flow_settings("neutra", s) is s.flow
    assert own.describe().endswith("500 steps x 256 chains per level, lr 0.003, "
                                   "fit_target(method='flow_mcmc')")
    assert s.flow.describe().endswith("256 draws, lr 0.003, annealed over 50% of the steps")
    # a shared flow already trained by flow_mcmc is the row's own flow
    mcmc_shared = replace(s, flow=own)
    assert flow_settings("flow_mcmc", mcmc_shared) is own
    with pytest.raises(ValueError, match="unknown method 'hmc'"):
        flow_settings("hmc", s)


def test_run_method_needs_a_flow_mcmc_flow():
    target = get_target("mixture")
    s = small_settings()
    with pytest.raises(ValueError, match="'flow_mcmc' needs the trained flow"):
        run_method("flow_mcmc", target, s)
    layer = InvertibleLinear(2, bias=True).identity_()
    flow = Flow([layer]).eval()
    reverse_kl = TrainedFlow(flow, flow, TargetFitHistory(), 0.0, FlowSettings("linear"))
    with pytest.raises(ValueError, match=r"fit_target\(method='flow_mcmc'\), got one trained by "
                       r"'reverse_kl'.*flow_settings\('flow_mcmc', settings\)"):
        run_method("flow_mcmc", target, s, trained=reverse_kl)
    history = TargetFitHistory(method="flow_mcmc", grad_evals=1234)
    mcmc = TrainedFlow(flow, flow, history, 0.5, flow_settings("flow_mcmc", s))
    run = run_method("flow_mcmc", target, s, trained=mcmc, seed=0)
    assert run.kind == "flow" and run.samples.shape == (1, 2000, 2)
    assert run.grad_evals == 1234 and run.history is history and run.wall_time >= 0.5
    assert run.settings.endswith("fit_target(method='flow_mcmc'); 2000 draws")


@pytest.mark.parametrize("seed", [0, 1])
def test_flow_mcmc_finds_every_mode_where_reverse_kl_misses_some(seed):
    c = compare("mixture", "flow,flow_mcmc", settings=small_settings(), seed=seed, progress=False)
    assert [r.method for r in c.rows] == ["flow", "flow_mcmc"]
    flow, mcmc = c.row("flow"), c.row("flow_mcmc")
    history = c.runs["flow_mcmc"].history
    assert history.method == "flow_mcmc" and history.modes_found >= 4
    assert c.trained is not None and c.trained.history is not history  # its own flow
    # charged every gradient of its training, the search's and the chains' included
    assert mcmc.grad_evals == history.grad_evals > 20 * flow.grad_evals == 20 * 200 * 64
    assert mcmc.wall_time >= c.runs["flow_mcmc"].history.time
    # its own importance numbers, like the flow row's
    assert mcmc.log_Z_hat is not None and mcmc.kl is not None and mcmc.ess_bulk is None
    by = {ch.name.split(" finds")[0]: ch for ch in c.checks}
    assert by["mixture: flow_mcmc"].status == "PASS", by["mixture: flow_mcmc"].detail
    assert by["mixture: flow_mcmc"].detail == "4/4 modes"
    # the same budget by annealed reverse KL drops a mode (measured: modes 1 and 2)
    assert by["mixture: flow"].status == "FAIL" and "mode 2 (0.0" in by["mixture: flow"].detail
    assert min(m / w for m, w in zip(mcmc.mode_masses, [0.1, 0.2, 0.3, 0.4], strict=True)) > 0.5
    table = c.mode_table()
    assert table.splitlines()[0].split() == ["mode", "true", "flow", "flow_mcmc"]
    assert table.splitlines()[-1].split()[-1] == "4/4"


def test_the_flow_row_is_the_same_with_or_without_flow_mcmc():
    s = small_settings()
    alone = compare("mixture", "flow", settings=s, seed=0, progress=False).row("flow")
    both = compare("mixture", "flow_mcmc,flow", settings=s, seed=0, progress=False).row("flow")
    a, b = alone.as_dict(), both.as_dict()
    a.pop("wall_time"), b.pop("wall_time")
    assert a == b


def test_checks_hold_flow_mcmc_to_modes_and_log_z():
    weights = [0.1, 0.2, 0.3, 0.4]
    rows = [Row("flow_mcmc", 1.0, 1, mode_masses=[0.09, 0.22, 0.27, 0.42])]
    checks = check_mixture(rows, weights)
    assert [(c.name.split(":")[1].split()[0], c.status) for c in checks] == [
        ("flow", "SKIP"), ("flow_mcmc", "PASS"), ("flow_mcmc", "FAIL")]
    assert checks[2].detail == "worst 0.0300 (mode 3: 0.270 vs 0.300)"  # the bar is 0.01
    close = [Row("flow_mcmc", 1.0, 1, mode_masses=[0.105, 0.195, 0.308, 0.392])]
    assert check_mixture(close, weights)[2].status == "PASS"
    assert checks[0].detail == "flow not run"
    with pytest.raises(ValueError, match="flow_mcmc row has 3 mode masses"):
        check_mixture([Row("flow_mcmc", 1.0, 1, mode_masses=[0.5, 0.3, 0.2])], weights)
    gmm = check_gmm40(
        [Row("flow_mcmc", 1.0, 1, mode_masses=[0.5, 0.5], log_Z_hat=-0.03, log_Z_error=-0.03)],
        [0.5, 0.5],
    )
    by = {c.name: c for c in gmm}
    assert by["gmm40: flow_mcmc finds every mode (mass >= 0.5 x 1/2)"].status == "PASS"
    assert by["gmm40: flow_mcmc log Z within 0.05 nats"].status == "PASS"
    assert by["gmm40: flow log Z within 0.05 nats"].status == "SKIP"


def test_missed_modes_of_the_flow_mcmc_flow_are_a_warning():
    flow = Flow([InvertibleLinear(2, bias=True).identity_()]).eval()
    missed = TargetFitHistory(method="flow_mcmc", missed_modes=[[1.0, 2.0]], mode_check="1 missed")
    shared = TrainedFlow(flow, flow, TargetFitHistory(), 0.0, FlowSettings("linear"))
    run = MethodRun("flow_mcmc", "flow", torch.zeros(1, 3, 2), 1.0, 1, history=missed)
    alerts = _missed_modes(shared, {"flow_mcmc": run})
    assert [a.methods for a in alerts] == [("flow_mcmc",)]
    assert "the flow of flow_mcmc (fit_target(method='flow_mcmc')) misses 1 mode(s)" in str(
        alerts[0]) and "1 missed" in str(alerts[0])
    # one flow shared by both rows (settings.flow trained by flow_mcmc): one warning, not two
    same = TrainedFlow(flow, flow, missed, 0.0, FlowSettings("linear", method="flow_mcmc"))
    assert [a.methods for a in _missed_modes(same, {"flow_mcmc": run})] == [("flow",)]
