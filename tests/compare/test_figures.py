"""The comparison's figures: what a reader needs to read them."""

from __future__ import annotations

import matplotlib.figure
import torch

from pyro_flows.compare.figures import plot_traces
from pyro_flows.compare.methods import MethodRun


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
