"""The ``pyro-flows`` command line: help on every subcommand, clear errors, exit codes, the
demo's report folder."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from pyro_flows import demo
from pyro_flows.cli import build_parser, main
from pyro_flows.compare import bayesian, run, settings
from pyro_flows.compare.methods import METHODS
from pyro_flows.compare.settings import FlowSettings, SamplerSettings
from pyro_flows.targets import TARGETS

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("argv", [["--help"], ["demo", "--help"], ["compare", "--help"]])
def test_help_on_every_subcommand(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 0
    text = capsys.readouterr().out
    assert text.startswith("usage: pyro-flows")
    if argv[0] == "compare":
        for flag in ("--methods", "--quick", "--out", "--seed", "--quiet", "--list"):
            assert flag in text
    elif argv[0] == "demo":
        assert "--quick" in text and "--out" in text
    else:
        assert "demo" in text and "compare" in text


def test_console_entry_point_runs_as_a_module():
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    result = subprocess.run(
        [sys.executable, "-m", "pyro_flows.cli", "compare", "--list"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    listed = [line.split()[0] for line in result.stdout.splitlines()[1:]]
    assert listed == list(TARGETS)
    assert re.search(r"funnel\s+Funnel\s+dim 10", result.stdout)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["compare", "u7"], r"unknown target 'u7'; valid targets: u1, u2, u3, u4, funnel"),
        (["compare"], r"the target is required; valid targets: u1"),
        (["compare", "u1", "--methods", "flow,hmc"], r"unknown method\(s\) 'hmc'; valid methods"),
        (["compare", "u1", "--methods", ","], r"no method given"),
        (["compare", "u1", "--seed", "x"], r"invalid int value: 'x'"),
        (["demo", "--toy", "spiral"], r"invalid choice: 'spiral'"),
        (["demo", "--steps", "0"], r"argument --steps: must be a positive int, got 0"),
        (["demo", "--steps", "-5"], r"argument --steps: must be a positive int, got -5"),
        (["demo", "--steps", "x"], r"argument --steps: must be a positive int, got 'x'"),
        (["bench"], r"invalid choice: 'bench'"),
    ],
)
def test_bad_input_exits_with_status_2_and_says_what_is_valid(argv, message, capsys):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    assert re.search(message, capsys.readouterr().err)


def test_demo_functions_refuse_non_positive_steps(tmp_path):
    for steps in (0, -5):
        with pytest.raises(ValueError, match=f"steps must be a positive int, got {steps}"):
            demo.run_demo(tmp_path / "demo", quick=True, steps=steps, progress=False)
        with pytest.raises(ValueError, match=f"steps must be a positive int, got {steps}"):
            demo.fit_density(tmp_path, steps=steps, progress=False)
    with pytest.raises(TypeError, match=r"seed must be an int, got 'x' \(str\)"):
        demo.run_demo(tmp_path / "demo", seed="x", progress=False)  # type: ignore[arg-type]
    assert not (tmp_path / "demo").exists()  # refused before anything was written


def test_compare_refuses_a_folder_holding_a_report_before_running(tmp_path, capsys):
    (tmp_path / "report.md").write_text("an earlier run")
    argv = ["compare", "banana", "--methods", "mh", "--quick", "--quiet", "--out", str(tmp_path)]
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert f"the report folder {tmp_path} already holds a report (report.md)" in err
    assert "pass --overwrite to replace it, or choose another folder (--out DIR)" in err
    assert [p.name for p in tmp_path.iterdir()] == ["report.md"]  # nothing ran, nothing written
    assert (tmp_path / "report.md").read_text() == "an earlier run"
    with pytest.raises(SystemExit) as exc:
        main(["compare", "--help"])
    assert "--overwrite" in capsys.readouterr().out


def test_threads_must_be_positive():
    with pytest.raises(SystemExit, match="--threads must be >= 1, got 0"):
        main(["compare", "--list", "--threads", "0"])


def test_parser_defaults():
    args = build_parser().parse_args(["compare", "Funnel"])
    assert (args.target, args.methods, args.quick, args.out, args.seed) == (
        "Funnel",
        ",".join(METHODS),
        False,
        None,
        0,
    )
    args = build_parser().parse_args(["demo"])
    assert (args.out, args.quick, args.steps, args.toy) == ("outputs/demo", False, None, "moons")


def test_compare_writes_the_report_where_asked(tmp_path, capsys):
    out = tmp_path / "banana"
    assert (
        main(
            [
                "compare",
                "BANANA",
                "--methods",
                "mh,mala",
                "--quick",
                "--quiet",
                "--out",
                str(out),
                "--seed",
                "3",
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out
    assert printed.startswith("pyro-flows compare banana: Banana, dim 2")
    assert "seed 3" in printed and "no fixed targets for this target" in printed
    assert f"report: {out / 'report.md'}" in printed
    assert sorted(p.name for p in out.iterdir()) == [
        "report.md",
        "results.json",
        "samples.png",
        "traces.png",
    ]


def test_strict_exit_status_when_a_check_fails(tmp_path, capsys, monkeypatch):
    # a flow trained for 100 steps is far from U1: the 0.02-nat bar fails
    short = replace(
        settings.QUICK_SETTINGS["u1"],
        flow=replace(settings.QUICK_SETTINGS["u1"].flow, steps=100),
        flow_samples=1000,
    )
    monkeypatch.setitem(settings.QUICK_SETTINGS, "u1", short)
    argv = ["compare", "u1", "--methods", "flow", "--quick", "--quiet", "--out", str(tmp_path)]
    assert main(argv) == 0  # without --strict a failed check is reported, not an error
    assert main([*argv, "--strict", "--overwrite"]) == 1  # the same folder: --overwrite
    assert "[FAIL] u1: flow log Z - ELBO < 0.02 nats" in capsys.readouterr().out


def test_demo_writes_its_report_folder(tmp_path, capsys, monkeypatch):
    """The demo's three parts on tiny budgets: the summary and README.md with working links."""
    tiny_guides = bayesian.GuideSettings(
        nuts_samples=40, nuts_warmup=40, steps=30, particles=2, draws=100
    )
    monkeypatch.setattr(bayesian, "GUIDE_QUICK_SETTINGS", tiny_guides)
    funnel = settings.QUICK_SETTINGS["funnel"]
    tiny = replace(
        funnel,
        flow=FlowSettings(
            "iaf", {"num_transforms": 2, "hidden_dims": (16,)}, steps=50, batch_size=32
        ),
        nuts=SamplerSettings(40, 40, 2, {"max_tree_depth": 5}),
        neutra=SamplerSettings(40, 40, 2, {"max_tree_depth": 4}),
        flow_samples=500,
    )
    monkeypatch.setitem(settings.QUICK_SETTINGS, "funnel", tiny)
    out = tmp_path / "demo"
    assert main(["demo", "--quick", "--quiet", "--out", str(out), "--steps", "20"]) == 0
    printed = capsys.readouterr().out
    assert re.search(r"moons: test NLL \d+\.\d+ nats, oracle 2\.395", printed)
    for part in ("1. density estimation", "2. eight schools", "3. funnel (10-D)"):
        assert part in printed
    assert re.search(r"^AutoFlow\s+\d", printed, re.M) and re.search(r"^neutra\s+\d", printed, re.M)
    assert "funnel: NeuTra ESS/grad >= 3x NUTS" in printed
    readme = (out / "README.md").read_text()
    links = re.findall(r"\]\(([^)]+)\)", readme)
    assert {
        "moons_maf.png",
        "eight_schools.png",
        "funnel/report.md",
        "funnel/samples.png",
        "funnel/traces.png",
        "funnel/elbo.png",
    } <= set(links)
    for link in links:
        assert (out / link).exists(), link
    assert demo.ENERGY_TARGET == ("funnel", ("flow", "nuts", "neutra"))


def _refuse(*args, **kwargs):
    raise AssertionError("the work started before the output folder was checked")


def test_compare_refuses_an_out_below_a_file_before_running(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(run, "run_methods", _refuse)
    (tmp_path / "afile").write_text("a file")
    out = tmp_path / "afile" / "sub"
    argv = ["compare", "u1", "--quick", "--methods", "is", "--quiet", "--out", str(out)]
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert f"the report folder {out} cannot be created: {tmp_path / 'afile'} is a file" in err
    with pytest.raises(NotADirectoryError, match=r"afile is a file"):
        run.compare("u1", "is", quick=True, out=out, progress=False)
    assert (tmp_path / "afile").read_text() == "a file"


def test_compare_creates_the_report_folder_before_running(tmp_path, monkeypatch):
    monkeypatch.setattr(run, "run_methods", _refuse)
    out = tmp_path / "a" / "b"
    with pytest.raises(AssertionError, match="the work started"):
        main(["compare", "u1", "--quick", "--methods", "is", "--quiet", "--out", str(out)])
    assert out.is_dir()  # mkdir -p before the runs: a bad --out cannot fail after them


def test_demo_refuses_a_bad_out_before_running(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(demo, "fit_density", _refuse)
    afile = tmp_path / "afile"
    afile.write_text("a file")
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "funnel").write_text("a file")
    (tmp_path / "e" / "moons_maf.png").mkdir(parents=True)
    cases = [
        (afile, f"the demo folder {afile} is a file"),
        (afile / "sub", f"the demo folder {afile / 'sub'} cannot be created: {afile} is a file"),
        (tmp_path / "d", f"the report folder {tmp_path / 'd' / 'funnel'} is a file"),
        (tmp_path / "e", "moons_maf.png must be a file name, got the directory"),
    ]
    for out, message in cases:
        with pytest.raises(SystemExit) as exc:
            main(["demo", "--quick", "--quiet", "--steps", "1", "--out", str(out)])
        assert exc.value.code == 2
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err
        assert err.strip().splitlines()[-1].startswith("pyro-flows demo: error: ")
    with pytest.raises(NotADirectoryError, match=r"afile is a file"):
        demo.run_demo(afile, quick=True, progress=False)
    assert afile.read_text() == "a file"
