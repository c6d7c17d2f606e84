"""`aistack agent`'s command line: usage errors say what to give (a full run: tests/integration)."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from scheduler_service import cli
from scheduler_service.cli import _agent as agent_cli


def _parsed(monkeypatch: pytest.MonkeyPatch, argv: list[str]) -> argparse.Namespace:
    seen: list[argparse.Namespace] = []

    def record(args: argparse.Namespace) -> int:
        seen.append(args)
        return 0

    monkeypatch.setattr(agent_cli, "run_agent_command", record)
    assert cli.main(["agent", *argv]) == 0
    (args,) = seen
    return args


def test_the_defaults_are_the_daemonsets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NODE_NAME", "gpu-7")

    args = _parsed(monkeypatch, [])

    assert (args.node, args.interval_seconds, args.metrics_port) == ("gpu-7", 30.0, 9400)
    assert (args.kubeconfig, args.proc_root, args.metrics_host) == (None, Path("/proc"), "0.0.0.0")


def test_gpu_sharing_is_read_per_pool_as_the_service_reads_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    argv = ["--node", "n", "--gpu-sharing", "hami-core", "--gpu-sharing-pool", "H100=mps"]
    args = _parsed(monkeypatch, [*argv, "--gpu-sharing-pool", "A100=none"])

    assert args.gpu_sharing == "hami-core"
    assert args.gpu_sharing_pool == [("H100", "mps"), ("A100", "none")]
    assert args.mps_root == Path("/run/aistack/mps")


def test_node_flag_wins_over_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NODE_NAME", "gpu-7")

    assert _parsed(monkeypatch, ["--node", "gpu-8"]).node == "gpu-8"


def test_without_a_node_name_it_says_how_to_give_one(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("NODE_NAME", raising=False)

    status = cli.main(["agent"])

    assert status == 2
    assert "give the node's name with --node or $NODE_NAME" in capsys.readouterr().err


def test_a_missing_kubeconfig_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status = cli.main(["agent", "--node", "n", "--kubeconfig", str(tmp_path / "nope")])

    assert status == 2
    assert "does not exist or is not a file" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("flag", "value", "says"),
    [
        ("--interval-seconds", "0", "give a number of seconds above 0"),
        ("--interval-seconds", "inf", "give a number of seconds above 0"),
        ("--interval-seconds", "soon", "give a number of seconds above 0"),
        ("--metrics-port", "70000", "give a port from 1 to 65535, or 0 for none"),
        ("--metrics-port", "-1", "give a port from 1 to 65535, or 0 for none"),
        ("--gpu-sharing-pool", "H100", "give POOL=MECHANISM with a mechanism of mps"),
        ("--gpu-sharing-pool", "H100=mig", "give POOL=MECHANISM with a mechanism of mps"),
    ],
)
def test_bad_numbers_are_refused_with_an_example(
    flag: str, value: str, says: str, capsys: pytest.CaptureFixture[str]
) -> None:
    status = cli.main(["agent", "--node", "n", f"{flag}={value}"])

    assert status == 2
    assert says in capsys.readouterr().err
