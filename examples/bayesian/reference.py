r"""Reference posteriors on disk: a readable JSON summary and a small ``.npz`` of thinned draws.

For model ``m`` the folder ``references/`` holds

* ``m.json``: the coordinates' names, the reference mean and sd of each coordinate (and the
  Monte Carlo standard error of the mean), where the reference comes from (``"nuts"``,
  ``"exact"``, or another model's NUTS run with the same posterior), and the NUTS run on ``m``
  itself: settings, wall time per chain, divergences, R-hat, bulk/tail ESS, its own mean and
  sd, the date and the library versions;
* ``m_draws.npz``: up to 1000 thinned reference draws of (some of) the coordinates, for plots.

Errors of an approximation :math:`q` are measured in reference units, per coordinate :math:`i`:

.. math::

    e_i = \frac{E_q[x_i] - \hat\mu_i}{\hat s_i}, \qquad r_i = \frac{\mathrm{sd}_q(x_i)}{\hat s_i}.

Example:

>>> ref = load_reference("eight_schools_noncentered")
>>> ref.names[:2], ref.mean.shape
(['mu', 'tau'], (10,))

References:

- A. Vehtari, A. Gelman, D. Simpson, B. Carpenter, P.-C. Bürkner. *Rank-normalization,
  folding, and localization: an improved R-hat for assessing convergence of MCMC.* Bayesian
  Analysis 16(2), 2021 (the R-hat and ESS stored here, computed by ArviZ).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

REFERENCE_DIR = Path(__file__).resolve().parent / "references"


@dataclass
class Reference:
    """A loaded reference: summary arrays, thinned draws and the raw JSON record."""

    name: str
    names: list[str]
    mean: np.ndarray
    sd: np.ndarray
    mcse_mean: np.ndarray
    source: str
    draws: np.ndarray  # (num_draws, len(draw_names))
    draw_names: list[str]
    record: dict[str, Any]

    @property
    def nuts_wall_time(self) -> float:
        """Mean wall time (s) of one NUTS chain (warm-up + draws) on this model."""
        return float(self.record["nuts"]["wall_time_per_chain_mean_s"])

    @property
    def nuts_cpu_time(self) -> float:
        """Mean CPU time (s) of one NUTS chain (one thread: its wall time on an idle core)."""
        return float(self.record["nuts"]["cpu_time_per_chain_mean_s"])

    def errors(self, mean: np.ndarray, sd: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(mean error in reference sds, sd ratio)`` per coordinate of an approximation."""
        mean, sd = np.asarray(mean, dtype=float), np.asarray(sd, dtype=float)
        if mean.shape != self.mean.shape or sd.shape != self.sd.shape:
            raise ValueError(
                f"expected {self.mean.shape[0]} coordinates, got means {mean.shape} and sds "
                f"{sd.shape}"
            )
        return (mean - self.mean) / self.sd, sd / self.sd


def _round(values: Any, digits: int = 6) -> Any:
    """Floats to ``digits`` significant digits (keeps the JSON small and readable)."""
    if isinstance(values, dict):
        return {k: _round(v, digits) for k, v in values.items()}
    if isinstance(values, (list, tuple)):
        return [_round(v, digits) for v in values]
    if isinstance(values, np.ndarray):
        return _round(values.tolist(), digits)
    if isinstance(values, (float, np.floating)):
        return float(f"{float(values):.{digits}g}")
    if isinstance(values, np.integer):
        return int(values)
    return values


def save_reference(
    name: str,
    record: dict[str, Any],
    draws: np.ndarray,
    draw_names: list[str],
    directory: Path = REFERENCE_DIR,
) -> tuple[Path, Path]:
    """Write ``name.json`` (``record``, rounded) and ``name_draws.npz`` (float32 draws)."""
    directory.mkdir(parents=True, exist_ok=True)
    json_path, npz_path = directory / f"{name}.json", directory / f"{name}_draws.npz"
    json_path.write_text(json.dumps(_round(record), indent=1) + "\n")
    np.savez_compressed(
        npz_path, draws=np.asarray(draws, dtype=np.float32), names=np.asarray(draw_names)
    )
    return json_path, npz_path


def load_reference(name: str, directory: Path = REFERENCE_DIR) -> Reference:
    """Load the reference of model ``name`` from ``directory``.

    :raises FileNotFoundError: naming the script that writes the file when it is missing.
    """
    json_path, npz_path = directory / f"{name}.json", directory / f"{name}_draws.npz"
    if not json_path.exists():
        raise FileNotFoundError(
            f"no reference for {name!r}: expected {json_path}; run "
            f"`python examples/bayesian/make_references.py --models {name}`"
        )
    record = json.loads(json_path.read_text())
    with np.load(npz_path) as data:
        draws, draw_names = data["draws"].astype(np.float64), [str(n) for n in data["names"]]
    ref = record["reference"]
    return Reference(
        name=name,
        names=list(record["coordinates"]),
        mean=np.asarray(ref["mean"], dtype=float),
        sd=np.asarray(ref["sd"], dtype=float),
        mcse_mean=np.asarray(ref["mcse_mean"], dtype=float),
        source=ref["source"],
        draws=draws,
        draw_names=draw_names,
        record=record,
    )
