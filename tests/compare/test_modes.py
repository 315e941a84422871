"""Several modes: the ``ais`` row, the IS-vs-AIS cross-check, the gmm40 and many-well checks and
the modes tables. Seeds fixed; the thresholds sit far from the measured values (see each test)."""

from __future__ import annotations

import json
import math
from dataclasses import replace

import pytest
import torch

from pyro_flows.compare import compare
from pyro_flows.compare.checks import (
    Alert,
    check_gmm40,
    check_many_well,
    format_alerts,
    run_alerts,
    run_checks,
)
from pyro_flows.compare.methods import METHODS, MethodRun, TrainedFlow, parse_methods, run_method
from pyro_flows.compare.metrics import Row, row_for
from pyro_flows.compare.settings import AISSettings, FlowSettings, settings_for
from pyro_flows.compare.table import well_mass_table
from pyro_flows.flow import Flow
from pyro_flows.infer import TargetFitHistory
from pyro_flows.targets import GaussianMixture, ManyWell, get_target
from pyro_flows.transforms.linear import InvertibleLinear


def one_mode_flow(centre: torch.Tensor) -> TrainedFlow:
    """A 'trained flow' that dropped a mode: N(centre, I), as reverse KL leaves it."""
    layer = InvertibleLinear(centre.numel(), bias=True).identity_()
    with torch.no_grad():
        layer.bias.copy_(centre)
    flow = Flow([layer]).eval()
    return TrainedFlow(flow, flow, TargetFitHistory(), 0.0, FlowSettings("linear"))


def test_ais_is_a_method_and_has_budgets():
    assert "ais" in METHODS and parse_methods(None) == METHODS
    assert parse_methods("flow,is,ais") == ("flow", "is", "ais")
    quick, full = settings_for("mixture", quick=True).ais, settings_for("mixture").ais
    assert quick.num_samples * quick.num_steps < full.num_samples * full.num_steps
    assert settings_for("gmm40", quick=True).ais == quick
    with pytest.raises(ValueError, match="num_samples"):
        AISSettings(num_samples=5)
    with pytest.raises(TypeError, match="ais must be an AISSettings"):
        replace(settings_for("u1"), ais=(1024, 64))


def test_dropped_mode_is_caught_by_ais():
    """Two equal modes 6 apart, the flow sits in one (N(mode, I)): IS reads log Z low by about
    log 2 (measured -0.653, se 0.023), AIS from the same flow recovers it (+0.007, se 0.079;
    1024 particles x 128 temperatures, 0.7 s), a gap of 0.66 nats against a bar of 0.25."""
    target = GaussianMixture(dim=2, num_modes=2, separation=6.0, weights=[1.0, 1.0])
    trained = one_mode_flow(target.modes[1])
    s = replace(settings_for("mixture", quick=True), ais=AISSettings(1024, 128))
    runs = {
        m: run_method(m, target, s, trained=trained, seed=0, progress=False)
        for m in ("flow", "is", "ais")
    }
    rows = [row_for(r, target) for r in runs.values()]
    flow, is_row, ais = rows
    assert flow.mode_masses[0] < 0.01  # the flow has dropped mode 1
    assert is_row.log_Z_error < -0.5
    assert abs(ais.log_Z_error) < 0.3 and ais.log_Z_stderr > 0
    assert ais.mode_masses == pytest.approx([0.5, 0.5], abs=0.15)
    # the ais row: its own gradients (no training here), Kish ESS, no ELBO
    result = runs["ais"].result
    assert ais.grad_evals == result.num_grad_evals > 0 and ais.kl is None
    assert ais.ess_bulk == pytest.approx(ais.ess_fraction * 1024, rel=1e-9)
    assert runs["ais"].samples.shape == (1, 1024, 2)
    alerts = run_alerts(rows)
    gap = [a for a in alerts if a.kind == "log Z gap"]
    assert len(gap) == 1 and gap[0].methods == ("is", "ais")
    g = ais.log_Z_hat - is_row.log_Z_hat
    assert g > 0.4
    text = str(gap[0])
    assert text.startswith("! ") and "the flow probably misses a mode" in text
    assert f"1 - exp(-{g:.3f}) = {-math.expm1(-g):.0%} of the mass" in text


def test_no_gap_warning_on_a_unimodal_target(tmp_path):
    """Banana, --quick: IS from the flow 0.020 (se 0.030), AIS 0.000 (se 0.005); the bar is
    0.09 nats. The k-hat warning follows the table's marks."""
    c = compare("banana", "flow,is,ais", quick=True, progress=False, out=tmp_path / "r")
    kinds = [a.kind for a in c.alerts]
    assert "log Z gap" not in kinds
    ais = c.row("ais")
    assert ais.grad_evals > c.row("is").grad_evals == 500 * 256  # training + annealing
    assert abs(ais.log_Z_error) < 0.05 and ais.ess_per_grad == ais.ess_bulk / ais.grad_evals
    flagged = any(r.khat is not None and r.khat > 0.7 for r in c.rows)
    assert ("k-hat" in kinds) == flagged
    summary = c.summary()
    report = (tmp_path / "r" / "report.md").read_text()
    data = json.loads((tmp_path / "r" / "results.json").read_text())
    assert [w["kind"] for w in data["warnings"]] == kinds
    if c.alerts:
        assert "warnings:\n! " in summary and "## Warnings" in report
    else:
        assert "warnings:" not in summary and "## Warnings" not in report
    assert c.runs["ais"].settings.endswith("from the trained flow")


def test_ais_without_a_flow_and_on_a_box():
    s = replace(settings_for("u2", quick=True), ais=AISSettings(200, 16))
    target = get_target("u2")  # on the box [-4, 4]^2: AIS runs unconstrained, maps back
    run = run_method("ais", target, s, seed=0, progress=False)
    assert run.settings.endswith("from a standard Normal") and run.history is None
    assert run.grad_evals == run.result.num_grad_evals
    assert bool(target.support.check(run.samples).all())
    row = row_for(run, target)
    assert math.isfinite(row.log_Z_hat) and row.log_Z_error is not None


def test_alerts_thresholds():
    ok = [Row("is", 1, 1, log_Z_hat=0.0, log_Z_stderr=0.01, khat=0.69),
          Row("ais", 1, 1, log_Z_hat=0.049, log_Z_stderr=0.001, khat=0.2),
          Row("nuts", 1, 1, rhat=1.009), Row("mh", 1, 1, rhat=math.nan)]  # fmt: skip
    assert run_alerts(ok) == [] and format_alerts([]) == ""
    # the bar is 3 combined se when that is larger than 0.05 nats
    wide = [replace(ok[0], log_Z_stderr=0.1), replace(ok[1], log_Z_hat=0.3)]
    assert run_alerts(wide) == []
    lower = run_alerts([ok[0], replace(ok[1], log_Z_hat=-0.2)])
    assert [a.kind for a in lower] == ["log Z gap"] and "AIS is lower" in lower[0].message
    flow_only = run_alerts([replace(ok[0], method="flow"), replace(ok[1], log_Z_hat=0.7)])
    assert flow_only[0].methods == ("flow", "ais")
    bad = run_alerts([replace(ok[0], khat=0.9), Row("nuts", 1, 1, rhat=1.3)])
    assert [a.kind for a in bad] == ["k-hat", "R-hat"]
    assert "is 0.90" in bad[0].message and "nuts 1.300" in bad[1].message
    assert str(Alert("R-hat", ("nuts",), "x")) == "! x"


def test_gmm40_checks_pass_for_exact_draws_and_fail_for_one_mode():
    target = get_target("gmm40")
    torch.manual_seed(0)
    exact = MethodRun("nuts", "mcmc", target.sample((2, 10_000)), 1.0, 0)
    stuck = MethodRun("mh", "mcmc", target.modes[0] + torch.randn(2, 500, 2), 1.0, 0)
    rows = [row_for(exact, target), row_for(stuck, target)]
    rows.append(Row("ais", 1, 1, log_Z_hat=-1.30, log_Z_error=-1.30, log_Z_stderr=0.03))
    checks = run_checks("gmm40", rows, target.true_mode_weights.tolist(), log_Z=0.0)
    by = {c.name: c for c in checks}
    assert by["gmm40: nuts finds every mode (mass >= 0.5 x 1/40)"].detail == "40/40 modes"
    assert by["gmm40: nuts finds every mode (mass >= 0.5 x 1/40)"].status == "PASS"
    assert by["gmm40: mh finds every mode (mass >= 0.5 x 1/40)"].detail == "1/40 modes"
    assert by["gmm40: ais log Z within 0.05 nats"].status == "FAIL"
    assert by["gmm40: flow log Z within 0.05 nats"].status == "SKIP"
    assert check_gmm40([], [0.5, 0.5])[0].status == "SKIP"


def test_many_well_rows_checks_and_table():
    target = ManyWell(dim=8)
    torch.manual_seed(0)
    exact = MethodRun("nuts", "mcmc", target.sample((2, 5000)), 1.0, 0)
    start = target.initial_params()["z"]
    stuck = MethodRun("mh", "mcmc", start + 0.1 * torch.randn(2, 300, 8), 1.0, 0)
    rows = [row_for(exact, target), row_for(stuck, target)]
    good, bad = rows
    assert good.well_masses == pytest.approx([0.8443] * 4, abs=0.02)
    assert good.modes_visited == 16 and good.num_draws == 10_000
    assert bad.well_masses == [1.0] * 4 and bad.modes_visited == 1
    checks = check_many_well(rows, target.well_masses.tolist(), target.log_Z)
    # the log Z checks of flow, flow_mcmc, is and ais: none of them ran
    assert [c.status for c in checks] == ["PASS", "FAIL", "SKIP", "SKIP", "SKIP", "SKIP"]
    assert checks[1].detail == "4/4 pairs off, worst 1.000"
    assert run_checks("many_well", rows, target.well_masses.tolist(), target.log_Z) == checks
    table = well_mass_table(rows, 0.8443, expected_visited={"nuts": 16.0, "mh": 16.0})
    assert table.splitlines()[-1].split()[-2:] == ["1", "(16)"]
    assert "pairs off (> 0.05)" in table and "4/4" in table
