r"""The report folder of a comparison: ``report.md`` with the table, the checks and the figures,
the PNGs, and ``results.json`` with every number.

Layout of ``out/``:

- ``report.md``: settings, the Markdown table, the warnings of the cross-checks (``!``), the
  modes found (mass per mode of the mixtures, well masses per pair and modes visited of the
  many-well), PASS/FAIL lines, links to the figures and how each column is computed.
- ``samples.png`` (draws over the target, or pair plots), ``traces.png`` (MCMC chains),
  ``elbo.png`` (flow training), ``modes.png`` (mixture).
- ``results.json``: the rows, the checks, the warnings, the settings (non-finite numbers as
  strings).

A folder that already holds a report is refused (``FileExistsError``) unless ``overwrite=True``
(``pyro-flows compare --overwrite``), which replaces every file above (so that no figure of the
previous run is left behind) and leaves other files alone.

References:

- A. Gelman, J. B. Carlin, H. S. Stern, D. B. Dunson, A. Vehtari, D. B. Rubin. *Bayesian Data
  Analysis*, 3rd ed., 2013, chapter 11 (what a sampler's report should show).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .._figures import ensure_folder
from .figures import plot_elbo, plot_mode_masses, plot_samples, plot_traces

if TYPE_CHECKING:
    from .comparison import Comparison

__all__ = ["REPORT_FILES", "check_report_folder", "write_report", "jsonable"]

#: The files of a report folder (an overwrite removes them all before writing the new ones).
REPORT_FILES = ("report.md", "results.json", "samples.png", "traces.png", "elbo.png", "modes.png")

_COLUMN_NOTES = """\
How the columns are computed (details: `docs/compare.rst`):

- **wall s**, **grad evals**: the run's seconds and target gradients; `flow`, `neutra` and `is`
  include the flow's training (`steps x batch_size` gradients), `ais` too when it annealed from
  the flow, plus its own (about particles x temperatures x leapfrog steps); `flow_mcmc` includes
  the training of its own flow by flow-assisted MCMC (the mode search's and every chain's
  gradients). MH and IS take no gradient.
- **ESS bulk / tail (min)**: MCMC: the smallest rank-normalised bulk / tail ESS over the
  coordinates (ArviZ). `is`, `ais`: Kish's ESS of the weights. `flow`, `flow_mcmc`: not a
  sampler of p, `-`.
- **ESS/s**, **ESS/grad**: ESS bulk per wall second and per gradient.
- **R-hat max**: largest rank-normalised split R-hat (MCMC).
- **max |mean err| (sd)**, **max sd rel err**: against the target's exact means and sds;
  `flow` and `flow_mcmc` show q's own moments, `is` self-normalised weighted ones.
- **log Z hat**, **log Z err**, **log Z - ELBO**, **IS ESS frac**, **k-hat**: importance weights
  w = p~(x)/q(x) of fresh flow draws (`flow`, `is`; `flow_mcmc` of its own flow): log mean w,
  its error, log Z - mean log w (~ KL(q||p)), Kish ESS / n, PSIS k-hat. `ais`: the same from
  its annealed importance weights (no ELBO).
- **!**: a value not to be trusted (k-hat > 0.7, R-hat > 1.01, divergences); the warnings
  above also compare the flow's IS log Z with the AIS one (a gap above max(0.05, 3 combined
  se) nats: a mode the flow misses).
"""


def jsonable(value: Any) -> Any:
    """``value`` with tensors as lists and non-finite floats as strings (strict JSON).

    >>> import math, torch
    >>> jsonable({"a": torch.tensor([1.0, 2.0]), "b": -math.inf, "c": (1, None)})
    {'a': [1.0, 2.0], 'b': '-inf', 'c': [1, None]}

    References: RFC 8259, *The JavaScript Object Notation (JSON) Data Interchange Format*
    (no NaN or infinity in JSON numbers).
    """
    if hasattr(value, "tolist") and callable(value.tolist):
        return jsonable(value.tolist())
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, str | int | bool) or value is None:
        return value
    return str(value)


def check_report_folder(
    out: str | Path, overwrite: bool = False, *, flag: str = "overwrite=True"
) -> None:
    """Refuse a report folder ``out`` that already holds a report (one of
    :data:`REPORT_FILES`) unless ``overwrite``: the error names the folder, what it holds and
    ``flag``, the option to pass (``"--overwrite"`` on the command line). Otherwise create
    ``out`` with its parents (``mkdir -p``) when missing, so that a folder that cannot be made
    (a file in the way, no permission) is refused here, before the runs, not after them. No
    file is written.

    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as d:
    ...     _ = (Path(d) / "report.md").write_text("an earlier run")
    ...     try:
    ...         check_report_folder(d)
    ...     except FileExistsError as err:
    ...         print("refused:", "overwrite=True" in str(err))
    ...     check_report_folder(d, overwrite=True)  # accepted
    refused: True

    :raises TypeError: ``overwrite`` is not a bool, ``out`` not a path.
    :raises FileExistsError: ``out`` holds a report and ``overwrite`` is ``False``.
    :raises NotADirectoryError: ``out``, or a folder above it, is a file.
    :raises PermissionError: ``out`` cannot be created or written to.

    References: none (a guard against losing a previous run's report).
    """
    if not isinstance(overwrite, bool):
        raise TypeError(f"overwrite must be True or False, got {overwrite!r}")
    out = ensure_folder(out, "report folder")
    found = [name for name in REPORT_FILES if (out / name).exists()]
    if found and not overwrite:
        raise FileExistsError(
            f"the report folder {out} already holds a report ({', '.join(found)}): pass {flag} "
            "to replace it, or choose another folder"
        )


def write_report(comparison: Comparison, out: str | Path, *, overwrite: bool = False) -> Path:
    r"""Write the report folder of ``comparison`` to ``out`` and return ``out/report.md``; a
    folder holding a previous report is refused unless ``overwrite``
    (:func:`check_report_folder`), and then its report files are all replaced.

    The figures: ``samples.png`` (every method's draws over the target density for
    :math:`D = 2`, pair plots of :math:`z_0, z_1, z_2` otherwise), ``traces.png`` (MCMC),
    ``elbo.png`` (when a flow was trained), ``modes.png`` (mixture).

    Example:

    >>> import tempfile
    >>> from dataclasses import replace
    >>> from pyro_flows.compare.run import compare
    >>> from pyro_flows.compare.settings import SamplerSettings, settings_for
    >>> s = replace(settings_for("banana", quick=True), mh=SamplerSettings(100, 100, 2))
    >>> with tempfile.TemporaryDirectory() as d:
    ...     c = compare("banana", "mh", settings=s, progress=False, out=d)
    ...     sorted(p.name for p in c.report.parent.iterdir())
    ['report.md', 'results.json', 'samples.png', 'traces.png']

    References: Gelman et al., *Bayesian Data Analysis*, chapter 11.
    """
    check_report_folder(out, overwrite)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    for name in REPORT_FILES:  # no figure of an earlier run may pass for one of this run
        (out / name).unlink(missing_ok=True)
    c = comparison
    target = c.target
    figures: dict[str, Path] = {}
    figures["samples"] = plot_samples(target, c.runs, out / "samples.png", seed=c.seed)
    traces = plot_traces(c.runs, out / "traces.png")
    if traces is not None:
        figures["traces"] = traces
    if c.trained is not None:
        figures["elbo"] = plot_elbo(c.trained.history, target.log_Z, out / "elbo.png")
    masses = {r.method: r.mode_masses for r in c.rows if r.mode_masses is not None}
    if masses and target.true_mode_weights is not None:
        figures["modes"] = plot_mode_masses(
            masses, target.true_mode_weights.tolist(), out / "modes.png"
        )
    c.figures = figures

    log_z = "unknown" if target.log_Z is None else f"{target.log_Z:.4f}"
    lines = [
        f"# pyro-flows compare {c.target_name}",
        "",
        f"Target `{c.target_name}`: `{target!r}` (dimension {target.dim}, log Z = {log_z}). "
        f"Seed {c.seed}, {'quick' if c.quick else 'full'} budget, {c.wall_time:.0f} s in all.",
        "",
        "## Results",
        "",
        c.table(markdown=True),
        "",
    ]
    if c.alerts:
        lines += ["## Warnings", ""]
        lines += [f"- **!** {a.message}" for a in c.alerts]
        lines.append("")
    modes = c.mode_table(markdown=True)
    if modes is not None and target.true_mode_weights is not None:
        lines += [
            "## Mass per mode (modes found)",
            "",
            "A mode counts as found when a method puts at least half its true weight near it.",
            "",
            modes,
            "",
            "![mass per mode](modes.png)",
            "",
        ]
    elif modes is not None:
        lines += [
            "## Modes found: well masses per pair",
            "",
            "A mode is a choice of well in every pair. Each column is a method's mass in the "
            "right well of every pair (exact value in the second column), the pairs off by "
            "more than 0.05, and the distinct modes among its draws against the number "
            "expected of as many exact draws (in brackets; MCMC draws are correlated, so "
            "even a good chain visits fewer).",
            "",
            modes,
            "",
        ]
    lines += ["## Targets", ""]
    if c.checks:
        lines += [
            f"- **{ch.status}** {ch.name}" + (f": {ch.detail}" if ch.detail else "")
            for ch in c.checks
        ]
    else:
        lines.append("No fixed requirements for this target; the table is the result.")
    lines += ["", "## Figures", ""]
    captions = {
        "samples": "Draws of each method over the target"
        + (" density." if target.dim == 2 else " (pair plots of the first coordinates)."),
        "traces": "Trace plots of every MCMC chain (first coordinates).",
        "elbo": "Reverse-KL training of the flow: ELBO per step against log Z.",
    }
    for key, caption in captions.items():
        if key in figures:
            lines += [f"{caption}", "", f"![{key}]({figures[key].name})", ""]
    lines += ["## Settings", ""]
    for method in c.methods:
        lines.append(f"- `{method}`: {c.runs[method].settings}")
    lines += ["", _COLUMN_NOTES]
    report = out / "report.md"
    report.write_text("\n".join(lines))
    data = {
        "target": c.target_name,
        "dim": target.dim,
        "log_Z": target.log_Z,
        "quick": c.quick,
        "seed": c.seed,
        "wall_time": c.wall_time,
        "rows": [r.as_dict() for r in c.rows],
        "checks": [{"name": ch.name, "status": ch.status, "detail": ch.detail} for ch in c.checks],
        "warnings": [
            {"kind": a.kind, "methods": list(a.methods), "message": a.message} for a in c.alerts
        ],
        "settings": {m: c.runs[m].settings for m in c.methods},
        "true_mode_weights": target.true_mode_weights,
    }
    (out / "results.json").write_text(json.dumps(jsonable(data), indent=2))
    c.report = report
    return report
