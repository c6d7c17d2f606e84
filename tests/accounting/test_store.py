"""The store on both databases: schema, idempotent writes, usage, history, durability, outages."""

from __future__ import annotations

import csv
import io
import sqlite3
from collections.abc import Callable
from pathlib import Path

import psycopg
import pytest

from scheduler_service.accounting import (
    MIGRATIONS,
    TOTAL_KEY,
    AccountingError,
    AccountingStore,
    AccountingUnavailable,
    Admitted,
    Change,
    Ended,
    EndReason,
    EventKind,
    Grouping,
    RecordKey,
    Submitted,
    open_store,
)
from scheduler_service.accounting import _store as store_module
from tests.accounting.conftest import drop_tables
from tests.accounting.postgres import PostgresServer

HOUR = 3600.0


def run(
    name: str,
    *,
    namespace: str = "team-a",
    queue: str = "qa",
    user: str = "alice",
    submitted: float = 0.0,
    admitted: float | None = None,
    ended: float | None = None,
    gpus: float = 1.0,
    reason: EndReason = EndReason.FINISHED,
    cause: str = "",
    step: str = "",
    attempt: int = 0,
    workflow: str = "",
) -> list[Change]:
    """The changes of one workload attempt: submitted, maybe admitted, maybe ended."""
    key = RecordKey(namespace, name, submitted)
    changes: list[Change] = [
        Submitted(
            key,
            queue,
            user=user,
            gpus=gpus,
            step=step,
            attempt=attempt,
            workflow=workflow,
            kind="train",
        )
    ]
    if admitted is not None:
        changes.append(Admitted(key, admitted, gpus, pool="h100", gpu_model="H100"))
    if ended is not None:
        changes.append(Ended(key, ended, reason, cause=cause, message=f"{reason} {cause}".strip()))
    return changes


def test_a_new_store_is_at_the_latest_schema(store: AccountingStore) -> None:
    assert store.schema_version() == len(MIGRATIONS)
    assert store.open_records() == []
    assert store.last_seen() is None


def test_reopening_keeps_records_and_does_not_migrate_again(
    make_store: Callable[[], AccountingStore],
) -> None:
    first = make_store()
    first.apply(run("w", admitted=10.0), seen_at=20.0)
    first.close()
    again = make_store()
    assert again.schema_version() == len(MIGRATIONS)
    (record,) = again.open_records()
    assert (record.workload, record.admitted_at, record.pool) == ("w", 10.0, "h100")
    assert again.last_seen() == 20.0


def test_a_store_written_by_a_newer_service_is_refused(
    make_store: Callable[[], AccountingStore], store_url: str
) -> None:
    store = make_store()
    store.apply([], seen_at=1.0)
    if store_url.startswith("sqlite"):
        path = store_url.removeprefix("sqlite://")
        with sqlite3.connect(path) as connection:
            connection.execute(
                "UPDATE aistack_accounting_meta SET value = '99' WHERE key = 'schema_version'"
            )
    else:
        with psycopg.connect(store_url, autocommit=True) as connection:
            connection.execute(
                "UPDATE aistack_accounting_meta SET value = '99' WHERE key = 'schema_version'"
            )
    with pytest.raises(AccountingError, match="schema version 99, newer than this service's"):
        open_store(store_url)


@pytest.mark.parametrize(
    "url",
    ["mysql://db/x", "sqlite://host/x.db", "sqlite:///", "accounting.db", "sqlite:///x.db?mode=ro"],
)
def test_a_url_of_no_known_database_is_refused(url: str) -> None:
    with pytest.raises(AccountingError, match="sqlite:///"):
        AccountingStore(url)


def test_a_postgres_password_never_shows() -> None:
    store = AccountingStore("postgresql://acct:s3cret@db.example:5432/aistack")
    assert "s3cret" not in repr(store)
    assert store.where == "postgresql://acct:***@db.example:5432/aistack"


def test_applying_the_same_changes_twice_counts_them_once(store: AccountingStore) -> None:
    changes = run("w", admitted=HOUR, ended=3 * HOUR, gpus=4)
    store.apply(changes)
    store.apply(changes)
    store.apply(changes[::-1])
    report = store.usage(since=0, until=10 * HOUR, by="queue", now=10 * HOUR)
    assert [(r.key, r.allocated_gpu_hours, r.workloads) for r in report.rows] == [("qa", 8.0, 1)]
    assert len(store.history("team-a", "w").events) == 3


def test_first_facts_win(store: AccountingStore) -> None:
    key = RecordKey("team-a", "w", 0.0)
    store.apply([Submitted(key, "qa", gpus=1), Admitted(key, HOUR, 2.0, "h100")])
    store.apply(
        [
            Submitted(key, "other", gpus=9),
            Admitted(key, 2 * HOUR, 9.0, "a100"),
            Ended(key, 3 * HOUR, EndReason.EVICTED, "Reclaimed", "aistack: reclaimed for x"),
            Ended(key, 5 * HOUR, EndReason.FINISHED),
        ]
    )
    (record,) = store.records("team-a", "w")
    assert (record.queue, record.gpus, record.admitted_at, record.pool) == ("qa", 2.0, HOUR, "h100")
    assert (record.ended_at, record.end_reason, record.end_cause) == (
        3 * HOUR,
        EndReason.EVICTED,
        "Reclaimed",
    )


def test_an_end_is_never_before_the_admission(store: AccountingStore) -> None:
    store.apply(run("w", admitted=2 * HOUR, ended=HOUR))
    (record,) = store.records("team-a", "w")
    assert record.ended_at == 2 * HOUR


def test_usage_clips_each_allocation_to_the_period(store: AccountingStore) -> None:
    store.apply(run("before", admitted=0.0, ended=HOUR))  # entirely before
    store.apply(run("across-start", admitted=HOUR, ended=4 * HOUR, gpus=2))  # 2 h inside
    store.apply(run("inside", admitted=3 * HOUR, ended=4 * HOUR, gpus=0.25))  # 1 h inside
    store.apply(run("across-end", admitted=5 * HOUR, ended=9 * HOUR))  # 1 h inside
    store.apply(run("open", admitted=5.5 * HOUR))  # open, until now = 7 h: 0.5 h inside
    store.apply(run("never-admitted"))
    report = store.usage(since=2 * HOUR, until=6 * HOUR, by="queue", now=7 * HOUR)
    (row,) = report.rows
    assert row.allocated_gpu_hours == pytest.approx(2 * 2 + 0.25 + 1 + 0.5)
    assert row.workloads == 4
    assert row.used_gpu_hours is None
    assert report.total.key == TOTAL_KEY


def test_an_open_record_counts_until_now_not_until_the_period_end(store: AccountingStore) -> None:
    store.apply(run("open", admitted=HOUR, gpus=8))
    report = store.usage(since=0.0, until=100 * HOUR, by="queue", now=3 * HOUR)
    assert report.total.allocated_gpu_hours == pytest.approx(16.0)


def test_usage_groups_by_queue_namespace_or_user_largest_first(store: AccountingStore) -> None:
    store.apply(run("a", queue="q1", namespace="ns1", user="alice", admitted=0, ended=HOUR, gpus=1))
    store.apply(run("b", queue="q1", namespace="ns2", user="bob", admitted=0, ended=HOUR, gpus=2))
    store.apply(run("c", queue="q2", namespace="ns2", user="", admitted=0, ended=HOUR, gpus=4))

    def rows(by: Grouping) -> list[tuple[str, float, int]]:
        report = store.usage(since=0, until=HOUR, by=by, now=HOUR)
        return [(r.key, r.allocated_gpu_hours, r.workloads) for r in report.rows]

    assert rows(Grouping.QUEUE) == [("q2", 4.0, 1), ("q1", 3.0, 2)]
    assert rows(Grouping.NAMESPACE) == [("ns2", 6.0, 2), ("ns1", 1.0, 1)]
    assert rows(Grouping.USER) == [("", 4.0, 1), ("bob", 2.0, 1), ("alice", 1.0, 1)]


def test_usage_counts_only_the_namespaces_given(store: AccountingStore) -> None:
    store.apply(run("a", namespace="ns1", admitted=0, ended=HOUR, gpus=1))
    store.apply(run("b", namespace="ns2", admitted=0, ended=HOUR, gpus=2))
    report = store.usage(since=0, until=HOUR, by="queue", namespaces={"ns2"}, now=HOUR)
    assert report.total.allocated_gpu_hours == 2.0
    nothing = store.usage(since=0, until=HOUR, by="queue", namespaces=set(), now=HOUR)
    assert (nothing.rows, nothing.total.allocated_gpu_hours) == ((), 0.0)
    assert store.namespaces(since=0, until=HOUR, now=HOUR) == ["ns1", "ns2"]
    assert store.namespaces(since=2 * HOUR, until=3 * HOUR, now=3 * HOUR) == []


def test_a_report_lists_the_largest_rows_and_totals_them_all(
    store: AccountingStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(store_module, "MAX_USAGE_ROWS", 2)
    for index, gpus in enumerate((1, 2, 3, 4)):
        store.apply(run(f"w{index}", queue=f"q{index}", admitted=0, ended=HOUR, gpus=gpus))
    report = store.usage(since=0, until=HOUR, by="queue", now=HOUR)
    assert [r.key for r in report.rows] == ["q3", "q2"]
    assert report.truncated
    assert (report.total.allocated_gpu_hours, report.total.workloads) == (10.0, 4)


def test_an_empty_period_is_refused(store: AccountingStore) -> None:
    with pytest.raises(ValueError, match="the period is empty"):
        store.usage(since=HOUR, until=HOUR, by="queue", now=HOUR)


def test_the_csv_has_a_row_per_key_and_the_total(store: AccountingStore) -> None:
    store.apply(run("a", queue="q1", admitted=0, ended=HOUR, gpus=1.5))
    store.apply(run("b", queue="q2", admitted=0, ended=HOUR / 2, gpus=1))
    text = store.usage(since=0, until=HOUR, by="queue", now=HOUR).to_csv()
    rows = list(csv.DictReader(io.StringIO(text)))
    assert [(r["queue"], r["allocated_gpu_hours"], r["used_gpu_hours"]) for r in rows] == [
        ("q1", "1.5000", ""),
        ("q2", "0.5000", ""),
        (TOTAL_KEY, "2.0000", ""),
    ]
    assert rows[0]["since"] == "1970-01-01T00:00:00Z"
    assert rows[0]["until"] == "1970-01-01T01:00:00Z"


def test_history_tells_the_attempts_of_a_step_in_order(store: AccountingStore) -> None:
    store.apply(
        run(
            "wf-train-1",
            workflow="wf",
            step="wf.train",
            submitted=0.0,
            admitted=10.0,
            ended=100.0,
            reason=EndReason.EVICTED,
            cause="Reclaimed",
        )
    )
    store.apply(
        run(
            "wf-train-2",
            workflow="wf",
            step="wf.train",
            attempt=1,
            submitted=110.0,
            admitted=120.0,
        )
    )
    store.apply(run("unrelated", workflow="wf", step="wf.eval", submitted=5.0))
    for name in ("wf-train-1", "wf-train-2"):
        history = store.history("team-a", name)
        assert [r.workload for r in history.records] == ["wf-train-1", "wf-train-2"]
        assert [(e.kind, e.workload, e.attempt) for e in history.events] == [
            (EventKind.SUBMITTED, "wf-train-1", 0),
            (EventKind.ADMITTED, "wf-train-1", 0),
            (EventKind.EVICTED, "wf-train-1", 0),
            (EventKind.SUBMITTED, "wf-train-2", 1),
            (EventKind.RETRIED, "wf-train-2", 1),
            (EventKind.ADMITTED, "wf-train-2", 1),
        ]
    evicted = store.history("team-a", "wf-train-1").events[2]
    assert (evicted.cause, evicted.message) == ("Reclaimed", "evicted Reclaimed")
    assert store.history("team-a", "nothing-here").records == ()
    assert store.history("team-b", "wf-train-1").records == ()


def test_history_is_bounded(store: AccountingStore, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(store_module, "MAX_HISTORY_RECORDS", 3)
    for index in range(5):
        store.apply(run("again", submitted=float(index), admitted=index + 0.5, ended=index + 0.7))
    history = store.history("team-a", "again")
    assert [r.submitted_at for r in history.records] == [2.0, 3.0, 4.0]
    assert history.truncated


def test_ended_records_are_not_open(store: AccountingStore) -> None:
    store.apply(run("done", admitted=0.0, ended=1.0) + run("running", admitted=0.0) + run("waits"))
    assert sorted(r.workload for r in store.open_records()) == ["running", "waits"]


def test_a_store_that_cannot_be_made_is_unavailable_not_a_crash(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    store = AccountingStore(f"sqlite:///{blocker.as_posix().lstrip('/')}/sub/accounting.db")
    with pytest.raises(AccountingUnavailable, match="accounting store sqlite:///"):
        store.apply(run("w"))


def test_postgres_down_is_unavailable_and_the_store_recovers(postgres: PostgresServer) -> None:
    drop_tables(postgres.url)
    store = open_store(postgres.url)
    try:
        store.apply(run("before", admitted=0.0))
        postgres.stop()
        with pytest.raises(AccountingUnavailable, match="accounting store postgresql://"):
            store.apply(run("during", admitted=0.0))
        postgres.restart()
        store.apply(run("after", admitted=0.0))
        assert sorted(r.workload for r in store.open_records()) == ["after", "before"]
    finally:
        store.close()
        drop_tables(postgres.url)
