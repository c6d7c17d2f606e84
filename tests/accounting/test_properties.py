"""Properties of the store on both databases: usage adds up; replaying changes changes nothing.

The oracle is the plain sum over the records (`WorkloadRecord.allocated_gpu_seconds`), checked
against the SQL the store runs; the replays shuffle and repeat the changes, as a restarted or
newly elected service does.
"""

from __future__ import annotations

import itertools
import random
import sqlite3
from dataclasses import dataclass, replace

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from scheduler_service.accounting import (
    AccountingStore,
    Admitted,
    Change,
    Ended,
    EndReason,
    Grouping,
    RecordKey,
    Submitted,
    WorkloadRecord,
    open_store,
)

HOUR = 3600.0
_TABLES = ("aistack_workload_events", "aistack_workload_records")


def wipe(url: str) -> None:
    """Delete every row (the schema stays), so that one store serves many examples."""
    if url.startswith("sqlite"):
        with sqlite3.connect(url.removeprefix("sqlite://")) as connection:
            for table in _TABLES:
                connection.execute(f"DELETE FROM {table}")
        return
    with psycopg.connect(url, autocommit=True) as connection:
        for table in _TABLES:
            connection.execute(f"DELETE FROM {table}")


@dataclass(frozen=True)
class Attempt:
    record: WorkloadRecord

    def changes(self) -> list[Change]:
        r = self.record
        found: list[Change] = [
            Submitted(r.key, r.queue, user=r.user, pods=r.pods, gpus=r.gpus, kind=r.kind)
        ]
        if r.admitted_at is not None:
            found.append(Admitted(r.key, r.admitted_at, r.gpus, pool=r.pool))
        if r.ended_at is not None:
            assert r.end_reason is not None
            found.append(Ended(r.key, r.ended_at, r.end_reason, cause=r.end_cause))
        return found


@st.composite
def attempts(draw: st.DrawFn) -> list[Attempt]:
    found = []
    for index in range(draw(st.integers(0, 12))):
        submitted = draw(st.integers(0, 40)) * HOUR / 4
        admitted = submitted + draw(st.integers(0, 8)) * HOUR / 4
        state = draw(st.sampled_from(["pending", "open", "finished", "evicted", "deleted"]))
        held = draw(st.integers(0, 40)) * HOUR / 4
        record = WorkloadRecord(
            namespace=draw(st.sampled_from(["ns-a", "ns-b", "ns-c"])),
            workload=f"w{index}",
            submitted_at=submitted,
            queue=draw(st.sampled_from(["q1", "q2"])),
            user=draw(st.sampled_from(["alice", "bob", ""])),
            kind="train",
            pods=draw(st.integers(1, 4)),
            gpus=draw(st.integers(1, 64)) / 4,  # quarter GPUs: exact in binary floating point
            pool="h100",
        )
        if state == "deleted":
            record = replace(
                record, ended_at=admitted, end_reason=EndReason.DELETED, admitted_at=None
            )
        elif state != "pending":
            record = replace(record, admitted_at=admitted)
            if state in {"finished", "evicted"}:
                reason = EndReason.FINISHED if state == "finished" else EndReason.EVICTED
                record = replace(record, ended_at=admitted + held, end_reason=reason)
        found.append(Attempt(record))
    return found


periods = st.tuples(
    st.integers(0, 60).map(lambda q: q * HOUR / 4),
    st.integers(1, 60).map(lambda q: q * HOUR / 4),
    st.integers(0, 80).map(lambda q: q * HOUR / 4),
)


def expected_gpu_hours(
    records: list[WorkloadRecord], since: float, until: float, now: float
) -> dict[tuple[str, str], float]:
    """Per (grouping, key): the plain sum of each record's clipped allocation.

    An open record held its GPUs until `now`, which is after everything recorded.
    """
    sums: dict[tuple[str, str], float] = {}
    for r in records:
        if r.admitted_at is None:
            continue
        closed = r if r.ended_at is not None else replace(r, ended_at=now)
        seconds = closed.allocated_gpu_seconds(since, until)
        for grouping, key in (("queue", r.queue), ("namespace", r.namespace), ("user", r.user)):
            sums[grouping, key] = sums.get((grouping, key), 0.0) + seconds / HOUR
    return sums


_RELAXED = settings(suppress_health_check=[HealthCheck.function_scoped_fixture])


@_RELAXED
@given(runs=attempts(), period=periods, seed=st.integers(0, 2**32 - 1))
def test_usage_adds_up_to_the_recorded_allocations(
    store_url: str, runs: list[Attempt], period: tuple[float, float, float], seed: int
) -> None:
    start, length, later = period
    since, until = start, start + length
    # What was recorded happened before the report is asked for.
    times = [t for a in runs for t in (a.record.admitted_at, a.record.ended_at) if t is not None]
    now = max([later, *times])
    store = open_store(store_url)
    try:
        wipe(store_url)
        changes = [c for a in runs for c in a.changes()]
        random.Random(seed).shuffle(changes)  # a replay after a restart comes in any order
        store.apply(changes)
        expected = expected_gpu_hours([a.record for a in runs], since, until, now)
        for grouping in Grouping:
            report = store.usage(since=since, until=until, by=grouping, now=now)
            got = {r.key: r.allocated_gpu_hours for r in report.rows}
            want = {
                key: hours
                for (g, key), hours in expected.items()
                if g == grouping.value and key in got
            }
            assert got == pytest.approx(want)
            held = {key for (g, key), hours in expected.items() if g == grouping.value and hours}
            assert held <= set(got)
            assert sum(got.values()) == pytest.approx(report.total.allocated_gpu_hours)
            assert report.total.allocated_gpu_hours == pytest.approx(
                sum(h for (g, _), h in expected.items() if g == grouping.value)
            )
            assert sum(r.workloads for r in report.rows) == report.total.workloads
    finally:
        store.close()


@_RELAXED
@given(
    runs=attempts(),
    period=periods,
    cuts=st.lists(st.floats(0.01, 0.99), max_size=6, unique=True),
    seed=st.integers(0, 2**32 - 1),
)
def test_columns_from_one_scan_equal_a_report_per_column(
    store_url: str,
    runs: list[Attempt],
    period: tuple[float, float, float],
    cuts: list[float],
    seed: int,
) -> None:
    start, length, later = period
    # Distinct edges: two cuts may round to one time.
    edges = sorted({start, *(start + length * c for c in cuts), start + length})
    times = [t for a in runs for t in (a.record.admitted_at, a.record.ended_at) if t is not None]
    now = max([later, *times])
    store = open_store(store_url)
    try:
        wipe(store_url)
        changes = [c for a in runs for c in a.changes()]
        random.Random(seed).shuffle(changes)
        store.apply(changes)
        for grouping in Grouping:
            columns = store.usage_columns(edges=edges, by=grouping, now=now)
            assert [(c.since, c.until) for c in columns] == list(itertools.pairwise(edges))
            for column in columns:
                one = store.usage(since=column.since, until=column.until, by=grouping, now=now)
                want = {r.key: r.allocated_gpu_hours for r in one.rows if r.allocated_gpu_hours}
                got = {r.key: r.allocated_gpu_hours for r in column.rows}
                assert got == pytest.approx(want)
                assert column.total.allocated_gpu_hours == pytest.approx(
                    one.total.allocated_gpu_hours
                )
    finally:
        store.close()


def _state(store: AccountingStore, runs: list[Attempt]) -> object:
    return (
        sorted(store.open_records(), key=lambda r: r.workload),
        [store.history(a.record.namespace, a.record.workload) for a in runs],
    )


@_RELAXED
@given(runs=attempts(), seed=st.integers(0, 2**32 - 1))
def test_replaying_changes_changes_nothing(store_url: str, runs: list[Attempt], seed: int) -> None:
    store = open_store(store_url)
    try:
        wipe(store_url)
        changes = [c for a in runs for c in a.changes()]
        store.apply(changes)
        once = _state(store, runs)
        rng = random.Random(seed)
        replay = changes + rng.sample(changes, k=len(changes) // 2)
        rng.shuffle(replay)
        for start in range(0, len(replay), 5):  # in batches, as the writer retries them
            store.apply(replay[start : start + 5])
        assert _state(store, runs) == once
    finally:
        store.close()


def test_the_oracle_sees_a_key_once() -> None:
    record = WorkloadRecord("ns", "w", 0.0, "q", admitted_at=0.0, ended_at=HOUR, gpus=2)
    assert expected_gpu_hours([record], 0.0, HOUR, HOUR)["queue", "q"] == 2.0
    assert RecordKey("ns", "w", 0.0) == record.key
