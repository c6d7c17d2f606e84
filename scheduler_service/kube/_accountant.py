"""The driver's accountant: turns the leader's successive cycles into accounting records.

The driver hands it every pod it sees (`pod_changed`, cheap: a few labels are kept) and, after
each cycle, the `ClusterStatus` and the cycle's evictions (`observe`, O(1): a queue). A writer
thread of its own diffs successive statuses into `Submitted`, `Admitted` and `Ended` changes
and writes them in one transaction per batch. So the scheduling loop never waits for the
database, and a database that is down stops nothing: the changes wait in memory (bounded), the
writer retries with back-off, and the failures are logged and counted
(`aistack_accounting_write_failures_total`).

Only a leader's statuses are recorded. When a replica becomes leader (or starts), the writer
first reads the records the store has open and carries on from them: a workload still there is
the same record, one that vanished meanwhile is ended at the store's last heartbeat. Every
change is idempotent in the store, so a replay (after a restart, a failover, a retried write)
counts nothing twice.

Who a workload is accounted to (`user`): the pod label `workflows.argoproj.io/creator`, which
Argo Server sets on a Workflow from its submitter's identity and a pipeline passes on to its
pods (docs/usage-report.md); "" when absent. The Argo step and attempt come from Argo's
`workflows.argoproj.io/node-name` annotation ("wf.train(1)" is the second attempt of
"wf.train").
"""

from __future__ import annotations

import collections
import logging
import re
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge

from scheduler_service import pod_contract as keys
from scheduler_service.accounting import (
    AccountingStore,
    AccountingUnavailable,
    Admitted,
    Change,
    Ended,
    EndReason,
    RecordKey,
    Submitted,
)
from scheduler_service.api import ClusterStatus
from scheduler_service.core import MILLI_GPU, Workload
from scheduler_service.kube._ledger import PodEviction

__all__ = ["USER_LABEL", "Accountant", "step_and_attempt"]

_log = logging.getLogger(__name__)

USER_LABEL = "workflows.argoproj.io/creator"
"""The pod label a workload is accounted to (Argo's creator label, as its pods carry it)."""
_NODE_NAME_ANNOTATION = "workflows.argoproj.io/node-name"
_ATTEMPT = re.compile(r"^(?P<step>.*)\((?P<attempt>\d+)\)$")
_FAN_OUT_MEMBER = re.compile(r"\(\d+:[^()]*\)$")

_RESUMED_MESSAGE = (
    "ended while no scheduler replica was recording; counted until the last time one saw it"
)


def step_and_attempt(node_name: str) -> tuple[str, int]:
    """The Argo step a pod's node name belongs to, and the attempt (0 for the first).

    "wf.train(2)" is attempt 2 of "wf.train"; a gang member's "wf.ddp(0:0)(1)" is attempt 1 of
    "wf.ddp" (the fan-out suffix names the rank, which the gang shares). "" for no node name.
    """
    attempt = 0
    found = _ATTEMPT.match(node_name)
    if found is not None and not _FAN_OUT_MEMBER.search(node_name):
        node_name, attempt = found["step"], int(found["attempt"])
    return _FAN_OUT_MEMBER.sub("", node_name), attempt


@dataclass(frozen=True, slots=True)
class _PodFacts:
    user: str
    node_name: str
    stop: tuple[str, str] | None
    """The service's stop (cause, message) written on the pod, if it was stopped."""


def _facts(pod: Mapping[str, Any]) -> _PodFacts:
    metadata = pod.get("metadata") or {}
    labels = metadata.get("labels") or {}
    annotations = metadata.get("annotations") or {}
    status = pod.get("status") or {}
    stop = None
    for condition in status.get("conditions") or ():
        if (
            condition.get("type") == "DisruptionTarget"
            and condition.get("reason") == keys.EVICTION_REASON
        ):
            stop = (str(status.get("reason") or ""), str(status.get("message") or ""))
    return _PodFacts(
        user=str(labels.get(USER_LABEL, "")),
        node_name=str(annotations.get(_NODE_NAME_ANNOTATION, "")),
        stop=stop,
    )


@dataclass(slots=True)
class _Open:
    """A record the writer follows.

    Its key at first sight, whether it was admitted, and its pods (to read a stop from them).
    """

    key: RecordKey
    admitted: bool
    pods: tuple[str, ...] = ()


_Stops = dict[str, tuple[str, str]]
"""Per workload name: the cause and message of the service's stop."""


class _AccountingMetrics:
    def __init__(self, registry: CollectorRegistry | None) -> None:
        self.failures = Counter(
            "aistack_accounting_write_failures",
            "Reads or writes of the accounting store that failed (retried with back-off).",
            registry=registry,
        )
        self.written = Counter(
            "aistack_accounting_changes_written",
            "Accounting changes (submitted, admitted, ended) written to the store.",
            registry=registry,
        )
        self.dropped = Counter(
            "aistack_accounting_changes_dropped",
            "Accounting changes dropped because the store stayed unavailable too long.",
            registry=registry,
        )
        self.pending = Gauge(
            "aistack_accounting_pending_changes",
            "Accounting changes waiting to be written.",
            registry=registry,
        )
        self.last_write = Gauge(
            "aistack_accounting_last_write_timestamp_seconds",
            "When the accounting store last accepted a write.",
            registry=registry,
        )


class Accountant:
    """See the module docstring. `observe` and `pod_changed` are called by the driver's thread."""

    def __init__(
        self,
        store: AccountingStore,
        *,
        registry: CollectorRegistry | None = None,
        clock: Callable[[], float] = time.time,
        max_backlog: int = 64,
        max_pending: int = 200_000,
        heartbeat_seconds: float = 15.0,
        retry_min_seconds: float = 1.0,
        retry_max_seconds: float = 60.0,
    ) -> None:
        """Record into `store`; count in `registry` (none: counted nowhere).

        `max_backlog` statuses wait for the writer at most (older ones are folded into newer
        ones, keeping their evictions); `max_pending` changes wait for the store at most (the
        oldest are dropped, and counted). The store's heartbeat (`last_seen`) is written at
        least every `heartbeat_seconds`; failed reads and writes are retried after
        `retry_min_seconds`, then twice as long each time, at most `retry_max_seconds`.
        """
        self.store = store
        self._clock = clock
        self._metrics = _AccountingMetrics(registry)
        self._max_backlog = max_backlog
        self._max_pending = max_pending
        self._heartbeat_seconds = heartbeat_seconds
        self._retry_min_seconds = retry_min_seconds
        self._retry_max_seconds = retry_max_seconds
        self._pods: dict[tuple[str, str], _PodFacts] = {}
        self._inbox: collections.deque[tuple[ClusterStatus, _Stops]] = collections.deque()
        self._wake = threading.Condition()
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="accounting", daemon=True)
        # Owned by the writer thread:
        self._open: dict[str, _Open] = {}
        self._loaded = False
        self._resumed_at: float | None = None
        self._stops: _Stops = {}
        self._pending: collections.deque[Change] = collections.deque()
        self._seen_at: float | None = None
        self._heartbeat_at = 0.0

    def __repr__(self) -> str:
        return (
            f"<Accountant {self.store.where} open={len(self._open)} "
            f"pending={len(self._pending)} backlog={len(self._inbox)}>"
        )

    # -- the driver's side ------------------------------------------------------------------------

    def start(self) -> None:
        """Start the writer thread."""
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Write what is waiting (one try) and stop the writer."""
        with self._wake:
            self._stopping = True
            self._wake.notify()
        self._thread.join(timeout=timeout)

    def pod_changed(self, pod: Mapping[str, Any]) -> None:
        """A managed pod as the driver saw it: keep who it is accounted to and its Argo step."""
        metadata = pod.get("metadata") or {}
        self._pods[metadata.get("namespace", ""), metadata.get("name", "")] = _facts(pod)

    def pod_deleted(self, pod: Mapping[str, Any]) -> None:
        """A managed pod is gone: forget its facts (its record has them already)."""
        metadata = pod.get("metadata") or {}
        self._pods.pop((metadata.get("namespace", ""), metadata.get("name", "")), None)

    def observe(self, status: ClusterStatus, evictions: Iterable[PodEviction] = ()) -> None:
        """After a cycle: its status and the pods it decided to stop. Returns at once."""
        stops = {e.workload: (e.cause, e.message) for e in evictions}
        with self._wake:
            self._inbox.append((status, stops))
            while len(self._inbox) > self._max_backlog:
                # Fold the oldest status into the next: its evictions are kept, its states lost.
                _, older = self._inbox.popleft()
                newer_status, newer = self._inbox.popleft()
                self._inbox.appendleft((newer_status, {**older, **newer}))
            self._wake.notify()

    # -- the writer -------------------------------------------------------------------------------

    def _run(self) -> None:
        delay = 0.0
        while True:
            with self._wake:
                if delay:  # backing off: new statuses wait in the inbox meanwhile
                    deadline = time.monotonic() + delay
                    while not self._stopping and (left := deadline - time.monotonic()) > 0:
                        self._wake.wait(left)
                elif not self._stopping and not self._inbox:
                    self._wake.wait(timeout=self._heartbeat_seconds)
                stopping = self._stopping
                batch = list(self._inbox)
                self._inbox.clear()
            taken = 0
            for status, stops in batch:
                if not self._take(status, stops):
                    break
                taken += 1
            if taken < len(batch):
                with self._wake:  # the store could not be read: keep the rest for later
                    self._inbox.extendleft(reversed(batch[taken:]))
            written = self._flush()
            delay = 0.0 if written and taken == len(batch) else self._next_delay(delay)
            if stopping:
                return

    def _next_delay(self, delay: float) -> float:
        if not self._pending and not self._inbox:
            return 0.0
        return min(self._retry_max_seconds, max(self._retry_min_seconds, delay * 2))

    def _take(self, status: ClusterStatus, stops: _Stops) -> bool:
        """Diff one status into changes; False when the store must first be read and cannot."""
        if not status.leader:
            self._loaded = False  # another replica records; read the store again when we lead
            self._open.clear()
            self._stops.clear()
            self._seen_at = None  # the heartbeat is the leader's to write
            return True
        if not self._loaded and not self._load():
            return False
        self._stops.update(stops)
        self._queue(self.diff(status))
        self._seen_at = status.cycle_at
        return True

    def _load(self) -> bool:
        try:
            records = self.store.open_records()
            last_seen = self.store.last_seen()
        except AccountingUnavailable as error:
            self._failed("reading the open records", error)
            return False
        self._open = {
            f"{r.namespace}/{r.workload}": _Open(r.key, r.admitted_at is not None, (r.workload,))
            for r in records
        }
        self._resumed_at = last_seen
        self._loaded = True
        return True

    def _queue(self, changes: list[Change]) -> None:
        self._pending.extend(changes)
        overflow = len(self._pending) - self._max_pending
        if overflow > 0:
            for _ in range(overflow):
                self._pending.popleft()
            self._metrics.dropped.inc(overflow)
            _log.warning(
                "accounting store %s unavailable for long: %d changes dropped",
                self.store.where,
                overflow,
            )
        self._metrics.pending.set(len(self._pending))

    def _flush(self) -> bool:
        """Write the waiting changes (and the heartbeat when due); True if nothing is left."""
        now = self._clock()
        heartbeat_due = self._seen_at is not None and now - self._heartbeat_at >= (
            self._heartbeat_seconds
        )
        if not self._pending and not heartbeat_due:
            return True
        changes = list(self._pending)
        try:
            self.store.apply(changes, seen_at=self._seen_at)
        except AccountingUnavailable as error:
            self._failed("writing", error)
            return False
        for _ in changes:
            self._pending.popleft()
        self._heartbeat_at = now
        self._metrics.written.inc(len(changes))
        self._metrics.pending.set(len(self._pending))
        self._metrics.last_write.set(now)
        return True

    def _failed(self, what: str, error: Exception) -> None:
        self._metrics.failures.inc()
        _log.warning("accounting: %s failed, will retry: %s", what, error)

    # -- the diff ---------------------------------------------------------------------------------

    def diff(self, status: ClusterStatus) -> list[Change]:
        """The changes from the records followed so far to `status`; follows `status` after.

        Public for tests and benchmarks; the writer thread is its only caller in the service.
        """
        changes: list[Change] = []
        now = status.cycle_at
        seen: set[str] = set()
        placement = _Placement(status)
        for workload in status.snapshot.workloads:
            name = workload.name
            seen.add(name)
            followed = self._open.get(name)
            if followed is not None and followed.admitted and workload.allocation is None:
                # Admitted before, waiting now: the pods were replaced under the same name.
                changes.append(self._end(name, followed, now))
                followed = None
            if followed is None:
                followed = self._submit(status, workload, changes)
            if workload.allocation is not None and not followed.admitted:
                followed.admitted = True
                changes.append(placement.admitted(followed.key, workload, now))
        for name in [n for n in self._open if n not in seen]:
            at = now if self._resumed_at is None else min(self._resumed_at, now)
            changes.append(self._end(name, self._open[name], at))
        self._resumed_at = None
        return changes

    def _submit(self, status: ClusterStatus, workload: Workload, changes: list[Change]) -> _Open:
        pods = status.pods.get(workload.name)
        namespace, _, short = workload.name.partition("/")
        if pods is not None and pods.namespace:
            namespace = pods.namespace
            short = workload.name.removeprefix(f"{namespace}/")
        first = self._pods.get((namespace, pods.pods[0])) if pods and pods.pods else None
        step, attempt = step_and_attempt(first.node_name if first else "")
        key = RecordKey(namespace, short or workload.name, workload.submitted_at)
        request = workload.request
        per_pod = request.gpu_compute_percent / 100 if request.is_slice else float(request.gpus)
        changes.append(
            Submitted(
                key=key,
                queue=workload.queue,
                user=first.user if first else "",
                workflow=pods.workflow if pods else "",
                step=step,
                attempt=attempt,
                kind=workload.kind.value,
                pods=workload.pods,
                gpus=per_pod * workload.pods,
            )
        )
        followed = _Open(key, admitted=False, pods=tuple(pods.pods) if pods else ())
        self._open[workload.name] = followed
        return followed

    def _end(self, name: str, followed: _Open, at: float) -> Ended:
        del self._open[name]
        stop = self._stops.pop(name, None) or self._stop_on_pods(followed)
        if stop is not None:
            cause, message = stop
            return Ended(followed.key, at, EndReason.EVICTED, cause=cause, message=message)
        resumed = self._resumed_at is not None
        reason = EndReason.FINISHED if followed.admitted else EndReason.DELETED
        return Ended(followed.key, at, reason, message=_RESUMED_MESSAGE if resumed else "")

    def _stop_on_pods(self, followed: _Open) -> tuple[str, str] | None:
        """The stop the service wrote on a pod of the workload (after a restart, no intent)."""
        for pod in followed.pods:
            facts = self._pods.get((followed.key.namespace, pod))
            if facts is not None and facts.stop is not None:
                return facts.stop
        return None


class _Placement:
    """Where an admitted workload holds its GPUs: pool, model and charged GPUs, from a status."""

    def __init__(self, status: ClusterStatus) -> None:
        self._status = status
        self._nodes: dict[str, Any] | None = None

    def admitted(self, key: RecordKey, workload: Workload, now: float) -> Admitted:
        if self._nodes is None:
            self._nodes = {n.name: n for n in self._status.snapshot.nodes}
        allocation = workload.allocation or ()
        node = self._nodes.get(allocation[0].node) if allocation else None
        gpus_of = {g.uuid: g for g in node.gpus} if node is not None else {}
        request = workload.request
        if request.is_slice:
            milli = 0
            for pod in allocation:
                pod_node = self._nodes.get(pod.node)
                memory = {g.uuid: g.memory_mib for g in pod_node.gpus} if pod_node else {}
                milli += sum(request.milli_gpus(memory.get(g, 0)) for g in pod.gpus)
            gpus = milli / MILLI_GPU
        else:
            gpus = float(sum(len(pod.gpus) for pod in allocation))
        first_gpu = allocation[0].gpus[0] if allocation and allocation[0].gpus else ""
        model = gpus_of[first_gpu].model if first_gpu in gpus_of else ""
        started = workload.started_at if workload.started_at else now
        return Admitted(
            key, at=started, gpus=gpus, pool=node.pool if node is not None else "", gpu_model=model
        )
