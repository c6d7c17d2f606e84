"""GPU reservations on the real API server: slices run on the device the plugin holds for them.

The service runs with `gpu_reservations` on. kwok runs no containers and the cluster has no
device plugin, so the test plays both for a reservation pod once kube-scheduler has bound it
and kwok reports it Running: it picks the device (deliberately not the GPU the service booked,
as a real plugin may) and runs the real `aistack reserve-gpu` with that NVIDIA_VISIBLE_DEVICES,
as the pod's container would, against the API server.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes.client import ApiClient, CoreV1Api
from kubernetes.client.exceptions import ApiException

from scheduler_service import pod_contract as keys
from scheduler_service.kube._reservations import reservation_name
from tests.integration.cluster import SERVICE_NAMESPACE, GpuNodes, TestCluster, gpu_pod, wait_for
from tests.integration.pods import Pod, gates, gpu_inventory, gpu_uuid, read, waiting_message
from tests.integration.service import RESERVING, RunningService, make_queue, managed_pod, pod_env

AISTACK = str(Path(sys.executable).parent / "aistack")


@pytest.fixture(scope="module")
def service(cluster: TestCluster, admin_client: ApiClient) -> Iterator[RunningService]:
    running = RunningService(
        cluster,
        admin_client,
        config={"gpu_sharing": {"default": "mps"}, **RESERVING},
    )
    running.start()
    yield running
    running.remove()


@pytest.fixture
def containers() -> Iterator[list[subprocess.Popen[str]]]:
    """The reservation pods' containers this test started; stopped at its end."""
    started: list[subprocess.Popen[str]] = []
    yield started
    for process in started:
        process.terminate()
        output, _ = process.communicate(timeout=10)
        assert process.returncode == 0, output  # a SIGTERM ends it cleanly


def reservation(core: CoreV1Api, name: str) -> Pod | None:
    response: Any = core.list_namespaced_pod(
        SERVICE_NAMESPACE, field_selector=f"metadata.name={name}", _preload_content=False
    )
    items: list[Pod] = json.loads(response.data)["items"]
    return items[0] if items else None


def test_slices_wait_for_their_reservation_then_run_on_the_device_the_plugin_gave_it(  # noqa: PLR0917 - fixtures
    core: CoreV1Api,
    namespace: str,
    make_gpu_node: GpuNodes,
    admin_client: ApiClient,
    kubeconfig_path: Path,
    containers: list[subprocess.Popen[str]],
) -> None:
    pool = make_gpu_node.prefix
    node = f"{pool}-g0"
    make_gpu_node("g0", gpus=2, labels={keys.POOL_LABEL: pool}, annotations=gpu_inventory(pool, 2))
    queue = make_queue(admin_client, {pool: 2})
    for name, share in (("s0", (8192, 30)), ("s1", (8192, 30))):
        core.create_namespaced_pod(namespace, managed_pod(name, queue, slice_=share))  # type: ignore[arg-type]

    # Admitted (the allocation is on the pods) but held by the reservation gate, saying why.
    held = wait_for(
        "both slices to be admitted and told they wait for their GPU's reservation",
        lambda: [read(core, namespace, name) for name in ("s0", "s1")],
        lambda pods: all(
            "waiting until NVIDIA's device plugin" in waiting_message(p) for p in pods
        ),
    )
    booked = {p["metadata"]["annotations"][keys.GPUS_ANNOTATION] for p in held}
    assert len(booked) == 1  # both slices share one booked GPU
    (gpu,) = booked
    assert all(gates(p) == [keys.RESERVATION_GATE] for p in held)  # the admission gate is gone
    assert all(keys.DEVICE_ANNOTATION not in p["metadata"]["annotations"] for p in held)
    name = reservation_name(node, gpu)
    assert name in waiting_message(held[0])

    # The reservation pod: one device of that node, from the plugin.
    pod = wait_for(
        f"reservation pod {name} to run on {node}",
        lambda: reservation(core, name),
        lambda found: found is not None and found["status"].get("phase") == "Running",
    )
    assert pod is not None
    assert pod["spec"]["nodeName"] == node
    (container,) = pod["spec"]["containers"]
    assert container["resources"]["limits"][keys.GPU_RESOURCE] == "1"
    assert container["command"] == ["aistack", "reserve-gpu"]
    # The plugin picks the device; here the GPU the service did not book.
    device = next(gpu_uuid(pool, i) for i in range(2) if gpu_uuid(pool, i) != gpu)
    containers.append(
        subprocess.Popen(
            [AISTACK, "reserve-gpu", f"--kubeconfig={kubeconfig_path}"],
            env={
                **os.environ,
                "NVIDIA_VISIBLE_DEVICES": device,
                "POD_NAME": name,
                "POD_NAMESPACE": SERVICE_NAMESPACE,
            },
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
    )

    running = wait_for(
        "both slices to run on the reserved device",
        lambda: [read(core, namespace, name) for name in ("s0", "s1")],
        lambda pods: all(p["status"].get("phase") == "Running" and not gates(p) for p in pods),
    )
    for slice_pod in running:
        env = pod_env(slice_pod)
        assert (env["NVIDIA_VISIBLE_DEVICES"], env["AISTACK_MPS_GPU"]) == (device, device)
        assert env["AISTACK_GPUS"] == gpu  # the books keep the booked GPU
    reserved = reservation(core, name)
    assert reserved is not None
    assert reserved["metadata"]["annotations"][keys.RESERVED_DEVICE_ANNOTATION] == device

    # The slices end: no slice needs the reservation, and it goes.
    for slice_name in ("s0", "s1"):
        core.delete_namespaced_pod(slice_name, namespace, grace_period_seconds=0)
    wait_for(
        f"reservation pod {name} to be deleted",
        lambda: reservation(core, name),
        lambda p: p is None,
    )


def test_a_reservation_the_node_refuses_is_made_again(
    core: CoreV1Api, namespace: str, make_gpu_node: GpuNodes, admin_client: ApiClient
) -> None:
    pool = make_gpu_node.prefix
    node = f"{pool}-g0"
    make_gpu_node("g0", gpus=1, labels={keys.POOL_LABEL: pool}, annotations=gpu_inventory(pool, 1))
    queue = make_queue(admin_client, {pool: 1})
    core.create_namespaced_pod(namespace, managed_pod("s", queue, slice_=(8192, 30)))  # type: ignore[arg-type]
    name = reservation_name(node, gpu_uuid(pool, 0))
    first = wait_for(
        f"reservation pod {name}", lambda: reservation(core, name), lambda p: p is not None
    )
    assert first is not None
    # The kubelet refuses it (its device was still in use): the pod fails.
    core.patch_namespaced_pod_status(
        name,
        SERVICE_NAMESPACE,
        {"status": {"phase": "Failed", "reason": "UnexpectedAdmissionError"}},
    )
    again = wait_for(
        "a new reservation pod of the same name",
        lambda: reservation(core, name),
        lambda p: p is not None and p["metadata"]["uid"] != first["metadata"]["uid"],
    )
    assert again is not None
    assert gates(read(core, namespace, "s")) == [keys.RESERVATION_GATE]


def test_a_pod_labelled_as_a_reservation_outside_the_service_s_namespace_is_counted(
    core: CoreV1Api, namespace: str, make_gpu_node: GpuNodes, admin_client: ApiClient
) -> None:
    # kube-system is exempt from the GPU pod webhook (the chart's default): a pod there runs
    # without a queue. Labelled as one of the service's reservations, it must still be counted.
    with contextlib.suppress(ApiException):  # 409: it exists
        core.create_namespace({"metadata": {"name": "kube-system"}})  # type: ignore[arg-type]
    pool = make_gpu_node.prefix
    make_gpu_node("g0", gpus=1, labels={keys.POOL_LABEL: pool}, annotations=gpu_inventory(pool, 1))
    impostor = gpu_pod(
        f"{pool}-impostor",
        1,
        node_selector=make_gpu_node.selector,
        labels={keys.RESERVATION_LABEL: "true"},
    )
    core.create_namespaced_pod("kube-system", impostor)
    name = f"{pool}-impostor"
    try:
        wait_for(
            "the impostor to run",
            lambda: read(core, "kube-system", name),
            lambda pod: pod["status"].get("phase") == "Running",
        )
        queue = make_queue(admin_client, {pool: 1})
        core.create_namespaced_pod(namespace, managed_pod("w", queue, gpus=1))  # type: ignore[arg-type]
        told = wait_for(
            "the managed pod to wait for the GPU the impostor holds",
            lambda: read(core, namespace, "w"),
            lambda pod: bool(waiting_message(pod)),
        )
        assert keys.SCHEDULING_GATE in gates(told)
    finally:
        core.delete_namespaced_pod(name, "kube-system", grace_period_seconds=0)
