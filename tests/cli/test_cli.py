"""`aistack` in-process: what it prints, where, and with which exit status."""

from __future__ import annotations

from pathlib import Path

import pytest

from scheduler_service import cli
from scheduler_service.cli import _scenario
from scheduler_service.sim import SimulationError

TESTDATA = Path(__file__).parents[1] / "scenarios" / "testdata"


def test_demo_tells_the_three_researchers_story(capsys: pytest.CaptureFixture[str]) -> None:
    status = cli.main(["demo"])

    out, err = capsys.readouterr()
    assert status == 0
    assert err == ""
    assert out.startswith("AI-Stack demo: the real scheduling core on a simulated GPU cluster\n")
    assert "Scenario: three_researchers.toml (bundled)" in out
    assert "  alice, bob and carol each have a guaranteed quota of 2 GPUs" in out
    assert "t=   0s  admit    alice-train-1  queue alice  4 GPUs on n1[0-3]\n" in out
    assert "t= 600s  evict    alice-train-1  Reclaimed: reclaimed for bob-train" in out
    assert "t=1830s  resume   alice-train-1  queue alice  4 GPUs on n1[0-3], from checkpoint" in out
    assert "queue  pool     quota  limit  fair share  allocated  GPU-hours used\n" in out
    golden = (TESTDATA / "three_researchers.golden.txt").read_text(encoding="utf-8")
    assert out.endswith(golden)


def test_demo_runs_another_scenario_when_given(capsys: pytest.CaptureFixture[str]) -> None:
    path = TESTDATA / "topology.toml"

    status = cli.main(["demo", "--scenario", str(path)])

    out, _ = capsys.readouterr()
    assert status == 0
    assert f"Scenario: {path}\n" in out
    assert "allreduce" in out


def test_scenario_prints_the_report(capsys: pytest.CaptureFixture[str]) -> None:
    path = TESTDATA / "node_loss.toml"

    status = cli.main(["scenario", str(path)])

    out, err = capsys.readouterr()
    assert (status, err) == (0, "")
    golden = (TESTDATA / "node_loss.golden.txt").read_text(encoding="utf-8")
    assert out == f"scenario: {path}\n\n{golden}"


@pytest.mark.parametrize("command", ["scenario", "demo --scenario"])
def test_a_missing_file_is_a_clear_error(
    command: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "missing.toml"

    status = cli.main([*command.split(), str(missing)])

    out, err = capsys.readouterr()
    assert status == 2
    assert out == ""
    assert (
        err == f"aistack: error: {missing}: cannot read the scenario: No such file or directory\n"
    )


def test_an_invalid_file_is_a_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "bad.toml"
    path.write_text('[cluster]\n[[cluster.nodes]]\nname = "n1"\ngpu = 8\n', encoding="utf-8")

    status = cli.main(["scenario", str(path)])

    _, err = capsys.readouterr()
    assert status == 2
    assert err == (
        f"aistack: error: {path}: cluster.nodes[0]: unknown field 'gpu'; did you mean 'gpus'?\n"
    )


@pytest.mark.parametrize("argv", [[], ["frobnicate"], ["scenario"]])
def test_usage_errors_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    status = cli.main(argv)

    _, err = capsys.readouterr()
    assert status == 2
    assert "usage: aistack" in err


def test_help_exits_0(capsys: pytest.CaptureFixture[str]) -> None:
    status = cli.main(["--help"])

    out, _ = capsys.readouterr()
    assert status == 0
    assert "demo" in out
    assert "scenario" in out


def test_a_stopped_simulation_is_reported_without_a_traceback(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def broken(*_: object) -> None:
        raise SimulationError("t=10s: the plan breaks 1 invariant(s):\n  - overcommit: ...")

    monkeypatch.setattr(_scenario, "run_scenario", broken)

    status = cli.main(["demo"])

    _, err = capsys.readouterr()
    assert status == 1
    assert "a scheduler bug" in err
    assert "t=10s: the plan breaks 1 invariant(s)" in err
    assert "Traceback" not in err
