"""The docs build with the examples gallery (warnings are errors), and every gallery page shows
at least one figure that its example drew.

The build runs in a copy of ``docs/`` in a temporary folder (without any gallery already
generated in the checkout), so each example runs afresh in its quick mode and nothing is written
into the checkout. About 2-3 minutes on one thread: the nine quick runs, then Sphinx.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _gallery_module():
    spec = importlib.util.spec_from_file_location("_docs_gallery", ROOT / "docs/_ext/gallery.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_docs_build_with_the_gallery(tmp_path):
    gallery = _gallery_module()
    src = tmp_path / "docs"
    shutil.copytree(
        ROOT / "docs", src, ignore=shutil.ignore_patterns("_build", "gallery", "__pycache__")
    )
    out = tmp_path / "html"
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1", MPLBACKEND="Agg")
    command = [
        sys.executable, "-m", "sphinx", "-W", "-q", "-b", "html",
        "-d", str(tmp_path / "doctrees"), "-D", f"gallery_root={ROOT}",
        str(src), str(out),
    ]  # fmt: skip
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=1800)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]

    assert "gallery/index.html" in (out / "index.html").read_text()
    index = (out / "gallery" / "index.html").read_text()
    for example in gallery.EXAMPLES:
        page = out / "gallery" / f"{example.name}.html"
        assert page.exists(), f"no gallery page for {example.script}"
        assert f'href="{example.name}.html"' in index, example.name
        html = page.read_text()
        images = re.findall(r'<img [^>]*src="([^"]+\.png)"', html)
        assert images, f"{page.name} shows no PNG"
        for image in images:
            path = (page.parent / image).resolve()
            assert path.is_file() and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", image
        assert Path(example.script).name in html  # the code is on the page
