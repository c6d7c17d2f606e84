"""Slices under MPS on the real API server: what reaches the pod, per pool.

The service runs with `gpu_sharing` naming MPS for every pool but one. The webhook's mounts and
variables must pass the API server's validation (a `subPathExpr` on a hostPath volume), and the
service's release must write the GPU whose daemon a slice mounts; kwok starts no container, so
the tests resolve the variables as the kubelet would (`pod_env`).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes.client import ApiClient, CoreV1Api

from scheduler_service import pod_contract as keys
from tests.integration.cluster import GpuNodes, TestCluster, wait_for
from tests.integration.pods import Pod, gpu_inventory, gpu_uuid, is_gated, read
from tests.integration.service import RunningService, make_queue, managed_pod, pod_env

MPS_ROOT = "/run/aistack-test/mps"
TIMESHARED = "timeshared"


@pytest.fixture(scope="module")
def service(cluster: TestCluster, admin_client: ApiClient) -> Iterator[RunningService]:
    running = RunningService(
        cluster,
        admin_client,
        config={
            "gpu_sharing": {"default": "mps", "pools": {TIMESHARED: "none"}, "mps_root": MPS_ROOT}
        },
    )
    running.start()
    yield running
    running.remove()


def running(core: CoreV1Api, namespace: str, name: str) -> Pod:
    return wait_for(
        f"pod {name} to be admitted and run",
        lambda: read(core, namespace, name),
        lambda pod: pod["status"].get("phase") == "Running" and not is_gated(pod),
    )


def test_a_slice_of_an_mps_pool_mounts_only_its_gpu_s_daemon(
    core: CoreV1Api, namespace: str, make_gpu_node: GpuNodes, admin_client: ApiClient
) -> None:
    pool = make_gpu_node.prefix
    make_gpu_node("g0", gpus=1, labels={keys.POOL_LABEL: pool}, annotations=gpu_inventory(pool, 1))
    queue = make_queue(admin_client, {pool: 1})
    core.create_namespaced_pod(namespace, managed_pod("s", queue, slice_=(8192, 30)))  # type: ignore[arg-type]

    pod = running(core, namespace, "s")

    uuid = gpu_uuid(pool, 0)
    annotations = pod["metadata"]["annotations"]
    assert annotations[keys.GPU_SHARING_ANNOTATION] == "mps"
    assert annotations[keys.MPS_GPU_ANNOTATION] == uuid
    env = pod_env(pod)
    assert env["CUDA_MPS_PIPE_DIRECTORY"] == keys.MPS_CLIENT_PIPE_DIRECTORY
    assert (env["AISTACK_MPS_GPU"], env["NVIDIA_VISIBLE_DEVICES"]) == (uuid, uuid)
    assert env["CUDA_MPS_PINNED_DEVICE_MEM_LIMIT"] == "0=8192M"
    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    assert volumes["aistack-mps"]["hostPath"]["path"] == MPS_ROOT
    assert volumes["aistack-mps-shm"]["hostPath"]["path"] == f"{MPS_ROOT}/shm"
    mounts = {m["mountPath"]: m for m in pod["spec"]["containers"][0]["volumeMounts"]}
    assert mounts[keys.MPS_CLIENT_PIPE_DIRECTORY]["subPathExpr"] == "$(AISTACK_MPS_GPU)/pipe"
    assert mounts["/dev/shm"]["name"] == "aistack-mps-shm"


def test_a_slice_of_a_pool_without_mps_mounts_an_empty_directory_and_whole_gpus_none(
    core: CoreV1Api, namespace: str, make_gpu_node: GpuNodes, admin_client: ApiClient
) -> None:
    prefix = make_gpu_node.prefix
    make_gpu_node(
        "g0", gpus=2, labels={keys.POOL_LABEL: TIMESHARED}, annotations=gpu_inventory(prefix, 2)
    )
    queue = make_queue(admin_client, {TIMESHARED: 2})
    pods: list[dict[str, Any]] = [
        managed_pod("s", queue, slice_=(8192, 30)),
        managed_pod("w", queue, gpus=1),
    ]
    for pod in pods:
        pod["spec"]["nodeSelector"] = make_gpu_node.selector
        core.create_namespaced_pod(namespace, pod)  # type: ignore[arg-type]

    piece, whole = running(core, namespace, "s"), running(core, namespace, "w")

    assert piece["metadata"]["annotations"][keys.GPU_SHARING_ANNOTATION] == "none"
    assert pod_env(piece)["AISTACK_MPS_GPU"] == "none"  # <root>/none/pipe holds no daemon
    assert keys.GPU_SHARING_ANNOTATION not in whole["metadata"]["annotations"]
    assert not any("mps" in v["name"] for v in whole["spec"].get("volumes") or ())
    assert "CUDA_MPS_PIPE_DIRECTORY" not in pod_env(whole)
