"""Examples, the demo and the README snippet run from a fresh clone (quick modes)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = sorted((ROOT / "examples").glob("*.py"))


def run(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(ROOT), MPLBACKEND="Agg")
    return subprocess.run(
        [sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600
    )


@pytest.mark.parametrize("script", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_example_runs_in_quick_mode(script, tmp_path):
    result = run([str(script), "--quick"], cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip(), "an example should report what it found"


def test_demo_writes_a_density_image(tmp_path):
    result = run(["-m", "pyro_flows.cli", "demo", "--quick", "--quiet", "--out", "out"], tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert re.search(r"test NLL \d+\.\d+ nats, oracle 2\.395", result.stdout)
    image = tmp_path / "out" / "moons_maf.png"
    assert image.exists() and image.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cli_help():
    result = run(["-m", "pyro_flows.cli", "demo", "--help"], ROOT)
    assert result.returncode == 0 and "--quick" in result.stdout


def test_readme_snippet_runs():
    readme = (ROOT / "README.md").read_text()
    snippet = re.search(r"```python\n(.*?)```", readme, re.S).group(1)
    namespace: dict = {}
    exec(compile(snippet, "README.md", "exec"), namespace)
    assert namespace["samples"].shape == (1000, 2)
    data = namespace["data"]
    assert namespace["flow"].log_prob(data).mean() > -3.5  # trained beyond the base's fit


@pytest.mark.slow
def test_readme_target_snippet_runs():
    """The second README snippet: fit_target, NeuTra and NUTS on the funnel."""
    readme = (ROOT / "README.md").read_text()
    snippet = re.findall(r"```python\n(.*?)```", readme, re.S)[1]
    namespace: dict = {}
    exec(compile(snippet, "README.md", "exec"), namespace)
    neutra_d = namespace["draws"].diagnostics(namespace["target"])
    nuts_d = namespace["baseline"].diagnostics(namespace["target"])
    assert neutra_d["ess_per_grad"] > nuts_d["ess_per_grad"]
