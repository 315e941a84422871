"""The comparison's figures: what a reader needs to read them."""

from __future__ import annotations

import matplotlib
import matplotlib.figure
import pytest
import torch

from pyro_flows.compare import bayesian
from pyro_flows.compare.figures import plot_elbo, plot_mode_masses, plot_samples, plot_traces
from pyro_flows.compare.methods import MethodRun
from pyro_flows.infer import TargetFitHistory
from pyro_flows.targets import get_target


def test_trace_plots_say_which_line_is_which_chain(tmp_path, monkeypatch):
    legends: list[list[str]] = []
    save = matplotlib.figure.Figure.savefig

    def record(fig, *args, **kwargs):
        legends.extend(
            [t.get_text() for t in ax.get_legend().get_texts()]
            for ax in fig.axes if ax.get_legend() is not None
        )
        return save(fig, *args, **kwargs)

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", record)
    runs = {
        "nuts": MethodRun("nuts", "mcmc", torch.randn(3, 50, 2), 1.0, 10),
        "mh": MethodRun("mh", "mcmc", torch.randn(4, 50, 2), 1.0, 0),
        "flow": MethodRun("flow", "flow", torch.randn(1, 50, 2), 1.0, 10),
    }
    assert plot_traces(runs, tmp_path / "traces.png").exists()
    assert legends == [[f"chain {c}" for c in range(3)], [f"chain {c}" for c in range(4)]]


def _history() -> TargetFitHistory:
    return TargetFitHistory(elbo=[-1.0] * 60, beta=[1.0] * 60)


def test_figures_keep_the_backend_and_leave_no_figure_open(svg_backend, tmp_path):
    import matplotlib.pyplot as plt

    target = get_target("banana")
    runs = {"mh": MethodRun("mh", "mcmc", target.sample((2, 50)), 1.0, 0)}
    guides = bayesian.GuideComparison(
        [], {"NUTS": torch.randn(50, 10), "AutoFlow": torch.randn(50, 10)},
        bayesian.GuideSettings(),
    )
    written = [
        plot_samples(target, runs, tmp_path / "s.png"),
        plot_traces(runs, tmp_path / "t.png"),
        plot_elbo(_history(), 0.0, tmp_path / "e.png"),
        plot_mode_masses({"mh": [0.4, 0.6]}, [0.5, 0.5], tmp_path / "m.png"),
        bayesian.plot_guides(guides, tmp_path / "g.png"),
    ]
    assert all(p is not None and p.read_bytes()[:4] == b"\x89PNG" for p in written)
    assert matplotlib.get_backend() == "svg"
    assert plt.get_fignums() == []


def test_figures_return_the_file_they_wrote(tmp_path):
    assert plot_elbo(_history(), 0.0, tmp_path / "elbo") == tmp_path / "elbo.png"
    assert plot_mode_masses({"a": [1.0]}, [1.0], str(tmp_path / "m")) == tmp_path / "m.png"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["elbo.png", "m.png"]
    with pytest.raises(ValueError, match=r"path must be a file name, got the directory"):
        plot_elbo(_history(), 0.0, tmp_path)
    with pytest.raises(ValueError, match=r"figure format .*got '.*e\.xyz'"):
        plot_elbo(_history(), 0.0, tmp_path / "e.xyz")


@pytest.mark.parametrize("log_z", [float("nan"), float("inf"), -float("inf")])
def test_plot_elbo_refuses_a_non_finite_log_z(log_z, svg_backend, tmp_path):
    import matplotlib.pyplot as plt

    with pytest.raises(ValueError, match=r"log_Z \(None when unknown\) must be finite, got"):
        plot_elbo(_history(), log_z, tmp_path / "e.png")
    with pytest.raises(TypeError, match=r"log_Z .* must be a real number, got str"):
        plot_elbo(_history(), "0", tmp_path / "e.png")  # type: ignore[arg-type]
    assert list(tmp_path.iterdir()) == [] and plt.get_fignums() == []


def test_plot_mode_masses_needs_one_mass_per_mode(svg_backend, tmp_path):
    import matplotlib.pyplot as plt

    with pytest.raises(ValueError, match=r"masses\['nuts'\] must have one mass per mode \(2, "
                       r"as true_weights\), got 3"):
        plot_mode_masses({"nuts": [0.5, 0.3, 0.2]}, [0.5, 0.5], tmp_path / "m.png")
    with pytest.raises(ValueError, match=r"true_weights must be finite, one per mode, got \[\]"):
        plot_mode_masses({}, [], tmp_path / "m.png")
    with pytest.raises(TypeError, match=r"masses\['a'\] must be a sequence of numbers, got str"):
        plot_mode_masses({"a": "0.5"}, [0.5], tmp_path / "m.png")  # type: ignore[dict-item]
    assert list(tmp_path.iterdir()) == [] and plt.get_fignums() == []
