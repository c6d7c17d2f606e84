"""Admission webhooks: gate and wire managed pods at creation, refuse bad pods and queues.

The API server calls these through the service's HTTPS endpoints (see scheduler_service.api).
It sends every pod that names a queue, and every pod that asks for `nvidia.com/gpu` without
one (the Helm chart's second pod webhook, filtered by a CEL match condition); the pod itself
decides here, never the filter. No GPU pod may get around the scheduler: kube-scheduler would
hand an unmanaged one GPUs the service may already have given out. So an unlabelled GPU pod
joins its namespace's default queue (a Queue's `spec.defaultFor.namespaces`) or is refused,
and a request no node could ever hold is refused with the reason rather than left waiting.

Everything a container must know about its allocation is wired here, at CREATE, because a pod's
env cannot change afterwards: each variable reads an `alloc.aistack.io/` annotation through the
downward API, and the service writes those annotations when it admits the pod, before the pod
can start. User-set copies of these variables are removed, so a pod cannot pick its own GPUs.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final

from scheduler_service import pod_contract as keys
from scheduler_service.api import AdmissionDecision
from scheduler_service.core import Node, Queue
from scheduler_service.gpu_sharing import GpuSharing
from scheduler_service.translate import (
    PodRequest,
    PodRequestError,
    QueueError,
    asks_for_gpus,
    default_namespaces,
    never_fits,
    parse_pod_request,
    pod_shape_problem,
    queue_from_k8s,
    queue_shape_problem,
    some_names,
)

__all__ = ["KubeWebhooks", "QueueUnreadableError", "injected_env"]

JsonObject = Mapping[str, Any]

_HELPERS: Final = (
    ("workflows.argoproj.io/workflow", "wait"),
    ("kubernetes_pod_operator", "airflow-xcom-sidecar"),
)
"""(pod label, container): the tools' own helper containers, which get no GPU variables. Argo's
executor `wait` beside a step's `main`; the xcom sidecar Airflow's KubernetesPodOperator adds
(with `do_xcom_push`) beside its `base` container. Only in a pod carrying the tool's label."""


def injected_env(is_slice: bool) -> list[dict[str, Any]]:
    """The env every container of a managed pod gets, each read from an allocation annotation.

    All pods learn their GPUs (AISTACK_GPUS). A slice pod asks for no `nvidia.com/gpu`, so the
    runtime learns its GPU from NVIDIA_VISIBLE_DEVICES and MPS caps its memory and compute; a
    whole-GPU pod's devices come from the device plugin, which sets the runtime's variable.
    """
    env = [
        _from_annotation(name, annotation)
        for name, annotation, slices_only in keys.ALLOCATION_ENVIRONMENT
        if is_slice or not slices_only
    ]
    return env


_OWNED_ENV = frozenset(
    {
        "CUDA_VISIBLE_DEVICES",
        "CUDA_MPS_PIPE_DIRECTORY",
        "CUDA_MPS_LOG_DIRECTORY",
        *(name for name, _annotation, _slices_only in keys.ALLOCATION_ENVIRONMENT),
    }
)
"""Variables only the service may set in a managed pod (it removes user-set copies)."""

_MPS_VOLUME = "aistack-mps"
_MPS_SHM_VOLUME = "aistack-mps-shm"


def mps_volumes(mps_root: str) -> list[dict[str, Any]]:
    """The node's MPS directory and the daemons' shared memory, as a slice's pod mounts them."""
    return [
        {"name": _MPS_VOLUME, "hostPath": {"path": mps_root, "type": "DirectoryOrCreate"}},
        {
            "name": _MPS_SHM_VOLUME,
            "hostPath": {"path": f"{mps_root}/shm", "type": "DirectoryOrCreate"},
        },
    ]


def mps_mounts() -> list[dict[str, Any]]:
    """A slice container's mounts: only its own GPU's pipe directory, and the shared memory.

    `subPathExpr` reads AISTACK_MPS_GPU, which the kubelet takes from the pod's
    `alloc.aistack.io/mps-gpu` annotation when it starts the container, after the service wrote
    it; a missing annotation mounts `<root>/pipe`, which holds no daemon, never the whole root.
    """
    return [
        {
            "name": _MPS_VOLUME,
            "mountPath": keys.MPS_CLIENT_PIPE_DIRECTORY,
            "subPathExpr": "$(AISTACK_MPS_GPU)/pipe",
        },
        {"name": _MPS_SHM_VOLUME, "mountPath": keys.MPS_CLIENT_SHM},
    ]


def _from_annotation(name: str, annotation: str) -> dict[str, Any]:
    return {
        "name": name,
        "valueFrom": {"fieldRef": {"fieldPath": f"metadata.annotations['{annotation}']"}},
    }


def _pointer(segment: str) -> str:
    """Escape one JSON-pointer segment (RFC 6901)."""
    return segment.replace("~", "~0").replace("/", "~1")


class QueueUnreadableError(Exception):
    """Queues could not be read from the API server; the message says why."""


class KubeWebhooks:
    """The pod and queue webhooks, deciding on the service's current view of the cluster.

    `queues` returns the known queues by name; `workloads_in` returns how many workloads (pending
    or placed) a queue holds; `nodes` returns the GPU nodes the scheduler knows, or none while
    its view is incomplete (the service is starting). These read the driver's caches, so a
    decision costs no API call, but for three cases. A pod naming a queue the cache does not
    hold: a queue created a moment before may not have come through the watch yet, so
    `read_queue` reads it from the API server (None: it does not exist) before the pod is
    refused. A pod that no cached node could hold: `read_nodes` reads the GPU nodes from the API
    server (none when it cannot, which refuses nothing) before the pod is refused. And the
    default queues (`spec.defaultFor.namespaces`, which the core has no use for): `default_queues`
    reads every Queue naming namespaces, with those namespaces, from the API server when a GPU
    pod without a queue label arrives or a queue change could make two defaults. `read_queue`
    and `default_queues` raise `QueueUnreadableError` when the API server does not answer; the
    request is then refused with a retry.
    """

    def __init__(
        self,
        queues: Callable[[], Mapping[str, Queue]],
        workloads_in: Callable[[str], int],
        read_queue: Callable[[str], Queue | None] = lambda _name: None,
        *,
        nodes: Callable[[], Sequence[Node]] = tuple,
        read_nodes: Callable[[], Sequence[Node]] | None = None,
        default_queues: Callable[[], Mapping[str, tuple[str, ...]]] = dict,
        gpu_sharing: GpuSharing | None = None,
        reservations: bool = False,
        service_namespace: str = "",
        allowed_namespaces: Callable[[str], tuple[str, ...] | None] = lambda _queue: None,
    ) -> None:
        self._queues = queues
        self._workloads_in = workloads_in
        self._read_queue = read_queue
        self._nodes = nodes
        self._read_nodes = read_nodes or nodes
        self._default_queues = default_queues
        self._sharing = gpu_sharing or GpuSharing()
        self._reservations = reservations
        self._service_namespace = service_namespace
        self._allowed_namespaces = allowed_namespaces

    # -- pods -------------------------------------------------------------------------------------

    def mutate_pod(self, request: JsonObject) -> AdmissionDecision:
        """Gate a good managed pod and wire its allocation env; refuse one that must not run.

        A pod is managed when it names a queue, or when it asks for `nvidia.com/gpu` without
        one and its namespace has a default queue (it is labelled with that queue). An
        unlabelled GPU pod anywhere else is refused; an unlabelled pod without GPUs is left
        alone. The pod itself decides, whatever filter sent it here.
        """
        if request.get("operation") != "CREATE":
            return AdmissionDecision(allowed=True)
        shape = pod_shape_problem(request.get("object"))
        if shape:
            return AdmissionDecision(allowed=False, code=400, message=f"malformed pod: {shape}")
        pod: JsonObject = request.get("object") or {}
        metadata: JsonObject = pod.get("metadata") or {}
        labels: Mapping[str, str] = metadata.get("labels") or {}
        added: dict[str, str] = {}
        warnings: list[str] = []
        namespace = request.get("namespace") or metadata.get("namespace") or ""
        if keys.RESERVATION_LABEL in labels and namespace == self._service_namespace:
            return AdmissionDecision(allowed=True)  # the service's own GPU reservation
        if keys.QUEUE_LABEL not in labels:
            if not asks_for_gpus(pod):
                return AdmissionDecision(allowed=True)
            queue, refusal = self._default_queue(_pod_name(pod), namespace)
            if refusal:
                return AdmissionDecision(allowed=False, message=refusal)
            added[keys.QUEUE_LABEL] = queue
            warnings.append(
                f"no label {keys.QUEUE_LABEL}: the pod asks for {keys.GPU_RESOURCE}, so it was "
                f"put in queue {queue!r}, the default queue of namespace {namespace!r}; it waits "
                "for the scheduler like any pod of that queue"
            )
        labelled = {**pod, "metadata": {**metadata, "labels": {**labels, **added}}}
        try:
            parsed = parse_pod_request(labelled)
        except PodRequestError as error:
            return AdmissionDecision(allowed=False, message=str(error))
        refusal = (
            _ownership_refusal(pod)
            or self._queue_refusal(parsed.queue)
            or self._namespace_refusal(parsed.queue, namespace, added)
        )
        refusal = refusal or self._fit_refusal(_pod_name(pod), parsed)
        if refusal:
            return AdmissionDecision(allowed=False, message=refusal)
        added[keys.MANAGED_LABEL] = "true"
        is_slice = parsed.request.is_slice
        mps_root = self._sharing.mps_root if self._sharing.uses_mps else None
        gates: tuple[str, ...] = (keys.SCHEDULING_GATE,)
        if is_slice and self._reservations:
            gates += (keys.RESERVATION_GATE,)
        patch, wired = _gate_and_wire(pod, is_slice, added, mps_root, gates)
        return AdmissionDecision(allowed=True, patch=patch, warnings=tuple(warnings + wired))

    def _default_queue(self, pod: str, namespace: str) -> tuple[str, str]:
        """The default queue of `namespace` for an unlabelled GPU pod: (queue, "") or ("", why)."""
        unlabelled = f"pod {pod} asks for {keys.GPU_RESOURCE} but has no label {keys.QUEUE_LABEL}"
        try:
            defaults = self._default_queues()
        except QueueUnreadableError as error:
            return "", (
                f"{unlabelled}, and the default queue of namespace {namespace!r} could not be "
                f"read from the API server ({error}); create the pod again in a moment"
            )
        claiming = sorted(q for q, namespaces in defaults.items() if namespace in namespaces)
        if len(claiming) == 1:
            return claiming[0], ""
        if claiming:
            return "", (
                f"{unlabelled}, and namespace {namespace!r} has {len(claiming)} default queues "
                f"({', '.join(claiming)}); set the label, or ask a cluster admin to keep the "
                "namespace in one queue's spec.defaultFor.namespaces"
            )
        return "", (
            f"{unlabelled}, and namespace {namespace!r} has no default queue: GPUs are handed out "
            f"by the AI-Stack scheduler only. Add label {keys.QUEUE_LABEL}=<leaf queue> to the "
            "pod (kubectl get queues lists them), or ask a cluster admin to name the namespace "
            "in a Queue's spec.defaultFor.namespaces"
        )

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
            leaves = [q for q in queues if _is_leaf(q, queues)]
            return (
                f"queue {name!r} does not exist (leaf queues: {some_names(leaves, near=name)}); "
                f"set label {keys.QUEUE_LABEL} to an existing queue (kubectl get queues lists "
                "them all) or create it with a Queue object"
            )
        children = [q.name for q in queues.values() if q.parent == name]
        if children:
            return (
                f"queue {name!r} is a parent queue (children: {some_names(children)}); "
                "submit to one of its leaf queues"
            )
        return ""

    def _namespace_refusal(self, queue: str, namespace: str, added: Mapping[str, str]) -> str:
        """Why a pod of `namespace` may not use `queue` (its `spec.namespaces`), or "".

        A namespace's default queue (`added`) is its own by definition.
        """
        allowed = self._allowed_namespaces(queue)
        if allowed is None or namespace in allowed or keys.QUEUE_LABEL in added:
            return ""
        return (
            f"queue {queue!r} takes pods of namespace(s) {some_names(allowed)} only (its "
            f"spec.namespaces, or its parents'), not of {namespace!r}; use a queue of your "
            "team (kubectl get queues), or ask its owners to add your namespace"
        )

    def _fit_refusal(self, pod: str, parsed: PodRequest) -> str:
        # The cached nodes lag the API server by a watch event and a cycle; a node that joined
        # a moment ago must not be missed, so a refusal is confirmed on a fresh read.
        why = never_fits(parsed, self._nodes()) and never_fits(parsed, self._read_nodes())
        if not why:
            return ""
        return (
            f"pod {pod}: {why}. This is judged on the GPU nodes the scheduler knows now; if "
            "more are coming, create the pod again once they have joined"
        )

    # -- queues -----------------------------------------------------------------------------------

    def validate_queue(self, request: JsonObject) -> AdmissionDecision:
        """Refuse a queue that cannot join the tree, and a deletion that would orphan.

        Refused: a missing parent, a cycle, a second default queue for a namespace, a default
        queue that is not a leaf; deleting a queue with children or workloads.
        """
        queues = dict(self._queues())
        if request.get("operation") == "DELETE":
            old = request.get("oldObject") or {}
            name = request.get("name", "")
            if not queue_shape_problem(old):
                name = (old.get("metadata") or {}).get("name") or name
            if not isinstance(name, str) or not name:
                return AdmissionDecision(
                    allowed=False, code=400, message="the request names no queue"
                )
            return self._deletion(name, queues, old)
        obj: JsonObject = request.get("object") or {}
        try:
            queue = queue_from_k8s(obj)
            namespaces = default_namespaces(obj)
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
        refusal = self._default_refusal(queue, namespaces, queues)
        if refusal:
            return AdmissionDecision(allowed=False, message=refusal)
        return AdmissionDecision(allowed=True, warnings=_quota_warnings(queue, queues))

    def _default_refusal(
        self, queue: Queue, namespaces: tuple[str, ...], queues: Mapping[str, Queue]
    ) -> str:
        """Why `queue` may not be the default of `namespaces` (or a parent's child), or ""."""
        children = [q.name for q in queues.values() if q.parent == queue.name]
        if namespaces and children:
            return (
                f"queue {queue.name!r}: spec.defaultFor names namespaces, but the queue has "
                f"children ({some_names(children)}) and pods run in leaf queues only; make a leaf "
                "queue the default"
            )
        if not namespaces and queue.parent is None:
            return ""  # nothing a default queue could conflict with
        try:
            defaults = self._default_queues()
        except QueueUnreadableError as error:
            return (
                f"queue {queue.name!r}: the default queues (spec.defaultFor) could not be read "
                f"from the API server ({error}); try again in a moment"
            )
        if queue.parent is not None and queue.parent in defaults:
            return (
                f"queue {queue.name!r}: parent {queue.parent!r} is the default queue of "
                f"namespace(s) {some_names(defaults[queue.parent])}, and a default queue must be a "
                "leaf; move its spec.defaultFor to a leaf queue first"
            )
        taken = sorted(
            (namespace, other)
            for other, claimed in defaults.items()
            if other != queue.name
            for namespace in claimed
            if namespace in namespaces
        )
        if taken:
            listed = some_names([f"{namespace!r} (queue {other!r})" for namespace, other in taken])
            return (
                f"queue {queue.name!r}: spec.defaultFor.namespaces names namespaces that already "
                f"have a default queue: {listed}; a namespace has at most one default queue, "
                "so remove it from one of the two"
            )
        return ""

    def _deletion(
        self, name: str, queues: Mapping[str, Queue], old: JsonObject
    ) -> AdmissionDecision:
        children = sorted(q.name for q in queues.values() if q.parent == name)
        if children:
            return AdmissionDecision(
                allowed=False,
                message=f"queue {name!r} is the parent of {some_names(children)}; "
                "delete or re-parent them first",
            )
        count = self._workloads_in(name)
        if count:
            return AdmissionDecision(
                allowed=False,
                message=f"queue {name!r} still has {count} workload(s) pending or running; "
                "wait for them to finish or delete their pods first",
            )
        try:
            orphaned = default_namespaces(old)
        except QueueError:
            orphaned = ()
        if orphaned:
            return AdmissionDecision(
                allowed=True,
                warnings=(
                    f"namespace(s) {some_names(orphaned)} lose their default queue: GPU pods "
                    f"without label {keys.QUEUE_LABEL} are refused there from now on",
                ),
            )
        return AdmissionDecision(allowed=True)


def _ownership_refusal(pod: JsonObject) -> str:
    """Why the pod takes what only the scheduler decides (its node, its allocation), or ""."""
    if (pod.get("spec") or {}).get("nodeName"):
        return (
            "spec.nodeName is set: the scheduler chooses the node; remove nodeName (a pod "
            f"without GPUs may instead drop label {keys.QUEUE_LABEL} and choose its node)"
        )
    annotations: Mapping[str, str] = (pod.get("metadata") or {}).get("annotations") or {}
    taken = sorted(k for k in annotations if k.startswith(keys.ALLOCATION_PREFIX))
    if taken:
        return (
            f"annotations {', '.join(taken)} are written by the scheduler only; "
            "remove them from the pod"
        )
    return ""


def _gate_and_wire(
    pod: JsonObject,
    is_slice: bool,
    labels: Mapping[str, str],
    mps_root: str | None = None,
    gates: tuple[str, ...] = (keys.SCHEDULING_GATE,),
) -> tuple[list[dict[str, Any]], list[str]]:
    """The patch that adds `gates`, sets `labels` and wires each container's env; warnings.

    A slice, where some pool uses MPS (`mps_root` given), also mounts its GPU's MPS daemon.
    """
    metadata: JsonObject = pod.get("metadata") or {}
    spec: JsonObject = pod.get("spec") or {}
    patch: list[dict[str, Any]] = []
    warnings: list[str] = []
    present = spec.get("schedulingGates")
    missing = [{"name": g} for g in gates if {"name": g} not in (present or ())]
    if present is None:
        patch.append({"op": "add", "path": "/spec/schedulingGates", "value": missing})
    else:
        patch += [{"op": "add", "path": "/spec/schedulingGates/-", "value": g} for g in missing]
    if metadata.get("labels") is None:
        patch.append({"op": "add", "path": "/metadata/labels", "value": dict(labels)})
    else:
        patch += [
            {"op": "add", "path": f"/metadata/labels/{_pointer(key)}", "value": value}
            for key, value in labels.items()
        ]
    pod_labels = metadata.get("labels") or {}
    helpers = {container for label, container in _HELPERS if label in pod_labels}
    mps = is_slice and mps_root is not None
    if mps:
        assert mps_root is not None
        patch += _mps_volumes_patch(spec, mps_root, warnings)
    for index, container in enumerate(spec.get("containers") or ()):
        # A tool's helper (Argo's executor, Airflow's xcom sidecar) is not the step: with a
        # slice's NVIDIA_VISIBLE_DEVICES it would get the GPU too. It loses user-set copies like
        # every container, and gets none.
        executor = container.get("name") in helpers
        ours = [] if executor else injected_env(is_slice)
        if mps and not executor:
            ours.append(
                {"name": "CUDA_MPS_PIPE_DIRECTORY", "value": keys.MPS_CLIENT_PIPE_DIRECTORY}
            )
            patch += _mps_mounts_patch(index, container, warnings)
        env = container.get("env") or []
        removed = sorted(e["name"] for e in env if e.get("name") in _OWNED_ENV and e not in ours)
        if removed:
            warnings.append(
                f"container {container.get('name')}: removed {', '.join(removed)}; "
                "the scheduler sets GPU variables"
            )
        kept = [e for e in env if e.get("name") not in _OWNED_ENV]
        if ours or removed:
            patch.append(
                {"op": "add", "path": f"/spec/containers/{index}/env", "value": kept + ours}
            )
    return patch, warnings


def _mps_volumes_patch(
    spec: JsonObject, mps_root: str, warnings: list[str]
) -> list[dict[str, Any]]:
    """Add the MPS volumes to the pod, replacing any of the same names (with a warning)."""
    ours = {volume["name"] for volume in mps_volumes(mps_root)}
    volumes = spec.get("volumes") or []
    taken = sorted(v.get("name") for v in volumes if v.get("name") in ours)
    if taken:
        warnings.append(
            f"volumes {', '.join(taken)} replaced: the scheduler mounts a slice's MPS daemon"
        )
    kept = [v for v in volumes if v.get("name") not in ours]
    return [{"op": "add", "path": "/spec/volumes", "value": kept + mps_volumes(mps_root)}]


def _mps_mounts_patch(
    index: int, container: JsonObject, warnings: list[str]
) -> list[dict[str, Any]]:
    """Mount the MPS pipe and shared memory in one container, replacing a mount of either path."""
    paths = {keys.MPS_CLIENT_PIPE_DIRECTORY, keys.MPS_CLIENT_SHM}
    names = {_MPS_VOLUME, _MPS_SHM_VOLUME}
    mounts = container.get("volumeMounts") or []
    replaced = sorted(m.get("mountPath", "") for m in mounts if m.get("mountPath") in paths)
    if replaced:
        warnings.append(
            f"container {container.get('name')}: mount of {', '.join(replaced)} replaced; "
            "a slice under MPS shares its GPU daemon's /dev/shm"
        )
    kept = [m for m in mounts if m.get("mountPath") not in paths and m.get("name") not in names]
    return [
        {
            "op": "add",
            "path": f"/spec/containers/{index}/volumeMounts",
            "value": kept + mps_mounts(),
        }
    ]


def _pod_name(pod: JsonObject) -> str:
    metadata: JsonObject = pod.get("metadata") or {}
    return str(metadata.get("name") or metadata.get("generateName") or "<unnamed>")


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
