"""The package installs like a package: a wheel builds, holds every file of ``pyro_flows/``, and
imports in a clean virtual environment (no source tree on the path, no editable install).

The wheel is built from a copy of the sources in a temporary folder, so the checkout is left as
it was (an in-tree build would write ``build/`` and ``*.egg-info`` next to the sources). The
clean environment gets ``torch==2.13.0`` first, as the docs say: an unpinned resolve of torch
(a dependency of pyro-ppl) would pull the CUDA wheels. Its other dependencies come from the
package registry, so this test needs registry access (about 1.5 minutes with pip's cache warm).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TORCH = "torch==2.13.0"
# the files a wheel is built from: the project table, the readme it names, the package
SOURCES = ("pyproject.toml", "README.md", "pyro_flows")
SMOKE = (
    "import torch, pyro_flows; from pyro_flows import flows; f = flows.maf(2); "
    "print(pyro_flows.__file__); print(f.log_prob(torch.zeros(1, 2)))"
)


def _run(args: list[str], cwd: Path, timeout: float = 900) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    env["PYTHONNOUSERSITE"] = "1"
    result = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, (
        f"{' '.join(map(str, args))} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    )
    return result


def _copy_sources(dest: Path) -> None:
    dest.mkdir()
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
    for name in SOURCES:
        src = ROOT / name
        if src.is_dir():
            shutil.copytree(src, dest / name, ignore=ignore)
        else:
            shutil.copy2(src, dest / name)


def _build_wheel(src: Path, out: Path) -> Path:
    try:
        import build  # noqa: F401 - only whether `python -m build` is there
    except ImportError:  # the [test] extra installs it; plain pip builds the same wheel
        args = [sys.executable, "-m", "pip", "wheel", "--no-deps", "-w", str(out), str(src)]
    else:
        args = [sys.executable, "-m", "build", "--wheel", "--outdir", str(out), str(src)]
    _run(args, cwd=src)
    wheels = sorted(out.glob("pyro_flows-*.whl"))
    assert len(wheels) == 1, wheels
    return wheels[0]


@pytest.mark.slow
def test_wheel_installs_and_imports_in_a_clean_venv(tmp_path):
    src = tmp_path / "src"
    _copy_sources(src)
    wheel = _build_wheel(src, tmp_path / "dist")

    # every file of the package (modules and any data files) is in the wheel
    packaged = set(zipfile.ZipFile(wheel).namelist())
    expected = {
        p.relative_to(ROOT).as_posix()
        for p in (ROOT / "pyro_flows").rglob("*")
        if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"
    }
    assert not expected - packaged, f"missing from the wheel: {sorted(expected - packaged)}"
    assert any(n.endswith(".dist-info/entry_points.txt") for n in packaged)

    # a clean environment: no system site-packages, no source tree on the path
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=True, system_site_packages=False, clear=True).create(env_dir)
    python = env_dir / "bin" / "python"
    _run([str(python), "-m", "pip", "install", "-q", TORCH], cwd=tmp_path)
    _run([str(python), "-m", "pip", "install", "-q", str(wheel)], cwd=tmp_path)

    elsewhere = tmp_path / "elsewhere"  # not the checkout: `import pyro_flows` finds the wheel
    elsewhere.mkdir()
    result = _run([str(python), "-c", SMOKE], cwd=elsewhere, timeout=300)
    where, value = result.stdout.strip().splitlines()[-2:]
    assert Path(where).resolve().is_relative_to(env_dir.resolve()), where
    assert value.startswith("tensor([-"), value
    _run([str(env_dir / "bin" / "pyro-flows"), "--help"], cwd=elsewhere, timeout=300)
