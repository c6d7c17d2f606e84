"""What the author's commands show, computed from the objects Kubernetes returns (no I/O here).

A Workflow's status lists its nodes; each step that ran a pod is a node of type Pod (a retried
step is a Retry node whose children are the attempts). The pods say what the scheduler decided:
their queue label, what they asked for, the allocation the service wrote, and, while they wait,
the service's reason in their PodScheduled condition. Queue objects carry what the service
wrote into their status. Every function takes `now` (Unix seconds) rather than reading a clock.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from scheduler_service import pod_contract as contract

__all__ = [
    "Attempt",
    "QueueRow",
    "StepRow",
    "WorkflowRow",
    "age",
    "pods_by_workflow",
    "queue_rows",
    "step_rows",
    "workflow_row",
]

Json = Mapping[str, Any]

_WORKFLOW_LABEL = "workflows.argoproj.io/workflow"
_NODE_ID_ANNOTATION = "workflows.argoproj.io/node-id"
_LIVE = frozenset({None, "Pending", "Running"})


def _time(text: str | None) -> float | None:
    return datetime.fromisoformat(text).timestamp() if text else None


def age(since: str | None, now: float) -> str:
    """A short age ("45s", "12m", "3h", "2d") as kubectl prints it."""
    started = _time(since)
    if started is None:
        return "-"
    seconds = max(0, int(now - started))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


# -- pods --------------------------------------------------------------------------------------


def _labels(obj: Json) -> Mapping[str, str]:
    labels: Mapping[str, str] = (obj.get("metadata") or {}).get("labels") or {}
    return labels


def _annotations(obj: Json) -> Mapping[str, str]:
    annotations: Mapping[str, str] = (obj.get("metadata") or {}).get("annotations") or {}
    return annotations


def _asked(pod: Json) -> str:
    """What a pod asks of the scheduler, in words ("2 GPUs", "slice 8 GiB / 25%")."""
    annotations = _annotations(pod)
    compute = annotations.get(contract.GPU_COMPUTE_ANNOTATION)
    if compute is not None:
        memory = annotations.get(contract.GPU_MEMORY_ANNOTATION, "?")
        gib = f"{int(memory) / 1024:g}" if memory.isdigit() else memory
        return f"slice {gib} GiB / {compute}%"
    gpus = 0
    for container in (pod.get("spec") or {}).get("containers") or ():
        limits = (container.get("resources") or {}).get("limits") or {}
        value = str(limits.get(contract.GPU_RESOURCE, "0"))
        gpus += int(value) if value.isdigit() else 0
    return f"{gpus} GPU{'s' if gpus != 1 else ''}" if gpus else "-"


def _waiting_message(pod: Json) -> str:
    for condition in (pod.get("status") or {}).get("conditions") or ():
        if condition.get("type") == "PodScheduled" and condition.get("reason") == "Unschedulable":
            return str(condition.get("message") or "")
    return ""


def _is_gated(pod: Json) -> bool:
    gates = (pod.get("spec") or {}).get("schedulingGates") or ()
    return any(g.get("name") == contract.SCHEDULING_GATE for g in gates)


# -- steps -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Attempt:
    """One attempt of a step (one pod): how it went."""

    number: int
    phase: str
    message: str


@dataclass(frozen=True, slots=True)
class StepRow:
    """One step of a workflow that runs a pod, as `aistack status` shows it."""

    step: str
    state: str
    queue: str
    gpus: str
    node: str
    message: str
    attempts: tuple[Attempt, ...] = field(default=())
    gang: str = ""
    pod: str = ""


def step_rows(workflow: Json, pods: Iterable[Json]) -> list[StepRow]:
    """The workflow's steps that run pods, in the order they started.

    A retried step is one row (its latest attempt, with the earlier ones in `attempts`).
    """
    nodes: Mapping[str, Json] = (workflow.get("status") or {}).get("nodes") or {}
    by_node = {_annotations(p).get(_NODE_ID_ANNOTATION): p for p in pods}
    attempts_of = {
        node["id"]: [nodes[c] for c in node.get("children") or () if c in nodes]
        for node in nodes.values()
        if node.get("type") == "Retry"
    }
    attempt_ids = {child["id"] for children in attempts_of.values() for child in children}
    rows = []
    for node in sorted(nodes.values(), key=lambda n: (n.get("startedAt") or "~", n["id"])):
        if node["id"] in attempts_of:
            attempts = [c for c in attempts_of[node["id"]] if c.get("type") == "Pod"]
            if attempts:
                rows.append(_row(node, attempts, by_node))
        elif node.get("type") == "Pod" and node["id"] not in attempt_ids:
            rows.append(_row(node, [node], by_node))
    return rows


def _row(step: Json, attempts: Sequence[Json], pods: Mapping[str | None, Json]) -> StepRow:
    latest = attempts[-1]
    pod = pods.get(latest["id"]) or {}
    labels = _labels(pod)
    annotations = _annotations(pod)
    phase = str(latest.get("phase") or "Pending")
    waiting = _waiting_message(pod)
    state = phase
    if phase == "Pending" and _is_gated(pod):
        state = "Waiting"
    message = str(latest.get("message") or "")
    if state == "Waiting":
        message = waiting or message or "waiting for the scheduler to see it"
    gpus = annotations.get(contract.GPUS_ANNOTATION, "")
    node = annotations.get(contract.NODE_ANNOTATION) or str(latest.get("hostNodeName") or "")
    held = f" [{gpus}]" if gpus and state == "Running" else ""
    return StepRow(
        step=str(step.get("displayName") or step.get("name")),
        state=state,
        queue=labels.get(contract.QUEUE_LABEL, "-"),
        gpus=_asked(pod) + held if pod else "-",
        node=node or "-",
        message=message,
        attempts=tuple(
            Attempt(number=i, phase=str(a.get("phase") or ""), message=str(a.get("message") or ""))
            for i, a in enumerate(attempts)
        ),
        gang=labels.get(contract.GANG_LABEL, ""),
        pod=str((pod.get("metadata") or {}).get("name") or ""),
    )


# -- workflows ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class WorkflowRow:
    """One workflow, as `aistack list` shows it."""

    name: str
    namespace: str
    phase: str
    queue: str
    waiting: int
    running: int
    age: str
    message: str


def workflow_row(workflow: Json, pods: Iterable[Json], now: float) -> WorkflowRow:
    """The workflow's line: its phase, default queue, and GPU steps waiting and running."""
    metadata = workflow.get("metadata") or {}
    status = workflow.get("status") or {}
    managed = [p for p in pods if contract.QUEUE_LABEL in _labels(p)]
    live = [
        p for p in managed if (p.get("status") or {}).get("phase") in {None, "Pending", "Running"}
    ]
    waiting = sum(1 for p in live if _is_gated(p))
    return WorkflowRow(
        name=str(metadata.get("name", "")),
        namespace=str(metadata.get("namespace", "")),
        phase=str(status.get("phase") or "Pending"),
        queue=_labels(workflow).get(contract.QUEUE_LABEL, "-"),
        waiting=waiting,
        running=len(live) - waiting,
        age=age(metadata.get("creationTimestamp"), now),
        message=str(status.get("message") or ""),
    )


def pods_by_workflow(pods: Iterable[Json]) -> dict[str, list[Json]]:
    """Pods grouped by the workflow that made them."""
    grouped: dict[str, list[Json]] = {}
    for pod in pods:
        owner = _labels(pod).get(_WORKFLOW_LABEL)
        if owner is not None:
            grouped.setdefault(owner, []).append(pod)
    return grouped


# -- queues ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class QueueRow:
    """One queue in one pool: its guarantee, what it uses, borrows and waits for (GPUs)."""

    queue: str
    parent: str
    pool: str
    quota: float
    limit: float | None
    fair_share: float
    used: float
    borrowed: float
    waiting: float
    pending_workloads: int


def queue_rows(queues: Iterable[Json]) -> list[QueueRow]:
    """One row per queue and pool, from the Queue objects' specs and the service's status."""
    rows = []
    for queue in sorted(queues, key=lambda q: q["metadata"]["name"]):
        spec = queue.get("spec") or {}
        status = queue.get("status") or {}
        reported = {p["pool"]: p for p in status.get("pools") or ()}
        pools = [p["pool"] for p in spec.get("pools") or ()] or sorted(reported)
        for pool in pools:
            declared: Json = next((p for p in spec.get("pools") or () if p["pool"] == pool), {})
            seen = reported.get(pool, {})
            quota = float(seen.get("quota", declared.get("quota", 0)))
            used = float(seen.get("allocated", 0))
            limit = seen.get("limit", declared.get("limit"))
            rows.append(
                QueueRow(
                    queue=queue["metadata"]["name"],
                    parent=spec.get("parent") or "-",
                    pool=pool,
                    quota=quota,
                    limit=None if limit is None else float(limit),
                    fair_share=float(seen.get("fairShare", 0)),
                    used=used,
                    borrowed=max(0.0, used - quota),
                    waiting=max(0.0, float(seen.get("demand", 0)) - used),
                    pending_workloads=int(status.get("pending", 0)),
                )
            )
    return rows
