"""What the agent writes on its Node: the inventory the service reads, the labels, the condition."""

from __future__ import annotations

import copy
import datetime
import json
from typing import Any

import pytest

from scheduler_service import pod_contract as keys
from scheduler_service.agent import (
    INVENTORY_CONDITION,
    condition_patch,
    inventory_annotation,
    inventory_status,
    node_patch,
)
from scheduler_service.core import GPU
from scheduler_service.gpu_discovery import DiscoveredGpu, Machine, discover, simulated
from scheduler_service.translate import node_from_k8s
from tests.agent.fake_kube import gpu_node_object
from tests.gpus.fake_nvml import FakeNvml, NVMLError_GpuIsLost

NOW = datetime.datetime(2026, 12, 1, 12, 0, 0, tzinfo=datetime.UTC)
LATER = NOW + datetime.timedelta(minutes=5)
MACHINES = {
    "h100_hgx": FakeNvml.h100_hgx,
    "a100_pcie": FakeNvml.a100_pcie,
    "a100_hgx4_mig": FakeNvml.a100_hgx4_mig,
    "gh200": FakeNvml.gh200,
}


def _apply(node: dict[str, Any], patch: dict[str, Any] | None) -> dict[str, Any]:
    """`node` after a metadata merge patch (annotations and labels only set keys)."""
    patched = copy.deepcopy(node)
    for field, values in (patch or {}).get("metadata", {}).items():
        patched["metadata"].setdefault(field, {}).update(values)
    return patched


def _with_condition(node: dict[str, Any], patch: dict[str, Any] | None) -> dict[str, Any]:
    patched = copy.deepcopy(node)
    for condition in (patch or {}).get("status", {}).get("conditions", []):
        conditions = patched["status"]["conditions"]
        conditions[:] = [c for c in conditions if c["type"] != condition["type"]] + [condition]
    return patched


# -- the inventory, as the service reads it -------------------------------------------------------


@pytest.mark.parametrize("name", sorted(MACHINES))
def test_the_inventory_round_trips_through_the_services_reader(name: str) -> None:
    machine = discover(MACHINES[name]())
    node = gpu_node_object("n1", labels={keys.POOL_LABEL: "pool-a"})

    read = node_from_k8s(_apply(node, node_patch(machine, node)), pool_label=keys.POOL_LABEL)

    assert read is not None
    assert read.gpus == tuple(
        GPU(
            index=gpu.index,
            uuid=gpu.uuid,
            model=gpu.model,
            memory_mib=gpu.memory_mib,
            numa_node=gpu.numa_node,
        )
        for gpu in machine.gpus
    )


def test_the_h100_board_becomes_eight_gpus_with_nvmls_uuids() -> None:
    nvml = FakeNvml.h100_hgx()
    node = gpu_node_object("n1")

    read = node_from_k8s(_apply(node, node_patch(discover(nvml), node)), pool_label="none")

    assert read is not None
    assert [gpu.uuid for gpu in read.gpus] == [fake.uuid for fake in nvml.gpus]
    assert {gpu.model for gpu in read.gpus} == {"NVIDIA-H100-80GB-HBM3"}
    assert read.pool == "NVIDIA-H100-80GB-HBM3"  # from the product label the agent wrote


def test_the_annotation_is_compact_json_with_the_extra_keys() -> None:
    machine = discover(FakeNvml.a100_hgx4_mig())

    text = inventory_annotation(machine)

    assert " " not in text
    first = json.loads(text)[0]
    assert list(first) == [
        "index",
        "uuid",
        "model",
        "memory_mib",
        "numa_node",
        "nvlink_peers",
        "mig_enabled",
    ]
    assert (first["nvlink_peers"], first["mig_enabled"]) == ([1, 2, 3], True)


# -- patch only on change -------------------------------------------------------------------------


def test_an_unchanged_node_needs_no_patch() -> None:
    machine = discover(FakeNvml.h100_hgx())
    node = gpu_node_object("n1")
    node = _apply(node, node_patch(machine, node))

    assert node_patch(machine, node) is None


def test_the_same_inventory_written_with_other_spacing_is_left_alone() -> None:
    machine = discover(FakeNvml.a100_pcie())
    pretty = json.dumps(json.loads(inventory_annotation(machine)), indent=2)
    node = gpu_node_object(
        "n1",
        annotations={keys.GPU_INVENTORY_ANNOTATION: pretty},
        labels={keys.GPU_PRODUCT_LABEL: "x", keys.GPU_MEMORY_LABEL: "1"},
    )

    assert node_patch(machine, node) is None


@pytest.mark.parametrize("stale", ["not json", "[]", '[{"index": 0}]'])
def test_a_stale_or_broken_annotation_is_replaced(stale: str) -> None:
    machine = discover(FakeNvml.gh200())
    node = gpu_node_object("n1", annotations={keys.GPU_INVENTORY_ANNOTATION: stale})

    patch = node_patch(machine, node)

    assert patch is not None
    assert patch["metadata"]["annotations"] == {
        keys.GPU_INVENTORY_ANNOTATION: inventory_annotation(machine)
    }


def test_a_changed_gpu_rewrites_the_inventory() -> None:
    nvml = FakeNvml.a100_hgx4_mig()
    node = gpu_node_object("n1")
    node = _apply(node, node_patch(discover(nvml), node))
    nvml.gpus = (*nvml.gpus[:3], FakeNvml.a100_pcie().gpus[3])  # a card swapped

    patch = node_patch(discover(nvml), node)

    assert patch is not None
    assert set(patch["metadata"]) == {"annotations"}  # the labels are there already


# -- labels ---------------------------------------------------------------------------------------


def test_missing_labels_are_set_from_nvml() -> None:
    node = gpu_node_object("n1")

    patch = node_patch(discover(FakeNvml.h100_hgx()), node)

    assert patch is not None
    assert patch["metadata"]["labels"] == {
        keys.GPU_PRODUCT_LABEL: "NVIDIA-H100-80GB-HBM3",
        keys.GPU_MEMORY_LABEL: "81559",
    }


def test_labels_that_exist_are_never_changed_even_when_they_differ() -> None:
    # GPU feature discovery owns them where it runs; its spelling wins.
    node = gpu_node_object(
        "n1", labels={keys.GPU_PRODUCT_LABEL: "NVIDIA-H100-SXM5-80GB", keys.GPU_MEMORY_LABEL: "1"}
    )

    patch = node_patch(discover(FakeNvml.h100_hgx()), node)

    assert patch is not None
    assert "labels" not in patch["metadata"]


def test_a_machine_of_mixed_gpus_gets_only_the_labels_all_its_gpus_share() -> None:
    gpus = (
        DiscoveredGpu(index=0, uuid="GPU-a", model="NVIDIA-L4", memory_mib=23034),
        DiscoveredGpu(index=1, uuid="GPU-b", model="NVIDIA-L40S", memory_mib=46068),
    )
    same_memory = (
        DiscoveredGpu(index=0, uuid="GPU-a", model="NVIDIA-A100-SXM4-80GB", memory_mib=81920),
        DiscoveredGpu(index=1, uuid="GPU-b", model="NVIDIA-A100-PCIE-80GB", memory_mib=81920),
    )
    node = gpu_node_object("n1")

    mixed = node_patch(Machine(gpus=gpus, source="nvml"), node)
    shared = node_patch(Machine(gpus=same_memory, source="nvml"), node)

    assert mixed is not None
    assert "labels" not in mixed["metadata"]
    assert shared is not None
    assert shared["metadata"]["labels"] == {keys.GPU_MEMORY_LABEL: "81920"}


@pytest.mark.parametrize("model", ["NVIDIA-Graphics-Device-(rev-2)", "A" * 64])
def test_a_model_that_is_no_label_value_is_not_written_as_one(model: str) -> None:
    gpu = DiscoveredGpu(index=0, uuid="GPU-a", model=model, memory_mib=1024)

    patch = node_patch(Machine(gpus=(gpu,), source="nvml"), gpu_node_object("n1"))

    assert patch is not None
    assert patch["metadata"]["labels"] == {keys.GPU_MEMORY_LABEL: "1024"}
    assert json.loads(patch["metadata"]["annotations"][keys.GPU_INVENTORY_ANNOTATION])[0][
        "model"
    ] == (model)


# -- a machine that cannot be read changes nothing ------------------------------------------------


def _lost_gpu() -> Machine:
    nvml = FakeNvml.h100_hgx()
    nvml.failures[("nvmlDeviceGetUUID", 5)] = NVMLError_GpuIsLost
    return discover(nvml)


@pytest.mark.parametrize(
    ("machine", "reason", "says"),
    [
        (
            discover(FakeNvml.no_driver()),
            "NVMLUnavailable",
            "no NVIDIA driver: NVML could not be loaded",
        ),
        (_lost_gpu(), "GPUsUnreadable", "GPU 5 left out: GPU is lost"),
        (discover(FakeNvml()), "NoGPUsVisible", "NVIDIA_VISIBLE_DEVICES=all"),
        (simulated("2xH100-80GB"), "Simulated", "never written to a node"),
    ],
    ids=["no-driver", "lost-gpu", "no-devices", "simulated"],
)
def test_an_incomplete_read_removes_nothing_and_says_why(
    machine: Machine, reason: str, says: str
) -> None:
    known = discover(FakeNvml.h100_hgx())
    node = gpu_node_object("n1")
    node = _apply(node, node_patch(known, node))

    status = inventory_status(machine)
    patch = condition_patch(machine, node, NOW)

    assert node_patch(machine, node) is None
    assert node_patch(machine, gpu_node_object("fresh")) is None
    assert (status.complete, status.reason) == (False, reason)
    assert says in status.message
    assert status.message.endswith("the last GPU inventory is kept") or reason == "Simulated"
    assert "--simulate-gpus" not in status.message  # the local runner's hint means nothing here
    assert patch is not None
    (condition,) = patch["status"]["conditions"]
    assert condition["type"] == INVENTORY_CONDITION
    assert (condition["status"], condition["reason"]) == ("False", reason)
    assert condition["message"] == status.message


# -- the condition --------------------------------------------------------------------------------


def test_the_condition_says_what_was_found() -> None:
    machine = discover(FakeNvml.h100_hgx())

    patch = condition_patch(machine, gpu_node_object("n1"), NOW)

    assert patch == {
        "status": {
            "conditions": [
                {
                    "type": "AistackGPUInventory",
                    "status": "True",
                    "reason": "Discovered",
                    "message": "8 GPUs (NVIDIA-H100-80GB-HBM3, driver 550.54.15, CUDA 12.4)",
                    "lastHeartbeatTime": "2026-12-01T12:00:00Z",
                    "lastTransitionTime": "2026-12-01T12:00:00Z",
                }
            ]
        }
    }


def test_the_same_condition_is_not_written_again() -> None:
    machine = discover(FakeNvml.h100_hgx())
    node = _with_condition(
        gpu_node_object("n1"), condition_patch(machine, gpu_node_object("n1"), NOW)
    )

    assert condition_patch(machine, node, LATER) is None


def test_a_change_of_status_moves_the_transition_time_and_a_new_message_keeps_it() -> None:
    working = discover(FakeNvml.h100_hgx())
    node = _with_condition(
        gpu_node_object("n1"), condition_patch(working, gpu_node_object("n1"), NOW)
    )

    broken = condition_patch(discover(FakeNvml.no_driver()), node, LATER)
    upgraded_nvml = FakeNvml.h100_hgx()
    upgraded_nvml.driver_version = "560.35.03"
    upgraded = condition_patch(discover(upgraded_nvml), node, LATER)

    assert broken is not None
    (condition,) = broken["status"]["conditions"]
    assert condition["lastTransitionTime"] == "2026-12-01T12:05:00Z"
    assert upgraded is not None
    (condition,) = upgraded["status"]["conditions"]
    assert (condition["status"], condition["lastTransitionTime"]) == (
        "True",
        "2026-12-01T12:00:00Z",
    )
    assert "driver 560.35.03" in condition["message"]
    assert condition["lastHeartbeatTime"] == "2026-12-01T12:05:00Z"


def test_one_gpu_is_named_in_the_singular() -> None:
    assert inventory_status(discover(FakeNvml.gh200())).message.startswith("1 GPU (")
