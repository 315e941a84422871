"""pyro_flows.plots and the figure helpers: the user's matplotlib state is left alone, output
paths are checked before the work, and the path returned is the file written."""

from __future__ import annotations

import matplotlib
import pytest
import torch

from pyro_flows import flows
from pyro_flows._figures import check_figure_path, ensure_folder
from pyro_flows.plots import plot_density_2d


def _flow():
    torch.manual_seed(0)
    return flows.realnvp(2, num_transforms=1, hidden_dims=(4,))


def _no_sampling(flow, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("the flow was sampled before the bad input was refused")

    monkeypatch.setattr(flow, "sample", refuse)


def test_plot_density_2d_keeps_the_backend_and_leaves_no_figure_open(svg_backend, tmp_path):
    import matplotlib.pyplot as plt

    path = plot_density_2d(_flow(), torch.randn(30, 2), tmp_path / "a.png", num_samples=20)
    assert path.read_bytes()[:4] == b"\x89PNG"
    assert matplotlib.get_backend() == "svg"
    assert plt.get_fignums() == []


def test_plot_density_2d_returns_the_file_it_wrote(tmp_path):
    path = plot_density_2d(_flow(), torch.randn(30, 2), tmp_path / "fig", num_samples=20)
    assert path == tmp_path / "fig.png" and path.is_file()
    assert [p.name for p in tmp_path.iterdir()] == ["fig.png"]
    pdf = plot_density_2d(_flow(), torch.randn(30, 2), str(tmp_path / "b.pdf"), num_samples=20)
    assert pdf == tmp_path / "b.pdf" and pdf.read_bytes()[:4] == b"%PDF"


def test_plot_density_2d_checks_the_path_before_sampling(svg_backend, tmp_path, monkeypatch):
    import matplotlib.pyplot as plt

    flow = _flow()
    _no_sampling(flow, monkeypatch)
    data = torch.randn(30, 2)
    with pytest.raises(ValueError, match=r"path must be a file name, got the directory"):
        plot_density_2d(flow, data, tmp_path)
    with pytest.raises(ValueError, match=r"figure format .*got '.*a\.xyz'; supported: .*png"):
        plot_density_2d(flow, data, tmp_path / "a.xyz")
    (tmp_path / "afile").write_text("x")
    with pytest.raises(NotADirectoryError, match=r"x\.png' cannot be written: .*afile is a file"):
        plot_density_2d(flow, data, tmp_path / "afile" / "x.png")
    with pytest.raises(TypeError, match=r"path must be a file path \(str or Path\), got int"):
        plot_density_2d(flow, data, 3)  # type: ignore[arg-type]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile"]
    assert plt.get_fignums() == [] and matplotlib.get_backend() == "svg"


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_plot_density_2d_refuses_non_finite_rows(bad, tmp_path, monkeypatch):
    flow = _flow()
    _no_sampling(flow, monkeypatch)
    data = torch.randn(10, 2)
    data[3, 0] = bad
    data[7, 1] = bad
    with pytest.raises(ValueError, match=r"non-finite values \(NaN or inf\) in 2 row\(s\) of data"):
        plot_density_2d(flow, data, tmp_path / "a.png")
    assert list(tmp_path.iterdir()) == []


def test_check_figure_path_and_ensure_folder(tmp_path):
    assert check_figure_path(tmp_path / "new" / "f.SVG") == tmp_path / "new" / "f.SVG"
    assert (tmp_path / "new").is_dir()
    (tmp_path / "d.png").mkdir()
    with pytest.raises(ValueError, match=r"d\.png' is an existing directory"):
        check_figure_path(tmp_path / "d")
    assert ensure_folder(tmp_path / "a" / "b" / "c", "out") == tmp_path / "a" / "b" / "c"
    (tmp_path / "f").write_text("x")
    with pytest.raises(NotADirectoryError, match=r"the out .*f is a file"):
        ensure_folder(tmp_path / "f", "out")
    with pytest.raises(NotADirectoryError, match=r"the out .*g cannot be created: .*f is a file"):
        ensure_folder(tmp_path / "f" / "g", "out")
