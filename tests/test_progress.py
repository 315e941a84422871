"""Progress that shows wherever output goes: lines when not a terminal, tqdm on one, silence
when asked; and MCMC progress that does not depend on Pyro's logger."""

from __future__ import annotations

import importlib
import io
import logging

import pytest
import torch

from pyro_flows._progress import LineProgress, progress_bar
from pyro_flows.infer import fit_target, nuts
from pyro_flows.infer.neutra import neutra

progress_module = importlib.import_module("pyro_flows._progress")


def gaussian(z: torch.Tensor) -> torch.Tensor:
    return -0.5 * (z**2).sum(-1)


def test_lines_first_then_on_the_clock_then_last():
    out = io.StringIO()
    bar = LineProgress(total=100, desc="loop", every=3600.0, stream=out)
    for _ in range(100):
        bar.update(1)
    assert len(out.getvalue().splitlines()) == 1  # the first unit; the clock has not run out
    bar.set_postfix(loss="0.5")
    bar.close()
    bar.close()  # idempotent
    first, last = out.getvalue().splitlines()
    assert first.startswith("loop: 1/100 step (1%)") and "left" in first
    assert last.startswith("loop: 100/100 step (100%)") and last.endswith("loss=0.5")


def test_every_update_writes_when_the_interval_is_zero():
    out = io.StringIO()
    with LineProgress(range(4), desc="it", unit="chunk", every=0.0, stream=out) as bar:
        assert list(bar) == [0, 1, 2, 3]
    lines = out.getvalue().splitlines()
    assert len(lines) == 5 and lines[-1].startswith("it: 4/4 chunk (100%)")


def test_a_resumed_loop_counts_from_where_it_was():
    out = io.StringIO()
    bar = LineProgress(total=10, desc="fit", initial=6, every=0.0, stream=out)
    bar.update(1)
    assert out.getvalue().startswith("fit: 7/10 step (70%)")


def test_disabled_bars_are_silent_but_count(capsys):
    bar = progress_bar(range(5), desc="quiet", enabled=False)
    assert list(bar) == [0, 1, 2, 3, 4] and bar.n == 5
    bar.close()
    assert capsys.readouterr().err == ""


def test_a_terminal_gets_tqdm_and_a_pipe_gets_lines(monkeypatch):
    from tqdm.auto import tqdm

    monkeypatch.setattr(progress_module, "stream_is_interactive", lambda stream=None: True)
    bar = progress_bar(total=3, desc="t")
    assert isinstance(bar, tqdm)
    bar.close()
    monkeypatch.setattr(progress_module, "stream_is_interactive", lambda stream=None: False)
    assert isinstance(progress_bar(total=3, desc="t"), LineProgress)


def test_nuts_progress_does_not_depend_on_pyros_logger_or_a_ci_variable(capsys, monkeypatch):
    """Pyro's bar is drawn from INFO records of "pyro.infer.mcmc": with that logger at WARNING
    (as the CLI sets it) it stayed at 0%, and with CI set it is off."""
    monkeypatch.setenv("CI", "true")
    monkeypatch.setattr(progress_module, "LINE_SECONDS", 0.0)
    logger = logging.getLogger("pyro")
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        nuts(gaussian, dim=2, num_samples=20, warmup=20, num_chains=2, seed=0)
    finally:
        logger.setLevel(level)
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("nuts")]
    assert len(lines) >= 40
    assert lines[-1].startswith("nuts, chain 2/2") and "80/80 step (100%)" in lines[-1]
    assert any("(warmup)" in line for line in lines) and any("(sample)" in line for line in lines)
    nuts(gaussian, dim=2, num_samples=5, warmup=5, num_chains=1, seed=0, progress=False)
    assert capsys.readouterr().err == ""


def test_neutra_and_fit_target_show_progress_lines(capsys, monkeypatch):
    from pyro_flows import flows

    monkeypatch.setattr(progress_module, "LINE_SECONDS", 0.0)
    torch.manual_seed(0)
    flow = flows.realnvp(2, num_transforms=2, hidden_dims=(8,))
    fit_target(flow, gaussian, steps=3, batch_size=16, seed=0)
    neutra(flow, gaussian, num_samples=5, warmup=5, num_chains=1, seed=0)
    err = capsys.readouterr().err
    assert "fit_target: 3/3 step (100%)" in err
    assert "nuts (sample): 10/10 step (100%)" in err


@pytest.mark.parametrize("quiet", [True, False])
def test_cli_compare_progress_follows_quiet(capsys, tmp_path, quiet, monkeypatch):
    from pyro_flows.cli import main

    monkeypatch.setattr(progress_module, "LINE_SECONDS", 0.0)
    args = ["compare", "banana", "--methods", "nuts", "--quick", "--out", str(tmp_path / "r")]
    assert main(args + (["--quiet"] if quiet else [])) == 0
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("nuts")]
    assert (lines == []) if quiet else ("(100%)" in lines[-1])
