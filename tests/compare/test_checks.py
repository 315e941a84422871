"""The PASS/FAIL requirements against known inputs, at and around their thresholds."""

from __future__ import annotations

import pytest

from pyro_flows.compare.checks import (
    Check,
    check_funnel,
    check_mixture,
    check_u1,
    format_checks,
    run_checks,
)
from pyro_flows.compare.metrics import Row


def flow(**kw) -> Row:
    return Row("flow", 10.0, 1000, **kw)


@pytest.mark.parametrize(
    ("kl", "ess", "expected"),
    [
        (0.013, 0.91, ["PASS", "PASS"]),
        (0.0199, 0.801, ["PASS", "PASS"]),
        (0.02, 0.8, ["FAIL", "FAIL"]),  # both bars are strict
        (0.5, 0.95, ["FAIL", "PASS"]),
    ],
)
def test_u1(kl, ess, expected):
    checks = check_u1([flow(kl=kl, ess_fraction=ess)])
    assert [c.status for c in checks] == expected
    assert checks[0].detail == f"{kl:.4f}" and checks[1].detail == f"{ess:.3f}"


def test_u1_without_the_flow_is_skipped():
    assert [c.status for c in check_u1([Row("nuts", 1.0, 10)])] == ["SKIP", "SKIP"]
    assert [c.status for c in check_u1({})] == ["SKIP", "SKIP"]


def funnel_rows(ratio: float, divergences: int = 0, rhat: float | None = 1.004) -> list[Row]:
    nuts = Row("nuts", 60.0, 60000, ess_per_grad=1e-4, rhat=1.2, divergences=5)
    neutra = Row(
        "neutra", 90.0, 80000, ess_per_grad=ratio * 1e-4, rhat=rhat, divergences=divergences
    )
    return [nuts, neutra]


def test_funnel_speedup_threshold_divergences_and_rhat():
    assert [c.status for c in check_funnel(funnel_rows(3.0))] == ["PASS", "PASS", "PASS"]
    assert [c.status for c in check_funnel(funnel_rows(2.99))] == ["FAIL", "PASS", "PASS"]
    assert [c.status for c in check_funnel(funnel_rows(12.0, divergences=2))] == [
        "PASS",
        "FAIL",
        "PASS",
    ]
    assert [c.status for c in check_funnel(funnel_rows(12.0, rhat=1.01))] == [
        "PASS",
        "PASS",
        "FAIL",
    ]
    assert check_funnel(funnel_rows(12.0, rhat=None))[2].status == "SKIP"
    assert check_funnel(funnel_rows(12.0))[0].detail.startswith("12.0x")
    # plain NUTS's divergences do not count against NeuTra
    assert check_funnel(funnel_rows(12.0))[1].detail == "0"


def test_funnel_with_missing_methods():
    only_nuts = check_funnel([Row("nuts", 1.0, 10, ess_per_grad=1e-3)])
    assert [c.status for c in only_nuts] == ["SKIP", "SKIP", "SKIP"]
    assert "neutra" in only_nuts[0].detail
    only_neutra = check_funnel([Row("neutra", 1.0, 10, ess_per_grad=1e-3, rhat=1.0, divergences=0)])
    assert [c.status for c in only_neutra] == ["SKIP", "PASS", "PASS"]


def test_mixture_modes_at_and_below_half_their_weight():
    weights = [0.1, 0.2, 0.3, 0.4]
    assert check_mixture([flow(mode_masses=[0.05, 0.1, 0.15, 0.7])], weights)[0].passed
    bad = check_mixture([flow(mode_masses=[0.049, 0.2, 0.3, 0.451])], weights)[0]
    assert bad.status == "FAIL" and bad.detail == "3/4 modes; missed mode 1 (0.049 vs 0.100)"
    assert (
        check_mixture([Row("nuts", 1.0, 1, mode_masses=[0, 0, 0, 1.0])], weights)[0].status
        == "SKIP"
    )
    with pytest.raises(ValueError, match="3 mode masses but there are 4"):
        check_mixture([flow(mode_masses=[0.3, 0.3, 0.4])], weights)


def test_run_checks_dispatch_and_format():
    assert [c.name.split(":")[0] for c in run_checks("U1", [flow(kl=0.01, ess_fraction=0.9)])] == [
        "u1",
        "u1",
    ]
    assert len(run_checks("funnel", funnel_rows(5.0))) == 3
    assert run_checks("ring", [flow()]) == []
    with pytest.raises(ValueError, match="true_weights"):
        run_checks("mixture", [flow(mode_masses=[1.0])])
    text = format_checks([Check("a", "PASS"), Check("b", "FAIL", "x"), Check("c", "SKIP")])
    assert text.splitlines() == ["[PASS] a", "[FAIL] b: x", "[SKIP] c", "1 PASS, 1 FAIL, 1 SKIP"]
    assert format_checks([]) == "no fixed targets for this target"
    with pytest.raises(ValueError, match="status must be"):
        Check("a", "OK")
