"""Admission rules on a real API server: no GPU pod gets around the scheduler.

The webhooks are the chart's own configurations (see service.py), so these tests also prove the
chart's selection: a CEL match condition sends GPU pods without a queue label to the service,
and nothing else. Each test has its own namespace, nodes (a pool of its own) and queues.
"""

from __future__ import annotations

import contextlib
import json
import time
from typing import Any

import pytest
from kubernetes.client import ApiClient, CoreV1Api, CustomObjectsApi
from kubernetes.client.exceptions import ApiException

from scheduler_service import pod_contract as keys
from tests.integration.cluster import GpuNodes, wait_for
from tests.integration.pods import Pod, is_gated, read, refusal, waiting_message
from tests.integration.service import RunningService, make_queue, managed_pod, pod_env

GPU_ENV = ("AISTACK_", "NVIDIA_", "CUDA_")


def unlabelled_pod(name: str, *, gpus: int = 0, init_gpus: int = 0) -> Pod:
    """A pod that names no queue, asking for GPUs in its container or its init container."""
    pod = managed_pod(name, "none", gpus=gpus)
    del pod["metadata"]["labels"]
    if init_gpus:
        limits = {keys.GPU_RESOURCE: str(init_gpus)}
        pod["spec"]["initContainers"] = [
            {"name": "warmup", "image": "registry.invalid/warmup", "resources": {"limits": limits}}
        ]
    return pod


def create(core: CoreV1Api, namespace: str, pod: Pod) -> Pod:
    """Create `pod`; the pod as the API server stored it (after the webhooks)."""
    response: Any = core.create_namespaced_pod(namespace, pod, _preload_content=False)  # type: ignore[arg-type]
    created: Pod = json.loads(response.data)
    return created


def refused(core: CoreV1Api, namespace: str, pod: Pod) -> str:
    """The API server's message refusing `pod`; fails the test if it creates it."""
    with pytest.raises(ApiException) as error:
        create(core, namespace, pod)
    return refusal(error.value)


def is_running(pod: Pod) -> bool:
    return bool(pod["status"].get("phase") == "Running")


def gpu_variables(pod: Pod, container: str) -> list[str]:
    """The GPU variables a container's spec sets (whatever their values)."""
    (spec,) = [c for c in pod["spec"]["containers"] if c["name"] == container]
    return [e["name"] for e in spec.get("env") or [] if e["name"].startswith(GPU_ENV)]


def known_to_the_service(service: RunningService, node: str) -> None:
    """Wait until the service's cycles count `node` (its API lists it)."""
    token = service.cluster.tokens["admin"]
    wait_for(
        f"the service to know node {node}",
        lambda: service.get(f"/api/v1/nodes/{node}", token)[0],
        lambda status: status == 200,
    )


# -- GPU pods without a queue label ---------------------------------------------------------------


def test_an_unlabelled_gpu_pod_without_a_default_queue_is_refused(
    core: CoreV1Api, namespace: str
) -> None:
    message = refused(core, namespace, unlabelled_pod("plain", gpus=1))
    assert "mutate-gpu-pod.aistack.io" in message
    assert (
        f"pod plain asks for nvidia.com/gpu but has no label aistack.io/queue, and namespace "
        f"'{namespace}' has no default queue: GPUs are handed out by the AI-Stack scheduler "
        "only. Add label aistack.io/queue=<leaf queue> to the pod"
    ) in message
    # GPUs asked for only while the pod starts count too (the CEL condition reads both lists).
    assert "has no default queue" in refused(core, namespace, unlabelled_pod("init", init_gpus=1))


def test_pods_without_gpus_never_meet_the_webhook_even_while_the_service_is_down(
    core: CoreV1Api, namespace: str, service: RunningService
) -> None:
    service.stop()
    try:
        # With failurePolicy Fail, a webhook called for this pod would refuse it now.
        created = create(core, namespace, unlabelled_pod("cpu-only"))
        message = refused(core, namespace, unlabelled_pod("gpu", gpus=1))
    finally:
        service.start()
    assert not is_gated(created)
    assert created["metadata"].get("labels") is None
    assert created["spec"]["containers"][0]["env"] == [
        {"name": "NVIDIA_VISIBLE_DEVICES", "value": "all"}
    ]
    assert 'failed calling webhook "mutate-gpu-pod.aistack.io"' in message


def test_gpu_pods_in_an_exempt_namespace_are_left_to_kube_scheduler(core: CoreV1Api) -> None:
    name = f"exempt-{time.monotonic_ns()}"
    try:
        created = create(core, "kube-system", unlabelled_pod(name, gpus=1))
    finally:
        with contextlib.suppress(ApiException):
            core.delete_namespaced_pod(name, "kube-system", grace_period_seconds=0)
    assert not is_gated(created)
    assert created["metadata"].get("labels") is None


def test_an_unlabelled_gpu_pod_joins_the_default_queue_and_waits_for_a_gpu_the_service_chooses(
    core: CoreV1Api, namespace: str, make_gpu_node: GpuNodes, admin_client: ApiClient
) -> None:
    pool = make_gpu_node.prefix
    node = make_gpu_node("g0", gpus=1, labels={keys.POOL_LABEL: pool}).metadata
    assert node is not None
    queue = make_queue(admin_client, {pool: 1}, default_for=[namespace])
    # Slices take the whole GPU without asking kube-scheduler for nvidia.com/gpu: to it, the
    # node's GPU is free. An ungated GPU pod would be bound there and share the GPU.
    for i in range(2):
        create(core, namespace, managed_pod(f"slice{i}", queue, slice_=(20000, 50)))
    wait_for(
        "the two slices to run on the one GPU",
        lambda: [read(core, namespace, f"slice{i}") for i in range(2)],
        lambda pods: all(is_running(p) for p in pods),
    )

    created = create(core, namespace, unlabelled_pod("plain", gpus=1))

    assert created["metadata"]["labels"] == {keys.QUEUE_LABEL: queue, keys.MANAGED_LABEL: "true"}
    assert is_gated(created)
    told = wait_for(
        "the pod to be told why it waits",
        lambda: read(core, namespace, "plain"),
        lambda pod: bool(waiting_message(pod)),
    )
    time.sleep(2)  # kube-scheduler would have bound an ungated pod by now
    waiting = read(core, namespace, "plain")
    assert is_gated(waiting)
    assert waiting["spec"].get("nodeName") is None
    assert waiting_message(told).startswith("aistack: ")
    for i in range(2):
        core.delete_namespaced_pod(f"slice{i}", namespace, grace_period_seconds=0)
    running = wait_for(
        "the pod to run once the GPU is free",
        lambda: read(core, namespace, "plain"),
        is_running,
    )
    assert running["spec"]["nodeName"] == node.name
    assert running["metadata"]["annotations"][keys.NODE_ANNOTATION] == node.name
    assert pod_env(running)["AISTACK_GPUS"] == "0"


def test_a_namespace_gets_one_default_queue(admin_client: ApiClient, namespace: str) -> None:
    first = make_queue(admin_client, {"x": 1}, default_for=[namespace])
    with pytest.raises(ApiException) as error:
        make_queue(admin_client, {"x": 1}, default_for=["elsewhere", namespace])
    message = json.loads(error.value.body or "{}").get("message", "")
    assert (
        f"spec.defaultFor.namespaces names namespaces that already have a default queue: "
        f"'{namespace}' (queue '{first}')"
    ) in message


# -- requests that can never fit -----------------------------------------------------------------


def test_a_request_no_node_can_ever_hold_is_refused_with_the_biggest_there_is(
    core: CoreV1Api,
    namespace: str,
    make_gpu_node: GpuNodes,
    admin_client: ApiClient,
    service: RunningService,
) -> None:
    pool = make_gpu_node.prefix
    make_gpu_node("g0", labels={keys.POOL_LABEL: pool})
    queue = make_queue(admin_client, {pool: 8})
    known_to_the_service(service, f"{pool}-g0")
    in_pool = {keys.POOLS_ANNOTATION: pool}

    too_many = refused(core, namespace, managed_pod("big", queue, gpus=16, annotations=in_pool))
    too_large = refused(
        core, namespace, managed_pod("wide", queue, slice_=(100_000, 50), annotations=in_pool)
    )
    nowhere = refused(
        core,
        namespace,
        managed_pod("lost", queue, gpus=1, annotations={keys.POOLS_ANNOTATION: "b300"}),
    )

    assert (
        f"pod big: the pod asks for 16 whole GPUs and the biggest node in pool(s) {pool} has 8 "
        f"(node {pool}-g0, pool {pool}, NVIDIA-H100-80GB-HBM3)"
    ) in too_many
    assert "judged on the GPU nodes the scheduler knows now" in too_many
    assert (
        f"a slice of 100000 MiB is larger than any GPU in pool(s) {pool}: the largest has "
        f"81559 MiB (NVIDIA-H100-80GB-HBM3 on node {pool}-g0)"
    ) in too_large
    assert "annotation aistack.io/pools names pool(s) b300 that no GPU node is in" in nowhere
    # A node that has just joined counts at once: the refusal is checked against the API server.
    make_gpu_node("g1", gpus=16, labels={keys.POOL_LABEL: pool}, wait_ready=False)
    create(core, namespace, managed_pod("big", queue, gpus=16, annotations=in_pool))


# -- Argo's pods ---------------------------------------------------------------------------------


def test_argo_s_wait_container_gets_no_gpu_variables_while_the_step_gets_them(
    core: CoreV1Api, namespace: str, make_gpu_node: GpuNodes, admin_client: ApiClient, argo: object
) -> None:
    pool = make_gpu_node.prefix
    make_gpu_node("g0", gpus=1, labels={keys.POOL_LABEL: pool})
    queue = make_queue(admin_client, {pool: 1})
    template = {
        "name": "serve",
        "metadata": {
            "labels": {keys.QUEUE_LABEL: queue},
            "annotations": {keys.GPU_MEMORY_ANNOTATION: "20000", keys.GPU_COMPUTE_ANNOTATION: "50"},
        },
        "container": {"image": "registry.invalid/serve:test", "command": ["python", "serve.py"]},
    }
    workflow = {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "Workflow",
        "metadata": {"name": "serve"},
        "spec": {"entrypoint": "serve", "templates": [template]},
    }
    CustomObjectsApi(admin_client).create_namespaced_custom_object(
        "argoproj.io", "v1alpha1", namespace, "workflows", workflow
    )
    listed = wait_for(
        "Argo to create the step's pod and the service to release it",
        lambda: core.list_namespaced_pod(namespace).items,
        lambda pods: (
            len(pods) == 1 and pods[0].status is not None and pods[0].status.phase == "Running"
        ),
        timeout=90,
    )
    assert listed[0].metadata is not None
    pod = read(core, namespace, str(listed[0].metadata.name))

    assert [c["name"] for c in pod["spec"]["containers"]] == ["wait", "main"]
    assert gpu_variables(pod, "wait") == []
    assert not [v for v in pod_env(pod, "wait") if v.startswith(GPU_ENV)]
    assert gpu_variables(pod, "main") == [name for name, _, _ in keys.ALLOCATION_ENVIRONMENT]
    main = pod_env(pod, "main")
    assert (main["NVIDIA_VISIBLE_DEVICES"], main["CUDA_MPS_ACTIVE_THREAD_PERCENTAGE"]) == (
        "0",
        "50",
    )
    for init in pod["spec"].get("initContainers") or []:
        assert not [e for e in init.get("env") or [] if e["name"].startswith(GPU_ENV)]
