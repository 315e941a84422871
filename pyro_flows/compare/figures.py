r"""The PNGs of a comparison report: draws over the target, chains over time, the ELBO curve and
the mass per mode.

- :func:`plot_samples`: for a 2-D target, the target density :math:`\tilde p(z)/Z` on its plot
  box and, one panel per method, the method's draws over the density's contours; for
  :math:`D > 2`, pair plots of the first coordinates (one row per method, the target's exact
  draws in grey underneath).
- :func:`plot_traces`: every MCMC chain against the iteration, first coordinates.
- :func:`plot_elbo`: the flow's ELBO per training step (running mean) against :math:`\log Z`.
- :func:`plot_mode_masses`: mass per mode of each method next to the true weights.

Matplotlib is imported on first use; each figure is drawn on its own Agg canvas without
pyplot (:mod:`pyro_flows._figures`), so the user's backend is left alone and no figure stays
open. Every function checks its inputs and its ``path`` before drawing (a figure format, ``.png``
appended when there is no extension, no existing directory) and returns the file written.

References:

- J. D. Hunter. *Matplotlib: A 2D graphics environment.* Computing in Science & Engineering
  9(3), 2007.
- A. Gelman, J. B. Carlin, H. S. Stern, D. B. Dunson, A. Vehtari, D. B. Rubin. *Bayesian Data
  Analysis*, 3rd ed., 2013, section 11.4 (trace plots).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
from torch import Tensor

from .._figures import check_figure_path, new_figure, save_figure
from .._numbers import check_finite_number, check_interval
from .._validation import check_positive_int
from ..infer import TargetFitHistory
from ..targets import Target
from .method_registry import METHOD_SPECS
from .methods import MethodRun

__all__ = ["plot_samples", "plot_traces", "plot_elbo", "plot_mode_masses", "density_on_grid"]

_MAX_POINTS = 3000


def density_on_grid(
    target: Target, bounds: Sequence[tuple[float, float]], resolution: int = 200
) -> tuple[Tensor, Tensor, Tensor]:
    r"""``(xs, ys, density)`` of a 2-D target on a grid over ``bounds``, normalised to a peak of 1:

    .. math::

        d(z) = \exp\bigl(\log\tilde p(z) - \max_{z'} \log\tilde p(z')\bigr).

    Example:

    >>> from pyro_flows.targets import get_target
    >>> xs, ys, d = density_on_grid(get_target("u1"), ((-4, 4), (-4, 4)), resolution=50)
    >>> tuple(d.shape), float(d.max())
    ((50, 50), 1.0)

    References: Rezende & Mohamed, ICML 2015, figure 3 (such density images).
    """
    if target.dim != 2:
        raise ValueError(f"density_on_grid needs a 2-D target, got dim={target.dim}")
    if isinstance(bounds, str | bytes) or not isinstance(bounds, Sequence) or len(bounds) != 2:
        raise ValueError(f"bounds must be 2 (lo, hi) pairs, one per coordinate, got {bounds!r}")
    (a, b), (c, d) = (check_interval(pair, "bounds") for pair in bounds)
    check_positive_int(resolution, "resolution", minimum=2)
    xs = torch.linspace(a, b, resolution, dtype=torch.float64)
    ys = torch.linspace(c, d, resolution, dtype=torch.float64)
    xx, yy = torch.meshgrid(xs, ys, indexing="xy")
    with torch.no_grad():
        lp = target.log_prob(torch.stack([xx, yy], -1)).to(torch.float64)
    lp = torch.where(torch.isfinite(lp), lp, torch.full_like(lp, -math.inf))
    return xs, ys, torch.exp(lp - lp.max())


def _bounds(target: Target, runs: Mapping[str, MethodRun]) -> list[tuple[float, float]]:
    if target.bounds is not None and len(target.bounds) >= 2:
        return [tuple(b) for b in target.bounds[:2]]  # type: ignore[misc]
    draws = torch.cat([r.samples.reshape(-1, r.samples.shape[-1])[:, :2] for r in runs.values()])
    lo, hi = draws.quantile(0.005, 0), draws.quantile(0.995, 0)
    return [(float(lo[i]), float(hi[i])) for i in range(2)]


def _thin(x: Tensor, n: int = _MAX_POINTS, seed: int = 0) -> Tensor:
    x = x.reshape(-1, x.shape[-1]).detach().to(torch.float64)
    if x.shape[0] <= n:
        return x
    idx = torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(seed))[:n]
    return x[idx]


def _label(run: MethodRun) -> str:
    spec = METHOD_SPECS.get(run.method)
    return spec.label if spec is not None else run.method


def plot_samples(
    target: Target, runs: Mapping[str, MethodRun], path: str | Path, *, seed: int = 0
) -> Path:
    r"""Each method's draws over the target (2-D) or pair plots of the first coordinates.

    For :math:`D = 2` the first panel is the normalised density :math:`\tilde p/\max\tilde p` on
    the target's plot box and every other panel shows up to 3000 draws of one method over its
    contours; for :math:`D > 2` row :math:`r` shows method :math:`r`'s draws of the pairs
    :math:`(z_0, z_1), (z_0, z_2), (z_1, z_2)` over the target's exact draws (grey) where it has
    an exact sampler.

    Example:

    >>> import tempfile, torch
    >>> from pyro_flows.compare.methods import MethodRun
    >>> from pyro_flows.targets import get_target
    >>> target = get_target("banana")
    >>> run = MethodRun("mh", "mcmc", target.sample((1, 200)), 1.0, 0)
    >>> with tempfile.TemporaryDirectory() as d:
    ...     plot_samples(target, {"mh": run}, f"{d}/s.png").read_bytes()[:4]
    b'\x89PNG'

    References: see the module docstring.
    """
    path = check_figure_path(path)
    bounds = _bounds(target, runs)
    if target.dim == 2:
        xs, ys, dens = density_on_grid(target, bounds)
        n = len(runs) + 1
        cols = min(n, 4)
        rows = math.ceil(n / cols)
        fig = new_figure(figsize=(3.4 * cols, 3.4 * rows), layout="constrained")
        axes = fig.subplots(rows, cols, squeeze=False)
        flat = list(axes.flat)
        flat[0].pcolormesh(xs.numpy(), ys.numpy(), dens.numpy(), shading="auto", cmap="viridis")
        flat[0].set_title(f"target {target.name}: density")
        for ax, run in zip(flat[1:], runs.values(), strict=False):
            ax.contour(xs.numpy(), ys.numpy(), dens.numpy(), levels=6, colors="0.6", linewidths=0.7)
            pts = _thin(run.samples, seed=seed)
            ax.scatter(pts[:, 0].numpy(), pts[:, 1].numpy(), s=2, alpha=0.35, color="C3")
            ax.set_title(f"{_label(run)} ({run.samples.shape[0] * run.samples.shape[1]} draws)")
        for ax in flat:
            ax.set_xlim(*bounds[0])
            ax.set_ylim(*bounds[1])
            ax.set_aspect("equal")
        for ax in flat[n:]:
            ax.axis("off")
    else:
        pairs = [(0, 1), (0, 2), (1, 2)] if target.dim >= 3 else [(0, 1)]
        exact = (
            _thin(target.sample((_MAX_POINTS,)), seed=seed) if target.has_exact_samples else None
        )
        fig = new_figure(figsize=(3.4 * len(pairs), 3.0 * len(runs)), layout="constrained")
        axes = fig.subplots(len(runs), len(pairs), squeeze=False)
        lims = {}
        ref = (
            exact
            if exact is not None
            else _thin(torch.cat([r.samples.reshape(-1, target.dim) for r in runs.values()]))
        )
        for d in range(3 if target.dim >= 3 else 2):
            lo, hi = ref[:, d].quantile(0.002), ref[:, d].quantile(0.998)
            pad = 0.05 * float(hi - lo)
            lims[d] = (float(lo) - pad, float(hi) + pad)
        if bounds:
            lims[0], lims[1] = bounds[0], bounds[1]
        for r, run in enumerate(runs.values()):
            pts = _thin(run.samples, seed=seed)
            for c, (i, j) in enumerate(pairs):
                ax = axes[r, c]
                if exact is not None:
                    ax.scatter(exact[:, i].numpy(), exact[:, j].numpy(), s=2, color="0.75")
                ax.scatter(pts[:, i].numpy(), pts[:, j].numpy(), s=2, alpha=0.4, color="C3")
                ax.set_xlim(*lims[i])
                ax.set_ylim(*lims[j])
                ax.set_xlabel(f"z{i}")
                ax.set_ylabel(f"z{j}")
                if c == 0:
                    ax.set_title(f"{_label(run)} (red) vs exact (grey)", loc="left")
    return save_figure(fig, path, dpi=90)


def plot_traces(runs: Mapping[str, MethodRun], path: str | Path, coords: int = 2) -> Path | None:
    r"""Trace plots: every chain of every MCMC method, coordinates :math:`z_0, \dots` (``coords``
    of them), one row per method; ``None`` (no file) when no MCMC method ran.

    Example:

    >>> import tempfile, torch
    >>> from pyro_flows.compare.methods import MethodRun
    >>> run = MethodRun("nuts", "mcmc", torch.randn(2, 100, 3), 1.0, 10)
    >>> with tempfile.TemporaryDirectory() as d:
    ...     plot_traces({"nuts": run}, f"{d}/t.png").suffix
    '.png'

    References: Gelman et al., *Bayesian Data Analysis*, section 11.4.
    """
    path = check_figure_path(path)
    check_positive_int(coords, "coords")
    mcmc = [r for r in runs.values() if r.kind == "mcmc"]
    if not mcmc:
        return None
    coords = min(coords, int(mcmc[0].samples.shape[-1]))
    fig = new_figure(figsize=(5.0 * coords, 2.0 * len(mcmc)), layout="constrained")
    axes = fig.subplots(len(mcmc), coords, squeeze=False)
    for r, run in enumerate(mcmc):
        for d in range(coords):
            ax = axes[r, d]
            for c in range(run.samples.shape[0]):
                ax.plot(run.samples[c, :, d].numpy(), lw=0.5, alpha=0.8, label=f"chain {c}")
            ax.set_title(f"{_label(run)}: z{d}", loc="left", fontsize=9)
        axes[r, 0].set_ylabel("value")
        # which line is which chain: chains that disagree are what R-hat flags
        axes[r, -1].legend(
            fontsize=7,
            loc="upper right",
            ncol=min(4, run.samples.shape[0]),
            framealpha=0.7,
            handlelength=1.0,
        )
    axes[-1, 0].set_xlabel("draw (after warm-up)")
    return save_figure(fig, path, dpi=90)


def plot_elbo(history: TargetFitHistory, log_Z: float | None, path: str | Path) -> Path:
    r"""The reverse-KL training curve: batch ELBO per step (and its running mean over 50 steps)
    with :math:`\log Z` as the ceiling, :math:`\mathrm{ELBO} \le \log Z`, and, when
    :math:`\log Z` is known, the gap :math:`\log Z - \mathrm{ELBO} \approx \mathrm{KL}(q\,\|\,p)`
    on a log scale.

    Example:

    >>> import tempfile
    >>> from pyro_flows.infer import TargetFitHistory
    >>> h = TargetFitHistory(elbo=[-3.0, -2.0, -1.5, -1.2], beta=[1.0] * 4)
    >>> with tempfile.TemporaryDirectory() as d:
    ...     plot_elbo(h, -1.0, f"{d}/e.png").name, plot_elbo(h, None, f"{d}/e2").name
    ('e.png', 'e2.png')

    :raises TypeError: ``history`` is not a :class:`~pyro_flows.infer.TargetFitHistory`, or
        ``log_Z`` is neither a number nor ``None``.
    :raises ValueError: ``log_Z`` is NaN or infinite (pass ``None`` when it is unknown), or
        ``path`` is not a figure file (see the module docstring).

    References: Rezende & Mohamed, ICML 2015.
    """
    if not isinstance(history, TargetFitHistory):
        raise TypeError(f"history must be a TargetFitHistory, got {type(history).__name__}")
    if log_Z is not None:
        log_Z = check_finite_number(log_Z, "log_Z (None when unknown)")
    path = check_figure_path(path)
    elbo = torch.tensor(history.elbo, dtype=torch.float64)
    panels = 2 if log_Z is not None else 1
    fig = new_figure(figsize=(6.0 * panels, 3.2), layout="constrained")
    axes = list(fig.subplots(1, panels, squeeze=False).flat)
    ax = axes[0]
    steps = torch.arange(1, len(elbo) + 1)
    ax.plot(steps.numpy(), elbo.numpy(), lw=0.4, color="0.7", label="batch ELBO")
    window = min(50, max(1, len(elbo)))
    smooth = None
    if len(elbo) >= window:
        kernel = torch.ones(1, 1, window, dtype=torch.float64) / window
        smooth = torch.nn.functional.conv1d(elbo.view(1, 1, -1), kernel).flatten()
        ax.plot(steps[window - 1 :].numpy(), smooth.numpy(), color="C0", label=f"mean of {window}")
    if log_Z is not None:
        ax.axhline(log_Z, color="C3", ls="--", label=f"log Z = {log_Z:.4f}")
    finite = elbo[torch.isfinite(elbo)]
    if finite.numel():
        top = log_Z if log_Z is not None else float(finite.max())
        spread = float(top - finite.quantile(0.1))
        ax.set_ylim(top - 3 * max(spread, 0.05), top + 0.5 * max(spread, 0.05))
    beta = torch.tensor(history.beta or [1.0])
    if bool((beta < 1).any()):
        ramp_end = int((beta < 1).nonzero().max()) + 1
        ax.axvspan(1, ramp_end, color="C1", alpha=0.1, label="annealing (beta < 1)")
    ax.set_xlabel("step")
    ax.set_ylabel("nats")
    ax.set_title("reverse-KL training of the flow")
    ax.legend(fontsize=8, loc="lower right")
    if log_Z is not None and smooth is not None:
        gap = (log_Z - smooth).clamp_min(1e-4)
        ax2 = axes[1]
        ax2.semilogy(steps[window - 1 :].numpy(), gap.numpy(), color="C0")
        ax2.axhline(0.02, color="0.5", ls=":", label="0.02 nats")
        ax2.set_xlabel("step")
        ax2.set_ylabel("nats (log scale)")
        ax2.set_title(f"log Z - ELBO (mean of {window} steps) ~ KL(q || p)")
        ax2.legend(fontsize=8)
    return save_figure(fig, path, dpi=90)


def _numbers(values: object, name: str) -> list[float]:
    """``values`` as a list of floats, or ``TypeError`` naming ``name`` and what was given."""
    if isinstance(values, str | bytes | Mapping) or not isinstance(values, Sequence | Tensor):
        raise TypeError(f"{name} must be a sequence of numbers, got {type(values).__name__}")
    try:
        return [float(v) for v in values]
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a sequence of numbers, got {values!r}") from None


def _mass_groups(
    masses: Mapping[str, Sequence[float]], true_weights: Sequence[float]
) -> dict[str, list[float]]:
    """``{"truth": weights, method: masses, ...}`` once every method has one mass per mode."""
    weights = _numbers(true_weights, "true_weights")
    if not weights or not all(math.isfinite(w) for w in weights):
        raise ValueError(f"true_weights must be finite, one per mode, got {weights}")
    if not isinstance(masses, Mapping):
        raise TypeError(f"masses must map method names to masses, got {type(masses).__name__}")
    groups = {"truth": weights}
    for method, values in masses.items():
        groups[str(method)] = _numbers(values, f"masses[{method!r}]")
        if len(groups[str(method)]) != len(weights):
            raise ValueError(
                f"masses[{method!r}] must have one mass per mode ({len(weights)}, as "
                f"true_weights), got {len(groups[str(method)])}"
            )
    return groups


def plot_mode_masses(
    masses: Mapping[str, Sequence[float]], true_weights: Sequence[float], path: str | Path
) -> Path:
    r"""Grouped bars: the true weights :math:`\pi_k` and each method's mass :math:`\hat m_k`
    per mode.

    Example:

    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as d:
    ...     plot_mode_masses({"flow": [0.3, 0.7]}, [0.25, 0.75], f"{d}/m.png").exists()
    True

    :raises TypeError: ``masses`` is not a mapping of sequences of numbers, or
        ``true_weights`` not a sequence of numbers.
    :raises ValueError: ``true_weights`` empty or not finite, a method without exactly one mass
        per mode, or ``path`` not a figure file (see the module docstring).

    References: Minka, 2005 (mode-seeking reverse KL).
    """
    groups = _mass_groups(masses, true_weights)
    path = check_figure_path(path)
    k = len(groups["truth"])
    width = 0.8 / len(groups)
    fig = new_figure(figsize=(1.2 + 1.3 * k, 3.2), layout="constrained")
    ax = fig.subplots()
    for g, (name, values) in enumerate(groups.items()):
        xs = [i + (g - (len(groups) - 1) / 2) * width for i in range(k)]
        ax.bar(xs, values, width=width, label=name, color="k" if name == "truth" else f"C{g}")
    ax.set_xticks(range(k), [f"mode {i + 1}" for i in range(k)])
    ax.set_ylabel("mass")
    ax.set_title("mass per mode")
    ax.legend(fontsize=8)
    return save_figure(fig, path, dpi=90)
