"""Accounting benchmarks, on SQLite and on PostgreSQL; skipped unless asked.

Recording cost per cycle at 10,000 workloads, and a 30-day usage query over 1,000,000 records.
Run with `pytest tests/benchmarks/test_accounting.py --benchmarks -s`. PostgreSQL is a real
server started for the run (`tests/accounting/postgres.py`), durable (fsync on) as in
production; SQLite is a WAL file on the local disk.

- **cycle**: a cluster status of 10,000 workloads (5,000 running one GPU each on 625 nodes,
  5,000 pending). What the driver's thread pays per cycle is `Accountant.observe` (a queue's
  append); the writer thread pays the diff and one transaction. Measured: the first cycle (every
  workload new: 15,000 changes), a quiet cycle (nothing changed: only the diff runs, the store
  is not written), and a cycle with 1 % churn (100 admitted, 100 ended, 100 new: 300 changes).
- **query**: 1,000,000 finished records (each 1 GPU to 8 GPUs for 10 minutes to 10 hours),
  spread over 30 days, 50 queues, 200 namespaces, 1,000 users, inserted in bulk; then the
  30-day report by queue, by namespace and by user, and the same scoped to 20 namespaces
  (a viewer's). Median of 3 runs each.

Figures are printed and written to `out/benchmarks/accounting.json`; docs/benchmarks.md
("Accounting") records them with the machine.
"""

from __future__ import annotations

import json
import os
import platform
import random
import statistics
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from scheduler_service.accounting import Grouping, open_store
from scheduler_service.api import ClusterStatus, WorkloadPods
from scheduler_service.core import (
    GPU,
    Node,
    Plan,
    PodAllocation,
    Request,
    Snapshot,
    Workload,
    WorkloadState,
)
from scheduler_service.kube import Accountant
from tests.accounting.postgres import PostgresServer

pytestmark = pytest.mark.benchmark

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "out" / "benchmarks" / "accounting.json"
WORKLOADS = 10_000
RECORDS = 1_000_000
DAY = 86_400.0
NOW = 1_800_000_000.0
_RESULTS: dict[str, Any] = {}


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def store_url(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    if request.param == "sqlite":
        directory = tmp_path_factory.mktemp("accounting")
        yield f"sqlite:///{directory.as_posix().lstrip('/')}/accounting.db"
        return
    with PostgresServer(durable=True) as server:
        yield server.url


def _nodes() -> tuple[Node, ...]:
    return tuple(
        Node(f"n{n}", "h100", gpus=tuple(GPU(i, f"GPU-{n}-{i}", "H100", 81_920) for i in range(8)))
        for n in range(WORKLOADS // 2 // 8)
    )


def _workload(index: int, *, running: bool, submitted: float, slot: int | None = None) -> Workload:
    node, gpu = divmod(index if slot is None else slot, 8)
    return Workload(
        name=f"ns-{index % 200}/w{index}",
        queue=f"q{index % 50}",
        request=Request(gpus=1),
        submitted_at=submitted,
        state=WorkloadState.RUNNING if running else WorkloadState.PENDING,
        allocation=(PodAllocation(f"n{node}", gpus=(f"GPU-{node}-{gpu}",)),) if running else None,
        started_at=submitted + 5 if running else None,
    )


def _status(at: float, workloads: list[Workload], nodes: tuple[Node, ...]) -> ClusterStatus:
    return ClusterStatus(
        snapshot=Snapshot(nodes=nodes, workloads=tuple(workloads)),
        plan=Plan(),
        pods={
            w.name: WorkloadPods(w.name.split("/")[0], (w.name.split("/")[1],)) for w in workloads
        },
        cycle_at=at,
        leader=True,
    )


def _timed(action: Callable[[], Any]) -> tuple[float, Any]:
    started = time.perf_counter()
    result = action()
    return time.perf_counter() - started, result


def _record(backend: str, case: str, figures: dict[str, Any]) -> None:
    _RESULTS.setdefault(backend, {})[case] = figures
    print(f"\n{backend} {case}: {json.dumps(figures)}")
    OUT.parent.mkdir(parents=True, exist_ok=True)
    machine = {
        "cpus": os.cpu_count(),
        "processor": platform.processor() or platform.machine(),
        "python": platform.python_version(),
    }
    OUT.write_text(json.dumps({"machine": machine, "results": _RESULTS}, indent=2) + "\n")


def test_recording_cost_per_cycle_at_10000_workloads(store_url: str) -> None:
    backend = store_url.split(":", maxsplit=1)[0]
    store = open_store(store_url)
    nodes = _nodes()
    running = [_workload(i, running=True, submitted=NOW - 600) for i in range(WORKLOADS // 2)]
    pending = [
        _workload(i, running=False, submitted=NOW - 300) for i in range(WORKLOADS // 2, WORKLOADS)
    ]
    accountant = Accountant(store)
    first = _status(NOW, running + pending, nodes)

    observe = [_timed(lambda: accountant.observe(first))[0] for _ in range(1000)]
    accountant._inbox.clear()

    diff_first, changes = _timed(lambda: accountant.diff(first))
    write_first, _ = _timed(lambda: store.apply(changes, seen_at=NOW))

    quiet = _status(NOW + 1, running + pending, nodes)
    diff_quiet, nothing = _timed(lambda: accountant.diff(quiet))
    assert nothing == []

    # 1 % churn: 100 running end, 100 pending are admitted on their GPUs, 100 new arrive.
    admitted = [
        _workload(WORKLOADS // 2 + i, running=True, submitted=NOW - 300, slot=i) for i in range(100)
    ]
    fresh = [_workload(i, running=False, submitted=NOW) for i in range(WORKLOADS, WORKLOADS + 100)]
    churn = _status(NOW + 2, running[100:] + admitted + pending[100:] + fresh, nodes)
    diff_churn, churn_changes = _timed(lambda: accountant.diff(churn))
    assert len(churn_changes) == 300
    write_churn = statistics.median(
        _timed(lambda: store.apply(churn_changes, seen_at=NOW + 2))[0] for _ in range(5)
    )
    store.close()
    _record(
        backend,
        "cycle",
        {
            "observe_us_median": round(statistics.median(observe) * 1e6, 2),
            "first_cycle_changes": len(changes),
            "first_cycle_diff_ms": round(diff_first * 1e3, 1),
            "first_cycle_write_ms": round(write_first * 1e3, 1),
            "quiet_cycle_diff_ms": round(diff_quiet * 1e3, 1),
            "churn_cycle_diff_ms": round(diff_churn * 1e3, 1),
            "churn_cycle_write_ms": round(write_churn * 1e3, 1),
        },
    )


def _bulk_records(rng: random.Random) -> Iterator[tuple[Any, ...]]:
    for index in range(RECORDS):
        admitted = NOW - rng.random() * 30 * DAY
        held = rng.uniform(600, 36_000)
        gpus = float(rng.choice((1, 1, 1, 2, 4, 8)))
        yield (
            f"ns-{index % 200}",
            f"w{index}",
            admitted - 60,
            f"q{index % 50}",
            f"user{rng.randrange(1000)}",
            "wf",
            "",
            0,
            "train",
            1,
            gpus,
            "h100",
            "H100",
            admitted,
            admitted + held,
            "finished",
            "",
            "",
        )


_INSERT_COLUMNS = (
    "namespace, workload, submitted_at, queue, user_name, workflow, step, attempt, kind, pods, "
    "gpus, pool, gpu_model, admitted_at, ended_at, end_reason, end_cause, end_message"
)


def _fill(store_url: str) -> float:
    rows = _bulk_records(random.Random(7))
    started = time.perf_counter()
    if store_url.startswith("sqlite"):
        import sqlite3  # noqa: PLC0415 - only this branch needs it

        with sqlite3.connect(store_url.removeprefix("sqlite://")) as connection:
            connection.executemany(
                f"INSERT INTO aistack_workload_records ({_INSERT_COLUMNS}) "
                f"VALUES ({', '.join('?' * 18)})",
                rows,
            )
    else:
        with psycopg.connect(store_url) as connection:
            cursor = connection.cursor()
            with cursor.copy(
                f"COPY aistack_workload_records ({_INSERT_COLUMNS}) FROM STDIN"
            ) as copy:
                for row in rows:
                    copy.write_row(row)
            cursor.execute("ANALYZE aistack_workload_records")
    return time.perf_counter() - started


def test_a_30_day_usage_query_over_a_million_records(store_url: str) -> None:
    backend = store_url.split(":", maxsplit=1)[0]
    store = open_store(store_url)
    store.apply([])  # the schema
    fill_seconds = _fill(store_url)
    since, until = NOW - 30 * DAY, NOW
    figures: dict[str, Any] = {"records": RECORDS, "fill_s": round(fill_seconds, 1)}
    for grouping in Grouping:
        times = []
        for _ in range(3):
            started = time.perf_counter()
            report = store.usage(since=since, until=until, by=grouping, now=NOW)
            times.append(time.perf_counter() - started)
        assert report.total.workloads > RECORDS * 0.95
        figures[f"by_{grouping.value}_ms"] = round(statistics.median(times) * 1e3)
    viewer = {f"ns-{i}" for i in range(20)}

    def scoped_report() -> object:
        return store.usage(since=since, until=until, by="user", namespaces=viewer, now=NOW)

    scoped = [_timed(scoped_report)[0] for _ in range(3)]
    figures["by_user_20_namespaces_ms"] = round(statistics.median(scoped) * 1e3)
    _record(backend, "query", figures)
    store.close()
