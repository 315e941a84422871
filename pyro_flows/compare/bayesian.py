r"""A flow guide against NUTS on a Bayesian model: eight schools (non-centred).

The model (Rubin, 1981; Gelman et al., 2013, section 5.5), with :math:`J = 8` schools, is
:func:`~pyro_flows.targets.eight_schools.eight_schools_noncentered` (defined once, in
:mod:`pyro_flows.targets.eight_schools`, with the data; it is importable from here as
``eight_schools``, next to ``EIGHT_SCHOOLS_Y`` and ``EIGHT_SCHOOLS_SIGMA``),

.. math::

    \mu \sim \mathcal N(0, 5), \quad \tau \sim \mathrm{HalfCauchy}(5), \quad
    \eta_j \sim \mathcal N(0, 1), \quad \theta_j = \mu + \tau\eta_j, \quad
    y_j \sim \mathcal N(\theta_j, \sigma_j),

has a 10-dimensional posterior whose unconstrained coordinates :math:`u = (\mu, \log\tau,
\eta_1, \dots, \eta_8)` are what the guides model. :func:`compare_guides` runs NUTS (the
reference), then fits :class:`~pyro_flows.infer.AutoFlow` (an IAF guide) and Pyro's
``AutoNormal`` (the mean-field baseline) by SVI with ``Trace_ELBO``, and reports per guide, over
the coordinates :math:`d` of :math:`u`,

.. math::

    \max_d \frac{|\bar u^{q}_d - \bar u^{\mathrm{NUTS}}_d|}{s^{\mathrm{NUTS}}_d}, \qquad
    \frac{s^{q}_d}{s^{\mathrm{NUTS}}_d}\ (\text{min and max}), \qquad
    \hat k \text{ of } \log\frac{p(y, \theta)}{q(\theta)}, \qquad
    \mathrm{ELBO} = \mathbb E_q\Bigl[\log\frac{p(y, \theta)}{q(\theta)}\Bigr],

and the wall times. A mean-field guide cannot follow the funnel-shaped dependence of
:math:`\eta` on :math:`\tau` and underestimates the spread of :math:`\log\tau`; a flow can.

References:

- D. B. Rubin. *Estimation in parallel randomized experiments.* Journal of Educational
  Statistics 6(4), 1981.
- A. Gelman, J. B. Carlin, H. S. Stern, D. B. Dunson, A. Vehtari, D. B. Rubin. *Bayesian Data
  Analysis*, 3rd ed., 2013, section 5.5.
- Y. Yao, A. Vehtari, D. Simpson, A. Gelman. *Yes, but Did It Work?: Evaluating Variational
  Inference.* ICML 2018. https://arxiv.org/abs/1802.02538
- D. P. Kingma et al. *Improved Variational Inference with Inverse Autoregressive Flow.*
  NeurIPS 2016. https://arxiv.org/abs/1606.04934
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyro
import torch
from torch import Tensor

from .._figures import check_figure_path, new_figure, save_figure
from .._progress import progress_bar
from ..infer import AutoFlow, guide_psis_khat, mcmc_diagnostics, nuts_model
from ..targets.eight_schools import EIGHT_SCHOOLS_SIGMA, EIGHT_SCHOOLS_Y
from ..targets.eight_schools import eight_schools_noncentered as eight_schools
from .table import FLAG, FLAGGED, flag_legend

__all__ = [
    "EIGHT_SCHOOLS_Y",
    "EIGHT_SCHOOLS_SIGMA",
    "STAN_REFERENCE",
    "GuideSettings",
    "GUIDE_SETTINGS",
    "GUIDE_QUICK_SETTINGS",
    "GuideRow",
    "GuideComparison",
    "eight_schools",
    "unconstrained_draws",
    "fit_guide",
    "compare_guides",
    "plot_guides",
]

#: Posterior mean and sd of a long reference Stan run (the project's REFERENCE.md).
STAN_REFERENCE: dict[str, tuple[float, float]] = {"mu": (4.41, 3.31), "tau": (3.60, 3.20)}

#: Names of the unconstrained coordinates compared.
COORDINATES: tuple[str, ...] = ("mu", "log tau", *(f"eta[{j}]" for j in range(1, 9)))


def unconstrained_draws(samples: Mapping[str, Tensor]) -> Tensor:
    r"""Posterior draws ``{"mu", "tau", "eta"}`` as rows :math:`(\mu, \log\tau, \eta_1, \dots,
    \eta_8)`, shape ``(*batch, 10)`` for ``mu`` of shape ``batch``.

    Example:

    >>> d = {"mu": torch.zeros(3), "tau": torch.ones(3), "eta": torch.ones(3, 8)}
    >>> unconstrained_draws(d)[0].tolist()
    [0.0, 0.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0]

    References: Kucukelbir et al., *ADVI*, JMLR 18, 2017 (unconstrained coordinates).
    """
    missing = [k for k in ("mu", "tau", "eta") if k not in samples]
    if missing:
        raise ValueError(f"samples need the sites mu, tau and eta, missing {missing}")
    mu, tau, eta = samples["mu"], samples["tau"], samples["eta"]
    batch = mu.shape
    eta = eta.reshape(*batch, -1)
    if eta.shape[-1] != 8:
        raise ValueError(
            f"eta must have 8 entries per draw, got shape {tuple(samples['eta'].shape)}"
        )
    return torch.cat([mu.unsqueeze(-1), tau.log().reshape(*batch, 1), eta], -1).detach()


@dataclass(frozen=True)
class GuideSettings:
    r"""Budgets of :func:`compare_guides`.

    :param nuts_samples: NUTS draws kept per chain.
    :param nuts_warmup: NUTS warm-up per chain.
    :param nuts_chains: NUTS chains.
    :param target_accept: NUTS's step-size target.
    :param jit_compile: trace NUTS's potential with the PyTorch JIT (faster per gradient, a
        few seconds to compile).
    :param steps: SVI steps of each guide.
    :param particles: ELBO particles per step (vectorised); gradients per step.
    :param flow_lr: Adam learning rate of AutoFlow.
    :param normal_lr: Adam learning rate of AutoNormal.
    :param flow_options: ``AutoFlow`` keyword arguments (builder, layers, widths).
    :param draws: guide draws for the moments, the ELBO and :math:`\hat k`.

    Example:

    >>> GUIDE_QUICK_SETTINGS.steps < GUIDE_SETTINGS.steps
    True

    References: Yao et al., ICML 2018 (:math:`\hat k` from a few thousand draws).
    """

    nuts_samples: int = 500
    nuts_warmup: int = 300
    nuts_chains: int = 2
    target_accept: float = 0.8
    jit_compile: bool = True
    steps: int = 1000
    particles: int = 16
    flow_lr: float = 1e-2
    normal_lr: float = 2e-2
    flow_options: dict[str, Any] = field(
        default_factory=lambda: {"flow": "iaf", "num_transforms": 4, "hidden_dims": (32, 32)}
    )
    draws: int = 4000


GUIDE_SETTINGS = GuideSettings()
GUIDE_QUICK_SETTINGS = GuideSettings(
    nuts_samples=150, nuts_warmup=150, steps=300, particles=8, draws=1000
)


@dataclass
class GuideRow:
    r"""One method on eight schools: its costs, and its errors against the NUTS draws.

    ``mean_error`` is :math:`\max_d |\bar u^q_d - \bar u^{\mathrm{NUTS}}_d| / s^{\mathrm{NUTS}}_d`
    over :math:`u = (\mu, \log\tau, \eta)`; ``sd_ratio_min``/``max`` bound
    :math:`s^q_d / s^{\mathrm{NUTS}}_d`; ``mu``/``tau`` are (mean, sd) of the constrained draws.

    Example:

    >>> GuideRow("AutoNormal", 3.2, 24000, mean_error=0.2).ess_bulk is None
    True

    References: Yao et al., ICML 2018.
    """

    method: str
    wall_time: float
    grad_evals: int
    ess_bulk: float | None = None
    rhat: float | None = None
    divergences: int | None = None
    mean_error: float | None = None
    sd_ratio_min: float | None = None
    sd_ratio_max: float | None = None
    khat: float | None = None
    elbo: float | None = None
    mu: tuple[float, float] | None = None
    tau: tuple[float, float] | None = None


def _fmt(value: Any, spec: str) -> str:
    if value is None:
        return "-"
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return format(value, spec)


_HEADERS = (
    "method",
    "wall s",
    "grad evals",
    "ESS bulk (min)",
    "R-hat max",
    "divergences",
    "max |mean err| (NUTS sd)",
    "sd ratio (min-max)",
    "k-hat",
    "ELBO",
    "mu mean (sd)",
    "tau mean (sd)",
)


def _marked(text: str, header: str, value: Any) -> str:
    """``text`` with the table's untrustworthy-result mark where ``value`` earns it."""
    return text + FLAG if FLAGGED[header][0](value) else text


def _cells(r: GuideRow) -> list[str]:
    ratio = (
        "-" if r.sd_ratio_min is None else f"{r.sd_ratio_min:.2f}-{r.sd_ratio_max:.2f}"  # type: ignore[str-format]
    )
    return [
        r.method,
        _fmt(r.wall_time, ".1f"),
        _fmt(r.grad_evals, ",d"),
        _fmt(r.ess_bulk, ".0f"),
        _marked(_fmt(r.rhat, ".3f"), "R-hat max", r.rhat),
        _marked(_fmt(r.divergences, "d"), "divergences", r.divergences),
        _fmt(r.mean_error, ".3f"),
        ratio,
        _marked(_fmt(r.khat, ".2f"), "k-hat", r.khat),
        _fmt(r.elbo, ".2f"),
        "-" if r.mu is None else f"{r.mu[0]:.2f} ({r.mu[1]:.2f})",
        "-" if r.tau is None else f"{r.tau[0]:.2f} ({r.tau[1]:.2f})",
    ]


@dataclass
class GuideComparison:
    r"""The outcome of :func:`compare_guides`: rows, the draws of every method, the settings.

    :ivar rows: NUTS, AutoNormal, AutoFlow (:class:`GuideRow`).
    :ivar draws: ``{method: (n, 10) unconstrained draws}``.
    :ivar settings: the :class:`GuideSettings` used.
    :ivar wall_time: seconds for everything.

    Example:

    >>> c = GuideComparison([GuideRow("NUTS", 12.0, 9000, ess_bulk=600.0)], {}, GuideSettings())
    >>> c.table().splitlines()[2].split()[:4]
    ['NUTS', '12.0', '9,000', '600']

    References: Yao et al., ICML 2018 (the measures of a guide's quality).
    """

    rows: list[GuideRow]
    draws: dict[str, Tensor]
    settings: GuideSettings
    wall_time: float = 0.0

    def row(self, method: str) -> GuideRow:
        """The row of ``method``."""
        for r in self.rows:
            if r.method == method:
                return r
        raise KeyError(f"no row {method!r}; rows: {[r.method for r in self.rows]}")

    def table(self, markdown: bool = False) -> str:
        """The rows as aligned text or Markdown."""
        cells = [_cells(r) for r in self.rows]
        if markdown:
            lines = ["| " + " | ".join(h.replace("|", "\\|") for h in _HEADERS) + " |"]
            lines.append("| :--- |" + " ---: |" * (len(_HEADERS) - 1))
            lines += ["| " + " | ".join(c) + " |" for c in cells]
            legend = flag_legend(_HEADERS, cells)
            return "\n".join(lines) + (f"\n\n{legend}" if legend else "")
        widths = [max(len(h), *(len(c[j]) for c in cells)) for j, h in enumerate(_HEADERS)]

        def line(values: list[str] | tuple[str, ...]) -> str:
            return "  ".join(
                v.ljust(w) if j == 0 else v.rjust(w)
                for j, (v, w) in enumerate(zip(values, widths, strict=True))
            ).rstrip()

        legend = flag_legend(_HEADERS, cells)
        text = "\n".join([line(_HEADERS), line(["-" * w for w in widths]), *map(line, cells)])
        return text + (f"\n{legend}" if legend else "")


def fit_guide(
    guide: Callable[..., Any],
    model: Callable[..., Any],
    *args: Any,
    steps: int,
    lr: float,
    particles: int,
    seed: int = 0,
    progress: bool = True,
    desc: str = "SVI",
    max_plate_nesting: int | None = None,
) -> tuple[float, list[float]]:
    r"""Fit ``guide`` to ``model`` by SVI with ``Trace_ELBO`` (vectorised particles) and Adam
    (learning rate decayed to a tenth), from a cleared param store; ``(seconds, losses)``.

    .. math::

        \max_\phi\ \mathbb E_{q_\phi}[\log p(y, \theta) - \log q_\phi(\theta)].

    Example:

    >>> from pyro.infer.autoguide import AutoNormal
    >>> y, s = torch.tensor(EIGHT_SCHOOLS_Y), torch.tensor(EIGHT_SCHOOLS_SIGMA)
    >>> seconds, losses = fit_guide(AutoNormal(eight_schools), eight_schools, y, s, steps=20,
    ...                             lr=0.02, particles=4, progress=False)
    >>> len(losses)
    20

    ``max_plate_nesting`` is passed to ``Trace_ELBO`` (``None``: Pyro guesses it).

    References: M. D. Hoffman, D. M. Blei, C. Wang, J. Paisley. *Stochastic Variational
    Inference.* JMLR 14, 2013.
    """
    from pyro.infer import SVI, Trace_ELBO
    from pyro.optim import ClippedAdam

    pyro.clear_param_store()
    pyro.set_rng_seed(seed)
    start = time.perf_counter()
    optim = ClippedAdam({"lr": lr, "lrd": 0.1 ** (1.0 / max(steps, 1))})
    svi = SVI(
        model,
        guide,
        optim,
        Trace_ELBO(
            num_particles=particles,
            vectorize_particles=True,
            max_plate_nesting=max_plate_nesting if max_plate_nesting is not None else float("inf"),
        ),
    )
    losses = []
    bar = progress_bar(range(steps), desc=desc, enabled=progress)
    for step in bar:
        losses.append(float(svi.step(*args)))
        if step % 50 == 0:
            bar.set_postfix(elbo=f"{-losses[-1]:.2f}", refresh=False)
    bar.close()
    return time.perf_counter() - start, losses


def _guide_draws(guide: Any, args: tuple, n: int) -> dict[str, Tensor]:
    from pyro.infer import Predictive

    with torch.no_grad():
        out = Predictive(
            eight_schools,
            guide=guide,
            num_samples=n,
            return_sites=("mu", "tau", "eta"),
            parallel=True,
        )(*args)
    return {
        k: v.reshape(n, -1).squeeze(-1) if k != "eta" else v.reshape(n, 8) for k, v in out.items()
    }


def _elbo(guide: Any, args: tuple, n: int) -> float:
    from pyro.infer import Trace_ELBO

    with torch.no_grad():
        loss = Trace_ELBO(num_particles=n, vectorize_particles=True, max_plate_nesting=1).loss(
            eight_schools, guide, *args
        )
    return -float(loss)


def _moments(draws: Tensor) -> tuple[Tensor, Tensor]:
    x = draws.reshape(-1, draws.shape[-1]).to(torch.float64)
    return x.mean(0), x.std(0)


def _mean_sd(x: Tensor) -> tuple[float, float]:
    x = x.reshape(-1).to(torch.float64)
    return float(x.mean()), float(x.std())


def compare_guides(
    *,
    quick: bool = False,
    seed: int = 0,
    progress: bool = True,
    settings: GuideSettings | None = None,
) -> GuideComparison:
    r"""NUTS, then ``AutoNormal`` and :class:`~pyro_flows.infer.AutoFlow` fitted by SVI, on the
    non-centred eight schools; every number of :class:`GuideRow` against the NUTS draws.

    Costs: NUTS's ``grad evals`` are its potential gradients (warm-up included); a guide's are
    ``steps * particles``. The guides' wall time is the SVI fit; drawing and scoring (ELBO,
    :math:`\hat k` from ``draws`` draws) is not counted.

    :param quick: the small budget (:data:`GUIDE_QUICK_SETTINGS`).
    :param seed: seeds NUTS, the guides' initialisation and SVI.
    :param progress: progress bars.
    :param settings: overrides the budget.

    Example:

    >>> s = GuideSettings(nuts_samples=5, nuts_warmup=5, jit_compile=False, steps=5,
    ...                   particles=2, draws=20)
    >>> c = compare_guides(settings=s, progress=False)
    >>> [r.method for r in c.rows], tuple(c.draws["AutoFlow"].shape)
    (['NUTS', 'AutoNormal', 'AutoFlow'], (20, 10))

    References: see the module docstring.
    """
    from pyro.infer.autoguide import AutoNormal, init_to_median

    s = settings if settings is not None else (GUIDE_QUICK_SETTINGS if quick else GUIDE_SETTINGS)
    start = time.perf_counter()
    args = (
        torch.tensor(EIGHT_SCHOOLS_Y, dtype=torch.get_default_dtype()),
        torch.tensor(EIGHT_SCHOOLS_SIGMA, dtype=torch.get_default_dtype()),
    )
    ref = nuts_model(
        eight_schools,
        *args,
        num_samples=s.nuts_samples,
        warmup=s.nuts_warmup,
        num_chains=s.nuts_chains,
        target_accept=s.target_accept,
        jit_compile=s.jit_compile,
        progress=progress,
        seed=seed,
    )
    constrained = ref.extra["constrained"]
    nuts_u = unconstrained_draws(constrained)  # (chains, draws, 10)
    diag = mcmc_diagnostics(nuts_u)
    ref_mean, ref_sd = _moments(nuts_u)
    rows = [
        GuideRow(
            "NUTS",
            wall_time=ref.wall_time,
            grad_evals=ref.num_grad_evals,
            ess_bulk=diag["ess_bulk_min"],
            rhat=diag["rhat_max"] if math.isfinite(diag["rhat_max"]) else None,
            divergences=ref.divergences,
            mu=_mean_sd(constrained["mu"]),
            tau=_mean_sd(constrained["tau"]),
        )
    ]
    draws = {"NUTS": nuts_u.reshape(-1, 10)}
    guides = {
        "AutoNormal": (
            lambda: AutoNormal(eight_schools, init_loc_fn=init_to_median, init_scale=0.1),
            s.normal_lr,
        ),
        "AutoFlow": (
            lambda: AutoFlow(eight_schools, init_loc_fn=init_to_median, **s.flow_options),
            s.flow_lr,
        ),
    }
    for name, (make, lr) in guides.items():
        pyro.clear_param_store()
        pyro.set_rng_seed(seed)
        guide = make()
        seconds, losses = fit_guide(
            guide,
            eight_schools,
            *args,
            steps=s.steps,
            lr=lr,
            particles=s.particles,
            seed=seed,
            progress=progress,
            desc=name,
            max_plate_nesting=1,
        )
        pyro.set_rng_seed(seed + 1)
        site_draws = _guide_draws(guide, args, s.draws)
        u = unconstrained_draws(site_draws)
        mean, sd = _moments(u)
        ratio = sd / ref_sd
        rows.append(
            GuideRow(
                name,
                wall_time=seconds,
                grad_evals=s.steps * s.particles,
                mean_error=float(((mean - ref_mean).abs() / ref_sd).max()),
                sd_ratio_min=float(ratio.min()),
                sd_ratio_max=float(ratio.max()),
                khat=guide_psis_khat(
                    eight_schools, guide, *args, num_samples=max(s.draws, 10), max_plate_nesting=1
                ),
                elbo=_elbo(guide, args, s.draws),
                mu=_mean_sd(site_draws["mu"]),
                tau=_mean_sd(site_draws["tau"]),
            )
        )
        draws[name] = u
    pyro.clear_param_store()
    return GuideComparison(rows, draws, s, time.perf_counter() - start)


def plot_guides(comparison: GuideComparison, path: str | Path, max_points: int = 1500) -> Path:
    r"""One row per guide: its draws (colour) under the NUTS draws (black) for the pairs
    :math:`(\mu, \log\tau)` and :math:`(\eta_1, \log\tau)`, and the marginal histograms of
    :math:`\log\tau`, where a guide that is too narrow shows first.

    Example:

    >>> import tempfile
    >>> g = torch.Generator().manual_seed(0)
    >>> c = GuideComparison([], {"NUTS": torch.randn(100, 10, generator=g),
    ...                          "AutoFlow": torch.randn(100, 10, generator=g)}, GuideSettings())
    >>> with tempfile.TemporaryDirectory() as d:
    ...     plot_guides(c, f"{d}/g.png").read_bytes()[:4]
    b'\x89PNG'

    References: Gelman et al., *Bayesian Data Analysis*, 2013, section 5.5 (the
    :math:`\tau`-funnel of the hierarchical posterior).
    """
    path = check_figure_path(path)
    ref_all = comparison.draws["NUTS"]
    ref = ref_all[:max_points]
    guides = [m for m in comparison.draws if m != "NUTS"]
    rows = max(len(guides), 1)
    fig = new_figure(figsize=(12, 3.3 * rows), layout="constrained")
    axes = fig.subplots(rows, 3, squeeze=False)
    lo = float(ref_all[:, 1].min()) - 0.5
    hi = float(ref_all[:, 1].max()) + 0.5
    for r, name in enumerate(guides):
        pts = comparison.draws[name][:max_points]
        for c, i in enumerate((0, 2)):
            ax = axes[r, c]
            ax.scatter(
                pts[:, i].numpy(), pts[:, 1].numpy(), s=4, alpha=0.35, color=f"C{r}", label=name
            )
            ax.scatter(ref[:, i].numpy(), ref[:, 1].numpy(), s=1.5, color="k", label="NUTS")
            ax.set_xlabel(COORDINATES[i])
            ax.set_ylabel(COORDINATES[1])
            ax.set_ylim(lo, hi)
            ax.legend(fontsize=8, loc="lower right", markerscale=3)
        ax = axes[r, 2]
        bins = torch.linspace(lo, hi, 50).numpy()
        ax.hist(
            ref_all[:, 1].numpy(),
            bins=bins,
            density=True,
            color="k",
            histtype="step",
            lw=1.5,
            label="NUTS",
        )
        ax.hist(
            comparison.draws[name][:, 1].numpy(),
            bins=bins,
            density=True,
            color=f"C{r}",
            alpha=0.5,
            label=name,
        )
        ax.set_xlabel("log tau")
        ax.set_ylabel("density")
        ax.legend(fontsize=8)
        axes[r, 0].set_title(f"eight schools: {name} vs NUTS", loc="left")
    return save_figure(fig, path, dpi=90)
