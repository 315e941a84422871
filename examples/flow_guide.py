"""A flow as a Pyro variational guide: IAF vs a diagonal Normal on a banana-shaped posterior.

The model's posterior over (a, b) is curved; a diagonal Normal guide cannot bend, an IAF can.
Scoring the guide's own samples costs no inverse pass.

Writes ``<out>/pair_plot.png``: ArviZ pair plots of each guide's draws against NUTS's draws
(the reference), where a guide that is off shows at a glance, and ``<out>/nuts_trace.png``: the
NUTS chains that make the reference (they should overlap).

    python examples/flow_guide.py
    python examples/flow_guide.py --quick        # what CI runs
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pyro
import pyro.distributions as dist
import torch
from pyro.infer import SVI, Predictive, Trace_ELBO
from pyro.infer.autoguide import AutoNormal
from pyro.optim import Adam

from pyro_flows import flows
from pyro_flows.infer import nuts_model


def model() -> None:
    a = pyro.sample("a", dist.Normal(0.0, 1.0))
    pyro.sample("b", dist.Normal(a**2, 0.3))


def iaf_guide_for(flow):
    def guide() -> None:
        pyro.module("flow", flow)
        z = pyro.sample("z", flow(), infer={"is_auxiliary": True})
        pyro.sample("a", dist.Delta(z[..., 0]))
        pyro.sample("b", dist.Delta(z[..., 1]))

    return guide


def fit(guide, steps: int) -> float:
    pyro.clear_param_store()
    svi = SVI(
        model,
        guide,
        Adam({"lr": 5e-3}),
        Trace_ELBO(num_particles=16, vectorize_particles=True, max_plate_nesting=1),
    )
    for _ in range(steps):
        svi.step()
    elbo = Trace_ELBO(num_particles=2000, vectorize_particles=True, max_plate_nesting=1)
    with torch.no_grad():
        return -elbo.loss(model, guide)


def guide_draws(guide, n: int) -> dict[str, np.ndarray]:
    """``n`` draws of the sites ``a``, ``b`` from a fitted guide, shaped ``(1 chain, n)``."""
    predictive = Predictive(model, guide=guide, num_samples=n, return_sites=("a", "b"))
    with torch.no_grad():
        sites = predictive()
    return {k: v.reshape(1, n).numpy() for k, v in sites.items()}


def save_figures(nuts, guides: dict[str, tuple[dict[str, np.ndarray], float]], out: Path) -> None:
    import arviz as az
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    out.mkdir(parents=True, exist_ok=True)
    reference = nuts.to_inference_data()
    grey, colours = "0.5", ("tab:orange", "tab:blue")
    fig = plt.figure(figsize=(11, 5.2), layout="constrained")
    for subfig, (name, (draws, elbo)), colour in zip(
        fig.subfigures(1, len(guides), wspace=0.05), guides.items(), colours, strict=False
    ):
        axes = subfig.subplots(2, 2, gridspec_kw={"width_ratios": (3, 1), "height_ratios": (1, 3)})
        for data, c in ((reference, grey), (az.from_dict(posterior=draws), colour)):
            az.plot_pair(
                data,
                var_names=["a", "b"],
                marginals=True,
                ax=axes,
                textsize=9,
                scatter_kwargs={"color": c, "alpha": 0.5, "s": 10},
                marginal_kwargs={"color": c},
            )
        # the exact density: contours of p(a, b) = N(a; 0, 1) N(b; a^2, 0.3), and its marginals
        grid_a, grid_b = np.linspace(-3.5, 3.5, 281), np.linspace(-1.5, 7.0, 341)
        aa, bb = np.meshgrid(grid_a, grid_b)
        joint = np.exp(-0.5 * aa**2 - 0.5 * ((bb - aa**2) / 0.3) ** 2) / (2 * np.pi * 0.3)
        # levels of the highest-density regions holding 50%, 90% and 99% of the mass
        mass = np.sort(joint.ravel())[::-1]
        cumulative = np.cumsum(mass) / mass.sum()
        levels = sorted(mass[np.searchsorted(cumulative, q)] for q in (0.99, 0.9, 0.5))
        axes[1, 0].contour(aa, bb, joint, levels=levels, colors="k", linewidths=0.8, zorder=3)
        axes[0, 0].plot(grid_a, joint.sum(0) * (grid_b[1] - grid_b[0]), "k--", lw=1)
        axes[1, 1].plot(joint.sum(1) * (grid_a[1] - grid_a[0]), grid_b, "k--", lw=1)
        axes[1, 0].set_xlim(-3.5, 3.5)
        axes[1, 0].set_ylim(-1.5, 7.0)
        corner = subfig.add_subplot(axes[1, 1].get_subplotspec().get_gridspec()[0, 1])
        corner.set_axis_off()
        corner.legend(
            handles=[
                Line2D([], [], color="k", lw=0.8, label="exact: 50/90/99%"),
                Line2D([], [], color=grey, marker="o", ls="", label="NUTS"),
                Line2D([], [], color=colour, marker="o", ls="", label=name),
            ],
            loc="center",
            fontsize=8,
            frameon=False,
        )
        subfig.suptitle(f"{name} guide vs NUTS (ELBO {elbo:.2f}, log Z = 0)", fontsize=11)
    path = out / "pair_plot.png"
    fig.savefig(path, dpi=80)
    plt.close(fig)
    print(f"wrote {path}")

    axes = az.plot_trace(
        reference,
        var_names=["a", "b"],
        legend=True,
        chain_prop={"color": ("tab:blue", "tab:red")},
        figsize=(10, 4.5),
    )
    fig = axes[0, 0].figure
    for row, name in enumerate(("a", "b")):
        axes[row, 0].set_xlabel(name)
        axes[row, 0].set_ylabel("density")
        axes[row, 1].set_xlabel("draw")
        axes[row, 1].set_ylabel(name)
    fig.suptitle(f"NUTS reference: {nuts.num_chains} chains x {nuts.num_draws} draws")
    fig.tight_layout()
    path = out / "nuts_trace.png"
    fig.savefig(path, dpi=80)
    plt.close(fig)
    print(f"wrote {path}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--draws", type=int, default=1000, help="draws per guide and NUTS chain")
    parser.add_argument("--out", type=Path, default=Path("outputs/flow_guide"))
    parser.add_argument("--quick", action="store_true", help="a short run (CI)")
    args = parser.parse_args()
    steps, draws = (60, 300) if args.quick else (args.steps, args.draws)
    torch.manual_seed(0)
    # log Z of this model is 0 (it is normalised): the ELBO gap is KL(q || posterior).
    normal = AutoNormal(model)
    elbo_normal = fit(normal, steps)
    normal_draws = guide_draws(normal, draws)
    flow = flows.iaf(2, num_transforms=4, hidden_dims=(32, 32))
    iaf = iaf_guide_for(flow)
    elbo_iaf = fit(iaf, steps)
    iaf_draws = guide_draws(iaf, draws)
    print(f"ELBO (log Z = 0): AutoNormal {elbo_normal:.3f}, IAF {elbo_iaf:.3f}")

    nuts = nuts_model(model, num_samples=draws, warmup=draws, num_chains=2, progress=False, seed=0)
    guides = {"AutoNormal": (normal_draws, elbo_normal), "IAF": (iaf_draws, elbo_iaf)}
    # exact moments: a ~ N(0, 1), b | a ~ N(a^2, 0.3): E b = 1, sd b = (2 + 0.09)^(1/2)
    print(f"{'draws':10s} {'mean a':>7s} {'sd a':>5s} {'mean b':>7s} {'sd b':>5s}")
    print(f"{'exact':10s} {0:7.2f} {1:5.2f} {1:7.2f} {2.09**0.5:5.2f}")
    constrained = nuts.extra["constrained"]
    rows = {"NUTS": {k: v.numpy() for k, v in constrained.items()}}
    rows.update({name: d for name, (d, _) in guides.items()})
    for name, d in rows.items():
        a, b = d["a"].ravel(), d["b"].ravel()
        print(f"{name:10s} {a.mean():7.2f} {a.std():5.2f} {b.mean():7.2f} {b.std():5.2f}")
    save_figures(nuts, guides, args.out)


if __name__ == "__main__":
    main()
