"""GET /api/v1/usage and /api/v1/workloads/{namespace}/{name}/history, on a real SQLite store."""

from __future__ import annotations

import csv
import io
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from scheduler_service.accounting import (
    AccountingStore,
    Admitted,
    Change,
    Ended,
    EndReason,
    RecordKey,
    Submitted,
    open_store,
)
from scheduler_service.api import ApiSettings, ClusterStatus, create_app
from tests.api.support import (
    ADMIN_AUTH,
    ALICE_AUTH,
    BOB_AUTH,
    FakeActions,
    FakeAuthorizer,
    FakeWebhooks,
    TestClient,
    error_of,
)

HOUR = 3600.0


def attempt(name: str, namespace: str, queue: str, gpus: float, hours: float) -> list[Change]:
    """A workload that ran `hours` on `gpus`, ending an hour ago."""
    end = time.time() - HOUR
    key = RecordKey(namespace, name, end - hours * HOUR - 60)
    return [
        Submitted(key, queue, user=f"user-{namespace}", gpus=gpus, workflow="wf", step="wf.s"),
        Admitted(key, end - hours * HOUR, gpus, pool="h100"),
        Ended(key, end, EndReason.EVICTED, "Reclaimed", "aistack: reclaimed for team-b/x"),
    ]


@pytest.fixture
def store(tmp_path: Path) -> Iterator[AccountingStore]:
    store = open_store(f"sqlite:///{tmp_path.as_posix().lstrip('/')}/accounting.db")
    store.apply(attempt("train", "team-a", "team-a", 2, 3))  # 6 GPU-hours
    store.apply(attempt("infer", "team-b", "team-b", 0.5, 4))  # 2 GPU-hours
    store.apply(attempt("train2", "team-a", "team-b", 1, 1))  # 1 GPU-hour
    yield store
    store.close()


@pytest.fixture
def accounted(
    cluster_status: ClusterStatus, authorizer: FakeAuthorizer, store: AccountingStore
) -> Iterator[TestClient]:
    app = create_app(
        ApiSettings(),
        status=lambda: cluster_status,
        authorizer=authorizer,
        webhooks=FakeWebhooks(),
        actions=FakeActions(),
        accounting=store,
    )
    with TestClient(app) as client:
        yield client


def rows(body: dict[str, Any]) -> list[tuple[object, ...]]:
    return [(r["key"], r["allocated_gpu_hours"], r["workloads"]) for r in body["rows"]]


def test_an_admin_sees_every_queue(accounted: TestClient) -> None:
    response = accounted.get("/api/v1/usage?since=2d", headers=ADMIN_AUTH)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["by"] == "queue"
    assert rows(body) == [("team-a", pytest.approx(6.0), 1), ("team-b", pytest.approx(3.0), 2)]
    assert body["total"]["key"] == "(total)"
    assert body["total"]["allocated_gpu_hours"] == pytest.approx(9.0)
    assert body["total"]["used_gpu_hours"] is None
    assert body["until"] - body["since"] == pytest.approx(2 * 86_400, abs=5)


def test_queue_totals_count_every_namespace_for_a_viewer_of_queues(accounted: TestClient) -> None:
    body = accounted.get("/api/v1/usage?since=2d&by=queue", headers=ALICE_AUTH).json()
    assert body["total"]["allocated_gpu_hours"] == pytest.approx(9.0)


def test_rows_by_namespace_or_user_show_only_the_viewers_namespaces(
    accounted: TestClient,
) -> None:
    by_namespace = accounted.get("/api/v1/usage?since=2d&by=namespace", headers=ALICE_AUTH)
    assert rows(by_namespace.json()) == [("team-a", pytest.approx(7.0), 2)]
    by_user = accounted.get("/api/v1/usage?since=2d&by=user", headers=ALICE_AUTH).json()
    assert rows(by_user) == [("user-team-a", pytest.approx(7.0), 2)]
    admin = accounted.get("/api/v1/usage?since=2d&by=namespace", headers=ADMIN_AUTH).json()
    assert [r[0] for r in rows(admin)] == ["team-a", "team-b"]


def test_queue_totals_need_the_right_to_list_queues(accounted: TestClient) -> None:
    response = accounted.get("/api/v1/usage", headers=BOB_AUTH)
    assert error_of(response) == (
        "forbidden",
        "user bob may not list queues.aistack.io cluster-wide; ask a cluster administrator for "
        "a ClusterRoleBinding that grants list on queues in API group aistack.io",
    )
    assert accounted.get("/api/v1/usage?by=namespace", headers=BOB_AUTH).json()["rows"] == []


def test_naming_a_namespace_needs_list_pods_there(accounted: TestClient) -> None:
    mine = accounted.get("/api/v1/usage?since=2d&namespace=team-a", headers=ALICE_AUTH)
    assert mine.json()["total"]["allocated_gpu_hours"] == pytest.approx(7.0)
    theirs = accounted.get("/api/v1/usage?namespace=team-b", headers=ALICE_AUTH)
    assert theirs.status_code == 403


def test_the_report_as_csv(accounted: TestClient) -> None:
    response = accounted.get("/api/v1/usage?since=2d&by=queue&format=csv", headers=ADMIN_AUTH)
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/csv; charset=utf-8"
    assert response.headers["content-disposition"].startswith('attachment; filename="usage-by-')
    table = list(csv.DictReader(io.StringIO(response.text)))
    assert [(r["queue"], r["allocated_gpu_hours"]) for r in table] == [
        ("team-a", "6.0000"),
        ("team-b", "3.0000"),
        ("(total)", "9.0000"),
    ]


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("since=yesterday", "'yesterday' is not a time; give a time before now (30d"),
        ("since=1d&until=2d", "the period is empty: until (2d) is not after since (1d)"),
        ("since=500d", "longer than 400 days; ask for it in parts"),
        ("by=team", "query parameter by (got 'team'): Input should be 'queue', 'namespace' or"),
        ("format=xml", "query parameter format (got 'xml'): Input should be 'json' or 'csv'"),
        ("since=" + "1" * 41, "query parameter since"),
    ],
)
def test_bad_parameters_say_what_is_accepted(
    accounted: TestClient, query: str, message: str
) -> None:
    code, text = error_of(accounted.get(f"/api/v1/usage?{query}", headers=ADMIN_AUTH))
    assert code == "invalid_parameter"
    assert message in text


def test_without_a_store_the_routes_say_accounting_is_off(client: TestClient) -> None:
    code, message = error_of(client.get("/api/v1/usage", headers=ADMIN_AUTH))
    assert code == "unavailable"
    assert "keeps no accounting records (accounting.enabled is false" in message
    history = client.get("/api/v1/workloads/team-a/train/history", headers=ADMIN_AUTH)
    assert history.status_code == 503


def test_a_broken_store_is_a_503_that_says_so(
    cluster_status: ClusterStatus, authorizer: FakeAuthorizer, tmp_path: Path
) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    broken = AccountingStore(f"sqlite:///{blocker.as_posix().lstrip('/')}/a.db")
    app = create_app(
        ApiSettings(),
        status=lambda: cluster_status,
        authorizer=authorizer,
        webhooks=FakeWebhooks(),
        actions=FakeActions(),
        accounting=broken,
    )
    with TestClient(app) as client:
        code, message = error_of(client.get("/api/v1/usage", headers=ADMIN_AUTH))
    assert code == "unavailable"
    assert message.startswith("the accounting store cannot be read right now (accounting store")


def test_a_workloads_history(accounted: TestClient) -> None:
    response = accounted.get("/api/v1/workloads/team-a/train/history", headers=ALICE_AUTH)
    assert response.status_code == 200, response.text
    body = response.json()
    # The attempts of the same step (wf.s) in the namespace tell one story.
    assert [r["workload"] for r in body["records"]] == ["train", "train2"]
    kinds = [(e["workload"], e["kind"]) for e in body["events"] if e["workload"] == "train"]
    assert kinds == [("train", "submitted"), ("train", "admitted"), ("train", "evicted")]
    (evicted,) = [e for e in body["events"] if e["workload"] == "train" and e["kind"] == "evicted"]
    assert (evicted["cause"], evicted["message"]) == (
        "Reclaimed",
        "aistack: reclaimed for team-b/x",
    )


def test_a_history_needs_get_pods_and_a_record(accounted: TestClient) -> None:
    assert (
        accounted.get("/api/v1/workloads/team-b/infer/history", headers=ALICE_AUTH).status_code
        == 403
    )
    code, message = error_of(
        accounted.get("/api/v1/workloads/team-a/nothing/history", headers=ALICE_AUTH)
    )
    assert code == "not_found"
    assert "no accounting record of a workload named 'nothing' in namespace 'team-a'" in message


def test_a_live_workloads_history_is_found_by_a_pods_name(
    accounted: TestClient, store: AccountingStore
) -> None:
    key = RecordKey("team-a", "train", 1.0)
    store.apply([Submitted(key, "team-a")])
    response = accounted.get("/api/v1/workloads/team-a/train-0/history", headers=ALICE_AUTH)
    assert response.status_code == 200, response.text
    assert response.json()["workload"] == "train"
