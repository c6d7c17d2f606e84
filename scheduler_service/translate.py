"""Kubernetes objects (as JSON dicts) to the core's values, and back for allocations.

Pure functions: a pod, node or Queue object in, a core value out, or an error whose message says
what is wrong with the object and how to fix it. The admission webhook runs the same parsing at
pod creation, so a pod the service cannot understand is refused there, not left waiting.

Public, because two drivers read the same objects: the cluster driver (pods, nodes and Queues from
the API server) and the local runner (each step's pod as Argo would build it, Queues from a
file). Reading them with one parser is what makes a step ask the same thing on both.
"""

from __future__ import annotations

import difflib
import hashlib
import hmac
import json
import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from types import MappingProxyType
from typing import Any, Final

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
    Workload,
)
from scheduler_service.gpu_sharing import Mechanism, hami_core_environment

__all__ = [
    "MAX_QUEUE_GPUS",
    "NodeError",
    "PodRequest",
    "PodRequestError",
    "QueueError",
    "allocation_annotations",
    "allocation_signature",
    "asks_for_gpus",
    "default_namespaces",
    "device_annotations",
    "held_gpus",
    "never_fits",
    "node_from_k8s",
    "parse_pod_request",
    "pod_allocation",
    "pod_shape_problem",
    "queue_from_k8s",
    "queue_namespaces",
    "queue_shape_problem",
    "runtime_gpu_ids",
    "signed_by",
    "some_names",
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

    def workload(self, name: str, *, submitted_at: float) -> Workload:
        """The core's workload for this pod's step (all of its gang: every member asks alike)."""
        return Workload(
            name=name,
            queue=self.queue,
            kind=self.kind,
            request=self.request,
            pods=self.gang_size,
            priority=self.priority,
            submitted_at=submitted_at,
            pools=self.pools,
            models=self.models,
            topology=self.topology,
            node_selector=self.node_selector,
            tolerations=self.tolerations,
            preemptible=self.preemptible,
        )


def pod_shape_problem(pod: object) -> str:
    """What makes `pod` not a pod as the API server sends one, or "".

    The API server only sends decoded pods, but anyone who reaches the webhook can send
    anything: every field the scheduler reads is checked for its kind here, so the parsers
    after it meet only what they expect, and the refusal names the field.
    """
    if not isinstance(pod, dict):
        return f"the object is {_kind_of(pod)}, not a pod"
    problems: list[str] = []
    metadata = _shaped(pod, "metadata", dict, "metadata", problems) or {}
    for part in ("labels", "annotations"):
        _string_map(metadata, part, f"metadata.{part}", problems)
    for part in ("name", "generateName", "namespace", "uid", "creationTimestamp"):
        _shaped(metadata, part, str, f"metadata.{part}", problems)
    spec = _shaped(pod, "spec", dict, "spec", problems) or {}
    for group in ("containers", "initContainers"):
        for i, container in enumerate(_shaped(spec, group, list, f"spec.{group}", problems) or ()):
            where = f"spec.{group}[{i}]"
            if not isinstance(container, dict):
                problems.append(f"{where} is {_kind_of(container)}, not a container")
                continue
            _shaped(container, "name", str, f"{where}.name", problems)
            resources = _shaped(container, "resources", dict, f"{where}.resources", problems) or {}
            for amounts in ("limits", "requests"):
                found = _shaped(resources, amounts, dict, f"{where}.resources.{amounts}", problems)
                for name, amount in (found or {}).items():
                    if isinstance(amount, bool) or not isinstance(amount, str | int | float):
                        problems.append(
                            f"{where}.resources.{amounts}[{name!r}] is {_kind_of(amount)}, "
                            "not a quantity"
                        )
            _named_list(container, "env", f"{where}.env", problems)
            _named_list(
                container, "volumeMounts", f"{where}.volumeMounts", problems, key_field="mountPath"
            )
    _named_list(spec, "schedulingGates", "spec.schedulingGates", problems)
    _named_list(spec, "volumes", "spec.volumes", problems)
    _string_map(spec, "nodeSelector", "spec.nodeSelector", problems)
    for i, toleration in enumerate(
        _shaped(spec, "tolerations", list, "spec.tolerations", problems) or ()
    ):
        if not isinstance(toleration, dict):
            problems.append(f"spec.tolerations[{i}] is {_kind_of(toleration)}, not a toleration")
    _shaped(spec, "affinity", dict, "spec.affinity", problems)
    _shaped(spec, "nodeName", str, "spec.nodeName", problems)
    deadline = spec.get("activeDeadlineSeconds")
    if deadline is not None and (isinstance(deadline, bool) or not isinstance(deadline, int)):
        problems.append(f"spec.activeDeadlineSeconds is {_kind_of(deadline)}, not a whole number")
    return "; ".join(problems[:5]) + (
        f"; and {len(problems) - 5} more" if len(problems) > 5 else ""
    )


_KINDS_OF: Final[Mapping[type, str]] = MappingProxyType(
    {
        bool: "a boolean",
        str: "a string",
        int: "a number",
        float: "a number",
        list: "a list",
        dict: "a map",
        type(None): "null",
    }
)


def _kind_of(value: object) -> str:
    return _KINDS_OF.get(type(value), type(value).__name__)


def _queue_name(obj: object) -> str:
    metadata = obj.get("metadata") if isinstance(obj, dict) else None
    name = metadata.get("name") if isinstance(metadata, dict) else None
    return name if isinstance(name, str) and name else "<unnamed>"


def queue_shape_problem(obj: object) -> str:
    """What makes `obj` not a Queue object as the API server sends one, or "" (see pods)."""
    if not isinstance(obj, dict):
        return f"the object is {_kind_of(obj)}, not a Queue"
    problems: list[str] = []
    metadata = _shaped(obj, "metadata", dict, "metadata", problems) or {}
    _shaped(metadata, "name", str, "metadata.name", problems)
    spec = _shaped(obj, "spec", dict, "spec", problems) or {}
    _shaped(spec, "parent", str, "spec.parent", problems)
    for i, entry in enumerate(_shaped(spec, "pools", list, "spec.pools", problems) or ()):
        if not isinstance(entry, dict) or not isinstance(entry.get("pool"), str):
            problems.append(f"spec.pools[{i}] needs a pool (a string)")
    return "; ".join(problems[:5])


def _shaped(
    parent: Mapping[str, Any], key: str, kind: type, where: str, problems: list[str]
) -> Any:
    """`parent[key]` when it is absent, null or of `kind`; else None, with the problem noted."""
    value = parent.get(key)
    if value is None or isinstance(value, kind):
        return value
    wanted = _KINDS_OF.get(kind, kind.__name__)
    problems.append(f"{where} is {_kind_of(value)}, not {wanted}")
    return None


def _string_map(parent: Mapping[str, Any], key: str, where: str, problems: list[str]) -> None:
    found = _shaped(parent, key, dict, where, problems)
    for name, value in (found or {}).items():
        if not isinstance(value, str):
            problems.append(f"{where}[{name!r}] is {_kind_of(value)}, not a string")


def _named_list(
    parent: Mapping[str, Any], key: str, where: str, problems: list[str], *, key_field: str = ""
) -> None:
    for i, item in enumerate(_shaped(parent, key, list, where, problems) or ()):
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            problems.append(f"{where}[{i}] needs a name (a string)")
        elif key_field and not isinstance(item.get(key_field), str):
            problems.append(
                f"{where}[{i}].{key_field} is {_kind_of(item.get(key_field))}, not a string"
            )


def asks_for_gpus(pod: JsonObject) -> bool:
    """Whether a container or init container of `pod` asks for `nvidia.com/gpu` (not zero).

    Requests and limits both count, as in the chart's matchConditions. An amount that does not
    parse counts as asking: such a pod must meet the webhook, which refuses it with the reason,
    rather than pass as a pod without GPUs.
    """
    spec: JsonObject = pod.get("spec") or {}
    for container in (*(spec.get("containers") or ()), *(spec.get("initContainers") or ())):
        resources: JsonObject = container.get("resources") or {}
        for amounts in (resources.get("limits") or {}, resources.get("requests") or {}):
            if keys.GPU_RESOURCE in amounts and _quantity(amounts[keys.GPU_RESOURCE]) != 0:
                return True
    return False


def parse_pod_request(pod: JsonObject) -> PodRequest:
    """Parse and validate a managed pod; raise `PodRequestError` listing every problem.

    Every number is bounded by `pod_contract` and every name is at most MAX_NAME_LENGTH long; a
    problem names the label, annotation or field, the value and what it may be.
    """
    labels = _labels(pod)
    annotations = _annotations(pod)
    spec: JsonObject = pod.get("spec") or {}
    problems: list[str] = []

    queue = labels.get(keys.QUEUE_LABEL, "")
    if not queue:
        problems.append(f"label {keys.QUEUE_LABEL} must name the pod's queue")
    _check_name(f"label {keys.QUEUE_LABEL}", queue, problems)

    kind = Kind.TRAIN
    kind_text = labels.get(keys.KIND_LABEL)
    if kind_text is not None:
        try:
            kind = Kind(kind_text)
        except ValueError:
            problems.append(f"label {keys.KIND_LABEL}={kind_text!r}: use one of {_KINDS}")

    priority = _integer(
        annotations,
        keys.PRIORITY_ANNOTATION,
        0,
        problems,
        low=keys.MIN_PRIORITY,
        high=keys.MAX_PRIORITY,
    )
    preemptible = _boolean(annotations, keys.PREEMPTIBLE_ANNOTATION, problems)
    gang, gang_size = _gang(labels, annotations, problems)
    request = _request(spec, annotations, problems)
    topology = _topology(annotations.get(keys.TOPOLOGY_ANNOTATION), problems)
    pools = _names(annotations, keys.POOLS_ANNOTATION, problems)
    models = _names(annotations, keys.GPU_MODELS_ANNOTATION, problems)
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
        pools=pools,
        models=models,
        topology=topology,
        node_selector=tuple(sorted((spec.get("nodeSelector") or {}).items())),
        tolerations=tuple(
            sorted({t["key"] for t in spec.get("tolerations") or () if t.get("key")})
        ),
    )


def _gang(
    labels: Mapping[str, str], annotations: Mapping[str, str], problems: list[str]
) -> tuple[str | None, int]:
    """The gang's name and size: both or neither, the size within 1-MAX_GANG_SIZE."""
    gang = labels.get(keys.GANG_LABEL) or None
    if gang is None:
        if keys.GANG_SIZE_ANNOTATION in annotations:
            problems.append(
                f"annotation {keys.GANG_SIZE_ANNOTATION} needs label {keys.GANG_LABEL} "
                "naming the gang"
            )
        return None, 1
    _check_name(f"label {keys.GANG_LABEL}", gang, problems)
    if keys.GANG_SIZE_ANNOTATION not in annotations:
        problems.append(
            f"annotation {keys.GANG_SIZE_ANNOTATION} must give the gang's pod count "
            f"(1 to {keys.MAX_GANG_SIZE}) when label {keys.GANG_LABEL} is set"
        )
        return gang, 1
    size = _integer(
        annotations, keys.GANG_SIZE_ANNOTATION, 1, problems, low=1, high=keys.MAX_GANG_SIZE
    )
    return gang, size


def _request(
    spec: JsonObject, annotations: Mapping[str, str], problems: list[str]
) -> Request | None:
    """The pod's request: whole GPUs, CPU and memory as Kubernetes charges them, or a slice."""
    found = len(problems)
    gpus = int(_effective(spec, lambda container, where: _gpus(container, where, problems)))
    if gpus > keys.MAX_GPUS_PER_POD:
        problems.append(
            f"{keys.GPU_RESOURCE}: the pod asks for {gpus} GPUs (counted as Kubernetes counts "
            f"them, over containers and init containers); one pod may ask for 0 to "
            f"{keys.MAX_GPUS_PER_POD}: split the work into a gang (label {keys.GANG_LABEL})"
        )
    cpu = _effective(spec, lambda container, _where: _requested(container, "cpu"))
    memory = _effective(spec, lambda container, _where: _requested(container, "memory"))
    has_memory = keys.GPU_MEMORY_ANNOTATION in annotations
    has_compute = keys.GPU_COMPUTE_ANNOTATION in annotations
    memory_mib = _integer(
        annotations, keys.GPU_MEMORY_ANNOTATION, 0, problems, low=1, high=keys.MAX_GPU_MEMORY_MIB
    )
    compute = _integer(annotations, keys.GPU_COMPUTE_ANNOTATION, 0, problems, low=1, high=100)
    if has_memory != has_compute:
        problems.append(
            f"a GPU slice needs both annotations {keys.GPU_MEMORY_ANNOTATION} (1 to "
            f"{keys.MAX_GPU_MEMORY_MIB}) and {keys.GPU_COMPUTE_ANNOTATION} (1 to 100)"
        )
    elif has_compute and gpus:
        problems.append(
            f"the pod asks for {gpus} whole GPU(s) ({keys.GPU_RESOURCE}) and a slice "
            f"({keys.GPU_COMPUTE_ANNOTATION}); ask for one or the other"
        )
    if len(problems) > found:
        return None
    return Request(
        gpus=gpus,
        gpu_memory_mib=memory_mib,
        gpu_compute_percent=compute,
        cpu_milli=math.ceil(cpu * 1000),
        memory_mib=math.ceil(memory / 2**20),
    )


def held_gpus(pod: JsonObject) -> int:
    """The whole GPUs a pod holds on its node, as the kubelet charges it (init containers too).

    For any pod, managed or not; an amount that cannot be read counts as nothing (the device
    plugin would not have given such a pod a GPU either).
    """
    spec = pod.get("spec")
    if not isinstance(spec, Mapping):
        return 0
    ignored: list[str] = []
    try:
        return int(_effective(spec, lambda container, where: _gpus(container, where, ignored)))
    except (TypeError, AttributeError, ValueError, ArithmeticError):
        return 0


def _effective(spec: JsonObject, amount: Callable[[JsonObject, str], Decimal]) -> Decimal:
    """What Kubernetes charges a pod of one resource, given each container's `amount`.

    The pod's effective request, as kube-scheduler and the kubelet compute it: init containers
    run one at a time, sidecars (init containers with restartPolicy Always) run from their
    start to the pod's end. So the larger of every container plus every sidecar, and each
    regular init container plus the sidecars started before it. `amount` gets the container and
    how to name it in a message.
    """
    running = sum(
        (amount(c, f"container {c.get('name')}") for c in spec.get("containers") or ()),
        Decimal(0),
    )
    sidecars = Decimal(0)
    initialising = Decimal(0)
    for container in spec.get("initContainers") or ():
        own = amount(container, f"init container {container.get('name')}")
        if container.get("restartPolicy") == "Always":
            sidecars += own
        else:
            initialising = max(initialising, own + sidecars)
    return max(running + sidecars, initialising)


def _gpus(container: JsonObject, where: str, problems: list[str]) -> Decimal:
    """The whole GPUs one container asks for (its limit, else its request)."""
    resources: JsonObject = container.get("resources") or {}
    limits: Mapping[str, Any] = resources.get("limits") or {}
    requests: Mapping[str, Any] = resources.get("requests") or {}
    text = limits.get(keys.GPU_RESOURCE, requests.get(keys.GPU_RESOURCE))
    if text is None:
        return Decimal(0)
    gpus = _quantity(text)
    if gpus is None or gpus != gpus.to_integral_value() or gpus < 0:
        problems.append(
            f"{where}: {keys.GPU_RESOURCE} must be a whole number of GPUs, got {text!r}; for "
            f"part of a GPU set annotations {keys.GPU_MEMORY_ANNOTATION} and "
            f"{keys.GPU_COMPUTE_ANNOTATION} instead"
        )
        return Decimal(0)
    return gpus


def _requested(container: JsonObject, resource: str) -> Decimal:
    resources: JsonObject = container.get("resources") or {}
    requests: Mapping[str, Any] = resources.get("requests") or {}
    return _quantity(requests.get(resource, 0)) or Decimal(0)


def _quantity(value: object) -> Decimal | None:
    try:
        return Decimal(parse_quantity(value))  # type: ignore[no-untyped-call]
    except (ValueError, TypeError, InvalidOperation):
        return None


def _integer(
    annotations: Mapping[str, str],
    key: str,
    default: int,
    problems: list[str],
    *,
    low: int,
    high: int,
) -> int:
    """The annotation `key` as an integer in low-high; `default` when absent or refused."""
    text = annotations.get(key)
    if text is None:
        return default
    try:
        value = int(text)
    except ValueError:
        problems.append(f"annotation {key}={_shown(text)} must be an integer from {low} to {high}")
        return default
    if not low <= value <= high:
        problems.append(f"annotation {key}={_shown(text)} is out of range: use {low} to {high}")
        return default
    return value


def _names(annotations: Mapping[str, str], key: str, problems: list[str]) -> tuple[str, ...]:
    """A comma-separated list of names (pools, GPU models), each at most MAX_NAME_LENGTH long."""
    names = _csv(annotations.get(key))
    for name in names:
        _check_name(f"annotation {key}", name, problems)
    return names


def _check_name(where: str, name: str, problems: list[str]) -> None:
    if len(name) > keys.MAX_NAME_LENGTH:
        problems.append(
            f"{where}: {_shown(name)} is {len(name)} characters long; a name has 1 to "
            f"{keys.MAX_NAME_LENGTH}"
        )


def _shown(text: str) -> str:
    """`text` quoted for a message, cut short when it is longer than any valid value."""
    limit = keys.MAX_NAME_LENGTH
    return repr(text) if len(text) <= limit else repr(text[:limit]) + "..."


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
    count = int(_quantity(allocatable.get(keys.GPU_RESOURCE, 0)) or 0)
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
            cpu_milli=math.floor((_quantity(allocatable.get("cpu", 0)) or 0) * 1000),
            memory_mib=math.floor((_quantity(allocatable.get("memory", 0)) or 0) / 2**20),
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


def allocation_annotations(
    pod: PodAllocation,
    admitted_at: str,
    *,
    sharing: Mechanism = "none",
    uses_mps: bool = False,
    device: str | None = None,
) -> dict[str, str]:
    """The annotations that carry one pod's allocation to the container and back to the service.

    A slice also gets what `sharing`, the mechanism of its node's pool, needs: under MPS the
    uuid of its GPU, whose daemon's pipe directory its containers mount, under HAMi-core its
    caps in HAMi's syntax. MPS needs the GPU's uuid (the daemon's directory is named by it): a
    GPU the node agent did not report, known only by its index, gets "none". Where `uses_mps`
    (some pool uses MPS, so the webhook mounted the daemons' directory into every slice), a
    slice not under MPS gets the GPU "none", whose directory holds no daemon.

    A slice's device (`alloc.aistack.io/device`, its NVIDIA_VISIBLE_DEVICES) is the booked GPU,
    or `device` where a reservation pod found which one the device plugin holds for it; where
    that is not known yet (GPU reservations, `device=""`), neither the device nor the MPS GPU
    is written: `device_annotations` writes them later.
    """
    annotations = {
        keys.NODE_ANNOTATION: pod.node,
        keys.GPUS_ANNOTATION: runtime_gpu_ids(pod.gpus),
        keys.ADMITTED_AT_ANNOTATION: admitted_at,
    }
    if pod.slice is None:
        return annotations
    # The container sees only its GPU, as device 0.
    memory, compute = pod.slice.memory_mib, pod.slice.compute_percent
    annotations[keys.MEMORY_LIMIT_ANNOTATION] = f"0={memory}M"
    annotations[keys.COMPUTE_LIMIT_ANNOTATION] = str(compute)
    gpu = annotations[keys.GPUS_ANNOTATION] if device is None else device
    if sharing == "mps" and gpu.isdigit():
        sharing = "none"
    annotations[keys.GPU_SHARING_ANNOTATION] = sharing
    if gpu:
        annotations.update(device_annotations(gpu, sharing=sharing, uses_mps=uses_mps))
    if sharing == "hami-core":
        hami = hami_core_environment(memory, compute)
        annotations[keys.HAMI_MEMORY_ANNOTATION] = hami["CUDA_DEVICE_MEMORY_LIMIT"]
        annotations[keys.HAMI_COMPUTE_ANNOTATION] = hami["CUDA_DEVICE_SM_LIMIT"]
    return annotations


def device_annotations(device: str, *, sharing: Mechanism, uses_mps: bool) -> dict[str, str]:
    """A slice's device (NVIDIA_VISIBLE_DEVICES) and, where MPS is in use, its daemon's GPU."""
    annotations = {keys.DEVICE_ANNOTATION: device}
    if sharing == "mps" or uses_mps:
        annotations[keys.MPS_GPU_ANNOTATION] = device if sharing == "mps" else "none"
    return annotations


def allocation_signature(key: bytes, uid: str, annotations: Mapping[str, str]) -> str:
    """The signature of a pod's allocation: HMAC-SHA256 over its uid and its alloc.* annotations.

    Every `alloc.aistack.io/*` annotation but the signature itself counts, sorted, so a forged
    node, GPU, cap, device or gang record, or an allocation copied from another pod, does not
    match.
    """
    signed = {
        name: value
        for name, value in annotations.items()
        if name.startswith(keys.ALLOCATION_PREFIX) and name != keys.SIGNATURE_ANNOTATION
    }
    message = json.dumps([uid, sorted(signed.items())], separators=(",", ":")).encode()
    return hmac.new(key, message, hashlib.sha256).hexdigest()


def signed_by(key: bytes, pod: JsonObject) -> bool:
    """Whether the pod's allocation carries the signature `key` gives it."""
    annotations = _annotations(pod)
    uid = str(_metadata(pod).get("uid", ""))
    found = annotations.get(keys.SIGNATURE_ANNOTATION, "")
    return hmac.compare_digest(found, allocation_signature(key, uid, annotations))


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

MAX_QUEUE_GPUS = 1_000_000
"""The most GPUs a queue's quota or limit in one pool may name (the Queue CRD's bound too)."""
MAX_WEIGHT = 1_000
"""The largest over-quota weight."""
MAX_QUEUE_PRIORITY = 1_000_000
"""Queue priorities lie within plus or minus this."""
MAX_QUEUE_POOLS = 64
"""The most pools a queue may list (the CRD's maxItems)."""
MAX_RUNTIME_SECONDS = 31_536_000
"""The longest minimum runtime before reclaim or preemption: a year."""


def queue_from_k8s(obj: JsonObject) -> Queue:
    """The core's queue from a Queue object; raise `QueueError` naming the bad field."""
    shape = queue_shape_problem(obj)
    if shape:
        raise QueueError(f"queue {_queue_name(obj)}: malformed: {shape}")
    name = _metadata(obj).get("name", "")
    spec: JsonObject = obj.get("spec") or {}
    try:
        pools = spec.get("pools") or ()
        if len(pools) > MAX_QUEUE_POOLS:
            raise QueueError(
                f"queue {name}: spec.pools lists {len(pools)} pools, at most {MAX_QUEUE_POOLS}"
            )
        quotas = tuple(
            PoolQuota(
                pool=str(entry["pool"]),
                quota=_bounded(name, f"pools[{i}].quota", entry.get("quota", 0), MAX_QUEUE_GPUS),
                limit=None
                if entry.get("limit") is None
                else _bounded(name, f"pools[{i}].limit", entry["limit"], MAX_QUEUE_GPUS),
                over_quota_weight=_bounded(
                    name, f"pools[{i}].overQuotaWeight", entry.get("overQuotaWeight", 1), MAX_WEIGHT
                ),
            )
            for i, entry in enumerate(pools)
        )
        parent = spec.get("parent") or None
        if parent is not None and not _NAME.match(parent):
            raise QueueError(f"queue {name}: spec.parent {parent!r} is not a queue name")
        priority = spec.get("priority", 0)
        if isinstance(priority, bool) or not isinstance(priority, int):
            raise QueueError(f"queue {name}: spec.priority {priority!r} is not a whole number")
        if abs(priority) > MAX_QUEUE_PRIORITY:
            raise QueueError(
                f"queue {name}: spec.priority {priority} is outside "
                f"-{MAX_QUEUE_PRIORITY}..{MAX_QUEUE_PRIORITY}"
            )
        return Queue(
            name=name,
            parent=parent,
            priority=priority,
            quotas=quotas,
            reclaim_min_runtime_seconds=_optional_seconds(name, spec, "reclaimMinRuntimeSeconds"),
            preempt_min_runtime_seconds=_optional_seconds(name, spec, "preemptMinRuntimeSeconds"),
        )
    except (KeyError, TypeError, ValueError, SnapshotError) as error:
        if isinstance(error, QueueError):
            raise
        raise QueueError(f"queue {name}: {error}") from error


def _bounded(queue: str, field: str, value: object, most: float) -> float:
    """`value` as a number of 0..`most`, or a `QueueError` naming the field and the bounds."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise QueueError(f"queue {queue}: spec.{field} {value!r} is not a number")
    number = float(value)
    if not (math.isfinite(number) and 0 <= number <= most):
        raise QueueError(f"queue {queue}: spec.{field} {value!r} is outside 0..{most:g}")
    return number


def _optional_seconds(queue: str, spec: JsonObject, field: str) -> float | None:
    value = spec.get(field)
    return None if value is None else _bounded(queue, field, value, MAX_RUNTIME_SECONDS)


_NAMESPACE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


def queue_namespaces(obj: JsonObject) -> tuple[str, ...] | None:
    """The namespaces a Queue object lets use it (`spec.namespaces`); None: every namespace.

    Raises `QueueError` naming the field when it is not a list of namespace names.
    """
    spec = obj.get("spec") if isinstance(obj, dict) else None
    namespaces = spec.get("namespaces") if isinstance(spec, dict) else None
    if namespaces is None:
        return None
    if not isinstance(namespaces, list) or not all(
        isinstance(n, str) and len(n) <= keys.MAX_NAME_LENGTH and _NAMESPACE.match(n)
        for n in namespaces
    ):
        raise QueueError(
            f"queue {_queue_name(obj)}: spec.namespaces must be a list of namespace names, got "
            f"{str(namespaces)[:200]}"
        )
    return tuple(dict.fromkeys(namespaces))


def default_namespaces(obj: JsonObject) -> tuple[str, ...]:
    """The namespaces a Queue object is the default queue for (`spec.defaultFor.namespaces`).

    A GPU pod without the queue label in one of them is put in this queue by the pod webhook.
    The core does not know namespaces; only the webhooks read this. Raises `QueueError` naming
    the field when it is not a list of namespace names.
    """
    shape = queue_shape_problem(obj)
    if shape:
        raise QueueError(f"queue {_queue_name(obj)}: malformed: {shape}")
    name = _metadata(obj).get("name", "")
    spec: JsonObject = obj.get("spec") or {}
    default_for = spec.get("defaultFor")
    if default_for is None:
        return ()
    namespaces = default_for.get("namespaces", []) if isinstance(default_for, Mapping) else None
    if not isinstance(namespaces, list) or not all(
        isinstance(n, str) and len(n) <= keys.MAX_NAME_LENGTH and _NAMESPACE.match(n)
        for n in namespaces
    ):
        raise QueueError(
            f"queue {name}: spec.defaultFor.namespaces must be a list of namespace names, got "
            f"{str(namespaces)[:200]}"
        )
    return tuple(dict.fromkeys(namespaces))


# -- refusals ----------------------------------------------------------------------------------

SHOWN_NAMES = 5
"""How many names (queues, pools) a message lists before "and N more"."""


def some_names(names: Iterable[str], *, near: str | None = None) -> str:
    """At most SHOWN_NAMES of `names` for a message, then how many more there are.

    With `near`, the names most like it (difflib's ratio) come first, so a typo's correction
    is among those shown; otherwise they are sorted.
    """
    ordered = sorted(set(names))
    if near is not None:
        ordered.sort(key=lambda name: -difflib.SequenceMatcher(None, near, name).ratio())
    shown = ", ".join(ordered[:SHOWN_NAMES]) or "none yet"
    hidden = len(ordered) - SHOWN_NAMES
    return f"{shown} and {hidden} more" if hidden > 0 else shown


def never_fits(parsed: PodRequest, nodes: Sequence[Node]) -> str:
    """Why no node of `nodes` could ever hold the pod, even empty; "" when one could.

    Judged on the pod alone against each node's size (GPU count, GPU memory), pool and GPU
    model, as the core's phase 0 judges a workload: what runs there does not matter. With no
    GPU node known nothing is refused, so a cluster whose nodes have not joined (or a service
    that has not listed them yet) turns nobody away.
    """
    nodes = [node for node in nodes if node.gpus]
    if not nodes:
        return ""
    pools = sorted({node.pool for node in nodes})
    unknown = [pool for pool in parsed.pools if pool not in pools]
    if unknown:
        return (
            f"annotation {keys.POOLS_ANNOTATION} names pool(s) {', '.join(unknown)} that no GPU "
            f"node is in (pools: {some_names(pools, near=unknown[0])})"
        )
    where = f" in pool(s) {', '.join(parsed.pools)}" if parsed.pools else ""
    nodes = [node for node in nodes if not parsed.pools or node.pool in parsed.pools]
    if parsed.models:
        models = sorted({node.gpu_model for node in nodes})
        nodes = [node for node in nodes if node.gpu_model in parsed.models]
        if not nodes:
            return (
                f"no GPU node{where} has GPU model {' or '.join(parsed.models)} "
                f"(models: {some_names(models, near=parsed.models[0])})"
            )
        where += f" with GPU model {' or '.join(parsed.models)}"
    request = parsed.request
    if request.is_slice:
        largest = max(nodes, key=lambda node: (_gpu_memory_mib(node), node.name))
        memory_mib = _gpu_memory_mib(largest)
        if request.gpu_memory_mib > memory_mib:
            return (
                f"a slice of {request.gpu_memory_mib} MiB is larger than any GPU{where}: the "
                f"largest has {memory_mib} MiB ({largest.gpu_model} on node {largest.name}); "
                f"ask for at most {memory_mib} MiB"
            )
    elif request.gpus:
        biggest = max(nodes, key=lambda node: (len(node.gpus), node.name))
        if request.gpus > len(biggest.gpus):
            return (
                f"the pod asks for {request.gpus} whole GPUs and the biggest node{where} has "
                f"{len(biggest.gpus)} (node {biggest.name}, pool {biggest.pool}, "
                f"{biggest.gpu_model}); split the work into a gang of smaller pods (label "
                f"{keys.GANG_LABEL})"
            )
    return ""


def _gpu_memory_mib(node: Node) -> int:
    return max(gpu.memory_mib for gpu in node.gpus)
