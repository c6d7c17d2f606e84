"""Builders for Kubernetes objects as the API server returns them (JSON dicts).

Also a stand-in for what the API server does with the driver's patches, for tests of the pure
driver parts; the integration tests use the real API server.
"""

from __future__ import annotations

import copy
import itertools
from collections.abc import Mapping
from typing import Any

from scheduler_service import pod_contract as keys
from scheduler_service.kube._ledger import PodEviction, PodRelease, stop_patch

_counter = itertools.count(1)

Pod = dict[str, Any]


def make_pod(
    name: str,
    queue: str = "a",
    *,
    namespace: str = "team",
    gpus: int = 0,
    gpu_memory_mib: int = 0,
    gpu_compute_percent: int = 0,
    gang: str | None = None,
    gang_size: int | None = None,
    kind: str | None = None,
    annotations: Mapping[str, str] | None = None,
    gated: bool = True,
    created: str = "2026-11-24T10:00:00Z",
    active_deadline_seconds: int | None = None,
    labels: Mapping[str, str] | None = None,
) -> Pod:
    """A managed pod as the webhook leaves it: labelled, gated, not yet admitted."""
    labels = {keys.QUEUE_LABEL: queue, keys.MANAGED_LABEL: "true", **(labels or {})}
    notes = dict(annotations or {})
    if gang is not None:
        labels[keys.GANG_LABEL] = gang
        notes[keys.GANG_SIZE_ANNOTATION] = str(gang_size or 1)
    if kind is not None:
        labels[keys.KIND_LABEL] = kind
    if gpu_compute_percent:
        notes[keys.GPU_MEMORY_ANNOTATION] = str(gpu_memory_mib)
        notes[keys.GPU_COMPUTE_ANNOTATION] = str(gpu_compute_percent)
    resources = {"limits": {keys.GPU_RESOURCE: str(gpus)}} if gpus else {}
    spec: dict[str, Any] = {
        "containers": [{"name": "main", "image": "x", "resources": resources}],
        "schedulingGates": [{"name": keys.SCHEDULING_GATE}] if gated else [],
    }
    if active_deadline_seconds is not None:
        spec["activeDeadlineSeconds"] = active_deadline_seconds
    return {
        "metadata": {
            "name": name,
            "namespace": namespace,
            "uid": f"uid-{name}-{next(_counter)}",
            "resourceVersion": str(next(_counter)),
            "creationTimestamp": created,
            "labels": labels,
            "annotations": notes,
        },
        "spec": spec,
        "status": {"phase": "Pending"},
    }


def make_gpu_node(
    name: str,
    *,
    gpus: int = 8,
    product: str = "H100",
    memory_mib: int = 81920,
    labels: Mapping[str, str] | None = None,
    ready: bool = True,
) -> dict[str, Any]:
    """A GPU node labelled as GPU feature discovery labels it."""
    return {
        "metadata": {
            "name": name,
            "labels": {
                "kubernetes.io/hostname": name,
                keys.GPU_PRODUCT_LABEL: product,
                keys.GPU_MEMORY_LABEL: str(memory_mib),
                **(labels or {}),
            },
        },
        "spec": {},
        "status": {
            "allocatable": {"cpu": "64", "memory": "512Gi", keys.GPU_RESOURCE: str(gpus)},
            "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
        },
    }


def make_queue(
    name: str, *, quota: float = 0, limit: float | None = None, pool: str = "H100", **spec: Any
) -> dict[str, Any]:
    """A Queue object with one pool entry."""
    entry: dict[str, Any] = {"pool": pool, "quota": quota}
    if limit is not None:
        entry["limit"] = limit
    return {"metadata": {"name": name}, "spec": {"pools": [entry], **spec}}


def released(pod: Pod, release: PodRelease) -> Pod:
    """The pod after the API server applied `release` (and kube-scheduler has not bound it)."""
    assert (release.namespace, release.name) == (
        pod["metadata"]["namespace"],
        pod["metadata"]["name"],
    )
    after = copy.deepcopy(pod)
    after["metadata"]["annotations"].update(release.annotations)
    after["metadata"]["resourceVersion"] = str(next(_counter))
    after["spec"]["nodeSelector"] = {"kubernetes.io/hostname": release.hostname}
    after["spec"]["schedulingGates"] = [{"name": g} for g in release.remaining_gates]
    return after


def with_phase(pod: Pod, phase: str, *, deleting: bool = False) -> Pod:
    """The pod in another phase (and marked for deletion if asked).

    A pod past Pending has been bound by kube-scheduler to the node it was released onto.
    """
    after = copy.deepcopy(pod)
    after["status"]["phase"] = phase
    if phase != "Pending":
        after["spec"]["nodeName"] = after["spec"]["nodeSelector"]["kubernetes.io/hostname"]
    after["metadata"]["resourceVersion"] = str(next(_counter))
    if deleting:
        after["metadata"]["deletionTimestamp"] = "2026-11-24T11:00:00Z"
    return after


def with_containers(pod: Pod, state: str) -> Pod:
    """The pod with every container `running` or `terminated` (exit code 0), as a kubelet says."""
    after = copy.deepcopy(pod)
    details: dict[str, Any] = {"exitCode": 0} if state == "terminated" else {}
    after["status"]["containerStatuses"] = [
        {"name": c["name"], "state": {state: details}} for c in after["spec"]["containers"]
    ]
    after["metadata"]["resourceVersion"] = str(next(_counter))
    return after


def stopped(pod: Pod, eviction: PodEviction, at: float) -> Pod:
    """The pod after the API server applied the driver's `stop_patch` at `at`.

    A strategic merge: status fields replaced, conditions merged by type.
    """
    assert eviction.uid == pod["metadata"]["uid"]
    patch = stop_patch(eviction, at)["status"]
    after = copy.deepcopy(pod)
    status = after["status"]
    status.update({k: v for k, v in patch.items() if k != "conditions"})
    kinds = {c["type"] for c in patch["conditions"]}
    status["conditions"] = [
        *(c for c in status.get("conditions", ()) if c["type"] not in kinds),
        *patch["conditions"],
    ]
    after["metadata"]["resourceVersion"] = str(next(_counter))
    return after
