"""Smoke test of ``benchmarks/multimodal.py``: a small budget on two unequal modes prints the
default's row (which must pick flow_mcmc and find both modes), reverse KL's and NUTS's."""

from __future__ import annotations

import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "benchmarks", "multimodal.py")


def test_multimodal_benchmark_quick_rows():
    proc = subprocess.run(
        [sys.executable, SCRIPT, "--quick", "--targets", "unequal2", "--steps", "150"],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )
    assert proc.returncode == 0, f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    rows = {line.split()[0]: line.split() for line in proc.stdout.splitlines() if line.strip()}
    assert "auto->flow_mcmc" in rows and "reverse_kl" in rows and "nuts" in rows, proc.stdout
    auto, plain = rows["auto->flow_mcmc"], rows["reverse_kl"]
    assert auto[-1] == "2/2", proc.stdout  # modes found from the flow's own draws
    assert abs(float(auto[3])) < 0.1, proc.stdout  # log Z error
    assert abs(float(auto[4])) < 0.1, proc.stdout  # the bridge estimate's error
    assert plain[4] == "+nan", proc.stdout  # reverse KL: no chains, no bridge
    assert float(plain[3]) < -0.2, proc.stdout  # reverse KL: one mode, log Z low by ~log 0.75
    assert "R-hat" in rows["nuts"]
