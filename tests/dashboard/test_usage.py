"""The usage page, its CSV, and workload histories: the accounting store (SQLite) behind them.

Recorded: team-a's step `train` (2 GPUs, admitted an hour before NOW, still running), team-b's
`infer` (a 0.3-GPU slice for two hours), and team-a's `old` (1 GPU for 30 minutes, evicted by a
reclaim, then retried as `old-r1`, which finished). alice may list pods in team-a only.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from pathlib import Path

import pytest

from scheduler_service.accounting import (
    AccountingStore,
    Admitted,
    Ended,
    EndReason,
    RecordKey,
    Submitted,
    open_store,
)
from scheduler_service.api import ApiSettings, Services, create_app
from scheduler_service.dashboard import _usage as usage_module
from scheduler_service.dashboard import create_dashboard
from scheduler_service.dashboard._usage import build_usage, build_usage_chart, column_width, slices
from tests.api.support import (
    ADMIN_AUTH,
    ALICE_AUTH,
    BOB_AUTH,
    NOW,
    FakeActions,
    FakeAuthorizer,
    FakeWebhooks,
    TestClient,
)
from tests.dashboard.cluster import StatusHolder
from tests.dashboard.conftest import SETTINGS
from tests.dashboard.html import parse

HOUR = 3600.0


@pytest.fixture
def store(tmp_path: Path) -> Iterator[AccountingStore]:
    opened = open_store(f"sqlite:///{tmp_path / 'accounting.db'}")
    train = RecordKey("team-a", "train", NOW - HOUR - 60)
    infer = RecordKey("team-b", "infer", NOW - 2 * HOUR - 10)
    old = RecordKey("team-a", "old", NOW - 5 * HOUR)
    retry = RecordKey("team-a", "old-r1", NOW - 4 * HOUR)
    opened.apply(
        [
            Submitted(train, queue="team-a", user="alice", workflow="ddp-x7k2p", pods=2, gpus=2),
            Admitted(train, at=NOW - HOUR, gpus=2, pool="h100"),
            Submitted(infer, queue="team-b", user="bob", kind="infer", gpus=0.3),
            Admitted(infer, at=NOW - 2 * HOUR, gpus=0.3, pool="h100"),
            Submitted(old, queue="team-a", user="alice", workflow="w", step="w.s", gpus=1),
            Admitted(old, at=NOW - 5 * HOUR, gpus=1, pool="h100"),
            Ended(
                old,
                at=NOW - 4.5 * HOUR,
                reason=EndReason.EVICTED,
                cause="Reclaimed",
                message="aistack: reclaimed for team-b/x: queue team-a held 3 GPUs",
            ),
            Submitted(
                retry, queue="team-a", user="alice", workflow="w", step="w.s", attempt=1, gpus=1
            ),
            Admitted(retry, at=NOW - 4 * HOUR, gpus=1, pool="h100"),
            Ended(retry, at=NOW - 3.5 * HOUR, reason=EndReason.FINISHED),
        ]
    )
    yield opened
    opened.close()


@pytest.fixture
def client(holder: StatusHolder, store: AccountingStore) -> Iterator[TestClient]:
    def dashboard(services: Services) -> object:
        return create_dashboard(SETTINGS, services)

    app = create_app(
        ApiSettings(),
        status=holder.status,
        authorizer=FakeAuthorizer(),
        webhooks=FakeWebhooks(),
        actions=FakeActions(),
        dashboard=dashboard,  # type: ignore[arg-type]
        accounting=store,
    )
    with TestClient(app, base_url="https://testserver") as test_client:
        yield test_client


PERIOD = f"since={int(NOW - 6 * HOUR)}&until={int(NOW)}"


def table(path: str, client: TestClient, headers: dict[str, str] = ADMIN_AUTH) -> dict[str, str]:
    response = client.get(path, headers=headers)
    assert response.status_code == 200, response.text
    document = parse(response.text)
    return {
        row.attrs["data-key"]: row.one(data_field="allocated").text
        for row in document.find_all("tr")
        if "data-key" in row.attrs
    }


def test_the_usage_page_sums_gpu_hours_per_queue(client: TestClient) -> None:
    assert table(f"/ui/usage?{PERIOD}&by=queue", client) == {
        "team-a": "3.00",  # train 2 GPUs x 1 h, old 0.5 h, its retry 0.5 h
        "team-b": "0.60",  # 0.3 GPUs x 2 h
        "(total)": "3.60",
    }


def test_the_usage_csv_is_the_report_and_adds_up(
    client: TestClient, store: AccountingStore
) -> None:
    response = client.get(f"/ui/usage.csv?{PERIOD}&by=user", headers=ADMIN_AUTH)

    assert response.status_code == 200
    assert response.headers["content-type"] == "text/csv; charset=utf-8"
    assert "attachment" in response.headers["content-disposition"]
    rows = list(csv.DictReader(io.StringIO(response.text)))
    assert [r["user"] for r in rows] == ["alice", "bob", "(total)"]
    hours = [float(r["allocated_gpu_hours"]) for r in rows]
    assert hours[:-1] == [3.0, 0.6]
    assert sum(hours[:-1]) == pytest.approx(hours[-1])
    report = store.usage(since=NOW - 6 * HOUR, until=NOW, by="user", now=NOW)
    assert response.text.splitlines()[1:] == report.to_csv().splitlines()[1:]


def test_a_viewer_is_counted_only_their_namespaces(client: TestClient) -> None:
    assert table(f"/ui/usage?{PERIOD}&by=namespace", client, ALICE_AUTH) == {
        "team-a": "3.00",
        "(total)": "3.00",
    }
    csv_text = client.get(f"/ui/usage.csv?{PERIOD}&by=user", headers=ALICE_AUTH).text
    assert "bob" not in csv_text
    refused = client.get(f"/ui/usage?{PERIOD}&by=user&namespace=team-b", headers=ALICE_AUTH)
    assert refused.status_code == 403


def test_queue_totals_count_every_namespace_for_whoever_may_list_queues(
    client: TestClient,
) -> None:
    assert table(f"/ui/usage?{PERIOD}&by=queue", client, ALICE_AUTH)["team-b"] == "0.60"
    assert client.get(f"/ui/usage?{PERIOD}&by=queue", headers=BOB_AUTH).status_code == 403


def test_the_pages_numbers_are_the_apis_report(client: TestClient) -> None:
    for by, headers in (("queue", ADMIN_AUTH), ("namespace", ALICE_AUTH), ("user", ADMIN_AUTH)):
        report = client.get(f"/api/v1/usage?{PERIOD}&by={by}", headers=headers).json()
        shown = table(f"/ui/usage?{PERIOD}&by={by}", client, headers)
        expected = {row["key"]: f"{row['allocated_gpu_hours']:.2f}" for row in report["rows"]}
        assert shown == {**expected, "(total)": f"{report['total']['allocated_gpu_hours']:.2f}"}


def test_the_usage_chart_has_a_column_per_slice_of_the_period(client: TestClient) -> None:
    page = parse(client.get(f"/ui/usage?{PERIOD}", headers=ADMIN_AUTH).text)
    section = page.one("section", id="usage-chart")
    assert page.find_all("main", id="live") == []  # a report, not a live page
    assert page.one("a", class_="csv").attrs["href"].startswith("/ui/usage.csv?since=")

    fragment = client.get(section.attrs["hx-get"], headers=ADMIN_AUTH)

    assert fragment.status_code == 200
    chart = parse(fragment.text).one("svg", class_="chart")
    hours: dict[str, float] = {}
    for rect in chart.find_all("rect"):  # "<column>: <queue> <hours> GPU-hours"
        key, amount = rect.one("title").text.split(": ")[1].split()[:2]
        hours[key] = hours.get(key, 0.0) + float(amount)
    assert hours == {"team-a": pytest.approx(3.0, abs=0.02), "team-b": pytest.approx(0.6, abs=0.02)}
    assert "Per hour" in fragment.text


def test_the_chart_of_a_viewer_without_rights_is_refused(client: TestClient) -> None:
    response = client.get(f"/ui/usage/chart?{PERIOD}&by=queue", headers=BOB_AUTH)

    assert response.status_code == 403
    assert "bob may not list queues" in response.text
    assert client.get(f"/ui/usage/chart?{PERIOD}").status_code == 401


@pytest.mark.parametrize(
    ("query", "message"),
    [("since=yesterday", "is not a time"), ("by=team", "a report is by queue, namespace, user")],
)
def test_a_report_that_cannot_be_made_says_what_to_write(
    client: TestClient, query: str, message: str
) -> None:
    response = client.get(f"/ui/usage?{query}", headers=ADMIN_AUTH)

    assert response.status_code == 422
    assert message in response.text


def test_without_accounting_the_usage_page_says_it_is_off(client: TestClient) -> None:
    client.app.state.services.accounting = None  # type: ignore[attr-defined]

    response = client.get("/ui/usage", headers=ADMIN_AUTH)
    workload = client.get("/ui/workloads/team-a/train", headers=ADMIN_AUTH)

    assert response.status_code == 404
    assert "accounting is off" in response.text
    assert "No recorded history" in workload.text


def test_a_workload_page_tells_its_recorded_history(client: TestClient) -> None:
    document = parse(client.get("/ui/workloads/team-a/train", headers=ADMIN_AUTH).text)

    events = [
        row.attrs["data-event"] for row in document.find_all("tr") if "data-event" in row.attrs
    ]
    assert events == ["submitted", "admitted"]


def test_a_finished_steps_pod_link_shows_its_attempts_and_why_one_was_evicted(
    client: TestClient,
) -> None:
    response = client.get("/ui/pods/team-a/old", headers=ADMIN_AUTH)

    assert response.status_code == 200
    document = parse(response.text)
    events = [
        (row.attrs["data-event"], row.find_all("td")[3].text)
        for row in document.find_all("tr")
        if "data-event" in row.attrs
    ]
    assert events == [
        ("submitted", "old"),
        ("admitted", "old"),
        ("evicted", "old"),
        ("submitted", "old-r1"),
        ("retried", "old-r1"),
        ("admitted", "old-r1"),
        ("finished", "old-r1"),
    ]
    evicted = document.one("tr", data_event="evicted")
    assert "Reclaimed" in evicted.text
    assert "reclaimed for team-b/x" in evicted.text
    assert document.one(data_field="summary").text == (
        "old does not wait or run under the scheduler now; its last attempt, old-r1, ended at "
        "2023-11-14 18:46:40 UTC (finished)"
    )


def test_a_finished_workload_of_another_namespace_is_refused(client: TestClient) -> None:
    assert client.get("/ui/pods/team-b/infer-0", headers=ALICE_AUTH).status_code == 403


def test_the_chart_cuts_the_period_into_at_most_31_columns() -> None:
    assert column_width(0, 6 * HOUR) == 3600
    assert column_width(0, 30 * 86_400) == 86_400
    assert column_width(0, 90 * 86_400) == 7 * 86_400
    parts = slices(1800, 4 * HOUR)
    assert parts[0] == (1800.0, 3600.0)
    assert parts[-1] == (3 * HOUR, 4 * HOUR)
    assert len(slices(0, 400 * 86_400)) <= 31


def test_a_report_becomes_lines_with_their_share_of_the_total(store: AccountingStore) -> None:
    report = store.usage(since=NOW - 6 * HOUR, until=NOW, by="queue", now=NOW)

    page = build_usage(report, None)

    assert [(line.key, round(line.share, 3)) for line in page.rows] == [
        ("team-a", 0.833),
        ("team-b", 0.167),
    ]
    assert page.total.share == 1.0


def test_the_chart_ranks_keys_by_their_hours_over_the_columns_as_the_report_does(
    store: AccountingStore,
) -> None:
    since, until = NOW - 6 * HOUR, NOW
    report = store.usage(since=since, until=until, by="queue", now=NOW)
    edges = [since + i * HOUR for i in range(7)]
    columns = store.usage_columns(edges=edges, by="queue", now=NOW)

    chart = build_usage_chart(since, until, [(c.since, c) for c in columns])

    assert [name for name, _ in chart.legend] == [row.key for row in report.rows]
    assert len(report.rows) == 2


def test_keys_beyond_the_largest_are_drawn_together_as_other(
    store: AccountingStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    report = store.usage(since=NOW - 6 * HOUR, until=NOW, by="queue", now=NOW)
    # Only the largest key is drawn: team-a (5 of 6 GPU-hours); team-b becomes "other".
    monkeypatch.setattr(usage_module, "TOP_KEYS", 1)

    chart = build_usage_chart(report.since, report.until, [(report.since, report)])

    assert chart.legend == (("team-a", "col-0"), ("other", "col-1"))
    assert "other 0.60 GPU-hours" in chart.chart
