"""The driver's accountant: from successive cluster statuses to records, across restarts."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from scheduler_service import pod_contract as keys
from scheduler_service.accounting import (
    AccountingStore,
    AccountingUnavailable,
    Admitted,
    Change,
    Ended,
    EndReason,
    EventKind,
    RecordKey,
    Submitted,
    open_store,
)
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
from scheduler_service.kube._accountant import step_and_attempt
from scheduler_service.kube._ledger import PodEviction

HOUR = 3600.0
NODE = Node(
    "n1",
    "h100",
    gpus=tuple(GPU(i, f"GPU-{i}", "H100", 81_920) for i in range(8)),
)


def workload(
    name: str,
    *,
    gpus: int = 2,
    pods: int = 1,
    submitted: float = 0.0,
    started: float | None = None,
    state: WorkloadState | None = None,
    slice_: tuple[int, int] | None = None,
) -> Workload:
    request = (
        Request(gpu_memory_mib=slice_[0], gpu_compute_percent=slice_[1])
        if slice_
        else Request(gpus=gpus)
    )
    allocation = None
    if started is not None:
        per_pod = 1 if slice_ else gpus
        allocation = tuple(
            PodAllocation("n1", gpus=tuple(f"GPU-{p * per_pod + i}" for i in range(per_pod)))
            for p in range(pods)
        )
    return Workload(
        name=f"team-a/{name}",
        queue="qa",
        request=request,
        pods=pods,
        submitted_at=submitted,
        state=state or (WorkloadState.RUNNING if started is not None else WorkloadState.PENDING),
        allocation=allocation,
        started_at=started,
    )


def status(at: float, *workloads: Workload, leader: bool = True) -> ClusterStatus:
    return ClusterStatus(
        snapshot=Snapshot(nodes=(NODE,), workloads=workloads),
        plan=Plan(),
        pods={
            w.name: WorkloadPods(
                "team-a",
                tuple(f"{w.name.split('/')[1]}-{i}" for i in range(w.pods))
                if w.pods > 1
                else (w.name.split("/")[1],),
                workflow="wf",
            )
            for w in workloads
        },
        cycle_at=at,
        leader=leader,
    )


def pod(name: str, *, user: str = "", node_name: str = "", stop: str = "") -> dict[str, Any]:
    labels = {"workflows.argoproj.io/creator": user} if user else {}
    annotations = {"workflows.argoproj.io/node-name": node_name} if node_name else {}
    obj: dict[str, Any] = {
        "metadata": {
            "namespace": "team-a",
            "name": name,
            "labels": labels,
            "annotations": annotations,
        },
        "status": {},
    }
    if stop:
        obj["status"] = {
            "phase": "Failed",
            "reason": stop,
            "message": f"aistack: {stop.lower()}",
            "conditions": [
                {"type": "DisruptionTarget", "status": "True", "reason": keys.EVICTION_REASON}
            ],
        }
    return obj


def eviction(name: str, cause: str = "Reclaimed") -> PodEviction:
    return PodEviction(
        namespace="team-a",
        name=name,
        uid="u",
        message=f"aistack: reclaimed for team-b/x: ({name})",
        workload=f"team-a/{name}",
        queue="qa",
        cause=cause,
    )


@pytest.fixture
def store(tmp_path: Path) -> AccountingStore:
    return open_store(f"sqlite:///{tmp_path.as_posix().lstrip('/')}/accounting.db")


def key(name: str, submitted: float = 0.0) -> RecordKey:
    return RecordKey("team-a", name, submitted)


@pytest.mark.parametrize(
    ("node_name", "expected"),
    [
        ("", ("", 0)),
        ("wf.train", ("wf.train", 0)),
        ("wf.train(0)", ("wf.train", 0)),
        ("wf.train(2)", ("wf.train", 2)),
        ("wf.ddp(1:1)", ("wf.ddp", 0)),
        ("wf.ddp(1:1)(3)", ("wf.ddp", 3)),
        ("wf[0].loop(2:x)(1)", ("wf[0].loop", 1)),
    ],
)
def test_the_step_and_attempt_come_from_argos_node_name(
    node_name: str, expected: tuple[str, int]
) -> None:
    assert step_and_attempt(node_name) == expected


def test_a_workload_is_submitted_admitted_and_finished(store: AccountingStore) -> None:
    accountant = Accountant(store)
    accountant.pod_changed(pod("train", user="alice", node_name="wf.train(1)"))
    first = accountant.diff(status(10.0, workload("train", submitted=5.0)))
    assert first == [
        Submitted(
            key("train", 5.0),
            "qa",
            user="alice",
            workflow="wf",
            step="wf.train",
            attempt=1,
            kind="train",
            pods=1,
            gpus=2.0,
        )
    ]
    running = workload("train", submitted=5.0, started=20.0)
    assert accountant.diff(status(21.0, running)) == [
        Admitted(key("train", 5.0), 20.0, 2.0, pool="h100", gpu_model="H100")
    ]
    assert accountant.diff(status(22.0, running)) == []
    assert accountant.diff(status(HOUR, workload("other", submitted=HOUR))) == [
        Submitted(key("other", HOUR), "qa", workflow="wf", kind="train", gpus=2.0),
        Ended(key("train", 5.0), HOUR, EndReason.FINISHED),
    ]


def test_a_gang_is_charged_all_its_gpus_and_a_slice_its_share(store: AccountingStore) -> None:
    accountant = Accountant(store)
    changes = accountant.diff(
        status(
            1.0,
            workload("ddp", gpus=2, pods=3, started=1.0),
            # 40 GiB of an 80 GiB GPU at 25 % compute is charged as half a GPU.
            workload("infer", slice_=(40_960, 25), started=1.0),
        )
    )
    admitted = {c.key.workload: c.gpus for c in changes if isinstance(c, Admitted)}
    submitted = {c.key.workload: c.gpus for c in changes if isinstance(c, Submitted)}
    assert admitted == {"ddp": 6.0, "infer": 0.5}
    assert submitted == {"ddp": 6.0, "infer": 0.25}


def test_an_eviction_ends_the_record_with_its_cause_and_message(store: AccountingStore) -> None:
    accountant = Accountant(store)
    running = workload("train", started=1.0)
    accountant.diff(status(1.0, running))
    accountant._stops.update({"team-a/train": ("Reclaimed", "aistack: reclaimed for team-b/x")})
    evicting = workload("train", started=1.0, state=WorkloadState.EVICTING)
    assert accountant.diff(status(2.0, evicting)) == []
    (ended,) = accountant.diff(status(3.0))
    assert ended == Ended(
        key("train"), 3.0, EndReason.EVICTED, "Reclaimed", "aistack: reclaimed for team-b/x"
    )


def test_an_eviction_decided_before_a_restart_is_read_from_the_pod(
    store: AccountingStore,
) -> None:
    accountant = Accountant(store)
    accountant.pod_changed(pod("train", stop="Preempted"))
    accountant.diff(status(1.0, workload("train", started=1.0, state=WorkloadState.EVICTING)))
    (ended,) = accountant.diff(status(2.0))
    assert isinstance(ended, Ended)
    assert (ended.reason, ended.cause, ended.message) == (
        EndReason.EVICTED,
        "Preempted",
        "aistack: preempted",
    )


def test_a_workload_gone_before_admission_was_deleted(store: AccountingStore) -> None:
    accountant = Accountant(store)
    accountant.diff(status(1.0, workload("waits")))
    assert accountant.diff(status(2.0)) == [Ended(key("waits"), 2.0, EndReason.DELETED)]


def test_pods_replaced_under_the_same_name_start_a_new_record(store: AccountingStore) -> None:
    accountant = Accountant(store)
    accountant.diff(status(1.0, workload("again", started=1.0)))
    changes = accountant.diff(status(2.0, workload("again", submitted=2.0)))
    assert [type(c).__name__ for c in changes] == ["Ended", "Submitted"]
    assert changes[1].key == key("again", 2.0)


def test_a_followers_statuses_are_not_recorded(store: AccountingStore) -> None:
    accountant = Accountant(store)
    accountant.start()
    try:
        accountant.observe(status(1.0, workload("train", started=1.0), leader=False))
    finally:
        accountant.stop()
    assert store.open_records() == []
    assert store.last_seen() is None


def run_through(accountant: Accountant, *statuses: ClusterStatus) -> None:
    accountant.start()
    try:
        for one in statuses:
            accountant.observe(one)
    finally:
        accountant.stop()


def test_a_restarted_service_carries_on_and_counts_nothing_twice(store: AccountingStore) -> None:
    running = workload("long", started=0.0)
    short = workload("short", started=0.0)
    run_through(Accountant(store), status(0.0, running, short), status(600.0, running, short))
    assert store.last_seen() == 600.0
    # The service stops; `short` ends while it is down; a new one starts an hour later.
    run_through(Accountant(store), status(HOUR, running))
    records = {r.workload: r for r in store.open_records()}
    assert list(records) == ["long"]
    (ended,) = store.records("team-a", "short")
    assert (ended.ended_at, ended.end_reason) == (600.0, EndReason.FINISHED)
    assert "no scheduler replica was recording" in ended.end_message
    report = store.usage(since=0.0, until=2 * HOUR, by="queue", now=2 * HOUR)
    assert report.total.workloads == 2
    assert report.total.allocated_gpu_hours == pytest.approx(2 * 2.0 + 2 * 600 / HOUR)
    assert [e.kind for e in store.history("team-a", "long").events] == [
        EventKind.SUBMITTED,
        EventKind.ADMITTED,
    ]


def test_a_replica_that_becomes_leader_reads_the_store_again(store: AccountingStore) -> None:
    accountant = Accountant(store)
    run_through(
        accountant,
        status(1.0, workload("a", started=1.0)),
        status(2.0, workload("a", started=1.0), leader=False),
    )
    # Meanwhile another leader ended `a` in the same store.
    store.apply([Ended(key("a"), 3.0, EndReason.FINISHED)])
    again = Accountant(store)
    run_through(again, status(4.0, workload("b", started=4.0)))
    assert [r.workload for r in store.open_records()] == ["b"]
    (a,) = store.records("team-a", "a")
    assert a.ended_at == 3.0


class FlakyStore(AccountingStore):
    """A store whose database is down until `up` is set."""

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.up = threading.Event()
        self.calls = 0

    def apply(self, changes: Sequence[Change], *, seen_at: float | None = None) -> None:
        self.calls += 1
        if not self.up.is_set():
            raise AccountingUnavailable("accounting store test: connection refused")
        super().apply(changes, seen_at=seen_at)

    def open_records(self) -> list[Any]:
        self.calls += 1
        if not self.up.is_set():
            raise AccountingUnavailable("accounting store test: connection refused")
        return super().open_records()


def wait_for(what: str, check: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def test_a_database_outage_stops_nothing_and_loses_nothing(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path.as_posix().lstrip('/')}/accounting.db"
    flaky = FlakyStore(url)
    registry = CollectorRegistry()
    accountant = Accountant(
        flaky, registry=registry, retry_min_seconds=0.01, retry_max_seconds=0.05
    )
    accountant.start()
    try:
        started = time.perf_counter()
        for at in range(50):
            accountant.observe(status(float(at), workload("train", started=0.0)))
        assert time.perf_counter() - started < 0.5  # the driver never waits
        wait_for("a few failed tries", lambda: flaky.calls >= 3)
        failures = registry.get_sample_value("aistack_accounting_write_failures_total")
        assert failures is not None
        assert failures >= 3
        flaky.up.set()
        accountant.observe(status(60.0, workload("train", started=0.0)))
        wait_for("the records", lambda: bool(open_store(url).open_records()))
    finally:
        accountant.stop()
    store = open_store(url)
    (record,) = store.open_records()
    assert (record.workload, record.admitted_at) == ("train", 0.0)
    wait_for("the heartbeat", lambda: store.last_seen() == 60.0)
    assert registry.get_sample_value("aistack_accounting_pending_changes") == 0


def test_the_backlog_of_statuses_is_bounded_and_keeps_evictions(store: AccountingStore) -> None:
    accountant = Accountant(store, max_backlog=3)
    for at in range(10):
        accountant.observe(status(float(at)), [eviction(f"w{at}")] if at < 2 else [])
    assert len(accountant._inbox) == 3
    stops = {name for _, s in accountant._inbox for name in s}
    assert stops == {"team-a/w0", "team-a/w1"}
