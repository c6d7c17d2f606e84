"""`aistack report usage` against the real API app, served over HTTP by uvicorn in a thread."""

from __future__ import annotations

import csv
import io
import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import uvicorn

from scheduler_service.accounting import (
    Admitted,
    Ended,
    EndReason,
    RecordKey,
    Submitted,
    open_store,
)
from scheduler_service.api import ApiSettings, create_app
from scheduler_service.cli import main
from tests.api.support import FakeActions, FakeAuthorizer, FakeWebhooks, cluster_status

HOUR = 3600.0


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The service's API on a free port, with two queues' worth of records; its URL."""
    directory = tmp_path_factory.mktemp("accounting")
    store = open_store(f"sqlite:///{directory.as_posix().lstrip('/')}/accounting.db")
    end = time.time() - HOUR
    for name, queue, gpus, hours in (("a", "team-a", 4.0, 2.0), ("b", "team-b", 0.5, 1.0)):
        key = RecordKey("team-a", name, end - hours * HOUR)
        store.apply(
            [
                Submitted(key, queue, user="alice", gpus=gpus),
                Admitted(key, end - hours * HOUR, gpus, pool="h100"),
                Ended(key, end, EndReason.FINISHED),
            ]
        )
    status = cluster_status()
    app = create_app(
        ApiSettings(),
        status=lambda: status,
        authorizer=FakeAuthorizer(),
        webhooks=FakeWebhooks(),
        actions=FakeActions(),
        accounting=store,
    )
    port = _free_port()
    running = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error"))
    thread = threading.Thread(target=running.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not running.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    yield f"http://127.0.0.1:{port}"
    running.should_exit = True
    thread.join(timeout=10)
    store.close()


def report(
    server: str, capsys: pytest.CaptureFixture[str], *extra: str, token: str = "admin-token"
) -> tuple[int, str, str]:
    status = main(
        ["report", "usage", "--server", server, "--token", token, "--since", "1d", *extra]
    )
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def test_the_table(server: str, capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = report(server, capsys)
    assert status == 0
    lines = out.splitlines()
    assert lines[0].startswith("GPU usage by queue, ")
    assert lines[2].split() == ["QUEUE", "ALLOCATED", "GPU-HOURS", "USED", "GPU-HOURS", "WORKLOADS"]
    assert lines[3].split() == ["team-a", "8.00", "-", "1"]
    assert lines[4].split() == ["team-b", "0.50", "-", "1"]
    assert lines[5].split() == ["(total)", "8.50", "-", "2"]


def test_csv_is_the_services_csv(server: str, capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = report(server, capsys, "--by", "user", "-o", "csv")
    assert status == 0
    rows = list(csv.DictReader(io.StringIO(out)))
    assert [(r["user"], r["allocated_gpu_hours"], r["workloads"]) for r in rows] == [
        ("alice", "8.5000", "2"),
        ("(total)", "8.5000", "2"),
    ]


def test_json(server: str, capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = report(server, capsys, "--by", "namespace", "-o", "json")
    assert status == 0
    body = json.loads(out)
    assert [r["key"] for r in body["rows"]] == ["team-a"]
    assert body["total"]["allocated_gpu_hours"] == pytest.approx(8.5)


def test_the_services_refusal_is_one_line(server: str, capsys: pytest.CaptureFixture[str]) -> None:
    status, _, err = report(server, capsys, token="bob-token")
    assert status == 1
    assert err.startswith("aistack: error: the scheduler service answered 403: user bob may not")
    status, _, err = report(server, capsys, "--until", "2d")
    assert status == 1
    assert "answered 422: the period is empty" in err


def test_without_a_server_it_says_how_to_reach_one(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("AISTACK_SERVER", raising=False)
    assert main(["report", "usage", "--kubeconfig", str(tmp_path / "none")]) == 1
    err = capsys.readouterr().err
    assert "pass --server (or set $AISTACK_SERVER)" in err
    assert "port-forward service/aistack 8443:443" in err


def test_an_unreachable_server_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    url = f"http://127.0.0.1:{_free_port()}"
    assert main(["report", "usage", "--server", url, "--token", "t"]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"aistack: error: cannot reach the scheduler service at {url}: ")
