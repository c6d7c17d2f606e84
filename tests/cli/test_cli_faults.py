"""`aistack scenario` and `aistack sim pooling` with seeded faults: validated, replayable."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import pytest

from scheduler_service import cli
from scheduler_service.core import Plan, Snapshot, Violation, check_plan
from scheduler_service.sim import _engine, _replay
from tests.sim.traces import write_philly

TESTDATA = Path(__file__).parents[1] / "scenarios" / "testdata"
SCENARIO = str(TESTDATA / "three_researchers.toml")
FAULTS = ["--faults-seed", "3", "--patch-failure", "0.3", "--pod-crash", "0.05"]


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    status = cli.main(argv)
    out, err = capsys.readouterr()
    return status, out, err


def test_a_scenario_with_faults_shows_them_and_replays_exactly(
    capsys: pytest.CaptureFixture[str],
) -> None:
    status, out, err = run(["scenario", SCENARIO, *FAULTS], capsys)

    assert (status, err) == (0, "")
    assert "patching its pods failed (injected); still pending" in out
    assert "pods crashed (injected), pending again" in out
    assert run(["scenario", SCENARIO, *FAULTS], capsys) == (0, out, "")
    _, other, _ = run(["scenario", SCENARIO, "--faults-seed", "4", *FAULTS[2:]], capsys)
    assert other != out


def test_a_seed_alone_injects_nothing(capsys: pytest.CaptureFixture[str]) -> None:
    plain = run(["scenario", SCENARIO], capsys)
    assert run(["scenario", SCENARIO, "--faults-seed", "9"], capsys) == plain


def test_when_every_patch_fails_nothing_runs_and_the_run_ends(
    capsys: pytest.CaptureFixture[str],
) -> None:
    status, out, _ = run(
        ["scenario", SCENARIO, "--faults-seed", "1", "--patch-failure", "1"], capsys
    )

    assert status == 0
    assert "3 submitted, 0 finished, 3 still present" in out


@pytest.mark.parametrize(
    ("flag", "value"),
    [
        ("--patch-failure", "1.5"),
        ("--patch-failure", "-0.1"),
        ("--pod-crash", "2"),
        ("--pod-crash", "nan"),
        ("--pod-crash", "often"),
    ],
)
@pytest.mark.parametrize("command", [["scenario", SCENARIO], ["sim", "pooling"]])
def test_a_probability_outside_0_to_1_is_a_usage_error(
    command: list[str], flag: str, value: str, capsys: pytest.CaptureFixture[str]
) -> None:
    status, out, err = run([*command, "--faults-seed", "1", flag, value], capsys)

    assert (status, out) == (2, "")
    assert f"argument {flag}: give a probability in [0, 1], e.g. 0.05; got {value!r}" in err


def test_a_probability_needs_a_seed(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    message = "aistack: error: --patch-failure and --pod-crash need --faults-seed N"
    status, _, err = run(["scenario", SCENARIO, "--pod-crash", "0.1"], capsys)
    assert status == 2
    assert err.startswith(message)
    pooling = [
        "sim",
        "pooling",
        "--data",
        str(write_philly(tmp_path)),
        "--out",
        str(tmp_path / "out"),
    ]
    status, _, err = run([*pooling, "--patch-failure", "0.1"], capsys)
    assert status == 2
    assert err.startswith(message)


def test_a_broken_invariant_in_a_scenario_prints_the_command_that_replays_it(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(_engine, "check_plan", lambda *_: [Violation("overcommit", "n1 GPU 0")])

    status, _, err = run(["scenario", SCENARIO, *FAULTS], capsys)

    assert status == 1
    assert "(replay: Faults(seed=3, patch_failure=0.3, pod_crash=0.05))" in err
    replay = err.strip().splitlines()[-1]
    assert replay == f"replay it with: aistack scenario {shlex.quote(SCENARIO)} {' '.join(FAULTS)}"
    assert "Traceback" not in err


def test_pooling_with_faults_replays_exactly_and_checks_every_plan(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    checked: list[Snapshot] = []

    def check(snapshot: Snapshot, plan: Plan) -> list[Violation]:
        checked.append(snapshot)
        return check_plan(snapshot, plan)

    monkeypatch.setattr(_replay, "check_plan", check)
    data = write_philly(tmp_path)
    argv = ["sim", "pooling", "--data", str(data), "--load", "native", "--policies", "aistack"]
    argv += ["--faults-seed", "5", "--patch-failure", "0.5", "--pod-crash", "0.2"]

    figures = []
    for name in ("one", "two"):
        status, out, _ = run([*argv, "--out", str(tmp_path / name)], capsys)
        assert status == 0
        assert "load native: 16 GPUs" in out
        document = json.loads((tmp_path / name / "pooling.json").read_text(encoding="utf-8"))
        assert document["meta"]["faults"] == "Faults(seed=5, patch_failure=0.5, pod_crash=0.2)"
        figures.append(document["loads"][0]["policies"])
    assert figures[0] == figures[1]
    assert checked, "faults imply --check-plans"


def test_a_broken_invariant_in_pooling_prints_the_command_that_replays_that_load(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(_replay, "check_plan", lambda *_: [Violation("overcommit", "n1 GPU 0")])
    data = write_philly(tmp_path)
    out = tmp_path / "out"
    argv = ["sim", "pooling", "--data", str(data), "--load", "0.5", "--policies", "aistack"]

    status, _, err = run(
        [*argv, "--out", str(out), "--faults-seed", "7", "--pod-crash", "0.1"], capsys
    )

    assert status == 1
    assert "(replay: Faults(seed=7, patch_failure=0.0, pod_crash=0.1))" in err
    replay = err.strip().splitlines()[-1]
    assert replay.startswith("replay it with: aistack sim pooling --data ")
    assert shlex.split(replay.removeprefix("replay it with: "))[1:] == [
        "sim",
        "pooling",
        "--data",
        str(data),
        "--load",
        "0.5",
        "--policies",
        "aistack",
        "--checkpoint-minutes",
        "30",
        "--restart-seconds",
        "60",
        "--cycle-seconds",
        "60",
        "--grace-seconds",
        "30",
        "--check-plans",
        "--out",
        str(out),
        "--faults-seed",
        "7",
        "--patch-failure",
        "0",
        "--pod-crash",
        "0.1",
    ]
