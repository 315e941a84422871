"""Smoke test of ``benchmarks/gpu.py`` on the CPU, so the GPU script cannot rot: every builder and
entry point row passes, and the timing rows print ours, zuko and Pyro with ratios."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest

from pyro_flows import flows

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "benchmarks", "gpu.py")
ROW = re.compile(r"^(PASS|FAIL)  (.+?) {2,}\s*\d+\.\d+ s", re.MULTILINE)
ENTRY_POINTS = (
    "fit", "fit_target", "nuts", "hmc", "mala", "ula", "random_walk_metropolis",
    "importance_sample", "neutra", "AutoFlow SVI", "AmortizedFlow", "guide_psis_khat",
)


def _run(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, SCRIPT, "--device", "cpu", "--threads", "1", *args],
        cwd=ROOT, capture_output=True, text=True, timeout=300, env=env,
    )


def test_every_builder_and_entry_point_passes_on_the_cpu(tmp_path):
    out = tmp_path / "smoke.json"
    proc = _run("--quick", "--smoke-only", "--json", str(out))
    assert proc.returncode == 0, f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    status = {m.group(2): m.group(1) for m in ROW.finditer(proc.stdout)}  # label: PASS/FAIL
    labels = [f"builder {name}" for name in flows.BUILDERS] + list(ENTRY_POINTS)
    assert sorted(status) == sorted(labels), proc.stdout
    assert set(status.values()) == {"PASS"}, proc.stdout
    assert "FAIL" not in proc.stdout
    assert f"smoke: {len(labels)} passed, 0 failed on cpu" in proc.stdout
    assert json.loads(out.read_text())["smoke_failed"] == 0


def test_timing_rows_print_ours_and_the_peers_with_ratios():
    proc = _run("--timings-only", "--kinds", "realnvp", "maf", "--dims", "4", "--sizes", "64",
                "--repeats", "1", "--warmup", "0")
    assert proc.returncode == 0, f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    rows = [line for line in proc.stdout.splitlines() if line.startswith("train ")]
    assert len(rows) == 2, proc.stdout
    for row in rows:
        assert " ms" in row and "ours" in row and "pyro" in row, row
        assert "zuko" in row and "(ratio " in row, row


@pytest.mark.parametrize("device", ["gpu7", "cuda"])
def test_an_unusable_device_is_a_clear_exit(device):
    if device == "cuda":
        import torch

        if torch.cuda.is_available():
            pytest.skip("CUDA is available here")
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run(
        [sys.executable, SCRIPT, "--device", device, "--smoke-only"],
        cwd=ROOT, capture_output=True, text=True, timeout=120, env=env,
    )
    assert proc.returncode != 0
    assert "--device" in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
