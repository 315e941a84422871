"""``pyro-flows compare TARGET --quick`` end to end: the printed table, the checks, the report."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from pyro_flows.cli import main
from pyro_flows.compare.table import COLUMNS

PNG = b"\x89PNG\r\n\x1a\n"


def run(capsys, tmp_path: Path, *args: str) -> tuple[str, dict, Path]:
    out = tmp_path / "report"
    status = main(["compare", *args, "--quick", "--quiet", "--out", str(out)])
    assert status == 0
    printed = capsys.readouterr().out
    return printed, json.loads((out / "results.json").read_text()), out


def table_rows(printed: str) -> dict[str, list[str]]:
    """The printed table's data lines, by method."""
    lines = printed.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("method  wall s"))
    rows = {}
    for line in lines[start + 2 :]:
        if not line.strip() or line.startswith("! marks"):
            break
        rows[line.split()[0]] = line.split()
    return rows


def check_report(out: Path, figures: list[str]) -> str:
    report = (out / "report.md").read_text()
    for name in figures:
        assert (out / name).read_bytes()[:8] == PNG, name
        assert f"]({name})" in report, f"report.md does not link {name}"
    assert "| method | wall s | grad evals |" in report
    return report


@pytest.mark.slow  # about 15 s: NeuTra through a spline flow costs ~5 ms per gradient
def test_compare_u1_quick(capsys, tmp_path):
    printed, data, out = run(capsys, tmp_path, "u1")
    rows = table_rows(printed)
    assert list(rows) == ["flow", "nuts", "neutra", "mh", "mala", "is", "ais"]
    assert all(len(cells) == len(COLUMNS) for cells in rows.values())
    by = {r["method"]: r for r in data["rows"]}
    # the flow after 500 steps: close to the target, not yet within the 0.02-nat bar
    assert 0.0 < by["flow"]["kl"] < 0.3 and by["flow"]["ess_fraction"] > 0.4
    assert abs(by["is"]["log_Z_error"]) < 0.05  # importance sampling corrects the flow
    assert abs(by["ais"]["log_Z_error"]) < 0.1  # and so does annealing from it
    assert by["is"]["ess_bulk"] == pytest.approx(by["is"]["ess_fraction"] * 4000, rel=1e-6)
    assert by["neutra"]["grad_evals"] > by["flow"]["grad_evals"] == 500 * 256
    # MH takes no gradient per step; its default over-dispersed start searches for the modes
    # (64 starts x 301 gradient evaluations), which is charged
    assert by["mh"]["grad_evals"] == 64 * 301
    assert by["mala"]["mean_error"] < 0.6 and by["mh"]["mean_error"] < 0.3
    # the checks are printed under the table with the measured values
    kl = f"{by['flow']['kl']:.4f}"
    assert re.search(rf"\[(PASS|FAIL)\] u1: flow log Z - ELBO < 0.02 nats: {kl}", printed)
    assert [c["status"] for c in data["checks"]] == [
        "PASS" if by["flow"]["kl"] < 0.02 else "FAIL",
        "PASS" if by["flow"]["ess_fraction"] > 0.8 else "FAIL",
    ]
    check_report(out, ["samples.png", "traces.png", "elbo.png"])


def test_compare_funnel_quick_nuts_neutra(capsys, tmp_path):
    printed, data, out = run(capsys, tmp_path, "funnel", "--methods", "nuts,neutra")
    assert list(table_rows(printed)) == ["nuts", "neutra"]
    by = {r["method"]: r for r in data["rows"]}
    # NeuTra pays for the flow's training: 300 steps x 64 draws
    assert by["neutra"]["grad_evals"] > 300 * 64 > by["nuts"]["grad_evals"] / 10
    # 2 chains x 30 draws after 30 warm-up: mixing, not yet precision
    assert by["neutra"]["rhat"] < 1.2 and by["neutra"]["ess_bulk"] > 10
    # at most one divergence in 2 x 60 quick steps (loosened from 0 when the funnel's flow
    # became exp-scale and NeuTra's target_accept 0.99: over seeds 0-4 that had 1 divergence on
    # one seed, 0.95 had 19 and 1 on two; the full budget's check still demands none)
    assert by["neutra"]["divergences"] <= 1 and by["neutra"]["mean_error"] < 0.5
    checks = {c["name"]: c for c in data["checks"]}
    speed = checks["funnel: NeuTra ESS/grad >= 3x NUTS"]
    ratio = by["neutra"]["ess_per_grad"] / by["nuts"]["ess_per_grad"]
    assert speed["detail"].startswith(f"{ratio:.1f}x")
    assert speed["status"] == ("PASS" if ratio >= 3 else "FAIL")
    assert len(checks) == 3 and "funnel: NeuTra R-hat < 1.01" in printed
    # 10-D: pair plots of the first coordinates; NeuTra trained a flow, so its ELBO curve too
    check_report(out, ["samples.png", "traces.png", "elbo.png"])


def test_compare_mixture_quick_reports_mass_per_mode(capsys, tmp_path):
    printed, data, out = run(capsys, tmp_path, "mixture")
    weights = data["true_mode_weights"]
    assert weights == pytest.approx([0.1, 0.2, 0.3, 0.4])
    by = {r["method"]: r for r in data["rows"]}
    assert all(len(r["mode_masses"]) == 4 for r in data["rows"])
    # annealed reverse KL spreads the flow over the modes; importance weights fix the masses
    assert sum(m > 0 for m in by["flow"]["mode_masses"]) == 4
    assert by["is"]["mode_masses"] == pytest.approx(weights, abs=0.06)
    # NUTS's two chains start over-dispersed, in the two heaviest modes, and never leave them
    assert by["nuts"]["mode_masses"] == pytest.approx([0.0, 0.0, 0.5, 0.5])
    assert "mass per mode" in printed and "modes found" in printed
    found = [line for line in printed.splitlines() if line.startswith("modes found")][0]
    # truth, flow, nuts: the line agrees with the masses. Annealed reverse KL at the quick
    # budget leaves the 0.1-weight mode at the found line (0.5 x weight): 4/4 with torch's
    # default Adam, 3/4 (0.047) with the fused kernel's rounding, so 3 of 4 is the claim
    flow_found = sum(m >= 0.5 * w for m, w in zip(by["flow"]["mode_masses"], weights, strict=True))
    assert found.split()[2:4] == ["4", f"{flow_found}/4"] and found.split()[4] == "2/4"
    assert flow_found >= 3, by["flow"]["mode_masses"]
    assert re.search(r"\[(PASS|FAIL)\] mixture: flow finds every mode", printed)
    report = check_report(out, ["samples.png", "traces.png", "elbo.png", "modes.png"])
    assert "## Mass per mode" in report


def test_an_earlier_report_is_refused_then_replaced_whole_with_overwrite(tmp_path):
    from dataclasses import replace

    from pyro_flows.compare.run import compare
    from pyro_flows.compare.settings import SamplerSettings, settings_for

    tiny = replace(settings_for("banana", quick=True), mh=SamplerSettings(100, 100, 2))
    (tmp_path / "report.md").write_text("an earlier run")
    (tmp_path / "modes.png").write_bytes(PNG)  # a figure this run does not make
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match=r"already holds a report \(report.md, modes.png\)"):
        compare("banana", "mh", settings=tiny, progress=False, out=tmp_path)
    assert (tmp_path / "report.md").read_text() == "an earlier run"
    c = compare("banana", "mh", settings=tiny, progress=False, out=tmp_path, overwrite=True)
    assert c.report == tmp_path / "report.md" and "an earlier run" not in c.report.read_text()
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "notes.txt",  # not a report file: kept
        "report.md",
        "results.json",
        "samples.png",
        "traces.png",
    ]  # the stale modes.png is gone: no figure of the earlier run passes for one of this run
