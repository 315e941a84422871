"""Smoke test of the benchmark script: ``benchmarks/transforms.py --quick`` runs and prints every
row (timings themselves are not checked: they depend on the machine)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "benchmarks", "transforms.py")

LABELS = {
    "train/maf": "train step maf",
    "train/realnvp": "train step realnvp",
    "train/nice": "train step nice",
    "sample/maf": "sample maf",
    "sample/iaf": "sample iaf",
    "rsample_log_prob/iaf": "rsample_and_log_prob iaf",
    "log_prob/iaf": "log_prob iaf",
}


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[subprocess.CompletedProcess, dict]:
    out = tmp_path_factory.mktemp("bench") / "quick.json"
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run(
        [sys.executable, SCRIPT, "--quick", "--threads", "1", "--json", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert proc.returncode == 0, f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    return proc, json.loads(out.read_text())


def test_quick_run_prints_every_row(quick_run) -> None:
    proc, _ = quick_run
    out = proc.stdout
    for word in ("torch", "pyro", "zuko", "cores", "torch threads"):
        assert word in out
    for label in LABELS.values():
        assert label in out, f"row {label!r} missing from:\n{out}"
    assert "build maf(1000)" in out
    assert "ratio = ours / best peer" in out


def test_quick_run_json(quick_run) -> None:
    _, data = quick_run
    rows = {(r["row"], r["dim"]) for r in data["rows"]}
    dims = data["settings"]["dims"]
    assert rows == {(key, d) for key in LABELS for d in dims}
    for r in data["rows"]:
        assert r["ours_ms"] > 0
        timed = [v for v in r["peers_ms"].values() if v is not None]
        if timed:
            assert r["ratio"] == pytest.approx(r["ours_ms"] / min(timed))
    assert data["build_s"]["ours"] > 0
    assert data["environment"]["torch_threads"] >= 1


def test_density_benchmark_quick_run(tmp_path) -> None:
    """``benchmarks/density.py --quick``: every part runs and reports its rows."""
    out = tmp_path / "density.json"
    proc = subprocess.run(
        [
            sys.executable,
            os.path.join(ROOT, "benchmarks", "density.py"),
            "--quick",
            "--threads",
            "1",
            "--json",
            str(out),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )
    assert proc.returncode == 0, f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    for heading in ("== toys ==", "== defaults ==", "== digits ==", "best on moons"):
        assert heading in proc.stdout
    rows = json.loads(out.read_text())["rows"]
    assert {r["part"] for r in rows} == {"toys", "defaults", "digits"}
    for r in rows:
        assert r["params"] > 0 and r["test"] == r["test"]  # finite, not NaN
    toys = {r["model"]: r for r in rows if r["part"] == "toys"}
    digits = {r["model"]: r for r in rows if r["part"] == "digits"}
    # the Gaussianization flow and the CNF are rows of the toys, each trained for some steps
    for name in ("pyro_flows gaussianization", "pyro_flows cnf"):
        assert name in toys, f"no {name!r} row in the toys part: {sorted(toys)}"
        assert toys[name]["steps"] > 0
    # the Gaussianization flow gets its data-driven initialisation, timed inside its budget
    gf = toys["pyro_flows gaussianization"]
    assert 0 < gf["prepare_seconds"] < gf["seconds"]
    assert all(r["prepare_seconds"] == 0 for n, r in toys.items() if "gaussianization" not in n)
    # on digits the Gaussianization flow runs; the CNF is left out with a printed reason
    assert "pyro_flows gaussianization" in digits
    assert "pyro_flows cnf" not in digits
    assert "pyro_flows cnf: skipped" in proc.stdout


@pytest.mark.slow  # ~20 s on an idle 2-core box, minutes when a core is busy (2 threads stall)
def test_threads_benchmark_quick_run(tmp_path) -> None:
    """``benchmarks/threads.py --quick``: every workload is timed at 1 and 2 threads and the
    closing rule is printed (the ratios themselves depend on the machine and are not checked)."""
    out = tmp_path / "threads.json"
    proc = subprocess.run(
        [
            sys.executable,
            os.path.join(ROOT, "benchmarks", "threads.py"),
            "--quick",
            "--json",
            str(out),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )
    assert proc.returncode == 0, f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    for label in (
        "fit maf(2), moons, batch 256",
        "fit maf(2), moons, batch 4096",
        "fit maf(16)",
        "fit_target realnvp(2) on u1",
        "fit_guide AutoFlow",
        "nuts banana(2)",
        "t2/t1",
        "Summary:",
    ):
        assert label in proc.stdout, f"{label!r} missing from:\n{proc.stdout}"
    data = json.loads(out.read_text())
    assert {r["row"] for r in data["rows"]} == {
        "fit/maf2/b256",
        "fit/maf2/b4096",
        "fit/maf_large",
        "fit_target/realnvp2_u1",
        "fit_guide/autoflow_8schools",
        "nuts/banana",
    }
    for r in data["rows"]:
        assert r["error"] is None
        assert r["steps"] > 0 and r["work"] > 0
        assert set(r["per_step_s"]) >= {"1", "2"}
        assert all(t > 0 for times in r["per_step_s"].values() for t in times)
        assert r["ratio_2_over_1"] == pytest.approx(r["median_s"]["2"] / r["median_s"]["1"])
    assert data["summary"].startswith("Summary:")


def test_guide_flags_benchmark_quick_run() -> None:
    """``benchmarks/guide_flags.py --quick``: both problems are fitted, judged against the truth
    and counted."""
    script = os.path.join(ROOT, "benchmarks", "guide_flags.py")
    proc = subprocess.run(
        [sys.executable, script, "--quick"],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )
    assert proc.returncode == 0, f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    for name in ("normal_mean", "student_t4"):
        assert f"{name} " in proc.stdout and "mean err" in proc.stdout, proc.stdout
    assert proc.stdout.count(" seed 0 ") == 2, proc.stdout
    # the Normal mean's exact posterior is within reach of a short fit; the row says so
    normal = next(line for line in proc.stdout.splitlines() if line.startswith("normal_mean"))
    assert " ok " in normal, normal
    assert any(line.startswith("now ") and "misses flagged" in line
               for line in proc.stdout.splitlines()), proc.stdout
    bad = subprocess.run([sys.executable, script, "--steps", "0"], cwd=ROOT,
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode != 0 and "--steps must be a positive integer, got 0" in bad.stderr
