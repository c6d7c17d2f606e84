"""Kubernetes objects (as JSON dicts) to the core's values, and back for allocations.

Pure functions: a pod, node or Queue object in, a core value out, or an error whose message says
what is wrong with the object and how to fix it. The admission webhook runs the same parsing at
pod creation, so a pod the service cannot understand is refused there, not left waiting.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

from kubernetes.utils import parse_quantity

from scheduler_service import pod_contract as keys
from scheduler_service.core import (
    GPU,
    GpuSlice,
    Kind,
    Node,
    PodAllocation,
    PoolQuota,
    Queue,
    Request,
    SnapshotError,
    TopologyWish,
)

__all__ = [
    "NodeError",
    "PodRequest",
    "PodRequestError",
    "QueueError",
    "allocation_annotations",
    "node_from_k8s",
    "parse_pod_request",
    "pod_allocation",
    "queue_from_k8s",
    "runtime_gpu_ids",
]

JsonObject = Mapping[str, Any]

_KINDS = ", ".join(kind.value for kind in Kind)
_TOPOLOGY_LEVELS = tuple(level for level, _ in keys.TOPOLOGY_LEVELS)
_NAME = re.compile(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")


class PodRequestError(ValueError):
    """A managed pod's request is invalid; the message lists every problem and how to fix it."""


class NodeError(ValueError):
    """A GPU node cannot be used (e.g. its GPU memory is unknown); the message says what to add."""


class QueueError(ValueError):
    """A Queue object is invalid; the message names the field."""


def _metadata(obj: JsonObject) -> JsonObject:
    metadata: JsonObject = obj.get("metadata") or {}
    return metadata


def _labels(obj: JsonObject) -> Mapping[str, str]:
    labels: Mapping[str, str] = _metadata(obj).get("labels") or {}
    return labels


def _annotations(obj: JsonObject) -> Mapping[str, str]:
    annotations: Mapping[str, str] = _metadata(obj).get("annotations") or {}
    return annotations


# -- pods -----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PodRequest:
    """What one managed pod asks of the scheduler, parsed from its labels, annotations and spec."""

    queue: str
    kind: Kind
    request: Request
    priority: int = 0
    preemptible: bool | None = None
    gang: str | None = None
    gang_size: int = 1
    pools: tuple[str, ...] = ()
    models: tuple[str, ...] = ()
    topology: TopologyWish | None = None
    node_selector: tuple[tuple[str, str], ...] = ()
    tolerations: tuple[str, ...] = ()


def parse_pod_request(pod: JsonObject) -> PodRequest:
    """Parse and validate a managed pod; raise `PodRequestError` listing every problem."""
    labels = _labels(pod)
    annotations = _annotations(pod)
    spec: JsonObject = pod.get("spec") or {}
    problems: list[str] = []

    queue = labels.get(keys.QUEUE_LABEL, "")
    if not queue:
        problems.append(f"label {keys.QUEUE_LABEL} must name the pod's queue")

    kind = Kind.TRAIN
    kind_text = labels.get(keys.KIND_LABEL)
    if kind_text is not None:
        try:
            kind = Kind(kind_text)
        except ValueError:
            problems.append(f"label {keys.KIND_LABEL}={kind_text!r}: use one of {_KINDS}")

    priority = _integer(annotations, keys.PRIORITY_ANNOTATION, 0, problems)
    preemptible = _boolean(annotations, keys.PREEMPTIBLE_ANNOTATION, problems)
    gang = labels.get(keys.GANG_LABEL) or None
    gang_size = 1
    if gang is not None:
        gang_size = _integer(annotations, keys.GANG_SIZE_ANNOTATION, 0, problems)
        if gang_size < 1:
            problems.append(
                f"annotation {keys.GANG_SIZE_ANNOTATION} must give the gang's pod count "
                f"(>= 1) when label {keys.GANG_LABEL} is set"
            )
            gang_size = 1
    elif keys.GANG_SIZE_ANNOTATION in annotations:
        problems.append(
            f"annotation {keys.GANG_SIZE_ANNOTATION} needs label {keys.GANG_LABEL} naming the gang"
        )

    request = _request(spec, annotations, problems)
    topology = _topology(annotations.get(keys.TOPOLOGY_ANNOTATION), problems)
    if problems:
        name = _metadata(pod).get("name") or _metadata(pod).get("generateName") or "<unnamed>"
        raise PodRequestError(f"pod {name}: " + "; ".join(problems))
    assert request is not None  # no problems means the request parsed
    return PodRequest(
        queue=queue,
        kind=kind,
        request=request,
        priority=priority,
        preemptible=preemptible,
        gang=gang,
        gang_size=gang_size,
        pools=_csv(annotations.get(keys.POOLS_ANNOTATION)),
        models=_csv(annotations.get(keys.GPU_MODELS_ANNOTATION)),
        topology=topology,
        node_selector=tuple(sorted((spec.get("nodeSelector") or {}).items())),
        tolerations=tuple(
            sorted({t["key"] for t in spec.get("tolerations") or () if t.get("key")})
        ),
    )


def _request(
    spec: JsonObject, annotations: Mapping[str, str], problems: list[str]
) -> Request | None:
    gpus = 0
    cpu = Decimal(0)
    memory = Decimal(0)
    for container in spec.get("containers") or ():
        resources: JsonObject = container.get("resources") or {}
        limits: Mapping[str, Any] = resources.get("limits") or {}
        requests: Mapping[str, Any] = resources.get("requests") or {}
        gpu_text = limits.get(keys.GPU_RESOURCE, requests.get(keys.GPU_RESOURCE))
        if gpu_text is not None:
            gpu = _quantity(gpu_text, f"container {container.get('name')}: {keys.GPU_RESOURCE}")
            if gpu is None or gpu != gpu.to_integral_value() or gpu < 0:
                problems.append(
                    f"container {container.get('name')}: {keys.GPU_RESOURCE} must be a whole "
                    f"number of GPUs, got {gpu_text!r}; for part of a GPU set annotations "
                    f"{keys.GPU_MEMORY_ANNOTATION} and {keys.GPU_COMPUTE_ANNOTATION} instead"
                )
            else:
                gpus += int(gpu)
        cpu += _quantity(requests.get("cpu", 0), "cpu") or 0
        memory += _quantity(requests.get("memory", 0), "memory") or 0
    memory_mib = _integer(annotations, keys.GPU_MEMORY_ANNOTATION, 0, problems)
    compute = _integer(annotations, keys.GPU_COMPUTE_ANNOTATION, 0, problems)
    if (memory_mib > 0) != (compute > 0):
        problems.append(
            f"a GPU slice needs both annotations {keys.GPU_MEMORY_ANNOTATION} (> 0) and "
            f"{keys.GPU_COMPUTE_ANNOTATION} (1-100)"
        )
        return None
    if compute > 100 or compute < 0 or memory_mib < 0:
        problems.append(
            f"annotation {keys.GPU_COMPUTE_ANNOTATION} must be 1-100 and "
            f"{keys.GPU_MEMORY_ANNOTATION} > 0, got {compute} and {memory_mib}"
        )
        return None
    if compute and gpus:
        problems.append(
            f"the pod asks for {gpus} whole GPU(s) ({keys.GPU_RESOURCE}) and a slice "
            f"({keys.GPU_COMPUTE_ANNOTATION}); ask for one or the other"
        )
        return None
    return Request(
        gpus=gpus,
        gpu_memory_mib=memory_mib,
        gpu_compute_percent=compute,
        cpu_milli=math.ceil(cpu * 1000),
        memory_mib=math.ceil(memory / 2**20),
    )


def _quantity(value: object, what: str) -> Decimal | None:
    try:
        return Decimal(parse_quantity(value))  # type: ignore[no-untyped-call]
    except (ValueError, TypeError, InvalidOperation):
        return None


def _integer(annotations: Mapping[str, str], key: str, default: int, problems: list[str]) -> int:
    text = annotations.get(key)
    if text is None:
        return default
    try:
        return int(text)
    except ValueError:
        problems.append(f"annotation {key}={text!r} must be an integer")
        return default


def _boolean(annotations: Mapping[str, str], key: str, problems: list[str]) -> bool | None:
    text = annotations.get(key)
    if text is None:
        return None
    if text.lower() in {"true", "false"}:
        return text.lower() == "true"
    problems.append(f'annotation {key}={text!r} must be "true" or "false"')
    return None


def _topology(text: str | None, problems: list[str]) -> TopologyWish | None:
    if text is None:
        return None
    level, _, mode = text.partition(":")
    if level not in _TOPOLOGY_LEVELS or mode not in {"", "required", "preferred"}:
        problems.append(
            f"annotation {keys.TOPOLOGY_ANNOTATION}={text!r}: use a level "
            f"({', '.join(_TOPOLOGY_LEVELS)}), optionally followed by :required or :preferred"
        )
        return None
    return TopologyWish(level=level, required=mode != "preferred")


def _csv(text: str | None) -> tuple[str, ...]:
    if not text:
        return ()
    return tuple(part.strip() for part in text.split(",") if part.strip())


# -- nodes ----------------------------------------------------------------------------------------


def node_from_k8s(node: JsonObject, *, pool_label: str) -> Node | None:
    """The core's view of a node, or None for a node without GPUs (the service ignores those).

    GPUs come from the node agent's inventory annotation when present; otherwise they are
    numbered from the node's `nvidia.com/gpu` capacity with GPU feature discovery's labels for
    model and memory, and identified as `<node>/<index>`. Raises `NodeError` when a GPU node
    lacks what the scheduler needs.
    """
    metadata = _metadata(node)
    name: str = metadata["name"]
    labels = _labels(node)
    status: JsonObject = node.get("status") or {}
    allocatable: Mapping[str, Any] = status.get("allocatable") or {}
    count = int(_quantity(allocatable.get(keys.GPU_RESOURCE, 0), "gpus") or 0)
    inventory = _annotations(node).get(keys.GPU_INVENTORY_ANNOTATION)
    if inventory is not None:
        gpus = _inventory_gpus(name, inventory)
    elif count > 0:
        gpus = _labelled_gpus(name, labels, count)
    else:
        return None
    pool = labels.get(pool_label) or labels.get(keys.GPU_PRODUCT_LABEL) or "default"
    ready = any(
        c.get("type") == "Ready" and c.get("status") == "True"
        for c in status.get("conditions") or ()
    )
    spec: JsonObject = node.get("spec") or {}
    taints = tuple(
        sorted(
            {
                t["key"]
                for t in spec.get("taints") or ()
                if t.get("effect") in {"NoSchedule", "NoExecute"}
            }
        )
    )
    hostname = labels.get("kubernetes.io/hostname", name)
    topology = tuple(
        (level, hostname if level == "host" else labels[label])
        for level, label in keys.TOPOLOGY_LEVELS
        if level == "host" or label in labels
    )
    try:
        return Node(
            name=name,
            pool=pool,
            gpus=gpus,
            cpu_milli=math.floor((_quantity(allocatable.get("cpu", 0), "cpu") or 0) * 1000),
            memory_mib=math.floor((_quantity(allocatable.get("memory", 0), "memory") or 0) / 2**20),
            labels=tuple(sorted(labels.items())),
            taints=taints,
            topology=topology,
            ready=ready and not spec.get("unschedulable", False),
        )
    except SnapshotError as error:
        raise NodeError(f"node {name}: {error}") from error


def _labelled_gpus(name: str, labels: Mapping[str, str], count: int) -> tuple[GPU, ...]:
    model = labels.get(keys.GPU_PRODUCT_LABEL)
    memory = labels.get(keys.GPU_MEMORY_LABEL)
    if not model or not memory or not memory.isdigit() or int(memory) <= 0:
        raise NodeError(
            f"node {name}: has {count} GPUs but no {keys.GPU_PRODUCT_LABEL} and "
            f"{keys.GPU_MEMORY_LABEL} (MiB) labels and no {keys.GPU_INVENTORY_ANNOTATION} "
            "annotation; run the node agent or NVIDIA GPU feature discovery on it"
        )
    return tuple(
        GPU(index=i, uuid=f"{name}/{i}", model=model, memory_mib=int(memory)) for i in range(count)
    )


def _inventory_gpus(name: str, text: str) -> tuple[GPU, ...]:
    try:
        entries = json.loads(text)
        return tuple(
            GPU(
                index=int(entry["index"]),
                uuid=str(entry["uuid"]),
                model=str(entry["model"]),
                memory_mib=int(entry["memory_mib"]),
                numa_node=int(entry.get("numa_node", 0)),
            )
            for entry in entries
        )
    except (ValueError, TypeError, KeyError, SnapshotError) as error:
        raise NodeError(
            f"node {name}: annotation {keys.GPU_INVENTORY_ANNOTATION} must be a JSON list of "
            f'{{"index", "uuid", "model", "memory_mib"}} objects ({error})'
        ) from error


def runtime_gpu_ids(gpus: Sequence[str]) -> str:
    """GPU identities for the container runtime (NVIDIA_VISIBLE_DEVICES).

    Real UUIDs pass through; GPUs numbered from capacity (`<node>/<index>`) become their index.
    """
    return ",".join(uuid.rpartition("/")[2] for uuid in gpus)


# -- allocations ----------------------------------------------------------------------------------


def allocation_annotations(pod: PodAllocation, admitted_at: str) -> dict[str, str]:
    """The annotations that carry one pod's allocation to the container and back to the service."""
    annotations = {
        keys.NODE_ANNOTATION: pod.node,
        keys.GPUS_ANNOTATION: runtime_gpu_ids(pod.gpus),
        keys.ADMITTED_AT_ANNOTATION: admitted_at,
    }
    if pod.slice is not None:
        # The container sees only its GPU, as device 0.
        annotations[keys.MEMORY_LIMIT_ANNOTATION] = f"0={pod.slice.memory_mib}M"
        annotations[keys.COMPUTE_LIMIT_ANNOTATION] = str(pod.slice.compute_percent)
    return annotations


def pod_allocation(pod: JsonObject, request: Request) -> PodAllocation | None:
    """The allocation recorded on a pod by `allocation_annotations`, or None if it has none."""
    annotations = _annotations(pod)
    node = annotations.get(keys.NODE_ANNOTATION)
    if not node:
        return None
    ids = (g for g in annotations.get(keys.GPUS_ANNOTATION, "").split(",") if g)
    gpus = tuple(f"{node}/{g}" if g.isdigit() else g for g in ids)
    share = None
    if request.is_slice:
        share = GpuSlice(
            memory_mib=request.gpu_memory_mib, compute_percent=request.gpu_compute_percent
        )
    return PodAllocation(node=node, gpus=gpus, slice=share)


# -- queues ---------------------------------------------------------------------------------------


def queue_from_k8s(obj: JsonObject) -> Queue:
    """The core's queue from a Queue object; raise `QueueError` naming the bad field."""
    name = _metadata(obj).get("name", "")
    spec: JsonObject = obj.get("spec") or {}
    try:
        quotas = tuple(
            PoolQuota(
                pool=str(entry["pool"]),
                quota=float(entry.get("quota", 0)),
                limit=None if entry.get("limit") is None else float(entry["limit"]),
                over_quota_weight=float(entry.get("overQuotaWeight", 1)),
            )
            for entry in spec.get("pools") or ()
        )
        parent = spec.get("parent") or None
        if parent is not None and not _NAME.match(parent):
            raise QueueError(f"queue {name}: spec.parent {parent!r} is not a queue name")
        return Queue(
            name=name,
            parent=parent,
            priority=int(spec.get("priority", 0)),
            quotas=quotas,
            reclaim_min_runtime_seconds=_optional_float(spec.get("reclaimMinRuntimeSeconds")),
            preempt_min_runtime_seconds=_optional_float(spec.get("preemptMinRuntimeSeconds")),
        )
    except (KeyError, TypeError, ValueError, SnapshotError) as error:
        if isinstance(error, QueueError):
            raise
        raise QueueError(f"queue {name}: {error}") from error


def _optional_float(value: object) -> float | None:
    return None if value is None else float(value)  # type: ignore[arg-type]
