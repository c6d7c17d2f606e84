"""Admission webhooks: gate and wire managed pods at creation, refuse bad pods and queues.

The API server calls these through the service's HTTPS endpoints (see scheduler_service.api).
Everything a container must know about its allocation is wired here, at CREATE, because a pod's
env cannot change afterwards: each variable reads an `alloc.aistack.io/` annotation through the
downward API, and the service writes those annotations when it admits the pod, before the pod
can start. User-set copies of these variables are removed, so a pod cannot pick its own GPUs.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from scheduler_service import pod_contract as keys
from scheduler_service.api import AdmissionDecision
from scheduler_service.core import Queue
from scheduler_service.kube._translate import (
    PodRequestError,
    QueueError,
    parse_pod_request,
    queue_from_k8s,
)

__all__ = ["KubeWebhooks", "injected_env"]

JsonObject = Mapping[str, Any]


def injected_env(is_slice: bool) -> list[dict[str, Any]]:
    """The env every container of a managed pod gets, each read from an allocation annotation.

    All pods learn their GPUs (AISTACK_GPUS). A slice pod asks for no `nvidia.com/gpu`, so the
    runtime learns its GPU from NVIDIA_VISIBLE_DEVICES and MPS caps its memory and compute; a
    whole-GPU pod's devices come from the device plugin, which sets the runtime's variable.
    """
    env = [_from_annotation("AISTACK_GPUS", keys.GPUS_ANNOTATION)]
    if is_slice:
        env += [
            _from_annotation("NVIDIA_VISIBLE_DEVICES", keys.GPUS_ANNOTATION),
            _from_annotation("CUDA_MPS_PINNED_DEVICE_MEM_LIMIT", keys.MEMORY_LIMIT_ANNOTATION),
            _from_annotation("CUDA_MPS_ACTIVE_THREAD_PERCENTAGE", keys.COMPUTE_LIMIT_ANNOTATION),
        ]
    return env


_OWNED_ENV = frozenset(
    {
        "AISTACK_GPUS",
        "NVIDIA_VISIBLE_DEVICES",
        "CUDA_VISIBLE_DEVICES",
        "CUDA_MPS_PINNED_DEVICE_MEM_LIMIT",
        "CUDA_MPS_ACTIVE_THREAD_PERCENTAGE",
    }
)
"""Variables only the service may set in a managed pod (it removes user-set copies)."""


def _from_annotation(name: str, annotation: str) -> dict[str, Any]:
    return {
        "name": name,
        "valueFrom": {"fieldRef": {"fieldPath": f"metadata.annotations['{annotation}']"}},
    }


def _pointer(segment: str) -> str:
    """Escape one JSON-pointer segment (RFC 6901)."""
    return segment.replace("~", "~0").replace("/", "~1")


class QueueUnreadableError(Exception):
    """A queue could not be read from the API server; the message says why."""


class KubeWebhooks:
    """The pod and queue webhooks, deciding on the service's current view of the queues.

    `queues` returns the known queues by name; `workloads_in` returns how many workloads (pending
    or placed) a queue holds. Both read the driver's caches, so a decision costs no API call,
    but for one case: a pod naming a queue the cache does not hold. A queue created a moment
    before may not have come through the watch yet, so `read_queue` reads it from the API
    server (None: it does not exist; `QueueUnreadableError`: it could not be read) before the pod
    is refused.
    """

    def __init__(
        self,
        queues: Callable[[], Mapping[str, Queue]],
        workloads_in: Callable[[str], int],
        read_queue: Callable[[str], Queue | None] = lambda _name: None,
    ) -> None:
        self._queues = queues
        self._workloads_in = workloads_in
        self._read_queue = read_queue

    # -- pods -------------------------------------------------------------------------------------

    def mutate_pod(self, request: JsonObject) -> AdmissionDecision:
        """Refuse a bad managed pod; gate a good one and wire its allocation env."""
        if request.get("operation") != "CREATE":
            return AdmissionDecision(allowed=True)
        pod: JsonObject = request.get("object") or {}
        labels: Mapping[str, str] = (pod.get("metadata") or {}).get("labels") or {}
        if keys.QUEUE_LABEL not in labels:
            return AdmissionDecision(allowed=True)
        try:
            parsed = parse_pod_request(pod)
        except PodRequestError as error:
            return AdmissionDecision(allowed=False, message=str(error))
        if (pod.get("spec") or {}).get("nodeName"):
            return AdmissionDecision(
                allowed=False,
                message="spec.nodeName is set: the scheduler chooses the node; remove nodeName "
                f"(or remove label {keys.QUEUE_LABEL} to schedule the pod yourself)",
            )
        annotations: Mapping[str, str] = (pod.get("metadata") or {}).get("annotations") or {}
        taken = sorted(k for k in annotations if k.startswith(keys.ALLOCATION_PREFIX))
        if taken:
            return AdmissionDecision(
                allowed=False,
                message=f"annotations {', '.join(taken)} are written by the scheduler only; "
                "remove them from the pod",
            )
        refusal = self._queue_refusal(parsed.queue)
        if refusal:
            return AdmissionDecision(allowed=False, message=refusal)
        patch, warnings = _gate_and_wire(pod, parsed.request.is_slice)
        return AdmissionDecision(allowed=True, patch=patch, warnings=tuple(warnings))

    def _queue_refusal(self, name: str) -> str:
        queues = self._queues()
        if name not in queues:
            try:
                fresh = self._read_queue(name)
            except QueueUnreadableError as error:
                return (
                    f"queue {name!r} is not known to the scheduler yet and could not be read "
                    f"from the API server ({error}); create the pod again in a moment"
                )
            if fresh is not None:
                queues = {**queues, name: fresh}
        if name not in queues:
            known = ", ".join(sorted(q for q in queues if _is_leaf(q, queues))) or "none yet"
            return (
                f"queue {name!r} does not exist (leaf queues: {known}); create it with a Queue "
                f"object or set label {keys.QUEUE_LABEL} to an existing queue"
            )
        children = sorted(q.name for q in queues.values() if q.parent == name)
        if children:
            return (
                f"queue {name!r} is a parent queue (children: {', '.join(children)}); "
                "submit to one of its leaf queues"
            )
        return ""

    # -- queues -----------------------------------------------------------------------------------

    def validate_queue(self, request: JsonObject) -> AdmissionDecision:
        """Refuse queues whose parent is missing, that form a cycle, or deletions that orphan."""
        queues = dict(self._queues())
        if request.get("operation") == "DELETE":
            name = (request.get("oldObject") or {}).get("metadata", {}).get("name") or request.get(
                "name", ""
            )
            return self._deletion(name, queues)
        try:
            queue = queue_from_k8s(request.get("object") or {})
        except QueueError as error:
            return AdmissionDecision(allowed=False, message=str(error))
        if queue.parent is not None and queue.parent not in queues:
            return AdmissionDecision(
                allowed=False,
                message=f"queue {queue.name!r}: parent {queue.parent!r} does not exist; "
                "create the parent queue first",
            )
        queues[queue.name] = queue
        if _in_cycle(queue.name, queues):
            return AdmissionDecision(
                allowed=False,
                message=f"queue {queue.name!r}: parent {queue.parent!r} would make the queue "
                "its own ancestor; choose a parent outside its subtree",
            )
        return AdmissionDecision(allowed=True, warnings=_quota_warnings(queue, queues))

    def _deletion(self, name: str, queues: Mapping[str, Queue]) -> AdmissionDecision:
        children = sorted(q.name for q in queues.values() if q.parent == name)
        if children:
            return AdmissionDecision(
                allowed=False,
                message=f"queue {name!r} is the parent of {', '.join(children)}; "
                "delete or re-parent them first",
            )
        count = self._workloads_in(name)
        if count:
            return AdmissionDecision(
                allowed=False,
                message=f"queue {name!r} still has {count} workload(s) pending or running; "
                "wait for them to finish or delete their pods first",
            )
        return AdmissionDecision(allowed=True)


def _gate_and_wire(pod: JsonObject, is_slice: bool) -> tuple[list[dict[str, Any]], list[str]]:
    spec: JsonObject = pod.get("spec") or {}
    patch: list[dict[str, Any]] = []
    warnings: list[str] = []
    gates = spec.get("schedulingGates")
    gate = {"name": keys.SCHEDULING_GATE}
    if gates is None:
        patch.append({"op": "add", "path": "/spec/schedulingGates", "value": [gate]})
    elif gate not in gates:
        patch.append({"op": "add", "path": "/spec/schedulingGates/-", "value": gate})
    patch.append(
        {"op": "add", "path": f"/metadata/labels/{_pointer(keys.MANAGED_LABEL)}", "value": "true"}
    )
    ours = injected_env(is_slice)
    for index, container in enumerate(spec.get("containers") or ()):
        env = container.get("env") or []
        removed = sorted(e["name"] for e in env if e.get("name") in _OWNED_ENV and e not in ours)
        if removed:
            warnings.append(
                f"container {container.get('name')}: removed {', '.join(removed)}; "
                "the scheduler sets GPU variables"
            )
        kept = [e for e in env if e.get("name") not in _OWNED_ENV]
        patch.append({"op": "add", "path": f"/spec/containers/{index}/env", "value": kept + ours})
    return patch, warnings


def _is_leaf(name: str, queues: Mapping[str, Queue]) -> bool:
    return all(q.parent != name for q in queues.values())


def _in_cycle(start: str, queues: Mapping[str, Queue]) -> bool:
    seen = {start}
    parent = queues[start].parent
    while parent is not None and parent in queues:
        if parent in seen:
            return True
        seen.add(parent)
        parent = queues[parent].parent
    return False


def _quota_warnings(queue: Queue, queues: Mapping[str, Queue]) -> tuple[str, ...]:
    """Children whose quotas add up past their parent's: allowed, but the guarantee is hollow."""
    warnings = []
    parent = queues.get(queue.parent) if queue.parent else None
    if parent is None:
        return ()
    siblings = [q for q in queues.values() if q.parent == parent.name]
    for quota in parent.quotas:
        total = sum(q.quota_in(quota.pool).quota for q in siblings)
        if total > quota.quota:
            warnings.append(
                f"children of {parent.name!r} are promised {total:g} GPUs in pool "
                f"{quota.pool!r} but it has a quota of {quota.quota:g}"
            )
    return tuple(warnings)
