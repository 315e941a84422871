"""Smoke test of ``benchmarks/posteriordb.py``: a quick run on one posterior prints every method's
row, the AutoFlow summary, a picture and the JSON (the quality numbers themselves are the
benchmark's business; only gross failures are checked here)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "benchmarks", "posteriordb.py")


def test_quick_run_on_one_posterior(tmp_path):
    out = tmp_path / "numbers.json"
    proc = subprocess.run(
        [sys.executable, SCRIPT, "--quick", "--names", "kidiq-kidscore_momiq",
         "--nuts-warmup", "50", "--nuts-draws", "50", "--out", str(tmp_path), "--json", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "PYTHONWARNINGS": "ignore", "MPLBACKEND": "Agg"},
    )
    assert proc.returncode == 0, f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    for method in ("NUTS", "AutoNormal", "AutoMultivariateNormal", "AutoIAFNormal", "AutoFlow"):
        assert f"  {method} " in proc.stdout, proc.stdout
    assert "AutoFlow with defaults: meets the mean/sd targets on" in proc.stdout
    image = tmp_path / "kidiq-kidscore_momiq.png"
    assert image.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    rows = {r["method"]: r for r in json.loads(out.read_text())["rows"]}
    flow = rows["AutoFlow"]
    # a flat-prior regression started at 0 (the failure): no NaN, and near the reference
    assert flow["note"] == "" and flow["mean_error"] < 0.3, flow
    assert 0.8 < flow["sd_low"] and flow["sd_high"] < 1.25, flow
    # fit_guide's verdict travels into the JSON and, when set, into the row's marks
    assert all(r["flag"] in (None, "khat", "tails", "moments") for r in rows.values()), rows
    flagged = [r["method"] for r in rows.values() if r["flag"] is not None]
    for line in proc.stdout.splitlines():
        if any(line.startswith(f"  {m} ") for m in flagged):
            assert "!F=" in line, line
    assert rows["NUTS"]["seconds"] > 0


def test_bad_arguments_are_refused():
    proc = subprocess.run(
        [sys.executable, SCRIPT, "--names", "no-such-posterior"],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode != 0 and "invalid choice" in proc.stderr
    proc = subprocess.run(
        [sys.executable, SCRIPT, "--steps", "-3"],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode != 0 and "--steps must be a positive integer, got -3" in proc.stderr
