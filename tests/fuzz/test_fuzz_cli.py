"""Fuzz: the ``pyro-flows`` command line on bad arguments: a non-zero exit with a message that
names the argument and the value, before any work (no report folder written)."""

from __future__ import annotations

import pytest

from pyro_flows.cli import main


@pytest.mark.parametrize(
    "argv, fragments",
    [
        pytest.param(["compare", "nope", "--quick"], ("nope", "u1"), id="unknown-target"),
        pytest.param(["compare"], ("target",), id="missing-target"),
        pytest.param(["compare", "u1", "--methods", "flow,gibbs"], ("gibbs", "nuts"),
                     id="unknown-method"),
        pytest.param(["compare", "u1", "--methods", ","], ("method",), id="no-method"),
        pytest.param(["compare", "u1", "--seed", "abc"], ("--seed", "abc"), id="seed-str"),
        pytest.param(["compare", "u1", "--threads", "0"], ("--threads", "0"), id="threads-0"),
        pytest.param(["compare", "u1", "--threads", "x"], ("--threads", "x"), id="threads-str"),
        pytest.param(["demo", "--steps", "0"], ("--steps", "0"), id="steps-0"),
        pytest.param(["demo", "--steps", "-5"], ("--steps", "-5"), id="steps-negative"),
        pytest.param(["demo", "--steps", "1.5"], ("--steps", "1.5"), id="steps-float"),
        pytest.param(["demo", "--toy", "spiral"], ("--toy", "spiral"), id="toy"),
        pytest.param(["demo", "--seed", "1e3"], ("--seed", "1e3"), id="demo-seed"),
        pytest.param(["demo", "--threads", "-2"], ("--threads", "-2"), id="demo-threads"),
        pytest.param(["train"], ("train",), id="unknown-command"),
        pytest.param([], ("demo", "compare"), id="no-command"),
    ],
)
def test_cli_refuses(argv, fragments, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code not in (0, None)
    captured = capsys.readouterr()
    message = captured.err + captured.out + str(exit_info.value.code)
    missing = [f for f in fragments if f not in message]
    assert not missing, f"{message!r} does not name {missing}"
    assert not (tmp_path / "outputs").exists(), "a refused run wrote a report folder"


def test_cli_out_is_a_file(tmp_path, capsys):
    out = tmp_path / "report.txt"
    out.write_text("not a folder")
    with pytest.raises(SystemExit) as exit_info:
        main(["compare", "u1", "--quick", "--quiet", "--out", str(out)])
    assert exit_info.value.code not in (0, None)
    assert "report.txt" in capsys.readouterr().err
    assert out.read_text() == "not a folder"
