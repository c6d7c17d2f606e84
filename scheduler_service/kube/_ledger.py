"""The cluster driver's bookkeeping: pods, nodes and queues in; scheduler reports and intents out.

No I/O here either. The driver feeds every watched object to a `Ledger` (and the objects its own
patches return); the ledger groups pods into workloads, derives each workload's state from the
pods themselves (the cluster is the source of truth), reports the changes to the incremental
`Scheduler`, and turns a cycle's plan into `Intents`: the patches, deletions and messages that
carry it out. Because the state is derived from the pods, a restarted service rebuilds exactly
what was placed, and never places anything twice.

A workload is one pod, or a gang: the pods of a namespace sharing the gang label. Its state:
- pending: every live pod still carries the scheduling gate and no allocation;
- running: its allocation is recorded on its pods (`alloc.aistack.io/*`); a gang whose release was
  cut short is finished from the record on any released pod ("roll forward");
- evicting: the service decided to evict it, or one of its pods is being deleted;
- gone: none of its pods is alive (all deleted, succeeded or failed).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from scheduler_service import pod_contract as keys
from scheduler_service.api import ClusterStatus, WorkloadPods
from scheduler_service.core import (
    GPU,
    Allocation,
    Eviction,
    Node,
    Plan,
    PodAllocation,
    Policy,
    Queue,
    QueueShare,
    Scheduler,
    SchedulerError,
    Workload,
    WorkloadState,
)
from scheduler_service.kube._translate import (
    NodeError,
    PodRequest,
    PodRequestError,
    QueueError,
    allocation_annotations,
    node_from_k8s,
    parse_pod_request,
    pod_allocation,
    queue_from_k8s,
    runtime_gpu_ids,
)

__all__ = [
    "Intents",
    "Ledger",
    "PodEviction",
    "PodMessage",
    "PodRelease",
    "QueueStatusUpdate",
    "format_time",
    "parse_time",
]

_log = logging.getLogger(__name__)

JsonObject = Mapping[str, Any]
_TERMINAL = frozenset({"Succeeded", "Failed"})


def parse_time(text: str | None) -> float | None:
    """RFC 3339 (as Kubernetes writes it) to Unix seconds; None stays None."""
    if not text:
        return None
    return datetime.fromisoformat(text).timestamp()


def format_time(seconds: float) -> str:
    """Unix seconds to RFC 3339 in UTC, as Kubernetes writes it."""
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# -- what the driver must do ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PodRelease:
    """Record the allocation on a pod, pin it to its node and remove the gate, in one patch."""

    namespace: str
    name: str
    uid: str
    resource_version: str
    annotations: Mapping[str, str]
    hostname: str
    remaining_gates: tuple[str, ...]
    workload: str
    queue: str


@dataclass(frozen=True, slots=True)
class PodEviction:
    """Evict a pod: say why on its DisruptionTarget condition, then delete it."""

    namespace: str
    name: str
    uid: str
    message: str
    workload: str
    queue: str
    cause: str
    owner: Mapping[str, str] | None = None
    """The pod's controlling owner (e.g. its Argo Workflow) as an object reference, if any:
    the eviction is reported there too, where the workflow's users look."""


@dataclass(frozen=True, slots=True)
class PodMessage:
    """Tell a waiting pod why it waits (PodScheduled=False, reason Unschedulable: the Argo UI)."""

    namespace: str
    name: str
    message: str
    uid: str = ""


@dataclass(frozen=True, slots=True)
class QueueStatusUpdate:
    """A Queue object's new status (only sent when it changed)."""

    name: str
    status: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class Intents:
    """Everything one cycle asks the driver to do, most urgent first."""

    evictions: tuple[PodEviction, ...] = ()
    releases: tuple[PodRelease, ...] = ()
    messages: tuple[PodMessage, ...] = ()
    queue_statuses: tuple[QueueStatusUpdate, ...] = ()


# -- pods as the ledger sees them -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Pod:
    uid: str
    namespace: str
    name: str
    resource_version: str
    created_at: float
    phase: str
    deleting: bool
    gated: bool
    other_gates: tuple[str, ...]
    request: PodRequest | None
    error: str
    allocation: PodAllocation | None
    admitted_at: float | None
    gang_record: Mapping[str, tuple[str, str]] | None
    message: str
    owner: Mapping[str, str] | None

    @property
    def live(self) -> bool:
        return self.phase not in _TERMINAL


def _pod_facts(pod: JsonObject) -> _Pod:
    metadata: JsonObject = pod["metadata"]
    spec: JsonObject = pod.get("spec") or {}
    status: JsonObject = pod.get("status") or {}
    annotations: Mapping[str, str] = metadata.get("annotations") or {}
    gates = tuple(g["name"] for g in spec.get("schedulingGates") or ())
    request: PodRequest | None = None
    error = ""
    try:
        request = parse_pod_request(pod)
    except PodRequestError as problem:
        error = str(problem)
    allocation = pod_allocation(pod, request.request) if request is not None else None
    if request is not None and allocation is not None:
        # The hostname selector is the service's own addition at release, not the user's wish.
        selector = tuple(kv for kv in request.node_selector if kv[0] != "kubernetes.io/hostname")
        request = replace(request, node_selector=selector)
    record = None
    if keys.GANG_ALLOCATION_ANNOTATION in annotations:
        try:
            raw = json.loads(annotations[keys.GANG_ALLOCATION_ANNOTATION])
            record = {str(k): (str(v["node"]), str(v["gpus"])) for k, v in raw.items()}
        except (ValueError, TypeError, KeyError, AttributeError):
            error = error or f"annotation {keys.GANG_ALLOCATION_ANNOTATION} is corrupt"
    message = ""
    for condition in status.get("conditions") or ():
        if condition.get("type") == "PodScheduled" and condition.get("reason") == "Unschedulable":
            message = condition.get("message") or ""
    return _Pod(
        uid=metadata["uid"],
        namespace=metadata["namespace"],
        name=metadata["name"],
        resource_version=metadata.get("resourceVersion", ""),
        created_at=parse_time(metadata.get("creationTimestamp")) or 0.0,
        phase=status.get("phase", "Pending"),
        deleting=metadata.get("deletionTimestamp") is not None,
        gated=keys.SCHEDULING_GATE in gates,
        other_gates=tuple(g for g in gates if g != keys.SCHEDULING_GATE),
        request=request,
        error=error,
        allocation=allocation,
        admitted_at=parse_time(annotations.get(keys.ADMITTED_AT_ANNOTATION)),
        gang_record=record,
        message=message,
        owner=_controller(metadata),
    )


def _controller(metadata: JsonObject) -> Mapping[str, str] | None:
    for reference in metadata.get("ownerReferences") or ():
        if reference.get("controller"):
            return {
                "apiVersion": reference.get("apiVersion", ""),
                "kind": reference.get("kind", ""),
                "name": reference.get("name", ""),
                "uid": reference.get("uid", ""),
                "namespace": metadata.get("namespace", ""),
            }
    return None


def _workload_key(pod: _Pod) -> str:
    gang = pod.request.gang if pod.request is not None else None
    return f"{pod.namespace}/{gang}" if gang else f"{pod.namespace}/{pod.name}"


@dataclass(slots=True)
class _Derived:
    """One workload as its pods say it is."""

    workload: Workload | None = None
    members: tuple[_Pod, ...] = ()
    problem: str = ""
    roll_forward: tuple[PodRelease, ...] = ()


# -- the ledger -----------------------------------------------------------------------------------


@dataclass(slots=True)
class _Counts:
    pending: int = 0
    running: int = 0


class Ledger:
    """See the module docstring. Not thread-safe: one driver thread owns it."""

    def __init__(
        self, *, pool_label: str, policy: Policy, message_prefix: str = "aistack: "
    ) -> None:
        self._pool_label = pool_label
        self._prefix = message_prefix
        self._scheduler = Scheduler((), (), policy)
        self._pods: dict[str, _Pod] = {}
        self._members: dict[str, set[str]] = {}
        self._derived: dict[str, _Derived] = {}
        self._reported: dict[str, Workload] = {}
        self._evicting: dict[str, PodEviction] = {}
        self._attention: set[str] = set()
        self._dirty: set[str] = set()
        self._nodes: dict[str, Node] = {}
        self._known_nodes: dict[str, Node] = {}
        self.node_errors: dict[str, str] = {}
        self._nodes_dirty = False
        self._stand_ins: set[str] = set()
        self._queues: dict[str, Queue] = {}
        self.queue_errors: dict[str, str] = {}
        self._queues_dirty = False
        self._queue_status: dict[str, Mapping[str, Any]] = {}
        self._plan = Plan()

    # -- watched objects --------------------------------------------------------------------------

    def pod_changed(self, pod: JsonObject) -> None:
        """A managed pod was added or modified (or a patch returned it)."""
        facts = _pod_facts(pod)
        old = self._pods.get(facts.uid)
        if old is not None and _newer(old.resource_version, facts.resource_version):
            return  # a stale copy (a watch event older than a patch response we already have)
        if old is not None:
            old_key = _workload_key(old)
            new_key = _workload_key(facts)
            if old_key != new_key:
                self._members[old_key].discard(facts.uid)
                self._dirty.add(old_key)
        self._pods[facts.uid] = facts
        key = _workload_key(facts)
        self._members.setdefault(key, set()).add(facts.uid)
        self._dirty.add(key)

    def released(self, release: PodRelease, resource_version: str) -> None:
        """The API server accepted `release`: the pod holds its allocation from now on.

        Cheaper than parsing the patched pod: the next cycle must not admit it again, and its
        watch event (with the new resourceVersion) follows anyway.
        """
        old = self._pods.get(release.uid)
        if old is None:
            return
        annotations = release.annotations
        record = None
        if keys.GANG_ALLOCATION_ANNOTATION in annotations:
            raw = json.loads(annotations[keys.GANG_ALLOCATION_ANNOTATION])
            record = {str(k): (str(v["node"]), str(v["gpus"])) for k, v in raw.items()}
        metadata = {"annotations": dict(annotations)}
        request = old.request.request if old.request is not None else None
        self._pods[release.uid] = replace(
            old,
            resource_version=resource_version,
            gated=False,
            other_gates=release.remaining_gates,
            allocation=pod_allocation({"metadata": metadata}, request) if request else None,
            admitted_at=parse_time(annotations.get(keys.ADMITTED_AT_ANNOTATION)),
            gang_record=record,
        )
        self._dirty.add(release.workload)

    def told(self, message: PodMessage, resource_version: str) -> None:
        """The API server accepted `message`: do not send it again."""
        old = self._pods.get(message.uid)
        if old is not None:
            self._pods[message.uid] = replace(
                old, message=message.message, resource_version=resource_version
            )

    def pod_deleted(self, pod: JsonObject) -> None:
        """A managed pod is gone from the API server."""
        uid = pod["metadata"]["uid"]
        old = self._pods.pop(uid, None)
        if old is None:
            return
        key = _workload_key(old)
        self._members[key].discard(uid)
        self._dirty.add(key)

    def node_changed(self, node: JsonObject) -> None:
        """A node was added or modified."""
        name = node["metadata"]["name"]
        try:
            parsed = node_from_k8s(node, pool_label=self._pool_label)
        except NodeError as error:
            self.node_errors[name] = str(error)
            parsed = None
        else:
            self.node_errors.pop(name, None)
        if parsed is None:
            if self._nodes.pop(name, None) is not None:
                self._nodes_dirty = True
            return
        if self._nodes.get(name) != parsed:
            self._nodes[name] = parsed
            self._known_nodes[name] = parsed
            self._nodes_dirty = True

    def node_deleted(self, node: JsonObject) -> None:
        """A node is gone; its workloads stay placed (on a not-ready node) until their pods go."""
        name = node["metadata"]["name"]
        self.node_errors.pop(name, None)
        if self._nodes.pop(name, None) is not None:
            self._nodes_dirty = True

    def queue_changed(self, obj: JsonObject) -> None:
        """A Queue object was added or modified."""
        name = obj["metadata"]["name"]
        try:
            queue = queue_from_k8s(obj)
        except QueueError as error:
            self.queue_errors[name] = str(error)
            queue = None
        else:
            self.queue_errors.pop(name, None)
        if queue is None:
            self._queues.pop(name, None)
        elif self._queues.get(name) == queue:
            return
        else:
            self._queues[name] = queue
        self._queues_dirty = True

    def queue_deleted(self, obj: JsonObject) -> None:
        """A Queue object is gone."""
        name = obj["metadata"]["name"]
        self.queue_errors.pop(name, None)
        self._queue_status.pop(name, None)
        if self._queues.pop(name, None) is not None:
            self._queues_dirty = True

    # -- views for the webhooks and the API -------------------------------------------------------

    def queues(self) -> Mapping[str, Queue]:
        """The valid queues by name."""
        return dict(self._queues)

    def workloads_in(self, queue: str) -> int:
        """How many workloads (pending or placed) a queue holds."""
        return sum(1 for w in self._reported.values() if w.queue == queue)

    def workload_pods(self, name: str) -> WorkloadPods | None:
        """The pods of a workload, or None if there is no such workload."""
        derived = self._derived.get(name)
        if derived is None or not derived.members:
            return None
        return WorkloadPods(
            namespace=derived.members[0].namespace, pods=tuple(p.name for p in derived.members)
        )

    # -- the cycle --------------------------------------------------------------------------------

    def sync(self) -> None:
        """Report everything that changed since the last sync to the scheduler."""
        for key in sorted(self._dirty):
            derived = self._derive(key)
            self._derived[key] = derived
            if derived.problem or derived.roll_forward:
                self._attention.add(key)
            else:
                self._attention.discard(key)
        if self._queues_dirty:
            self._sync_queues()
        self._sync_nodes()
        for key in sorted(self._dirty):
            self._report(key, self._derived[key].workload)
            if not self._members.get(key):
                self._members.pop(key, None)
                self._derived.pop(key, None)
                self._evicting.pop(key, None)
                self._attention.discard(key)
        self._dirty.clear()
        if self._stand_ins:
            self._sync_nodes()  # workloads that just finished may have freed a stand-in

    def cycle(self, now: float) -> Intents:
        """Sync, run one scheduling cycle, and say what to do about it."""
        self.sync()
        plan = self._scheduler.cycle(now)
        self._plan = plan
        admitted_at = format_time(now)
        releases: list[PodRelease] = []
        for admission in plan.admissions:
            releases += self._releases(admission.workload, admission.allocation, admitted_at)
        for key in sorted(self._attention):
            releases += self._derived[key].roll_forward
        evictions = [pod for e in plan.evictions for pod in self._evictions(e)]
        evictions += self._unfinished_evictions({e.workload for e in plan.evictions})
        return Intents(
            evictions=tuple(evictions),
            releases=tuple(releases),
            messages=tuple(self._messages(plan)),
            queue_statuses=tuple(self._queue_statuses(plan.shares)),
        )

    def observe(self, now: float) -> None:
        """Sync and run a cycle only to explain (a follower replica): nothing is to be done."""
        self.sync()
        self._plan = self._scheduler.cycle(now)

    def status(self, *, cycle_at: float, leader: bool) -> ClusterStatus:
        """The state after the last cycle, for the API."""
        pods = {}
        for name in self._reported:
            found = self.workload_pods(name)
            if found is not None:
                pods[name] = found
        return ClusterStatus(
            snapshot=self._scheduler.snapshot(),
            plan=self._plan,
            pods=pods,
            cycle_at=cycle_at,
            leader=leader,
        )

    # -- deriving workloads from pods -------------------------------------------------------------

    def _derive(self, key: str) -> _Derived:
        members = tuple(
            sorted((self._pods[uid] for uid in self._members.get(key, ())), key=lambda p: p.name)
        )
        live = tuple(p for p in members if p.live)
        if not live:
            return _Derived(members=members)
        broken = next((p.error for p in live if p.request is None), "")
        if broken:
            return _Derived(members=live, problem=broken)
        first = live[0].request
        assert first is not None
        if any(p.request != first for p in live[1:]):
            return _Derived(
                members=live,
                problem=f"the pods of gang {first.gang} ask for different things "
                "(queue, resources, kind, priority or placement); give them one spec",
            )
        placed = [p for p in live if p.allocation is not None]
        if placed:
            return self._derive_placed(key, first, live, placed)
        waiting = tuple(p for p in live if not p.deleting)
        if not waiting:
            return _Derived(members=live)
        if len(waiting) != first.gang_size:
            verb = (
                "waiting for the rest of" if len(waiting) < first.gang_size else "too many pods in"
            )
            return _Derived(
                members=waiting,
                problem=f"{verb} gang {first.gang}: {len(waiting)} of {first.gang_size} pods exist",
            )
        return _Derived(
            workload=_workload(key, first, submitted_at=max(p.created_at for p in waiting)),
            members=waiting,
        )

    def _derive_placed(
        self, key: str, request: PodRequest, live: tuple[_Pod, ...], placed: list[_Pod]
    ) -> _Derived:
        record = next((p.gang_record for p in placed if p.gang_record is not None), None)
        if record is None:
            # A single pod (or a gang member from before records): its own allocation is the record.
            names = tuple(p.name for p in placed)
            allocation: Allocation = tuple(p.allocation for p in placed if p.allocation is not None)
        else:
            names = tuple(sorted(record))
            allocation = tuple(_record_allocation(record[n], request) for n in names)
        if len(allocation) != request.gang_size:
            return _Derived(
                members=live,
                problem=f"gang {request.gang}: {len(allocation)} pods placed, "
                f"{request.gang_size} expected; delete the gang's pods to start it again",
            )
        admitted = [p.admitted_at for p in placed if p.admitted_at is not None]
        state = (
            WorkloadState.EVICTING
            if key in self._evicting or any(p.deleting for p in live)
            else WorkloadState.RUNNING
        )
        workload = replace(
            _workload(key, request, submitted_at=min(p.created_at for p in live)),
            state=state,
            allocation=allocation,
            started_at=min(admitted) if admitted else 0.0,
        )
        roll_forward: tuple[PodRelease, ...] = ()
        if record is not None and state is WorkloadState.RUNNING:
            stamp = format_time(workload.started_at or 0.0)
            by_name = dict(zip(names, allocation, strict=True))
            roll_forward = tuple(
                self._release(p, by_name[p.name], record, stamp, key)
                for p in live
                if p.gated and p.allocation is None and p.name in by_name
            )
        members = tuple(p for p in live if record is None or p.name in record)
        return _Derived(workload=workload, members=members, roll_forward=roll_forward)

    # -- reporting to the scheduler ---------------------------------------------------------------

    def _report(self, name: str, new: Workload | None) -> None:
        old = self._reported.get(name)
        if old == new:
            return
        try:
            self._transition(name, old, new)
        except SchedulerError as error:
            # The pods say something the scheduler cannot hold (e.g. GPUs that are not on the
            # node any more): forget the workload and say so, rather than stop scheduling.
            _log.error("workload %s: %s", name, error)
            self._forget(name)
            self._derived[name].problem = f"cannot be tracked: {error}"
            return
        if new is None:
            self._reported.pop(name, None)
        else:
            self._reported[name] = new

    def _transition(self, name: str, old: Workload | None, new: Workload | None) -> None:
        scheduler = self._scheduler
        if new is None:
            scheduler.finished(name)
            return
        pending = _as_pending(new)
        if old is not None and old.state is not WorkloadState.PENDING:
            if new.state is WorkloadState.EVICTING and _as_running(old) == _as_running(new):
                scheduler.evicting(name)
                return
            scheduler.requeued(name)
            old = _as_pending(old)
        if old is not None and old != pending:
            scheduler.finished(name)
            old = None
        if old is None:
            scheduler.submit(pending)
        if new.allocation is not None:
            scheduler.started(name, new.allocation, new.started_at or 0.0)
            if new.state is WorkloadState.EVICTING:
                scheduler.evicting(name)

    def _forget(self, name: str) -> None:
        if name in self._reported:
            self._scheduler.finished(name)
            del self._reported[name]

    def _sync_queues(self) -> None:
        try:
            self._scheduler.set_queues(self._queues.values())
        except SchedulerError as error:
            # The tree is incomplete (a parent not seen yet): keep the last good one.
            _log.warning("queue tree not applied: %s", error)
            return
        self._queues_dirty = False

    def _sync_nodes(self) -> None:
        """Give the scheduler the live nodes, plus not-ready stand-ins for vanished nodes.

        A stand-in remains while placed workloads still occupy it, and goes with their pods.
        """
        if not self._nodes_dirty and not self._stand_ins:
            return
        wanted = dict(self._nodes)
        occupied = [w for w in self._reported.values() if w.allocation is not None] + [
            d.workload
            for d in self._derived.values()
            if d.workload is not None and d.workload.allocation is not None
        ]
        for workload in occupied:
            for pod in workload.allocation or ():
                if pod.node not in wanted:
                    wanted[pod.node] = self._stand_in(pod.node, workload.allocation or ())
        self._stand_ins = set(wanted) - set(self._nodes)
        current = {n.name: n for n in self._scheduler.snapshot().nodes}
        if wanted != current:
            self._scheduler.set_nodes(sorted(wanted.values(), key=lambda n: n.name))
        self._nodes_dirty = False

    def _stand_in(self, name: str, allocation: Allocation) -> Node:
        known = self._known_nodes.get(name)
        if known is not None:
            return replace(known, ready=False)
        uuids = sorted({u for pod in allocation if pod.node == name for u in pod.gpus})
        gpus = tuple(
            GPU(index=i, uuid=u, model="unknown", memory_mib=1) for i, u in enumerate(uuids)
        )
        return Node(name=name, pool="unknown", gpus=gpus, ready=False)

    # -- from a plan to intents -------------------------------------------------------------------

    def _releases(self, name: str, allocation: Allocation, admitted_at: str) -> list[PodRelease]:
        derived = self._derived[name]
        pods = derived.members
        record = None
        if len(pods) > 1 or (pods and pods[0].request and pods[0].request.gang):
            record = {
                p.name: (a.node, runtime_gpu_ids(a.gpus))
                for p, a in zip(pods, allocation, strict=True)
            }
        return [
            self._release(pod, pod_allocation_, record, admitted_at, name)
            for pod, pod_allocation_ in zip(pods, allocation, strict=True)
        ]

    def _release(
        self,
        pod: _Pod,
        allocation: PodAllocation,
        record: Mapping[str, tuple[str, str]] | None,
        admitted_at: str,
        workload: str,
    ) -> PodRelease:
        annotations = allocation_annotations(allocation, admitted_at)
        if record is not None:
            annotations[keys.GANG_ALLOCATION_ANNOTATION] = json.dumps(
                {n: {"node": node, "gpus": gpus} for n, (node, gpus) in sorted(record.items())},
                separators=(",", ":"),
            )
        node = self._nodes.get(allocation.node)
        labels = dict(node.labels) if node is not None else {}
        hostname = labels.get("kubernetes.io/hostname", allocation.node)
        return PodRelease(
            namespace=pod.namespace,
            name=pod.name,
            uid=pod.uid,
            resource_version=pod.resource_version,
            annotations=annotations,
            hostname=hostname,
            remaining_gates=pod.other_gates,
            workload=workload,
            queue=pod.request.queue if pod.request is not None else "",
        )

    def _evictions(self, eviction: Eviction) -> list[PodEviction]:
        derived = self._derived[eviction.workload]
        template = PodEviction(
            namespace="",
            name="",
            uid="",
            message=f"{self._prefix}{eviction.cause.value.lower()} for {eviction.beneficiary}: "
            f"{eviction.message}",
            workload=eviction.workload,
            queue=self._reported[eviction.workload].queue,
            cause=eviction.cause.value,
        )
        self._evicting[eviction.workload] = template
        self._dirty.add(eviction.workload)
        return _pod_evictions(template, derived.members)

    def _unfinished_evictions(self, new: set[str]) -> list[PodEviction]:
        """Evictions decided earlier whose pods are not all being deleted yet: ask again."""
        return [
            pod
            for key, template in sorted(self._evicting.items())
            if key not in new
            for pod in _pod_evictions(template, self._derived[key].members)
        ]

    def _messages(self, plan: Plan) -> Iterable[PodMessage]:
        for entry in plan.pending:
            text = self._prefix + entry.reason.message
            for pod in self._derived[entry.workload].members:
                if pod.message != text:
                    yield PodMessage(pod.namespace, pod.name, text, pod.uid)
        for key in sorted(self._attention):
            derived = self._derived[key]
            if derived.problem and derived.workload is None:
                text = self._prefix + derived.problem
                for pod in derived.members:
                    if pod.gated and pod.message != text:
                        yield PodMessage(pod.namespace, pod.name, text, pod.uid)

    def _queue_statuses(self, shares: Iterable[QueueShare]) -> Iterable[QueueStatusUpdate]:
        pools: dict[str, list[QueueShare]] = {}
        for share in shares:
            pools.setdefault(share.queue, []).append(share)
        counts: dict[str, _Counts] = {}
        for workload in self._reported.values():
            count = counts.setdefault(workload.queue, _Counts())
            if workload.state is WorkloadState.PENDING:
                count.pending += 1
            else:
                count.running += 1
        for name in self._queues:
            status = _queue_status(pools.get(name, []), counts.get(name, _Counts()))
            if self._queue_status.get(name) != status:
                self._queue_status[name] = status
                yield QueueStatusUpdate(name, status)


def _pod_evictions(template: PodEviction, members: Iterable[_Pod]) -> list[PodEviction]:
    return [
        replace(template, namespace=p.namespace, name=p.name, uid=p.uid, owner=p.owner)
        for p in members
        if not p.deleting and p.live
    ]


def _gpus(milli: int) -> float:
    return milli / 1000


def _queue_status(shares: list[QueueShare], count: _Counts) -> dict[str, Any]:
    limits = [s.limit_milli for s in shares]
    status: dict[str, Any] = {
        "quota": _gpus(sum(s.quota_milli for s in shares)),
        "fairShare": _gpus(sum(s.fair_share_milli for s in shares)),
        "allocated": _gpus(sum(s.allocated_milli for s in shares)),
        "pending": count.pending,
        "running": count.running,
        "pools": [
            {
                "pool": s.pool,
                "quota": _gpus(s.quota_milli),
                **({} if s.limit_milli is None else {"limit": _gpus(s.limit_milli)}),
                "fairShare": _gpus(s.fair_share_milli),
                "allocated": _gpus(s.allocated_milli),
                "demand": _gpus(s.demand_milli),
            }
            for s in sorted(shares, key=lambda s: s.pool)
        ],
    }
    if limits and all(limit is not None for limit in limits):
        status["limit"] = _gpus(sum(limit for limit in limits if limit is not None))
    return status


def _workload(name: str, request: PodRequest, *, submitted_at: float) -> Workload:
    return Workload(
        name=name,
        queue=request.queue,
        kind=request.kind,
        request=request.request,
        pods=request.gang_size,
        priority=request.priority,
        submitted_at=submitted_at,
        pools=request.pools,
        models=request.models,
        topology=request.topology,
        node_selector=request.node_selector,
        tolerations=request.tolerations,
        preemptible=request.preemptible,
    )


def _as_pending(workload: Workload) -> Workload:
    return replace(workload, state=WorkloadState.PENDING, allocation=None, started_at=None)


def _as_running(workload: Workload) -> Workload:
    return replace(workload, state=WorkloadState.RUNNING)


def _record_allocation(entry: tuple[str, str], request: PodRequest) -> PodAllocation:
    node, gpus = entry
    annotations = {keys.NODE_ANNOTATION: node, keys.GPUS_ANNOTATION: gpus}
    allocation = pod_allocation({"metadata": {"annotations": annotations}}, request.request)
    assert allocation is not None
    return allocation


def _newer(current: str, incoming: str) -> bool:
    """Whether `current` is newer than `incoming`, two resourceVersions of one object.

    resourceVersions are opaque, but etcd-backed servers give increasing integers; anything
    else is treated as not comparable (the incoming copy wins).
    """
    if current.isdigit() and incoming.isdigit():
        return int(current) > int(incoming)
    return False
