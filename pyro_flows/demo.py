r"""The showcase behind ``pyro-flows demo``: three things flows do for a Pyro user, on embedded
defaults, with a printed summary and a report folder.

1. **Density estimation** (forward KL): a MAF fitted to a 2-D toy by maximum likelihood,
   :math:`\min_\theta -\frac1N\sum_n \log q_\theta(x_n)`, scored on fresh data against the
   toy's oracle (its entropy).
2. **A flow guide against NUTS** on eight schools (:mod:`pyro_flows.compare.bayesian`):
   :class:`~pyro_flows.infer.AutoFlow` and ``AutoNormal`` fitted by SVI, compared with NUTS's
   draws (mean error in NUTS sd units, sd ratios, PSIS :math:`\hat k`, wall time).
3. **Flow vs NUTS vs NeuTra** on Neal's 10-D funnel (:func:`pyro_flows.compare.compare`):
   reverse KL :math:`\max_\theta \mathbb E_q[\log\tilde p - \log q_\theta]`, NUTS, and NUTS
   in the flow's base space, held to the funnel's targets (NeuTra's ESS per gradient at least
   3x NUTS's, no divergences, :math:`\hat R < 1.01`).

Writes ``<out>/README.md`` (the summary with every table and figure), ``<out>/<toy>_maf.png``,
``<out>/eight_schools.png`` and the comparison's report folder ``<out>/funnel/``, replacing a
previous demo's files there (the folder is the demo's own; other files are left alone). The
full run takes a few minutes on two cores; ``quick=True`` (``--quick``) runs every part on a
small budget for CI in well under a minute.

References:

- G. Papamakarios, T. Pavlakou, I. Murray. *Masked Autoregressive Flow for Density
  Estimation.* NeurIPS 2017. https://arxiv.org/abs/1705.07057
- D. P. Kingma et al. *Improved Variational Inference with Inverse Autoregressive Flow.*
  NeurIPS 2016. https://arxiv.org/abs/1606.04934
- M. D. Hoffman et al. *NeuTra-lizing Bad Geometry in Hamiltonian Monte Carlo Using Neural
  Transport.* 2019. https://arxiv.org/abs/1903.03704
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path

import torch

# ``X as X``: names this module has always offered (part 1 now trains through ``infer.fit``)
from . import flows
from ._figures import check_figure_path, ensure_folder
from ._progress import progress_bar as progress_bar
from .compare.bayesian import STAN_REFERENCE, GuideComparison, compare_guides, plot_guides
from .compare.checks import format_checks
from .compare.report import check_report_folder
from .compare.run import Comparison, compare
from .data import ORACLE_NLL, TOYS
from .infer._steps import check_int, check_seed
from .infer._steps import gradients_are_finite as gradients_are_finite
from .infer.fit import fit
from .plots import plot_density_2d

__all__ = [
    "DensityResult", "DemoResult", "ENERGY_TARGET", "check_demo_folder", "fit_density", "run_demo"
]

#: Part 3: the target and the methods compared on it.
ENERGY_TARGET: tuple[str, tuple[str, ...]] = ("funnel", ("flow", "nuts", "neutra"))


@dataclass
class DensityResult:
    r"""Part 1: a MAF fitted to a toy: test NLL against the oracle, seconds, the image.

    :ivar toy: the toy's name; ``test_nll``/``oracle_nll``: nats per point; ``seconds``:
        training time; ``image``: the PNG (data, density, samples).

    The gap :math:`\mathrm{NLL}_{\text{test}} - H(p)` estimates :math:`\mathrm{KL}(p\,\|\,q)`.

    Example:

    >>> DensityResult("moons", 2.416, 2.395, 29.2, Path("moons_maf.png")).line()
    'moons: test NLL 2.416 nats, oracle 2.395, gap +0.021 (29.2 s training)'

    References: Papamakarios et al., NeurIPS 2017.
    """

    toy: str
    test_nll: float
    oracle_nll: float
    seconds: float
    image: Path

    def line(self) -> str:
        """``"moons: test NLL 2.41 nats, oracle 2.395, gap +0.015 (30.1 s training)"``."""
        return (
            f"{self.toy}: test NLL {self.test_nll:.3f} nats, oracle {self.oracle_nll:.3f}, "
            f"gap {self.test_nll - self.oracle_nll:+.3f} ({self.seconds:.1f} s training)"
        )


def fit_density(
    out_dir: str | Path = "outputs/demo",
    toy: str = "moons",
    steps: int = 3000,
    batch_size: int = 512,
    seed: int = 0,
    progress: bool = True,
) -> DensityResult:
    r"""Part 1: fit ``flows.maf(2)`` to ``toy`` by maximum likelihood with the library's own
    loop, :func:`~pyro_flows.infer.fit.fit` (Adam at ``lr=2e-3`` with a per-step cosine decay,
    no validation split: 20,000 fresh rows score the result), and write
    ``<out_dir>/<toy>_maf.png``.

    .. math::

        \min_\theta\ -\frac1B \sum_{b=1}^B \log q_\theta(x_b), \qquad
        \text{gap} = \mathrm{NLL}_{\text{test}} - H(p_{\text{toy}}) \ge 0 \text{ (in expectation)}.

    ``steps`` optimiser steps of ``batch_size`` rows are rounded up to whole epochs over the
    20,000 training rows (3000 steps of 512: 75 epochs of 40 batches; 300: 8 epochs, 320
    steps); fewer steps than one epoch train one epoch on the first ``steps * batch_size``
    rows, exactly ``steps`` steps.

    Example:

    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as d:
    ...     r = fit_density(d, steps=5, batch_size=64, progress=False)
    ...     r.image.exists(), r.oracle_nll
    (True, 2.395)

    :raises ValueError: an unknown ``toy``, or ``steps``/``batch_size`` that are not
        positive ints (``TypeError`` for a wrong type), or a ``seed`` that is not an int.
    :raises FloatingPointError: a NaN/inf loss or gradient (the run stops there;
        :class:`~pyro_flows.infer.fit.NonFiniteLossError`).

    References: Papamakarios et al., NeurIPS 2017 (MAF).
    """
    if toy not in TOYS:
        raise ValueError(f"toy must be one of {sorted(TOYS)}, got {toy!r}")
    check_int(steps, "steps")
    check_int(batch_size, "batch_size")
    check_seed(seed)
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    sampler = TOYS[toy]
    train, test = sampler(20000, generator=g), sampler(20000, generator=g)
    flow = flows.maf(2, num_transforms=5, hidden_dims=(64, 64))
    rows = train[: steps * batch_size]  # fewer steps than one epoch: the rows they would see
    epochs = math.ceil(steps / math.ceil(len(rows) / batch_size))
    start = time.perf_counter()
    fit(
        flow, rows, epochs=epochs, batch_size=batch_size, lr=2e-3, validation=None,
        patience=None, lr_schedule="cosine", clip_grad_norm=None, progress=progress, seed=seed,
    )
    seconds = time.perf_counter() - start
    with torch.no_grad():
        test_nll = -flow.log_prob(test).mean().item()
    oracle = ORACLE_NLL[toy]
    image = plot_density_2d(
        flow,
        train,
        Path(out_dir) / f"{toy}_maf.png",
        title=f"MAF on {toy}: test NLL {test_nll:.3f} nats (oracle {oracle:.3f})",
    )
    return DensityResult(toy, test_nll, oracle, seconds, image)


@dataclass
class DemoResult:
    """Everything :func:`run_demo` produced.

    :ivar density: part 1 (:class:`DensityResult`).
    :ivar guides: part 2 (:class:`~pyro_flows.compare.bayesian.GuideComparison`).
    :ivar energy: part 3 (:class:`~pyro_flows.compare.run.Comparison`).
    :ivar quick: whether the small budget was used; ``seed``: the seed.
    :ivar wall_time: seconds in all; ``report``: ``<out>/README.md``.

    ``summary()`` is what ``pyro-flows demo`` prints; :func:`run_demo` builds it (its quick run
    takes about half a minute, so there is no doctest here).

    References: see the module docstring.
    """

    density: DensityResult
    guides: GuideComparison
    energy: Comparison
    quick: bool
    seed: int
    wall_time: float
    report: Path

    def summary(self) -> str:
        """The summary printed at the end of ``pyro-flows demo``."""
        e = self.energy
        ref = ", ".join(f"{k} {m:.2f} ({s:.2f})" for k, (m, s) in STAN_REFERENCE.items())
        lines = [
            f"pyro-flows demo ({'quick' if self.quick else 'full'} budget, seed {self.seed}, "
            f"{self.wall_time:.0f} s)",
            "",
            "1. density estimation (MAF, maximum likelihood)",
            "   " + self.density.line(),
            "",
            "2. eight schools (non-centred): flow guide vs AutoNormal vs NUTS",
            self.guides.table(),
            f"   reference (long Stan run): {ref}",
            "",
            f"3. {e.target_name} ({e.target.dim}-D): {' vs '.join(e.methods)}",
            e.table(),
            "targets:",
            format_checks(e.checks),
            "",
            f"report: {self.report}",
        ]
        return "\n".join(lines)


def _write_readme(result: DemoResult, out: Path) -> Path:
    e, d, g = result.energy, result.density, result.guides
    ref = ", ".join(f"{k} = {m:.2f} +- {s:.2f}" for k, (m, s) in STAN_REFERENCE.items())
    sub = e.report.parent.name if e.report is not None else e.target_name
    lines = [
        "# pyro-flows demo",
        "",
        f"{'Quick' if result.quick else 'Full'} budget, seed {result.seed}, "
        f"{result.wall_time:.0f} s in all. Regenerate with `pyro-flows demo`"
        f"{' --quick' if result.quick else ''} (or `make demo`).",
        "",
        "## 1. Density estimation: a MAF on a 2-D toy (maximum likelihood)",
        "",
        f"{d.line()}. The oracle is the toy's entropy, the best expected NLL any model can reach.",
        "",
        f"![{d.toy}]({d.image.name})",
        "",
        "## 2. A flow guide against NUTS: eight schools (non-centred)",
        "",
        "AutoFlow (an IAF over the unconstrained latents) and AutoNormal (mean field), fitted by "
        "SVI with Trace_ELBO, against NUTS's draws: errors over (mu, log tau, eta_1..8), the "
        "mean error in units of NUTS's sd, the ratio of sds, PSIS k-hat of p/q "
        "(< 0.5 good, 0.5-0.7 usable, > 0.7 unreliable).",
        "",
        g.table(markdown=True),
        "",
        f"Reference posterior (a long Stan run): {ref}.",
        "",
        "![eight schools](eight_schools.png)",
        "",
        f"## 3. Flow vs NUTS vs NeuTra: {e.target_name} ({e.target.dim}-D)",
        "",
        e.table(markdown=True),
        "",
    ]
    lines += [
        f"- **{c.status}** {c.name}" + (f": {c.detail}" if c.detail else "") for c in e.checks
    ]
    lines += [
        "",
        f"Full report with every figure: [{sub}/report.md]({sub}/report.md).",
        "",
        f"![samples]({sub}/samples.png)",
        "",
        f"![traces]({sub}/traces.png)",
        "",
        f"![elbo]({sub}/elbo.png)",
        "",
    ]
    path = out / "README.md"
    path.write_text("\n".join(lines))
    return path


def check_demo_folder(out_dir: str | Path, toy: str = "moons") -> Path:
    """Create the demo's report folder ``out_dir`` (``mkdir -p``) and check every path the demo
    will write there (its figures, the part-3 report folder), so that a bad ``--out`` fails at
    once, not after minutes of training; returns the folder.

    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as d:
    ...     check_demo_folder(Path(d) / "demo").is_dir()
    True

    :raises NotADirectoryError: ``out_dir``, a folder above it or ``<out_dir>/funnel`` is a
        file; ``PermissionError``: a folder cannot be created or written.
    :raises ValueError: a figure's path there is a directory.

    References: none (a guard against losing a run to a bad output path).
    """
    out = ensure_folder(out_dir, "demo folder")
    for name in (f"{toy}_maf.png", "eight_schools.png"):
        check_figure_path(out / name, f"the demo's figure {name}")
    check_report_folder(out / ENERGY_TARGET[0], overwrite=True)
    return out


def run_demo(
    out_dir: str | Path = "outputs/demo",
    *,
    quick: bool = False,
    toy: str = "moons",
    steps: int | None = None,
    seed: int = 0,
    progress: bool = True,
) -> DemoResult:
    r"""Run the three parts (see the module docstring) and write the report folder ``out_dir``.

    :param out_dir: the report folder (created with its parents before anything runs; a
        previous demo's report there is replaced).
    :param quick: small budgets everywhere (CI).
    :param toy: the toy of part 1 (``"moons"``, ``"8gaussians"``, ``"checkerboard"``).
    :param steps: training steps of part 1, a positive int (default 3000, quick 300).
    :param seed: seeds every part.
    :param progress: progress bars.
    :returns: a :class:`DemoResult`; ``print(result.summary())`` shows it.

    Example (the quick run takes about half a minute, so it is not run here)::

        result = run_demo("outputs/demo", quick=True)
        print(result.summary())

    :raises ValueError: an unknown ``toy``, bad ``steps`` or ``seed`` (``TypeError`` for a
        wrong type), all before anything is written.
    :raises NotADirectoryError: ``out_dir``, a folder above it or ``<out_dir>/funnel`` is a
        file; ``PermissionError``: it cannot be created or written (see
        :func:`check_demo_folder`; before anything runs).

    References: see the module docstring.
    """
    if toy not in TOYS:
        raise ValueError(f"toy must be one of {sorted(TOYS)}, got {toy!r}")
    if steps is not None:
        check_int(steps, "steps")
    check_seed(seed)
    out = check_demo_folder(out_dir, toy)
    start = time.perf_counter()
    density = fit_density(
        out,
        toy,
        steps=steps if steps is not None else (300 if quick else 3000),
        seed=seed,
        progress=progress,
    )
    guides = compare_guides(quick=quick, seed=seed, progress=progress)
    plot_guides(guides, out / "eight_schools.png")
    name, methods = ENERGY_TARGET
    # the demo's folder is regenerated by every run (its README says so): replace the part-3 report
    energy = compare(
        name, methods, quick=quick, seed=seed, out=out / name, progress=progress, overwrite=True
    )
    result = DemoResult(
        density, guides, energy, quick, seed, time.perf_counter() - start, out / "README.md"
    )
    _write_readme(result, out)
    return result
