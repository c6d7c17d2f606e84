"""GPU reservation pods: whole GPUs from NVIDIA's device plugin and slices on one node.

A whole-GPU pod asks for `nvidia.com/gpu`, and the device plugin, not the service, picks which
devices it gets; a slice reaches its GPU beside the plugin, by NVIDIA_VISIBLE_DEVICES. The
service's books never give one GPU to both, but the plugin, which does not see slices, could
hand a whole-GPU pod the device its slices run on. So, with `gpu_reservations` on, every GPU
the books give slices on a node gets a reservation pod in the service's namespace: it asks the
plugin for one `nvidia.com/gpu` on that node, and its container (`aistack reserve-gpu`) writes
on its own pod which device the plugin gave it (`RESERVED_DEVICE_ANNOTATION`). The slices of
that booked GPU run on that device: the webhook gave them a second gate
(`RESERVATION_GATE`), the release leaves it, and `Reservations` removes it once the device is
known, writing the device on the slice (`DEVICE_ANNOTATION`, and its MPS daemon's GPU).

Why this keeps devices apart: the books hold, per node, whole GPUs plus GPUs hosting slices
within the node's GPUs; every GPU hosting slices holds one reservation pod, so the plugin's
count of free devices is the books' count, and it gives each reservation and each whole-GPU
pod a device of its own. The booked GPU of a slice and its device may differ (the books are a
count for the plugin's devices); the device is what runs, the booked GPU is what is counted.

This module decides; the driver watches the pods and carries out `ReservationIntents`. No I/O.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from scheduler_service import pod_contract as keys
from scheduler_service.gpu_sharing import MECHANISMS, GpuSharing, Mechanism
from scheduler_service.translate import allocation_signature, device_annotations

__all__ = [
    "RESERVATION_CONTAINER",
    "ReservationIntents",
    "Reservations",
    "SliceFinish",
    "reservation_name",
]

JsonObject = Mapping[str, Any]

RESERVATION_CONTAINER: Final = "reserve"
_TERMINAL: Final = frozenset({"Succeeded", "Failed"})


@functools.lru_cache(maxsize=1 << 16)
def reservation_name(node: str, gpu: str) -> str:
    """The reservation pod of booked GPU `gpu` on `node`.

    One name per GPU, so two service replicas, or a restarted one, never make two. Kept for
    the GPUs seen lately: every cycle names the reservation of every slice twice.
    """
    digest = hashlib.sha256(f"{node}/{gpu}".encode()).hexdigest()[:12]
    return f"aistack-gpu-{digest}"


@dataclass(frozen=True, slots=True)
class SliceFinish:
    """Give a released slice its device and lift its reservation gate, in one guarded patch."""

    namespace: str
    name: str
    uid: str
    resource_version: str
    annotations: Mapping[str, str]
    remaining_gates: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class ReservationIntents:
    """What one pass decided: pods to create and delete, slices to finish, messages to write."""

    create: tuple[JsonObject, ...] = ()
    delete: tuple[str, ...] = ()
    finish: tuple[SliceFinish, ...] = ()
    waiting: tuple[tuple[str, str, str, str], ...] = ()
    """(namespace, pod, uid, why) of each slice that waits for its reservation and is not yet
    told so, for its PodScheduled message."""


@dataclass(frozen=True, slots=True)
class _Slice:
    namespace: str
    name: str
    uid: str
    resource_version: str
    node: str
    gpu: str
    sharing: str
    gates: tuple[str, ...]
    message: str
    allocation: Mapping[str, str]
    """Its alloc.aistack.io/* annotations (signed again with the device added)."""


@dataclass(frozen=True, slots=True)
class _Reservation:
    name: str
    node: str
    gpu: str
    device: str
    phase: str
    reason: str
    deleting: bool
    bound: str
    """The node it is bound to ("" until kube-scheduler binds it: it then holds no device)."""


class Reservations:
    """The reservation pods the slices of the cluster need, and the slices they let run.

    Fed every managed pod (`slice_changed`, `slice_deleted`) and every reservation pod
    (`reservation_changed`, `reservation_deleted`); `intents(now)` says what to do. Not
    thread-safe: the driver's loop owns it.
    """

    def __init__(
        self,
        *,
        namespace: str,
        image: str,
        service_account: str,
        sharing: GpuSharing,
        linger_seconds: float = 30.0,
        signing_key: bytes | None = None,
    ) -> None:
        """Reservation pods live in `namespace` and run `image` as `service_account`.

        One that no slice needs any more is deleted after `linger_seconds`, so a GPU whose
        slices come and go keeps its device. With `signing_key` the allocation a slice's device
        completes is signed again, as the ledger signs what it writes.
        """
        self.namespace = namespace
        self._image = image
        self._service_account = service_account
        self._sharing = sharing
        self._linger = linger_seconds
        self._key = signing_key
        self._slices: dict[str, _Slice] = {}
        self._reservations: dict[str, _Reservation] = {}
        self._unneeded_since: dict[str, float] = {}

    def __repr__(self) -> str:
        return f"Reservations(slices={len(self._slices)}, pods={len(self._reservations)})"

    # -- what is watched -------------------------------------------------------------------------

    def slice_changed(self, pod: JsonObject) -> None:
        """Track a managed pod that holds a slice of a booked GPU; forget any other."""
        metadata: JsonObject = pod.get("metadata") or {}
        uid = str(metadata.get("uid", ""))
        annotations: Mapping[str, str] = metadata.get("annotations") or {}
        node = annotations.get(keys.NODE_ANNOTATION, "")
        gpu = annotations.get(keys.GPUS_ANNOTATION, "")
        phase = (pod.get("status") or {}).get("phase")
        if (
            not node
            or not gpu
            or "," in gpu
            or keys.GPU_MEMORY_ANNOTATION not in annotations
            or phase in _TERMINAL
            or metadata.get("deletionTimestamp")
        ):
            self._slices.pop(uid, None)
            return
        gates = tuple(
            g.get("name", "") for g in (pod.get("spec") or {}).get("schedulingGates") or ()
        )
        conditions = (pod.get("status") or {}).get("conditions") or ()
        message = next(
            (c.get("message", "") for c in conditions if c.get("type") == "PodScheduled"), ""
        )
        self._slices[uid] = _Slice(
            namespace=str(metadata.get("namespace", "")),
            name=str(metadata.get("name", "")),
            uid=uid,
            resource_version=str(metadata.get("resourceVersion", "")),
            node=node,
            gpu=gpu,
            sharing=annotations.get(keys.GPU_SHARING_ANNOTATION, "none"),
            gates=gates,
            message=str(message),
            allocation={
                k: v for k, v in annotations.items() if k.startswith(keys.ALLOCATION_PREFIX)
            },
        )

    def slice_deleted(self, pod: JsonObject) -> None:
        """Forget a deleted pod."""
        self._slices.pop(str((pod.get("metadata") or {}).get("uid", "")), None)

    def reservation_changed(self, pod: JsonObject) -> None:
        """Track a reservation pod (one of `namespace`, with the reservation label)."""
        metadata: JsonObject = pod.get("metadata") or {}
        annotations: Mapping[str, str] = metadata.get("annotations") or {}
        node, _, gpu = annotations.get(keys.RESERVES_ANNOTATION, "").rpartition("/")
        status: JsonObject = pod.get("status") or {}
        name = str(metadata.get("name", ""))
        self._reservations[name] = _Reservation(
            name=name,
            node=node,
            gpu=gpu,
            device=annotations.get(keys.RESERVED_DEVICE_ANNOTATION, ""),
            phase=str(status.get("phase", "Pending")),
            reason=str(status.get("reason") or status.get("message") or ""),
            deleting=bool(metadata.get("deletionTimestamp")),
            bound=str((pod.get("spec") or {}).get("nodeName") or ""),
        )

    def reservation_deleted(self, pod: JsonObject) -> None:
        """Forget a deleted reservation pod."""
        name = str((pod.get("metadata") or {}).get("name", ""))
        self._reservations.pop(name, None)
        self._unneeded_since.pop(name, None)

    # -- deciding --------------------------------------------------------------------------------

    def _needed(self) -> dict[str, tuple[str, str]]:
        """The reservation each GPU hosting slices needs: its name -> (node, booked GPU)."""
        needed: dict[str, tuple[str, str]] = {}
        for piece in self._slices.values():
            needed.setdefault(reservation_name(piece.node, piece.gpu), (piece.node, piece.gpu))
        return needed

    def idle(self) -> dict[str, str]:
        """Reservation pods that hold a device no slice needs now: name -> their node.

        One lingers `linger_seconds` after its GPU's last slice (and a deleted one until it is
        gone); the device plugin counts its device as taken meanwhile, so the books must count
        it too, as they count an unmanaged pod's GPUs. Otherwise they would give the GPU to a
        whole-GPU pod that kube-scheduler could not place until the reservation went.
        """
        needed = self._needed()
        return {
            name: held.bound
            for name, held in self._reservations.items()
            if name not in needed and held.bound and held.phase not in _TERMINAL
        }

    def intents(self, now: float, hostnames: Mapping[str, str]) -> ReservationIntents:
        """What to do now: reservations to create and delete, slices to finish and to tell.

        Slices get the reservations they need; a slice whose reservation knows its device is
        finished; a reservation no slice has needed for `linger_seconds` is deleted.
        `hostnames` maps node names to their `kubernetes.io/hostname` label.
        """
        needed = self._needed()
        create: list[JsonObject] = []
        delete: list[str] = []
        waiting: list[tuple[str, str, str, str]] = []
        for name, (node, gpu) in sorted(needed.items()):
            self._unneeded_since.pop(name, None)
            held = self._reservations.get(name)
            if held is None:
                create.append(self._manifest(name, node, gpu, hostnames.get(node, node)))
            elif held.phase in _TERMINAL and not held.deleting:
                delete.append(name)  # the kubelet refused it (its device was still in use)
        for name, held in sorted(self._reservations.items()):
            if name in needed or held.deleting:
                continue
            since = self._unneeded_since.setdefault(name, now)
            if now - since >= self._linger:
                delete.append(name)
        finish: list[SliceFinish] = []
        for piece in sorted(self._slices.values(), key=lambda s: (s.namespace, s.name)):
            if keys.RESERVATION_GATE not in piece.gates:
                continue
            name = reservation_name(piece.node, piece.gpu)
            held = self._reservations.get(name)
            if held is not None and held.device and held.phase == "Running" and not held.deleting:
                finish.append(self._finish(piece, held.device))
                continue
            why = _why_waiting(self.namespace, name, piece, held)
            if why != piece.message:
                waiting.append((piece.namespace, piece.name, piece.uid, why))
        return ReservationIntents(
            create=tuple(create), delete=tuple(delete), finish=tuple(finish), waiting=tuple(waiting)
        )

    def _finish(self, piece: _Slice, device: str) -> SliceFinish:
        sharing: Mechanism = next((m for m in MECHANISMS if m == piece.sharing), "none")
        annotations = device_annotations(device, sharing=sharing, uses_mps=self._sharing.uses_mps)
        if self._key is not None:
            annotations[keys.SIGNATURE_ANNOTATION] = allocation_signature(
                self._key, piece.uid, {**piece.allocation, **annotations}
            )
        return SliceFinish(
            namespace=piece.namespace,
            name=piece.name,
            uid=piece.uid,
            resource_version=piece.resource_version,
            annotations=annotations,
            remaining_gates=tuple(g for g in piece.gates if g != keys.RESERVATION_GATE),
        )

    def _manifest(self, name: str, node: str, gpu: str, hostname: str) -> JsonObject:
        """A pod that holds one device of `node` for the slices of booked GPU `gpu`."""
        return {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": name,
                "namespace": self.namespace,
                "labels": {
                    keys.RESERVATION_LABEL: "true",
                    "app.kubernetes.io/managed-by": "aistack",
                },
                "annotations": {keys.RESERVES_ANNOTATION: f"{node}/{gpu}"},
            },
            "spec": {
                "nodeSelector": {"kubernetes.io/hostname": hostname},
                # GPU nodes are tainted; the reservation must land on exactly this one.
                "tolerations": [{"operator": "Exists"}],
                "serviceAccountName": self._service_account,
                "restartPolicy": "Always",
                "terminationGracePeriodSeconds": 5,
                "containers": [
                    {
                        "name": RESERVATION_CONTAINER,
                        "image": self._image,
                        "command": ["aistack", "reserve-gpu"],
                        "env": [
                            _field("POD_NAME", "metadata.name"),
                            _field("POD_NAMESPACE", "metadata.namespace"),
                        ],
                        "resources": {
                            "requests": {"cpu": "5m", "memory": "48Mi", keys.GPU_RESOURCE: "1"},
                            "limits": {"memory": "96Mi", keys.GPU_RESOURCE: "1"},
                        },
                        "securityContext": {
                            "allowPrivilegeEscalation": False,
                            "readOnlyRootFilesystem": True,
                            "capabilities": {"drop": ["ALL"]},
                        },
                    }
                ],
            },
        }


def _field(name: str, path: str) -> dict[str, Any]:
    return {"name": name, "valueFrom": {"fieldRef": {"fieldPath": path}}}


def _why_waiting(namespace: str, name: str, piece: _Slice, held: _Reservation | None) -> str:
    """The message of a slice admitted to a GPU whose reservation has no device yet."""
    where = f"admitted to GPU {piece.gpu} of node {piece.node}"
    pod = f"reservation pod {namespace}/{name}"
    if held is None:
        state = "being created"
    elif held.deleting or held.phase in _TERMINAL:
        state = f"refused by the node ({held.reason or held.phase}), made again"
    elif held.phase != "Running":
        state = f"{held.phase}{f': {held.reason}' if held.reason else ''}"
    else:
        state = "running, and has not said which device NVIDIA's device plugin gave it"
    return (
        f"aistack: {where}; waiting until NVIDIA's device plugin holds a device for its "
        f"slices ({pod}: {state})"
    )
