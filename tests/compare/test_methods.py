"""The runners and the rows they produce, on inputs with known answers."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch

from pyro_flows.compare.methods import (
    METHODS,
    MethodRun,
    parse_methods,
    run_method,
    train_flow,
)
from pyro_flows.compare.metrics import row_for
from pyro_flows.compare.settings import (
    FlowSettings,
    SamplerSettings,
    settings_for,
)
from pyro_flows.targets import get_target

TINY_FLOW = FlowSettings(
    "realnvp", {"num_transforms": 2, "hidden_dims": (16,)}, steps=60, batch_size=64
)


def test_parse_methods():
    assert parse_methods("NUTS, neutra,nuts") == ("nuts", "neutra")
    assert parse_methods(["is", "flow"]) == ("is", "flow")
    assert parse_methods(None) == METHODS
    with pytest.raises(ValueError, match="unknown method.*'hmc'.*valid methods: flow, nuts"):
        parse_methods("flow,hmc")
    with pytest.raises(ValueError, match="no method given"):
        parse_methods(" , ")
    with pytest.raises(TypeError, match="comma-separated str"):
        parse_methods(3)  # type: ignore[arg-type]


def test_settings_lookup_and_validation():
    assert settings_for(" Funnel ").flow.builder == "iaf"
    quick, full = settings_for("u1", quick=True), settings_for("u1")
    assert quick.flow.steps < full.flow.steps and quick.nuts.num_samples < full.nuts.num_samples
    assert quick.flow.options == full.flow.options  # the same flow, trained for less
    with pytest.raises(ValueError, match="unknown target 'u5'; valid names: u1, u2"):
        settings_for("u5")
    with pytest.raises(ValueError, match="builder must be one of"):
        FlowSettings("glow")
    with pytest.raises(ValueError, match="no sampler settings for method 'flow'"):
        full.sampler("flow")
    assert SamplerSettings(10, 5, 3, {"seed": 1}).kwargs() == {
        "num_samples": 10,
        "warmup": 5,
        "num_chains": 3,
        "seed": 1,
    }


def test_box_target_flow_and_samplers_stay_in_the_box():
    target = get_target("u2")  # e^{-U2} on [-4, 4]^2
    trained = train_flow(target, TINY_FLOW, seed=0, progress=False)
    assert trained.grad_evals == 60 * 64 and trained.flow is not trained.base_flow
    s = replace(
        settings_for("u2", quick=True),
        mh=SamplerSettings(200, 100, 2),
        neutra=SamplerSettings(20, 20, 2, {"max_tree_depth": 3}),
        flow_samples=500,
    )
    mh = run_method("mh", target, s, seed=0, progress=False)
    assert mh.samples.shape == (2, 200, 2) and mh.grad_evals == 0
    # the chains ran on R^2 and were mapped onto the box
    assert bool((mh.samples.abs() < 4).all()) and mh.samples.abs().max() > 2.0
    flow = run_method("flow", target, s, trained=trained, seed=0)
    assert flow.samples.shape == (1, 500, 2) and bool((flow.samples.abs() < 4).all())
    assert flow.grad_evals == trained.grad_evals and flow.wall_time >= trained.wall_time
    neutra = run_method("neutra", target, s, trained=trained, seed=0, progress=False)
    assert neutra.samples.shape == (2, 20, 2) and bool((neutra.samples.abs() < 4).all())
    assert neutra.grad_evals > trained.grad_evals  # training + sampling
    with pytest.raises(ValueError, match="needs the trained flow"):
        run_method("is", target, s)
    with pytest.raises(ValueError, match="unknown method 'hmc'"):
        run_method("hmc", target, s)


def test_row_of_exact_draws_as_mcmc_chains():
    torch.manual_seed(0)
    target = get_target("banana")
    draws = target.sample((4, 500))
    run = MethodRun("nuts", "mcmc", draws, wall_time=2.0, grad_evals=10_000, divergences=0)
    row = row_for(run, target)
    assert row.rhat < 1.01 and 1500 < row.ess_bulk < 2600 and row.ess_tail > 1000
    assert row.ess_per_second == row.ess_bulk / 2.0 and row.ess_per_grad == row.ess_bulk / 1e4
    assert row.mean_error < 0.15 and row.sd_error < 0.1  # 2000 exact draws
    assert row.log_Z_hat is None and row.khat is None and row.mode_masses is None
    # a chain stuck in one place is caught
    stuck = MethodRun("mh", "mcmc", torch.cat([draws[:3], draws[3:] * 0 + 5.0]), 1.0, 0)
    bad = row_for(stuck, target)
    assert bad.rhat > 1.2 and bad.ess_bulk < 100 and bad.ess_per_grad is None
    assert bad.mean_error > 0.2


def test_importance_row_uses_the_weights():
    target = get_target("mixture")  # modes with weights 0.1, 0.2, 0.3, 0.4
    proposal = target.modes.repeat(5, 1)  # 20 points, each exactly on a mode
    lw = torch.log(torch.tensor([1.0, 1.0, 1.0, 1.0])).repeat(5)  # equal weights
    stats = {
        "elbo": -0.5,
        "log_Z_hat": 0.01,
        "log_Z_stderr": 0.01,
        "ess": 20.0,
        "ess_fraction": 1.0,
        "khat": -math.inf,
    }
    run = MethodRun(
        "is", "is", proposal.unsqueeze(0), 3.0, 600, proposal=proposal, log_weights=lw, stats=stats
    )
    row = row_for(run, target)
    assert row.mode_masses == pytest.approx([0.25] * 4)
    assert row.log_Z_error == pytest.approx(0.01) and row.kl == pytest.approx(0.5)
    assert row.ess_bulk == 20.0 and row.ess_per_grad == pytest.approx(20 / 600)
    assert row.ess_tail is None and row.rhat is None
    # weights proportional to the true ones give the true masses and the exact mean
    lw_true = target.true_mode_weights.log().repeat(5)
    row = row_for(replace(run, log_weights=lw_true), target)
    assert row.mode_masses == pytest.approx(target.true_mode_weights.tolist(), abs=1e-6)
    assert row.mean_error == pytest.approx(0.0, abs=1e-5)
    # the flow row shows q's own (unweighted) draws: here equal masses, not the truth
    flow = row_for(replace(run, method="flow", kind="flow", log_weights=lw_true), target)
    assert flow.mode_masses == pytest.approx([0.25] * 4) and flow.ess_bulk is None
