"""The cluster driver's bookkeeping: pods, nodes and queues in; scheduler reports and intents out.

No I/O here either. The driver feeds every watched object to a `PodLedger` (and the objects its
own patches return); the ledger groups pods into workloads, derives each workload's state from
the pods themselves (the cluster is the source of truth), reports the changes to the incremental
`Scheduler`, and turns a cycle's plan into `Intents`: the patches, stops and messages that carry
it out. Because the state is derived from the pods, a restarted service rebuilds exactly what was
placed, and never places anything twice.

A workload is one pod, or a gang: the pods of a namespace sharing the gang label. Its state:
- pending: every live pod still carries the scheduling gate and no allocation;
- running: its allocation is recorded on its pods (`alloc.aistack.io/*`); a gang whose release was
  cut short is finished from the record on any released pod ("roll forward");
- evicting: the service is stopping it (one of its pods carries the service's DisruptionTarget
  condition, or it was just decided), or one of its pods is being deleted;
- gone: none of its pods holds GPUs any more.

The service stops a pod by marking it Failed (`PodEviction`), never by deleting it: Argo shows
the Failed pod's message as the step's and retries it under its retry policy, and the kubelet
stops the containers with the pod's own grace period. Until they have stopped (or
`eviction_grace_seconds` after the mark, if the kubelet never says so) the pod still holds its
GPUs. A pod is stopped when the core evicts its workload (reclaim, preemption), when its placed
gang lost a member, when its gang stays incomplete for `gang_assembly_timeout_seconds`, and when
its `activeDeadlineSeconds` pass while it waits. Every rule reads the pods and the time only (one
exception, said at `pod_deleted`), so a restarted service decides the same; a pod already stopped
is never stopped again.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Iterator, Mapping
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
    ordinal,
    pending_order,
    queue_place,
    waiting_summary,
)
from scheduler_service.gpu_sharing import GpuSharing
from scheduler_service.translate import (
    NodeError,
    PodRequest,
    PodRequestError,
    QueueError,
    allocation_annotations,
    allocation_signature,
    held_gpus,
    node_from_k8s,
    parse_pod_request,
    pod_allocation,
    queue_from_k8s,
    queue_namespaces,
    runtime_gpu_ids,
    signed_by,
    some_names,
)

__all__ = [
    "DEADLINE_EXCEEDED",
    "FORGED_ALLOCATION",
    "GANG_FULL",
    "GANG_INCOMPLETE",
    "GANG_MEMBER_LOST",
    "GATE_REMOVED",
    "Intents",
    "PodEviction",
    "PodLedger",
    "PodMessage",
    "PodRelease",
    "QueueStatusUpdate",
    "format_time",
    "parse_time",
    "stop_patch",
]

_log = logging.getLogger(__name__)

JsonObject = Mapping[str, Any]
_TERMINAL = frozenset({"Succeeded", "Failed"})

GANG_MEMBER_LOST = "GangMemberLost"
"""Why the other pods of a placed gang are stopped when one of them failed or was deleted."""
GANG_INCOMPLETE = "GangIncomplete"
"""Why the pods of a gang that stayed incomplete too long are stopped."""
DEADLINE_EXCEEDED = "DeadlineExceeded"
"""Why a waiting pod whose activeDeadlineSeconds passed is stopped (the kubelet's own word)."""
FORGED_ALLOCATION = "ForgedAllocation"
"""Why a pod whose allocation annotations the scheduler did not sign is stopped."""
GANG_FULL = "GangFull"
"""Why a pod that joins a gang already placed with all its pods is stopped."""
GATE_REMOVED = "GateRemoved"
"""Why a managed pod that lost its scheduling gate without being admitted is stopped: it could
run on GPUs the scheduler counts as free (the chart's pod policy refuses that edit; this holds
where the policy is missing)."""

_ARGO_WORKFLOW_LABEL = "workflows.argoproj.io/workflow"
"""The label Argo puts on every pod of a workflow, naming it."""

_GangRecord = Mapping[str, tuple[str, str]]
"""A placed gang's record: per pod name, its node and its GPUs as the runtime names them."""


def _gang_record_text(record: _GangRecord) -> str:
    """`record` as the gang annotation holds it: compact JSON {pod: {node, gpus}}, pods sorted."""
    return json.dumps(
        {name: {"node": node, "gpus": gpus} for name, (node, gpus) in sorted(record.items())},
        separators=(",", ":"),
    )


def _gang_record_in(annotations: Mapping[str, str]) -> _GangRecord | None:
    """The gang record among a pod's `annotations` (`_gang_record_text`), None if there is none.

    Raises ValueError if the annotation is there but is not such a record.
    """
    text = annotations.get(keys.GANG_ALLOCATION_ANNOTATION)
    if text is None:
        return None
    try:
        raw = json.loads(text)
        return {str(k): (str(v["node"]), str(v["gpus"])) for k, v in raw.items()}
    except (ValueError, TypeError, KeyError, AttributeError) as problem:
        raise ValueError(f"annotation {keys.GANG_ALLOCATION_ANNOTATION} is corrupt") from problem


_EXACT_PLACES = 10
"""A waiting pod's message gives its exact place in its queue up to here, a range after it."""

_MESSAGE_LIMIT = 400
"""The longest message written on a pod (one line of the Argo UI; long names are cut)."""


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
    gang_dns: bool = False
    """The pod wants a DNS name under `pod_contract.GANG_SUBDOMAIN`: the headless Service must
    exist in its namespace before it starts."""


@dataclass(frozen=True, slots=True)
class PodEviction:
    """Stop a pod: mark it Failed, saying why (`cause` as its status reason, `message`).

    The message is also on a DisruptionTarget condition, reason `pod_contract.EVICTION_REASON`.
    `cause` is `Reclaimed` or `Preempted` (the core's eviction), `GangMemberLost`,
    `GangIncomplete` or `DeadlineExceeded`; the message starts with "aistack: ".
    """

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


def stop_patch(eviction: PodEviction, at: float) -> dict[str, Any]:
    """The pods/status strategic merge patch that stops a pod, as of `at` (Unix seconds).

    Phase Failed with the eviction's reason and message, which Argo shows as the step's, and a
    DisruptionTarget condition (merged by type) that marks the pod as stopped by the service
    and dates it. The uid makes the API server refuse the patch for a new pod of the same name.
    """
    condition = {
        "type": "DisruptionTarget",
        "status": "True",
        "reason": keys.EVICTION_REASON,
        "message": eviction.message,
        "lastTransitionTime": format_time(at),
    }
    return {
        "metadata": {"uid": eviction.uid},
        "status": {
            "phase": "Failed",
            "reason": eviction.cause,
            "message": eviction.message,
            "conditions": [condition],
        },
    }


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
    """Pods to stop: the core's evictions, broken or incomplete gangs, passed deadlines."""
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
    gang_record: _GangRecord | None
    message: str
    owner: Mapping[str, str] | None
    queue: str = ""
    """The queue label (also when the request cannot be read)."""
    disrupted_at: float | None = None
    """When the service decided to stop the pod: its DisruptionTarget condition's time."""
    may_run: bool = False
    """Bound to a node, and not every container has terminated (so it may still use GPUs)."""
    stop_reason: str = ""
    stop_message: str = ""
    """The pod's status reason and message (the service's own, on a pod it stopped)."""
    deadline: float | None = None
    """When its activeDeadlineSeconds pass, counted from its creation."""
    gang_dns: bool = False
    workflow: str = ""
    """The Argo Workflow that made the pod ("" for other pods)."""
    forged: bool = False
    """It carries an allocation the scheduler did not sign: not trusted, and stopped."""

    @property
    def live(self) -> bool:
        return self.phase not in _TERMINAL

    @property
    def stopped(self) -> bool:
        """The service marked it Failed (and not the kubelet or its own containers)."""
        return self.phase == "Failed" and self.disrupted_at is not None


def _pod_facts(pod: JsonObject, key: bytes | None = None) -> _Pod:
    metadata: JsonObject = pod["metadata"]
    spec: JsonObject = pod.get("spec") or {}
    status: JsonObject = pod.get("status") or {}
    annotations: Mapping[str, str] = metadata.get("annotations") or {}
    labels: Mapping[str, str] = metadata.get("labels") or {}
    gates = tuple(g["name"] for g in spec.get("schedulingGates") or ())
    request: PodRequest | None = None
    error = ""
    try:
        request = parse_pod_request(pod)
    except PodRequestError as problem:
        error = str(problem)
    allocation = pod_allocation(pod, request.request) if request is not None else None
    forged = False
    if key is not None and keys.NODE_ANNOTATION in annotations and not signed_by(key, pod):
        allocation, forged = None, True
    if request is not None and allocation is not None:
        # The hostname selector is the service's own addition at release, not the user's wish.
        selector = tuple(kv for kv in request.node_selector if kv[0] != "kubernetes.io/hostname")
        request = replace(request, node_selector=selector)
    record = None
    try:
        record = _gang_record_in(annotations)
    except ValueError:
        error = error or f"annotation {keys.GANG_ALLOCATION_ANNOTATION} is corrupt"
    message = ""
    disrupted_at = None
    for condition in status.get("conditions") or ():
        kind, reason = condition.get("type"), condition.get("reason")
        if kind == "PodScheduled" and reason == "Unschedulable":
            message = condition.get("message") or ""
        elif kind == "DisruptionTarget" and reason == keys.EVICTION_REASON:
            disrupted_at = parse_time(condition.get("lastTransitionTime")) or 0.0
    created_at = parse_time(metadata.get("creationTimestamp")) or 0.0
    active_deadline = spec.get("activeDeadlineSeconds")
    return _Pod(
        uid=metadata["uid"],
        namespace=metadata["namespace"],
        name=metadata["name"],
        resource_version=metadata.get("resourceVersion", ""),
        created_at=created_at,
        phase=status.get("phase", "Pending"),
        deleting=metadata.get("deletionTimestamp") is not None,
        gated=keys.SCHEDULING_GATE in gates,
        other_gates=tuple(g for g in gates if g != keys.SCHEDULING_GATE),
        request=request,
        error=error,
        allocation=allocation,
        admitted_at=parse_time(annotations.get(keys.ADMITTED_AT_ANNOTATION)),
        gang_record=None if forged else record,
        message=message,
        owner=_controller(metadata),
        queue=labels.get(keys.QUEUE_LABEL, ""),
        disrupted_at=disrupted_at,
        may_run=_may_run(spec, status),
        stop_reason=status.get("reason") or "",
        stop_message=status.get("message") or "",
        deadline=created_at + active_deadline
        if isinstance(active_deadline, int) and active_deadline > 0
        else None,
        gang_dns=labels.get(keys.GANG_DNS_LABEL) == "true",
        workflow=labels.get(_ARGO_WORKFLOW_LABEL, ""),
        forged=forged,
    )


def _may_run(spec: JsonObject, status: JsonObject) -> bool:
    """Whether a pod's containers may still be running on its node (and using its GPUs).

    A pod never bound ran nothing. A bound pod that reports no containers yet may be starting
    them; a running sidecar (restartable init container) counts like a container.
    """
    if not spec.get("nodeName"):
        return False
    containers = status.get("containerStatuses") or ()
    if not containers or any("terminated" not in (c.get("state") or {}) for c in containers):
        return True
    sidecars = status.get("initContainerStatuses") or ()
    return any("running" in (c.get("state") or {}) for c in sidecars)


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


@dataclass(frozen=True, slots=True)
class _Stop:
    """Why the service stops a workload's pods: the status reason (`cause`) and message."""

    cause: str
    message: str


@dataclass(slots=True)
class _Derived:
    """One workload as its pods say it is."""

    workload: Workload | None = None
    members: tuple[_Pod, ...] = ()
    problem: str = ""
    roll_forward: tuple[PodRelease, ...] = ()
    stop: _Stop | None = None
    to_stop: tuple[_Pod, ...] = ()
    """The pods still to be stopped for `stop` (live, not being deleted, not stopped yet)."""
    surplus: tuple[_Pod, ...] = ()
    """Pods of a placed gang beyond its size: they can never join it, and are stopped with
    `surplus_stop` while the gang runs on."""
    surplus_stop: _Stop | None = None


# -- the ledger -----------------------------------------------------------------------------------


@dataclass(slots=True)
class _Counts:
    pending: int = 0
    running: int = 0


class PodLedger:
    """See the module docstring. Not thread-safe: one driver thread owns it."""

    def __init__(
        self,
        *,
        pool_label: str,
        policy: Policy,
        eviction_grace_seconds: float = 30,
        gang_assembly_timeout_seconds: float = 600,
        gpu_sharing: GpuSharing | None = None,
        gpu_reservations: bool = False,
        signing_key: bytes | None = None,
    ) -> None:
        """A ledger with nothing seen yet; the settings are `ServiceSettings`' of the same name.

        With `gpu_reservations`, a released slice's device is left for `_reservations` to write.
        With `signing_key`, every allocation it writes is signed, and a pod whose allocation is
        not (a forgery, where the chart's pod policy is missing) is stopped, never counted.
        """
        self._pool_label = pool_label
        self._sharing = gpu_sharing or GpuSharing()
        self._reservations = gpu_reservations
        self._key = signing_key
        """Signs the allocations it writes; with it, an unsigned one is forged (None: off)."""
        self._grace = eviction_grace_seconds
        self._assembly_timeout = gang_assembly_timeout_seconds
        self._prefix = keys.EVICTION_MESSAGE_PREFIX
        self._scheduler = Scheduler((), (), policy)
        self._now = 0.0
        self._pods: dict[str, _Pod] = {}
        self._members: dict[str, set[str]] = {}
        self._derived: dict[str, _Derived] = {}
        self._reported: dict[str, Workload] = {}
        self._evicting: dict[str, _Stop] = {}
        self._vanished: dict[str, dict[str, str]] = {}
        self._wake: dict[str, float] = {}
        self._attention: set[str] = set()
        self._dirty: set[str] = set()
        self._queue_namespaces: dict[str, tuple[str, ...] | None] = {}
        self._unmanaged: dict[str, tuple[str, int]] = {}
        """Unmanaged pods bound to a node and holding GPUs: uid -> (node, GPUs)."""
        self._idle_reservations: dict[str, str] = {}
        """The service's reservation pods holding a device no slice needs: name -> node."""
        self.unmanaged_shortfall: dict[str, int] = {}
        """Nodes whose unmanaged pods (and idle reservations) hold more GPUs than the books had
        free, by how many."""
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
        facts = _pod_facts(pod, self._key)
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
        record = _gang_record_in(annotations)
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

    def message_written(self, message: PodMessage, resource_version: str) -> None:
        """The API server accepted `message`: do not send it again."""
        old = self._pods.get(message.uid)
        if old is not None:
            self._pods[message.uid] = replace(
                old, message=message.message, resource_version=resource_version
            )

    def pod_deleted(self, pod: JsonObject) -> None:
        """A managed pod is gone from the API server.

        A placed pod that had not succeeded and that the service had not stopped is remembered
        as its gang's lost member. This is the one fact a restarted service cannot read from
        the cluster: a member deleted while it was down cannot be told from one that succeeded
        and was garbage-collected (Argo's podGC), so it is not taken as lost.
        """
        uid = pod["metadata"]["uid"]
        old = self._pods.pop(uid, None)
        if old is None:
            return
        key = _workload_key(old)
        self._members[key].discard(uid)
        self._dirty.add(key)
        placed = old.allocation is not None or old.gang_record is not None
        if placed and old.phase != "Succeeded" and old.disrupted_at is None:
            how = "failed" if old.phase == "Failed" else "deleted"
            self._vanished.setdefault(key, {})[old.name] = how

    def hostnames(self) -> dict[str, str]:
        """Each known node's `kubernetes.io/hostname` label (its name where it has none)."""
        return {
            name: dict(node.labels).get("kubernetes.io/hostname", name)
            for name, node in self._nodes.items()
        }

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

    def unmanaged_pod_changed(self, pod: JsonObject) -> None:
        """A pod the scheduler does not manage, bound to a node: the GPUs it holds there.

        Its GPUs are taken out of what the scheduler may give on that node (see
        `_sync_nodes`), so that a GPU pod of an exempt namespace, or one created while the
        webhook was away, never shares a GPU with the scheduler's work.
        """
        metadata: JsonObject = pod.get("metadata") or {}
        uid = str(metadata.get("uid", ""))
        node = str((pod.get("spec") or {}).get("nodeName") or "")
        phase = (pod.get("status") or {}).get("phase")
        gpus = held_gpus(pod) if node and phase not in _TERMINAL else 0
        held = (node, gpus) if gpus else None
        if self._unmanaged.get(uid) != held:
            if held is None:
                self._unmanaged.pop(uid, None)
            else:
                self._unmanaged[uid] = held
            self._nodes_dirty = True

    def unmanaged_pod_deleted(self, pod: JsonObject) -> None:
        """An unmanaged pod is gone (or no longer bound and live): its GPUs are free again."""
        uid = str((pod.get("metadata") or {}).get("uid", ""))
        if self._unmanaged.pop(uid, None) is not None:
            self._nodes_dirty = True

    def idle_reservations_changed(self, idle: Mapping[str, str]) -> None:
        """The service's own reservation pods that hold a device no slice needs: name -> node.

        Each holds one GPU of its node until it goes (`Reservations.idle`), counted with the
        unmanaged pods' GPUs.
        """
        if idle != self._idle_reservations:
            self._idle_reservations = dict(idle)
            self._nodes_dirty = True

    def unmanaged_gpus(self) -> dict[str, int]:
        """GPUs held by unmanaged pods and by idle reservation pods, per node."""
        held: dict[str, int] = {}
        for node, gpus in self._unmanaged.values():
            held[node] = held.get(node, 0) + gpus
        for node in self._idle_reservations.values():
            held[node] = held.get(node, 0) + 1
        return held

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
            self._queue_namespaces[name] = queue_namespaces(obj)
        except QueueError as error:
            self.queue_errors[name] = str(error)
            self._queue_namespaces.pop(name, None)
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
        self._queue_namespaces.pop(name, None)
        self._queue_status.pop(name, None)
        if self._queues.pop(name, None) is not None:
            self._queues_dirty = True

    # -- views for the webhooks and the API -------------------------------------------------------

    def queues(self) -> Mapping[str, Queue]:
        """The valid queues by name."""
        return dict(self._queues)

    def allowed_namespaces(self, queue: str) -> tuple[str, ...] | None:
        """The namespaces whose pods may use `queue`, or None: every namespace may.

        Its own `spec.namespaces` within each of its ancestors'; None when neither it nor an
        ancestor names any.
        """
        allowed: set[str] | None = None
        seen: set[str] = set()
        name: str | None = queue
        while name is not None and name not in seen:
            seen.add(name)
            own = self._queue_namespaces.get(name)
            if own is not None:
                allowed = set(own) if allowed is None else allowed & set(own)
            parent = self._queues.get(name)
            name = parent.parent if parent is not None else None
        return None if allowed is None else tuple(sorted(allowed))

    def workloads_in(self, queue: str) -> int:
        """How many workloads a queue holds: pending, placed, or still assembling (a gang).

        Counted from the pods themselves, not from what the scheduler was told, so that a gang
        still missing members, a workload with a bad request, or one a failed cycle did not
        report, keeps its queue from being deleted under it.
        """
        return sum(
            1
            for uids in self._members.values()
            if any(
                (pod := self._pods.get(uid)) is not None and pod.live and pod.queue == queue
                for uid in uids
            )
        )

    def workload_pods(self, name: str) -> WorkloadPods | None:
        """The pods of a workload, or None if there is no such workload."""
        derived = self._derived.get(name)
        if derived is None or not derived.members:
            return None
        first = derived.members[0]
        return WorkloadPods(
            namespace=first.namespace,
            pods=tuple(p.name for p in derived.members),
            workflow=first.workflow,
        )

    # -- the cycle --------------------------------------------------------------------------------

    def sync(self, now: float) -> None:
        """Report everything that changed since the last sync, as of `now`, to the scheduler.

        Besides the pods that changed, a workload is derived again when time alone changes it
        (a stopped pod's grace, a deadline, a gang's assembly timeout).
        """
        self._now = now
        for key, at in list(self._wake.items()):
            if at <= now:
                self._dirty.add(key)
        for key in sorted(self._dirty):
            self._wake.pop(key, None)
            derived = self._derive(key)
            self._derived[key] = derived
            if derived.problem or derived.roll_forward or derived.to_stop or derived.surplus:
                self._attention.add(key)
            else:
                self._attention.discard(key)
        if self._queues_dirty:
            self._sync_queues()
        self._sync_nodes()
        for key in sorted(self._dirty):
            derived = self._derived[key]
            self._report(key, derived.workload)
            if derived.workload is None and not derived.to_stop:
                self._evicting.pop(key, None)  # carried out: its pods hold nothing any more
            if not self._members.get(key):
                self._members.pop(key, None)
                self._derived.pop(key, None)
                self._evicting.pop(key, None)
                self._vanished.pop(key, None)
                self._wake.pop(key, None)
                self._attention.discard(key)
        self._dirty.clear()
        if self._stand_ins:
            self._sync_nodes()  # workloads that just finished may have freed a stand-in

    def cycle(self, now: float) -> Intents:
        """Sync, run one scheduling cycle, and say what to do about it."""
        self.sync(now)
        plan = self._scheduler.cycle(now)
        self._plan = plan
        admitted_at = format_time(now)
        releases: list[PodRelease] = []
        for admission in plan.admissions:
            releases += self._releases(admission.workload, admission.allocation, admitted_at)
        for key in sorted(self._attention):
            releases += self._derived[key].roll_forward
        evicted = {e.workload for e in plan.evictions}
        stops = [pod for e in plan.evictions for pod in self._evictions(e)]
        for key in sorted(self._attention - evicted):
            derived = self._derived[key]
            if derived.stop is not None:
                stops += self._pod_stops(key, derived.stop, derived.to_stop)
            if derived.surplus_stop is not None:
                stops += self._pod_stops(key, derived.surplus_stop, derived.surplus)
        return Intents(
            evictions=tuple(stops),
            releases=tuple(releases),
            messages=tuple(self._messages(plan)),
            queue_statuses=tuple(self._queue_statuses(plan.shares)),
        )

    def observe(self, now: float) -> None:
        """Sync and run a cycle only to explain (a follower replica): nothing is to be done."""
        self.sync(now)
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
        holding = tuple(p for p in members if p.live or self._still_draining(key, p))
        if not holding:
            return _Derived(members=members)
        forged = [p for p in live if p.forged and not p.deleting]
        if forged:
            everyone = tuple(p for p in live if not p.deleting)
            text = (
                f"pod {forged[0].name} carries an allocation the scheduler did not write (its "
                f"{keys.SIGNATURE_ANNOTATION} does not match the service's key), so it could "
                "hold GPUs the scheduler gave others; create it again to wait in queue "
                f"{forged[0].queue or '(none)'}"
            )
            return _Derived(
                members=everyone,
                stop=_Stop(FORGED_ALLOCATION, self._prefix + text),
                to_stop=everyone,
            )
        if all(p.allocation is None for p in holding):
            overdue = self._overdue(key, live) or self._ungated(key, live)
            if overdue is not None:
                return overdue
        broken = next((p.error for p in holding if p.request is None), "")
        if broken:
            return _Derived(members=live, problem=broken)
        first = holding[0].request
        assert first is not None
        if any(p.request != first for p in holding[1:]):
            return _Derived(
                members=live,
                problem=f"the pods of gang {first.gang} ask for different things "
                "(queue, resources, kind, priority or placement); give them one spec",
            )
        placed = [p for p in holding if p.allocation is not None]
        if placed:
            return self._derive_placed(key, first, members, holding, placed)
        waiting = tuple(p for p in live if not p.deleting)
        if not waiting:
            return _Derived(members=live)
        if len(waiting) < first.gang_size:
            return self._assembling(key, first, waiting)
        if len(waiting) > first.gang_size:
            return _Derived(
                members=waiting,
                problem=f"too many pods in gang {first.gang}: {len(waiting)} of "
                f"{first.gang_size} pods exist",
            )
        return _Derived(
            workload=first.workload(key, submitted_at=max(p.created_at for p in waiting)),
            members=waiting,
        )

    def _still_draining(self, key: str, pod: _Pod) -> bool:
        """Whether a placed pod the service stopped may still be using its GPUs.

        Until its containers have all terminated, or `eviction_grace_seconds` after the service
        marked it (the condition's time, which a restart reads back), if the kubelet never
        reports them: otherwise the owner of its GPUs could start on a GPU still in use. While
        it drains, `key` is derived again when the grace ends.
        """
        if not (pod.stopped and pod.may_run and pod.allocation is not None):
            return False
        until = (pod.disrupted_at or 0.0) + self._grace
        if self._now >= until:
            return False
        self._wake_at(key, until)
        return True

    def _overdue(self, key: str, live: tuple[_Pod, ...]) -> _Derived | None:
        """`key`'s waiting pods to be stopped because an activeDeadlineSeconds passed, or None.

        The kubelet counts a pod's deadline from its start, and a gated pod never starts: the
        service counts it from the pod's creation, so that a step's deadline (Argo sets it from
        the template's and the workflow's) also bounds its wait. A gang fails whole.
        """
        waiting = tuple(p for p in live if p.gated and not p.deleting)
        timed = [p for p in waiting if p.deadline is not None]
        if not timed:
            return None
        first = min(timed, key=lambda p: (p.deadline or 0.0, p.name))
        deadline = first.deadline or 0.0
        if deadline > self._now:
            self._wake_at(key, deadline)
            return None
        text = (
            f"deadline passed: waited {self._now - first.created_at:.0f}s in queue "
            f"{first.queue} (activeDeadlineSeconds {deadline - first.created_at:.0f})"
        )
        if len(waiting) > 1:
            text += f"; all {len(waiting)} pods of gang {key.partition('/')[2]} fail with it"
        stop = _Stop(DEADLINE_EXCEEDED, self._prefix + text)
        return _Derived(members=waiting, stop=stop, to_stop=waiting)

    def _ungated(self, key: str, live: tuple[_Pod, ...]) -> _Derived | None:
        """`key`'s pods to be stopped because one lost its gate without being admitted, or None.

        Only the service lifts the gate, together with writing the allocation; a pod without
        either was ungated by someone else and may run on GPUs the books hold free. A gang
        stops whole.
        """
        lifted = [p for p in live if not p.gated and not p.deleting]
        if not lifted:
            return None
        everyone = tuple(p for p in live if not p.deleting)
        text = (
            f"the scheduling gate {keys.SCHEDULING_GATE} of pod {lifted[0].name} was removed "
            "outside the scheduler, which would let it run on GPUs the scheduler counts as "
            f"free; create it again to wait in queue {lifted[0].queue or '(none)'}"
        )
        if len(everyone) > 1:
            text += f"; all {len(everyone)} pods of gang {key.partition('/')[2]} stop with it"
        return _Derived(
            members=everyone, stop=_Stop(GATE_REMOVED, self._prefix + text), to_stop=everyone
        )

    def _assembling(self, key: str, request: PodRequest, waiting: tuple[_Pod, ...]) -> _Derived:
        """A gang with fewer pods than its size: it waits, and fails after the assembly timeout.

        Measured from its earliest pod's creation, so that a restart does not start it again.
        """
        earliest = min(p.created_at for p in waiting)
        timeout_at = earliest + self._assembly_timeout
        count = f"{len(waiting)} of {request.gang_size} pods"
        if self._now >= timeout_at:
            text = (
                f"gang {request.gang} incomplete: {count} appeared in "
                f"{self._now - earliest:.0f}s (gang_assembly_timeout_seconds "
                f"{self._assembly_timeout:g})"
            )
            stop = _Stop(GANG_INCOMPLETE, self._prefix + text)
            return _Derived(members=waiting, stop=stop, to_stop=waiting)
        self._wake_at(key, timeout_at)
        return _Derived(
            members=waiting,
            problem=f"waiting for the rest of gang {request.gang}: {count} exist; it fails if "
            f"still incomplete {self._assembly_timeout:g}s after its first pod",
        )

    def _derive_placed(
        self,
        key: str,
        request: PodRequest,
        members: tuple[_Pod, ...],
        holding: tuple[_Pod, ...],
        placed: list[_Pod],
    ) -> _Derived:
        live = tuple(p for p in holding if p.live)
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
        stop = self._stop_of(key, request, record, members)
        state = (
            WorkloadState.EVICTING
            if stop is not None or any(p.deleting for p in live)
            else WorkloadState.RUNNING
        )
        workload = replace(
            # Submission time from every pod seen, so that it stays put while pods stop.
            request.workload(key, submitted_at=min(p.created_at for p in members)),
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
        ours = tuple(p for p in holding if record is None or p.name in record)
        to_stop = tuple(p for p in ours if p.live and not p.deleting) if stop else ()
        surplus = tuple(
            p
            for p in live
            if record is not None and p.name not in record and not p.deleting and p.gated
        )
        surplus_stop = None
        if surplus:
            surplus_stop = _Stop(
                GANG_FULL,
                f"{self._prefix}gang {request.gang} already runs its {request.gang_size} pods "
                f"({some_names(names)}); a pod beyond its {keys.GANG_SIZE_ANNOTATION} can never "
                "join it: delete the pod, or give it a gang of its own",
            )
        return _Derived(
            workload=workload,
            members=ours,
            roll_forward=roll_forward,
            stop=stop,
            to_stop=to_stop,
            surplus=surplus,
            surplus_stop=surplus_stop,
        )

    def _stop_of(
        self,
        key: str,
        request: PodRequest,
        record: _GangRecord | None,
        members: tuple[_Pod, ...],
    ) -> _Stop | None:
        """Why a placed workload is being stopped, or None if it is not.

        An eviction the core decided; else what a pod the service already stopped says (an
        eviction or a gang's loss begun before a restart is finished the same way, on every
        pod); else a member of the gang's record that failed or was deleted. A member that
        succeeded is a normal end: the others finish on their own.
        """
        decided = self._evicting.get(key)
        if decided is not None:
            return decided
        # A pod stopped for being beyond the gang's size is not the gang's.
        stopped = next(
            (p for p in members if p.stopped and (record is None or p.name in record)), None
        )
        if stopped is not None:
            return _Stop(stopped.stop_reason, stopped.stop_message)
        if record is None:
            return None
        present = {p.name: p for p in members}
        vanished = self._vanished.get(key, {})
        lost = []
        for name in sorted(record):
            pod = present.get(name)
            if pod is None and name in vanished:
                lost.append((name, vanished[name]))
            elif pod is not None and pod.phase == "Failed" and pod.disrupted_at is None:
                lost.append((name, "failed"))
        if not lost:
            return None
        name, how = lost[0]
        more = f" and {len(lost) - 1} more" if len(lost) > 1 else ""
        return _Stop(
            GANG_MEMBER_LOST,
            f"{self._prefix}gang {request.gang} lost member {name} ({how}){more}; its other "
            "pods are stopped so that the gang is retried, or fails, as a unit",
        )

    def _wake_at(self, key: str, at: float) -> None:
        """Derive `key` again at `at` (Unix seconds), even if none of its pods changes."""
        current = self._wake.get(key)
        if current is None or at < current:
            self._wake[key] = at

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
        self.unmanaged_shortfall = {}
        held = self.unmanaged_gpus()
        taken = (
            {u for w in occupied for pod in w.allocation or () for u in pod.gpus} if held else set()
        )
        for name, count in held.items():
            node = wanted.get(name)
            if node is not None:
                wanted[name] = self._without_unmanaged(node, count, taken)
        current = {n.name: n for n in self._scheduler.snapshot().nodes}
        if wanted != current:
            self._scheduler.set_nodes(sorted(wanted.values(), key=lambda n: n.name))
        self._nodes_dirty = False

    def _without_unmanaged(self, node: Node, count: int, taken: set[str]) -> Node:
        """`node` less `count` of its free GPUs, the highest first: unmanaged pods hold them.

        Which devices those pods hold is the device plugin's choice, and the books only need
        the count. GPUs the scheduler's own work holds stay; where fewer are free than the
        unmanaged pods hold, the node has more work than GPUs, said in `unmanaged_shortfall`.
        """
        free = [g for g in node.gpus if g.uuid not in taken]
        dropped = {g.uuid for g in free[len(free) - min(count, len(free)) :]}
        if count > len(free):
            self.unmanaged_shortfall[node.name] = count - len(free)
        return replace(node, gpus=tuple(g for g in node.gpus if g.uuid not in dropped))

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
        record: _GangRecord | None,
        admitted_at: str,
        workload: str,
    ) -> PodRelease:
        node = self._nodes.get(allocation.node)
        annotations = allocation_annotations(
            allocation,
            admitted_at,
            sharing=self._sharing.mechanism(node.pool) if node is not None else "none",
            uses_mps=self._sharing.uses_mps,
            device="" if self._reservations else None,
        )
        if record is not None:
            annotations[keys.GANG_ALLOCATION_ANNOTATION] = _gang_record_text(record)
        if self._key is not None:
            annotations[keys.SIGNATURE_ANNOTATION] = allocation_signature(
                self._key, pod.uid, annotations
            )
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
            gang_dns=pod.gang_dns,
        )

    def _evictions(self, eviction: Eviction) -> list[PodEviction]:
        """Carry out an eviction the core decided: stop every pod of the workload.

        The message is the core's, behind the service's prefix ("aistack: reclaimed for ...",
        "aistack: preempted by ..."): aistack_flows retries exactly those attempts for free.
        """
        stop = _Stop(eviction.cause.value, self._prefix + eviction.message)
        self._evicting[eviction.workload] = stop
        self._dirty.add(eviction.workload)
        members = self._derived[eviction.workload].members
        return self._pod_stops(
            eviction.workload, stop, tuple(p for p in members if p.live and not p.deleting)
        )

    def _pod_stops(self, key: str, stop: _Stop, pods: Iterable[_Pod]) -> list[PodEviction]:
        reported = self._reported.get(key)
        return [
            PodEviction(
                namespace=p.namespace,
                name=p.name,
                uid=p.uid,
                message=_bounded(stop.message),
                workload=key,
                queue=reported.queue if reported is not None else p.queue,
                cause=stop.cause,
                owner=p.owner,
            )
            for p in pods
        ]

    def _messages(self, plan: Plan) -> Iterable[PodMessage]:
        """What each waiting pod is told, when it differs from what it says now.

        See `_places_in` for why a message is rewritten only when its words change. Many
        workloads share a place in words and a reason (the core shares equal reasons), so each
        distinct message is worded once per cycle.
        """
        shares: dict[str, dict[str, QueueShare]] = {}
        for share in plan.shares:
            shares.setdefault(share.queue, {})[share.pool] = share
        places = {
            name: place
            for order in pending_order(self._reported.values()).values()
            for name, place in _places_in(order)
        }
        worded: dict[tuple[object, ...], str] = {}
        for entry in plan.pending:
            workload = self._reported[entry.workload]
            place = places[entry.workload]
            wording = (workload.queue, workload.pools, place, entry.reason)
            text = worded.get(wording)
            if text is None:
                summary = waiting_summary(
                    workload, place, shares.get(workload.queue, {}), entry.reason
                )
                text = worded[wording] = _bounded(self._prefix + summary)
            yield from self._tell(self._derived[entry.workload].members, text)
        for key in sorted(self._attention):
            derived = self._derived[key]
            if derived.problem and derived.workload is None:
                text = _bounded(self._prefix + derived.problem)
                yield from self._tell((p for p in derived.members if p.gated), text)

    def _tell(self, pods: Iterable[_Pod], text: str) -> Iterable[PodMessage]:
        for pod in pods:
            # The pod as it is now: `message_written` updates it before its watch event
            # re-derives it.
            current = self._pods.get(pod.uid, pod)
            if current.message != text:
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


def _places_in(order: list[str]) -> Iterator[tuple[str, str]]:
    """(workload, its place in words) along one queue's pending order, as its pods say it.

    Exact for the first `_EXACT_PLACES` (`2nd of 734 waiting`); behind them a range of a 1-2-5
    series without the total (`21st-50th in line`). A message is written only when its words
    change, and a place changes for every workload behind one that leaves the queue: with exact
    numbers everywhere, admitting the head of a queue of thousands would rewrite thousands of
    pods (and the Workflows Argo updates from them), cycle after cycle. This way a departure or
    an arrival rewrites the first ten pods and the few that cross a range's bound. The API's
    explain gives any workload's exact place.
    """
    waiting = len(order)
    high, text = _EXACT_PLACES, ""
    for position, name in enumerate(order, start=1):
        if position <= _EXACT_PLACES:
            yield name, queue_place(position, waiting)
            continue
        if position > high:  # the next range: 10 -> 20 -> 50 -> 100 -> 200 -> 500 -> ...
            low, high = high, high * 5 // 2 if str(high).startswith("2") else high * 2
            text = f"{ordinal(low + 1)}-{ordinal(high)} in line"
        yield name, text


def _bounded(text: str) -> str:
    """`text`, cut to `_MESSAGE_LIMIT` characters (an ellipsis says so)."""
    if len(text) <= _MESSAGE_LIMIT:
        return text
    return text[: _MESSAGE_LIMIT - 3] + "..."


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
