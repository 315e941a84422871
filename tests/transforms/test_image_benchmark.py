"""Smoke test of ``benchmarks/images.py --quick``: every model trains, is scored and sampled,
and the Glow-vs-MAF verdict line is printed (the numbers depend on the machine)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_image_benchmark_quick_run(tmp_path):
    out = tmp_path / "images.json"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "images.py"), "--quick", "--json", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONWARNINGS": "ignore", "PYTHONPATH": str(ROOT)},
    )
    assert proc.returncode == 0, f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    assert "== digits:" in proc.stdout and "the flattened maf" in proc.stdout
    rows = json.loads(out.read_text())["rows"]
    names = {r["model"] for r in rows}
    assert {"glow", "maf", "realnvp_image", "mintnet"} <= names
    for r in rows:
        assert r["params"] > 0 and r["epochs"] >= 1 and r["images_per_s"] > 0
        assert 0 < r["test_bpd"] < 10  # finite, and a real density (uniform would be 4.09)
