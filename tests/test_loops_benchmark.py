"""Smoke tests of ``benchmarks/loops.py`` (issue 18): a ``--quick`` run prints every part's
rows and writes consistent JSON, ``--profile`` prints its tables, bad arguments are refused, and
the hand loops hold out the same validation rows as ``fit`` (the timings themselves depend on
the machine and are not checked)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCH = os.path.join(ROOT, "benchmarks")
SCRIPT = os.path.join(BENCH, "loops.py")
ENV = {**os.environ, "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1"}


def _run(args: list[str], timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, SCRIPT, *args], cwd=ROOT, capture_output=True, text=True,
        timeout=timeout, env=ENV,
    )


def test_quick_run_prints_every_row_and_writes_json(tmp_path) -> None:
    out = tmp_path / "loops.json"
    proc = _run(["--quick", "--threads", "1", "--json", str(out)])
    assert proc.returncode == 0, f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    text = proc.stdout
    for heading in ("== fit ==", "== svi ==", "== target =="):
        assert heading in text
    for label in ("fit maf(2)", "svi step, logistic regression D=10", "fit_target iaf(2)",
                  "fit_target realnvp(2)", "torch threads 1", "targets: fit <= 0.8"):
        assert label in text, f"{label!r} missing from:\n{text}"
    assert text.count("    ratio ours/") == 4
    data = json.loads(out.read_text())
    rows = data["rows"]
    assert [r["part"] for r in rows] == ["fit", "svi", "target", "target"]
    for r in rows:
        assert r["median_s"]["ours"] > 0
        assert all(t > 0 for times in r["times_s"].values() if times for t in times)
        if r["peer"] is not None:
            peer = r["median_s"][r["peer"]]
            assert r["ratio"] == pytest.approx(r["median_s"]["ours"] / peer)
    target = rows[2]
    timed = {p: target["median_s"][p] for p in target["info"]["peers"] if target["median_s"][p]}
    assert target["peer"] == min(timed, key=timed.get)  # the ratio's peer is the fastest one
    svi = rows[1]["info"]
    assert svi["ours"]["first_step_s"] > 0 and svi["AutoIAFNormal same shape"]["params"] > 0
    # the row times AutoFlow as its defaults give it (the start accepted, the tail stage on),
    # and says so; the guide without the tail stage is a column of its own
    assert "(start accepted, tail stage on)" in rows[1]["row"]
    assert svi["ours"]["params"] > svi["ours, tail_stage=False"]["params"]
    assert data["environment"]["torch_threads"] == 1


def test_profile_prints_operators_functions_and_ablations() -> None:
    proc = _run(["--quick", "--parts", "target", "--target-steps", "12", "--repeats", "1",
                 "--profile"])
    assert proc.returncode == 0, f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    text = proc.stdout
    for piece in ("== profile ==", "torch.profiler, by self CPU", "cProfile, by own time",
                  "Self CPU time total", "ncalls", "fit_target iaf(2): ablations",
                  "clip_grad_norm=None"):
        assert piece in text, f"{piece!r} missing from:\n{text}"


def test_bad_arguments_are_refused() -> None:
    proc = _run(["--repeats", "0"], timeout=120)
    assert proc.returncode != 0 and "must be a positive integer, got 0" in proc.stderr
    proc = _run(["--parts", "nope"], timeout=120)
    assert proc.returncode != 0 and "invalid choice" in proc.stderr


def test_hand_loops_hold_out_the_rows_fit_holds_out() -> None:
    sys.path.insert(0, BENCH)
    try:
        import _hand_loops
    finally:
        sys.path.remove(BENCH)
    from pyro_flows.infer._data import split

    for seed, n in ((0, 100), (3, 257)):
        x = torch.randn(n, 2, generator=torch.Generator().manual_seed(seed + 10))
        train, val = _hand_loops.split_rows(x, 0.1, seed)
        parts = split(x, None, 0.1, 2, None, seed)
        assert torch.equal(train, parts.train_x) and torch.equal(val, parts.val_x)
    # per-step time: the mean interval after the skipped steps
    assert _hand_loops.per_step([0.0, 1.0, 3.0, 5.0, 7.0], skip=1) == pytest.approx(2.0)
