"""The examples gallery: runs every script of ``examples/`` in its quick mode and writes one page
per example (what it shows, the commands, its figures, its printed output, its code).

Two ways in, one code path:

- as a Sphinx extension (``conf.py`` lists ``gallery``): on ``builder-inited`` it brings
  ``<srcdir>/gallery/`` up to date before Sphinx reads any page, so a plain ``sphinx-build``
  always has the gallery;
- as a script, ``python docs/_ext/gallery.py [--force] [--only NAME ...]``, which ``make docs``
  runs before ``sphinx-build`` (and which prints what it runs and how long each example takes).

Everything it writes is under ``docs/gallery/`` (ignored by git): ``<name>.rst``, ``index.rst``
and ``_files/<name>/`` holding the figures (the example's ``--out`` folder), a copy of the script
(shown and offered for download), ``output.txt`` (what the run printed) and ``stamp.json``. Sphinx
copies the figures into the HTML tree (``_images/``) itself. An example is run again when its
stamp is stale (the script, for ``examples/bayesian`` every ``.py`` file of the folder, or its
arguments changed); ``--force`` runs every example whatever the stamps say (after a change in
``pyro_flows`` itself). The pages are regenerated from the stored runs on every build (written
only where they changed). Each example runs on one thread (``OMP_NUM_THREADS=1``) in a temporary
working directory, with the repository on ``PYTHONPATH``; all nine take about 1.5-2.5 minutes in
their quick modes.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve()
DEFAULT_ROOT = HERE.parents[2]
GALLERY = "gallery"  # the folder under the Sphinx source directory
FILES = "_files"


@dataclass(frozen=True)
class Example:
    name: str  # page name, and the folder of its files
    script: str  # relative to the repository root
    title: str
    summary: str  # one line, for the index
    text: str  # what it shows (reStructuredText paragraphs)
    commands: tuple[str, ...]  # full runs (the quick one is added)
    default_out: str  # the example's own --out default, shown in the printed output
    args: tuple[str, ...] = ("--quick",)
    captions: dict[str, str] = field(default_factory=dict)  # figure file name -> caption
    see_also: str = ""  # a docs page


EXAMPLES: tuple[Example, ...] = (
    Example(
        name="quickstart",
        script="examples/quickstart.py",
        title="Quickstart: a flow on a 2-D toy",
        summary="A MAF fitted to two moons with a plain Adam loop; its density and samples.",
        text=(
            "Density estimation in a few lines: a masked autoregressive flow "
            "(``flows.maf``) is fitted to the two-moons toy by maximum likelihood with a "
            "plain PyTorch loop, and its test NLL is compared with the toy's oracle (its "
            "entropy). The figure shows the data, the flow's density on a grid and the flow's "
            "own samples."
        ),
        commands=(
            "python examples/quickstart.py",
            "python examples/quickstart.py --flow realnvp --toy 8gaussians",
        ),
        default_out="outputs/quickstart",
        captions={
            "moons_maf.png": "Left: the training data; middle: the flow's density; right: "
            "its samples (150 steps in the quick run; the full run takes 3000)."
        },
        see_also="quickstart",
    ),
    Example(
        name="density_2d",
        script="examples/density_2d.py",
        title="Every 2-D toy against its oracle",
        summary="A neural spline flow on each 2-D toy, test NLL next to the toy's entropy.",
        text=(
            "A neural spline flow (``flows.nsf``) is fitted with ``infer.fit`` to each 2-D toy "
            "of ``pyro_flows.data`` (two spirals, eight Gaussians, checkerboard, circles, moons, "
            "pinwheel, rings, Swiss roll); the table compares the test NLL with the oracle NLL, "
            "the toy's entropy, which no model can beat. The figure has one row per toy: data, "
            "the flow's density, the flow's samples."
        ),
        commands=(
            "python examples/density_2d.py",
            "python examples/density_2d.py --flow maf --toys moons 8gaussians",
        ),
        default_out="outputs/density_2d",
        captions={
            "toys_nsf.png": "One row per toy: data, density, samples. The quick run trains two "
            "epochs on 2000 points, so the densities are still close to the base Gaussian: run "
            "it without ``--quick`` (100 epochs on 20,000 points) to see the toys resolved."
        },
        see_also="data",
    ),
    Example(
        name="digits",
        script="examples/digits.py",
        title="Dequantized 8x8 digits: bits/dim and samples",
        summary="A flow on dequantized 8x8 digits: test bits/dim and a grid of samples.",
        text=(
            "The 17-level 8x8 digits of scikit-learn are dequantized (uniform noise, or a "
            "variational noise flow as in Flow++), logit pre-processed and modelled by a flow. "
            "The reported test bits/dim is an upper bound on the bits/dim of the discrete data, "
            "printed with its importance-weighted bound."
        ),
        commands=(
            "python examples/digits.py",
            "python examples/digits.py --flow maf --dequantization variational",
        ),
        default_out="outputs/digits",
        captions={
            "digits_nsf_uniform.png": "Left: the flow's samples; right: test digits (two "
            "epochs in the quick run)."
        },
        see_also="data",
    ),
    Example(
        name="flow_guide",
        script="examples/flow_guide.py",
        title="A flow as a variational guide, checked against NUTS",
        summary="IAF vs AutoNormal on a banana posterior; ArviZ pair plots against NUTS.",
        text=(
            "An inverse autoregressive flow used as a Pyro guide for SVI, next to "
            "``AutoNormal``, on a curved (banana-shaped) posterior over ``(a, b)``: a diagonal "
            "Normal cannot bend, a flow can. The model is normalised, so the ELBO gap is "
            "``KL(q || p)``. The check a user should make for any guide is in the pair plot: "
            "each guide's draws (ArviZ ``plot_pair``, with marginals) over NUTS's draws and the "
            "exact density's contours, so where a guide is off shows at a glance. The trace "
            "plot shows the two NUTS chains that make the reference."
        ),
        commands=("python examples/flow_guide.py",),
        default_out="outputs/flow_guide",
        captions={
            "pair_plot.png": "Each guide's draws (colour) against NUTS (grey) and the exact "
            "density (black: 50/90/99% highest-density contours, dashed marginals). AutoNormal "
            "stays at the bottom of the banana. After the 60 SVI steps of the quick run the IAF "
            "has only begun to spread along it; with the full run's 1500 steps it follows both "
            "arms (ELBO -0.08 against AutoNormal's -0.78).",
            "nuts_trace.png": "The NUTS reference: marginal densities and traces of both chains "
            "(ArviZ ``plot_trace``, one colour per chain; ticks mark divergences).",
        },
        see_also="guides",
    ),
    Example(
        name="vae_iaf",
        script="examples/vae_iaf.py",
        title="A VAE with an IAF posterior",
        summary="VAEs with diagonal, planar and IAF posteriors, scored by IWAE log p(x).",
        text=(
            "Three VAEs share one encoder and decoder and differ only in the posterior: a "
            "diagonal Gaussian, a context-conditioned planar flow, and IAF steps whose MADEs "
            "read the encoder's context (``infer.AmortizedFlow``, Kingma et al. 2016). Each is "
            "trained with SVI and scored on held-out images by the negative ELBO and the "
            "importance-weighted bound on log p(x). The full run uses binarized MNIST-5k; the "
            "quick run 8x8 digits."
        ),
        commands=(
            "python examples/vae_iaf.py",
            "python examples/vae_iaf.py --data digits --epochs 300",
        ),
        default_out="outputs/vae_iaf",
        captions={
            "vae_iaf_grids.png": "Per posterior: decoder means of samples from the prior "
            "(left), test images and their reconstructions (right)."
        },
        see_also="vae",
    ),
    Example(
        name="images",
        script="examples/images.py",
        title="Image flows: Glow and integer discrete flows",
        summary="Glow (dequantized) and an integer discrete flow (lossless) on 8x8 digits.",
        text=(
            "Image density estimation with the multi-scale flows of ``flows.image``: Glow, "
            "RealNVP and MintNet model dequantized, logit pre-processed pixels (an upper bound "
            "on the bits/dim), and an integer discrete flow models the integer pixels directly "
            "(an exact code length, checked to be lossless on the whole test set). The quick "
            "run trains Glow and IDF for one epoch each on 8x8 digits."
        ),
        commands=(
            "python examples/images.py",
            "python examples/images.py --data mnist5k --flow glow --budget 300",
            "python examples/images.py --flow idf --budget 120",
        ),
        default_out="outputs/images",
        captions={
            "digits_glow.png": "Glow: samples (left) and test images (right), one epoch.",
            "digits_idf.png": "Integer discrete flow: samples (left) and test images (right).",
        },
        see_also="images",
    ),
    Example(
        name="distillation",
        script="examples/distillation.py",
        title="Distillation: a fast-sampling IAF student from a MAF teacher",
        summary="A MAF teacher distilled into an IAF student that samples many times faster.",
        text=(
            "Probability density distillation: a MAF teacher (one pass to score, 64 passes to "
            "sample at dimension 64) is fitted to dequantized digits, and an IAF student (one "
            "pass to sample) is trained with ``infer.distill`` to reproduce the teacher's "
            "sampling map. The run reports KL(student || teacher) and the sampling speed-up. "
            "The figure feeds the same base noise to both flows: the rows should agree."
        ),
        commands=(
            "python examples/distillation.py",
            "python examples/distillation.py --objective kl --steps 6000",
        ),
        default_out="outputs/distillation",
        captions={
            "same_noise.png": "Teacher (top) and student (bottom) samples from the same base "
            "noise, as 8x8 images (60 distillation steps in the quick run; 12,000 in the full "
            "run)."
        },
        see_also="distillation",
    ),
    Example(
        name="ebm_toys",
        script="examples/ebm_toys.py",
        title="Energy-based models on a 2-D toy",
        summary="One neural energy per training method (PCD, score matching, NCE, ...).",
        text=(
            "An energy-based model trained six ways on the same toy: contrastive divergence "
            "with persistent Langevin chains, exact and sliced score matching, noise-contrastive "
            "estimation, flow contrastive estimation (a MAF as the learned noise) and "
            "adversarial training (an IAF sampler with exact entropy). Each energy is "
            "normalised on a grid and scored by its test NLL next to the oracle."
        ),
        commands=(
            "python examples/ebm_toys.py",
            "python examples/ebm_toys.py --toy 8gaussians --steps 4000",
        ),
        default_out="outputs/ebm_toys",
        captions={
            "ebm_moons.png": "The data and the normalised density of each method's energy, "
            "with its test NLL (250 steps per method in the quick run)."
        },
        see_also="ebm",
    ),
    Example(
        name="bayesian_compare",
        script="examples/bayesian/compare.py",
        title="Autoguides against NUTS references on Bayesian models",
        summary="AutoFlow vs Pyro's autoguides vs NUTS references (eight schools, ...).",
        text=(
            "Pyro's ``AutoNormal``, ``AutoMultivariateNormal`` and ``AutoIAFNormal`` and "
            "pyro_flows' ``AutoFlow`` on Bayesian models (eight schools, logistic regression, "
            "Neal's funnel, stochastic volatility), each compared with a reference posterior "
            "(exact, or long NUTS runs stored in ``examples/bayesian/references``): mean error "
            "in reference sds, sd ratio, PSIS k-hat, ELBO and fit time. The quick run fits the "
            "non-centred eight schools model for few steps, so the targets it prints are not "
            "expected to pass; the other files of ``examples/bayesian`` (models, exact "
            "posteriors, references) are described in its README."
        ),
        commands=(
            "PYTHONPATH=. python examples/bayesian/compare.py",
            "PYTHONPATH=. python examples/bayesian/compare.py --models funnel",
        ),
        default_out="outputs/bayesian",
        args=("--quick", "--no-progress"),
        captions={
            "eight_schools_noncentered.png": "Per coordinate: each guide's mean error in "
            "reference sds (left; grey band: 0.1) and sd ratio (middle; grey band: 0.9-1.1); "
            "right: AutoFlow's draws against the reference draws for two coordinates."
        },
        see_also="bayesian",
    ),
)


# -- running --------------------------------------------------------------------------------


def _sources(example: Example, root: Path) -> list[Path]:
    script = root / example.script
    if script.parent.name == "bayesian":  # it imports its neighbours
        return sorted(script.parent.glob("*.py"))
    return [script]


def _stamp(example: Example, root: Path) -> str:
    digest = hashlib.sha256()
    for path in _sources(example, root):
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    digest.update(json.dumps([example.args, sys.version_info[:2]]).encode())
    return digest.hexdigest()


def _clean_output(text: str, out: Path, example: Example) -> str:
    lines = [line.rsplit("\r", 1)[-1].rstrip() for line in text.splitlines()]
    cleaned = "\n".join(lines).strip() + "\n"
    for form in (str(out.resolve()), str(out)):
        cleaned = cleaned.replace(form, example.default_out)
    return cleaned


def run_example(example: Example, root: Path, files: Path, log=print) -> dict:  # noqa: ANN001
    """Run one example in quick mode with ``--out files``; returns its stamp record."""
    if files.exists():
        shutil.rmtree(files)
    files.mkdir(parents=True)
    env = dict(os.environ, MPLBACKEND="Agg", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(root), env.get("PYTHONPATH")]))
    script = root / example.script
    command = [sys.executable, str(script), *example.args, "--out", str(files)]
    log(f"gallery: running {example.script} {' '.join(example.args)}")
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="gallery-") as cwd:
        result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if result.returncode != 0:
        raise RuntimeError(
            f"{example.script} {' '.join(example.args)} failed (exit {result.returncode}):\n"
            f"{result.stderr[-4000:]}"
        )
    order = list(example.captions)  # the captioned figures first, in their order
    figures = sorted(
        (p.name for p in files.glob("*.png")),
        key=lambda n: (order.index(n) if n in order else len(order), n),
    )
    if not figures:
        raise RuntimeError(f"{example.script} wrote no PNG into its --out folder {files}")
    (files / "output.txt").write_text(_clean_output(result.stdout, files, example))
    shutil.copy2(script, files / script.name)
    record = {"stamp": _stamp(example, root), "seconds": round(seconds, 1), "figures": figures}
    (files / "stamp.json").write_text(json.dumps(record, indent=1))
    log(f"gallery: {example.name}: {seconds:.0f} s, {', '.join(figures)}")
    return record


# -- pages ----------------------------------------------------------------------------------


def _heading(text: str, char: str) -> str:
    return f"{text}\n{char * len(text)}\n"


def _indent(text: str, spaces: int = 3) -> str:
    return "\n".join((" " * spaces + line) if line else "" for line in text.splitlines())


def page(example: Example, record: dict) -> str:
    files = f"{FILES}/{example.name}"
    script = Path(example.script).name
    quick = f"python {example.script} {' '.join(example.args)}"
    if example.commands and example.commands[0].startswith("PYTHONPATH=. "):
        quick = "PYTHONPATH=. " + quick
    commands = "\n".join(f"    $ {c}" for c in example.commands)
    parts = [
        f".. _gallery-{example.name}:\n",
        _heading(example.title, "="),
        example.text + "\n",
    ]
    if example.see_also:
        parts.append(f"See also :doc:`/{example.see_also}`.\n")
    parts += [
        _heading("Run it", "-"),
        "From the repository root, in the environment of :doc:`/installation`:\n",
        ".. code-block:: console\n",
        commands,
        f"    $ {quick}    # what CI and this page run\n",
        f"Add ``--out DIR`` to choose where the figures go (default ``{example.default_out}``).\n",
        _heading("Figures", "-"),
        f"From the quick run (``{' '.join(example.args)}``, {record['seconds']:.0f} s on one "
        "thread when these pages were built).\n",
    ]
    for name in record["figures"]:
        caption = example.captions.get(name, name)
        parts.append(
            f".. figure:: {files}/{name}\n   :alt: {name}\n   :width: 100%\n\n{_indent(caption)}\n"
        )
    parts += [
        _heading("Output", "-"),
        "What the quick run printed:\n",
        f".. literalinclude:: {files}/output.txt\n   :language: text\n",
        _heading("Code", "-"),
        f":download:`Download {script} <{files}/{script}>` (``{example.script}``).\n",
        f".. literalinclude:: {files}/{script}\n   :language: python\n   :linenos:\n",
    ]
    return "\n".join(parts)


def index(records: dict[str, dict]) -> str:
    parts = [
        ".. _gallery:\n",
        _heading("Examples gallery", "="),
        "Every runnable script of ``examples/``, rendered with the figures of its quick run "
        "(``--quick``: the settings CI runs, seconds to a minute each on one thread). The "
        "pictures show what each example draws, not converged results: the commands on each "
        "page give the full runs. These pages are generated by ``docs/_ext/gallery.py`` "
        "(``make docs`` runs it).\n",
        ".. toctree::\n   :hidden:\n",
        *[f"   {e.name}" for e in EXAMPLES],
        "",
    ]
    for example in EXAMPLES:
        first = records[example.name]["figures"][0]
        parts += [
            _heading(example.title, "-"),
            f"{example.summary} :doc:`{example.name}`\n",
            f".. image:: {FILES}/{example.name}/{first}\n   :alt: {example.title}\n"
            f"   :height: 160px\n   :target: {example.name}.html\n",
        ]
    return "\n".join(parts)


def _write_if_changed(path: Path, text: str) -> None:
    if not path.exists() or path.read_text() != text:
        path.write_text(text)


def build(
    dest: Path,
    root: Path = DEFAULT_ROOT,
    force: bool = False,
    only: tuple[str, ...] = (),
    log=print,  # noqa: ANN001
) -> dict[str, dict]:
    """Bring ``dest`` (the gallery folder under the docs source) up to date; returns per
    example its record (``seconds``, ``figures``)."""
    dest.mkdir(parents=True, exist_ok=True)
    records: dict[str, dict] = {}
    for example in EXAMPLES:
        files = dest / FILES / example.name
        stamp_file = files / "stamp.json"
        record = json.loads(stamp_file.read_text()) if stamp_file.exists() else None
        wanted = not only or example.name in only
        stale = record is None or record.get("stamp") != _stamp(example, root)
        if (force and wanted) or stale or not all((files / f).exists() for f in record["figures"]):
            record = run_example(example, root, files, log=log)
        records[example.name] = record
        _write_if_changed(dest / f"{example.name}.rst", page(example, record))
    _write_if_changed(dest / "index.rst", index(records))
    return records


# -- Sphinx ---------------------------------------------------------------------------------


def _builder_inited(app) -> None:  # noqa: ANN001
    from sphinx.errors import ExtensionError
    from sphinx.util import logging

    logger = logging.getLogger(__name__)
    root = Path(app.config.gallery_root or DEFAULT_ROOT)
    try:
        build(Path(app.srcdir) / GALLERY, root=root, log=logger.info)
    except RuntimeError as error:
        raise ExtensionError(f"examples gallery: {error}") from error


def setup(app):  # noqa: ANN001, ANN201
    app.add_config_value("gallery_root", "", "env")
    app.connect("builder-inited", _builder_inited)
    return {"parallel_read_safe": True, "parallel_write_safe": True}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dest", type=Path, default=HERE.parents[1] / GALLERY)
    parser.add_argument("--root", type=Path, default=DEFAULT_ROOT, help="the repository")
    parser.add_argument("--force", action="store_true", help="run every example again")
    parser.add_argument("--only", nargs="+", default=(), choices=[e.name for e in EXAMPLES])
    args = parser.parse_args(argv)
    start = time.perf_counter()
    try:
        records = build(args.dest, args.root, force=args.force, only=tuple(args.only))
    except RuntimeError as error:
        sys.exit(f"gallery: {error}")
    total = sum(r["seconds"] for r in records.values())
    print(
        f"gallery: {len(records)} pages in {args.dest} ({time.perf_counter() - start:.0f} s now; "
        f"the quick runs took {total:.0f} s in all)"
    )


if __name__ == "__main__":
    main()
