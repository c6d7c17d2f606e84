"""What the node agent writes on its node: pure functions from a discovered `Machine` and the node.

Three things, each written only when it changes:
- the annotation `aistack.io/gpus` (`pod_contract.GPU_INVENTORY_ANNOTATION`): the GPUs as the
  service reads them (`translate.node_from_k8s`), plus `nvlink_peers` and `mig_enabled`, which
  the reader ignores today and a topology-aware placement will want;
- GPU feature discovery's labels `nvidia.com/gpu.product` and `nvidia.com/gpu.memory`, only where
  they are absent: where GPU feature discovery runs it owns them, and elsewhere they give the node
  a pool (the service's fallback for `aistack.io/pool`);
- the node condition `AistackGPUInventory`: True with what was found, or False with why the GPUs
  could not be read.

A machine that cannot be read completely (no NVML, a device that failed, no device visible)
changes no annotation or label: the agent does not know the GPUs are gone, so it keeps the last
inventory and says what is wrong in the condition instead. A condition rather than an event
because it is a state, not a happening: it stays on the node while the problem lasts (events
expire after an hour), `kubectl describe node` shows it where an operator looks, it is set once
instead of repeated every interval, and the service or an alert can read it. Node Problem
Detector draws the same line (conditions for lasting problems, events for passing ones).
"""

from __future__ import annotations

import datetime
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from scheduler_service import pod_contract as keys
from scheduler_service.gpu_discovery import Machine

__all__ = [
    "INVENTORY_CONDITION",
    "InventoryStatus",
    "condition_patch",
    "inventory_annotation",
    "inventory_entries",
    "inventory_status",
    "node_patch",
]

JsonObject = Mapping[str, Any]

INVENTORY_CONDITION: Final = "AistackGPUInventory"
"""The node condition the agent sets: True when the inventory annotation is current."""

_LABEL_VALUE: Final = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
_MAX_LABEL_VALUE: Final = 63

# gpu_discovery's note for a machine without NVML ends with a hint for the local runner
# ("; pass --simulate-gpus ..."), which means nothing on a node; the condition leaves it out.
_LOCAL_RUNNER_HINT: Final = "; pass --simulate-gpus"


@dataclass(frozen=True, slots=True)
class InventoryStatus:
    """Whether a machine's GPUs may be written to its node, as the condition says it.

    Attributes:
        complete: True when every GPU was read and the inventory may replace the node's.
        reason: The condition's reason, CamelCase: "Discovered", "NVMLUnavailable",
            "GPUsUnreadable", "NoGPUsVisible" or "Simulated".
        message: One sentence for `kubectl describe node`.
    """

    complete: bool
    reason: str
    message: str


def inventory_status(machine: Machine) -> InventoryStatus:
    """Whether `machine` is a complete read of the node's GPUs, and the condition's words."""
    if machine.source == "none":
        reason = machine.note.split(_LOCAL_RUNNER_HINT, 1)[0]
        return InventoryStatus(
            False, "NVMLUnavailable", f"{reason}; the last GPU inventory is kept"
        )
    if machine.source == "simulated":
        return InventoryStatus(
            False, "Simulated", "simulated GPUs are never written to a node; nothing changed"
        )
    if machine.note:
        return InventoryStatus(
            False,
            "GPUsUnreadable",
            f"NVML could not read every GPU ({machine.note}); the last GPU inventory is kept",
        )
    if not machine.gpus:
        return InventoryStatus(
            False,
            "NoGPUsVisible",
            "NVML lists no GPUs: the agent's container does not see the driver's devices "
            "(it needs NVIDIA_VISIBLE_DEVICES=all and the nvidia runtime); the last GPU "
            "inventory is kept",
        )
    models = sorted({gpu.model for gpu in machine.gpus})
    count = len(machine.gpus)
    versions = [
        f"driver {machine.driver_version}" if machine.driver_version else "",
        f"CUDA {machine.cuda_version}" if machine.cuda_version else "",
    ]
    details = ", ".join([", ".join(models), *(v for v in versions if v)])
    return InventoryStatus(
        True, "Discovered", f"{count} GPU{'' if count == 1 else 's'} ({details})"
    )


def inventory_entries(machine: Machine) -> list[dict[str, Any]]:
    """The annotation's JSON value: one object per GPU, in index order."""
    return [
        {
            "index": gpu.index,
            "uuid": gpu.uuid,
            "model": gpu.model,
            "memory_mib": gpu.memory_mib,
            "numa_node": gpu.numa_node,
            "nvlink_peers": list(gpu.nvlink_peers),
            "mig_enabled": gpu.mig_enabled,
        }
        for gpu in machine.gpus
    ]


def inventory_annotation(machine: Machine) -> str:
    """The value of `aistack.io/gpus` for `machine`: compact JSON, keys in a fixed order.

    The service's reader needs index, uuid, model and memory_mib, and reads numa_node; it
    ignores nvlink_peers and mig_enabled. Only meaningful for a complete read
    (`inventory_status(machine).complete`).
    """
    return json.dumps(inventory_entries(machine), separators=(",", ":"))


def node_patch(machine: Machine, current_node: JsonObject) -> dict[str, Any] | None:
    """A JSON merge patch that brings the node's metadata up to `machine`, or None if it is.

    It sets the inventory annotation when the node's differs (compared as JSON values, so a
    copy written with other spacing is left alone), and each of GPU feature discovery's two
    labels when the node has none: the product when every GPU is of one model (and it is a valid
    label value), the memory in MiB when every GPU has the same. Nothing is ever removed, and a
    machine that was not read completely changes nothing (None).

    Args:
        machine: What NVML found on the node.
        current_node: The Node object as the API server returned it (JSON).
    """
    if not inventory_status(machine).complete:
        return None
    metadata: JsonObject = current_node.get("metadata") or {}
    annotations: Mapping[str, str] = metadata.get("annotations") or {}
    labels: Mapping[str, str] = metadata.get("labels") or {}
    patch: dict[str, dict[str, str]] = {}

    if not _same_json(annotations.get(keys.GPU_INVENTORY_ANNOTATION), inventory_entries(machine)):
        patch["annotations"] = {keys.GPU_INVENTORY_ANNOTATION: inventory_annotation(machine)}

    wanted: dict[str, str] = {}
    models = {gpu.model for gpu in machine.gpus}
    if len(models) == 1:
        (model,) = models
        if _is_label_value(model):
            wanted[keys.GPU_PRODUCT_LABEL] = model
    memories = {gpu.memory_mib for gpu in machine.gpus}
    if len(memories) == 1:
        (memory_mib,) = memories
        wanted[keys.GPU_MEMORY_LABEL] = str(memory_mib)
    missing = {key: value for key, value in wanted.items() if key not in labels}
    if missing:
        patch["labels"] = missing
    return {"metadata": patch} if patch else None


def condition_patch(
    machine: Machine, current_node: JsonObject, now: datetime.datetime
) -> dict[str, Any] | None:
    """A strategic merge patch of the node's status setting `AistackGPUInventory`, or None.

    None when the node already carries the condition with the same status, reason and message.
    `lastTransitionTime` is `now` when the status changes (or the condition is new), else kept;
    `lastHeartbeatTime` is `now`. Send it as a strategic merge patch to `nodes/status`:
    conditions merge by type there, so the kubelet's own conditions are untouched (a JSON merge
    patch would replace the whole list).
    """
    status = inventory_status(machine)
    wanted = "True" if status.complete else "False"
    node_status: JsonObject = current_node.get("status") or {}
    current = next(
        (
            condition
            for condition in node_status.get("conditions") or ()
            if condition.get("type") == INVENTORY_CONDITION
        ),
        None,
    )
    stamp = _rfc3339(now)
    transition = stamp
    if current is not None:
        same = (current.get("status"), current.get("reason"), current.get("message"))
        if same == (wanted, status.reason, status.message):
            return None
        if current.get("status") == wanted and current.get("lastTransitionTime"):
            transition = current["lastTransitionTime"]
    condition: dict[str, str] = {
        "type": INVENTORY_CONDITION,
        "status": wanted,
        "reason": status.reason,
        "message": status.message,
        "lastHeartbeatTime": stamp,
        "lastTransitionTime": transition,
    }
    return {"status": {"conditions": [condition]}}


def _same_json(text: str | None, value: object) -> bool:
    if text is None:
        return False
    try:
        return bool(json.loads(text) == value)
    except ValueError:
        return False  # not JSON at all: the agent's inventory replaces it


def _is_label_value(text: str) -> bool:
    return len(text) <= _MAX_LABEL_VALUE and _LABEL_VALUE.match(text) is not None


def _rfc3339(moment: datetime.datetime) -> str:
    return moment.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
