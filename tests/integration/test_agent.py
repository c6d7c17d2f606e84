"""The node agent against a real API server: it writes the GPUs the service then reads.

The agent runs as the chart's ServiceAccount for it (a token from the TokenRequest API) with
exactly the chart's RBAC for it, so these tests also prove that the chart grants enough. NVML
is the fake H100 board of tests/gpus/fake_nvml.py in-process; `aistack agent` as a process
meets this machine's real NVML (no driver here: the condition says so).
"""

from __future__ import annotations

import contextlib
import json
import signal
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes.client import (
    ApiClient,
    AuthenticationV1TokenRequest,
    Configuration,
    CoreV1Api,
    RbacAuthorizationV1Api,
    V1Namespace,
    V1ObjectMeta,
    V1ServiceAccount,
    V1TokenRequestSpec,
)
from kubernetes.client.exceptions import ApiException
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from scheduler_service import pod_contract as keys
from scheduler_service.agent import INVENTORY_CONDITION, GpuCollector, NodeAgent, PodDirectory
from scheduler_service.translate import node_from_k8s
from tests.gpus.fake_nvml import FakeNvml, FakeProcess
from tests.helm._chart import render
from tests.integration.cluster import (
    SERVICE_NAMESPACE,
    GpuNodes,
    TestCluster,
    free_port,
    gpu_pod,
    wait_for,
)

AGENT_ACCOUNT = "aistack-agent"
"""The chart's ServiceAccount for the agent (release "aistack")."""


@pytest.fixture(scope="module")
def agent_token(cluster: TestCluster, admin_client: ApiClient) -> str:
    """A token of the agent's ServiceAccount, bound by the chart's ClusterRole for it."""
    core, rbac = CoreV1Api(admin_client), RbacAuthorizationV1Api(admin_client)
    with contextlib.suppress(ApiException):  # 409: another module created it
        core.create_namespace(V1Namespace(metadata=V1ObjectMeta(name=SERVICE_NAMESPACE)))
    with contextlib.suppress(ApiException):
        core.create_namespaced_service_account(
            SERVICE_NAMESPACE, V1ServiceAccount(metadata=V1ObjectMeta(name=AGENT_ACCOUNT))
        )
    for manifest in render():
        if manifest["metadata"]["name"] != AGENT_ACCOUNT:
            continue
        with contextlib.suppress(ApiException):  # 409: the service's module applied it
            if manifest["kind"] == "ClusterRole":
                rbac.create_cluster_role(manifest)  # type: ignore[arg-type]
            elif manifest["kind"] == "ClusterRoleBinding":
                rbac.create_cluster_role_binding(manifest)  # type: ignore[arg-type]
    request = AuthenticationV1TokenRequest(spec=V1TokenRequestSpec(audiences=[]))
    answer = core.create_namespaced_service_account_token(AGENT_ACCOUNT, SERVICE_NAMESPACE, request)
    assert answer.status is not None
    return str(answer.status.token)


@pytest.fixture
def agent_core(cluster: TestCluster, agent_token: str) -> Iterator[CoreV1Api]:
    """A CoreV1Api that is the agent's ServiceAccount."""
    configuration = Configuration(
        host=cluster.server,
        api_key={"BearerToken": agent_token},
        api_key_prefix={"BearerToken": "Bearer"},
        ssl_ca_cert=str(cluster.ca_path),
    )
    with ApiClient(configuration) as client:
        yield CoreV1Api(client)


def _node(core: CoreV1Api, name: str) -> dict[str, Any]:
    """The Node as JSON, as the service's driver reads it."""
    response: Any = core.read_node(name, _preload_content=False)
    node: dict[str, Any] = json.loads(response.data)
    return node


def _conditions(node: dict[str, Any]) -> dict[str, dict[str, str]]:
    return {c["type"]: c for c in node["status"].get("conditions") or ()}


def _gpu_node(nodes: GpuNodes, name: str) -> str:
    """A new 8-GPU kwok node, Ready; its full name."""
    nodes(name)
    return f"{nodes.prefix}-{name}"


def _without_gfd_labels(admin: CoreV1Api, name: str) -> None:
    """Take off the labels GPU feature discovery would have set, as on a node without it."""
    labels = {keys.GPU_PRODUCT_LABEL: None, keys.GPU_MEMORY_LABEL: None}
    admin.patch_node(
        name, {"metadata": {"labels": labels}}, _content_type="application/merge-patch+json"
    )


def test_the_agent_writes_the_h100_board_and_the_service_reads_eight_gpus(
    admin_client: ApiClient, agent_core: CoreV1Api, make_gpu_node: GpuNodes
) -> None:
    admin = CoreV1Api(admin_client)
    name = _gpu_node(make_gpu_node, "h100")
    _without_gfd_labels(admin, name)
    nvml = FakeNvml.h100_hgx()
    agent = NodeAgent(name, agent_core, nvml=nvml)

    first = agent.sync()
    second = agent.sync()

    node = _node(admin, name)
    read = node_from_k8s(node, pool_label=keys.POOL_LABEL)
    assert read is not None
    assert [gpu.uuid for gpu in read.gpus] == [gpu.uuid for gpu in nvml.gpus]
    assert [gpu.index for gpu in read.gpus] == list(range(8))
    assert {(gpu.model, gpu.memory_mib) for gpu in read.gpus} == {("NVIDIA-H100-80GB-HBM3", 81559)}
    assert read.pool == "NVIDIA-H100-80GB-HBM3"  # from the label the agent put back
    assert node["metadata"]["labels"][keys.GPU_MEMORY_LABEL] == "81559"
    conditions = _conditions(node)
    assert conditions[INVENTORY_CONDITION]["status"] == "True"
    assert conditions[INVENTORY_CONDITION]["message"].startswith("8 GPUs (NVIDIA-H100-80GB-HBM3")
    assert conditions["Ready"]["status"] == "True"  # kwok's (the kubelet's) condition stays
    assert first.metadata_patch is not None
    assert first.condition_patch is not None
    assert (second.metadata_patch, second.condition_patch) == (None, None)


def test_a_node_whose_nvml_fails_keeps_its_gpus_and_says_why(
    admin_client: ApiClient, agent_core: CoreV1Api, make_gpu_node: GpuNodes
) -> None:
    admin = CoreV1Api(admin_client)
    name = _gpu_node(make_gpu_node, "lost")
    NodeAgent(name, agent_core, nvml=FakeNvml.h100_hgx()).sync()
    before = _node(admin, name)["metadata"]

    NodeAgent(name, agent_core, nvml=FakeNvml.no_driver()).sync()

    node = _node(admin, name)
    assert node["metadata"]["annotations"] == before["annotations"]
    assert node["metadata"]["labels"] == before["labels"]
    condition = _conditions(node)[INVENTORY_CONDITION]
    assert (condition["status"], condition["reason"]) == ("False", "NVMLUnavailable")
    assert "no NVIDIA driver" in condition["message"]
    assert _conditions(node)["Ready"]["status"] == "True"
    read = node_from_k8s(node, pool_label=keys.POOL_LABEL)
    assert read is not None
    assert len(read.gpus) == 8


def test_gpu_metrics_name_the_pod_a_process_belongs_to(
    admin_client: ApiClient,
    agent_core: CoreV1Api,
    make_gpu_node: GpuNodes,
    namespace: str,
    tmp_path: Path,
) -> None:
    admin = CoreV1Api(admin_client)
    node = _gpu_node(make_gpu_node, "metrics")
    manifest = gpu_pod("train-0", gpus=0)
    assert manifest.spec is not None
    manifest.spec.node_name = node  # bound by hand: no scheduler involved
    uid = admin.create_namespaced_pod(namespace, manifest).metadata.uid  # type: ignore[union-attr]
    assert uid is not None
    cgroup = tmp_path / "4242" / "cgroup"
    cgroup.parent.mkdir()
    cgroup.write_text(
        "0::/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod"
        f"{uid.replace('-', '_')}.slice/cri-containerd-{'c' * 64}.scope\n"
    )
    nvml = FakeNvml.h100_hgx().load(2, processes=(FakeProcess(pid=4242, used_bytes=1 << 30),))
    registry = CollectorRegistry()
    registry.register(
        GpuCollector(
            node, nvml=nvml, proc_root=tmp_path, resolve_pods=PodDirectory(agent_core, node)
        )
    )

    text = generate_latest(registry).decode()

    (sample,) = [
        sample
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "aistack_gpu_pod_memory_used_bytes"
    ]
    assert sample.labels["namespace"] == namespace
    assert (sample.labels["pod"], sample.labels["pod_uid"], sample.labels["gpu"]) == (
        "train-0",
        uid,
        "2",
    )
    assert sample.value == 1 << 30


def test_aistack_agent_runs_as_a_process_until_sigterm(
    cluster: TestCluster,
    admin_client: ApiClient,
    agent_token: str,
    make_gpu_node: GpuNodes,
    tmp_path: Path,
) -> None:
    admin = CoreV1Api(admin_client)
    name = _gpu_node(make_gpu_node, "process")
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [
                    {
                        "name": "test",
                        "cluster": {
                            "server": cluster.server,
                            "certificate-authority": str(cluster.ca_path),
                        },
                    }
                ],
                "users": [{"name": "agent", "user": {"token": agent_token}}],
                "contexts": [{"name": "test", "context": {"cluster": "test", "user": "agent"}}],
                "current-context": "test",
            }
        )
    )
    port = free_port()
    log = cluster.log_dir / f"agent-{name}.log"
    argv = [
        str(Path(sys.executable).parent / "aistack"),
        "agent",
        f"--kubeconfig={kubeconfig}",
        "--interval-seconds=1",
        f"--metrics-port={port}",
        "--metrics-host=127.0.0.1",
    ]
    with log.open("ab") as output:
        process = subprocess.Popen(  # our own CLI, no shell
            argv,
            stdout=output,
            stderr=subprocess.STDOUT,
            env={"NODE_NAME": name, "PATH": str(Path(sys.executable).parent)},
            start_new_session=True,
        )
    try:
        node = wait_for(
            f"the agent to set {INVENTORY_CONDITION} on {name}",
            lambda: _node(admin, name),
            lambda found: INVENTORY_CONDITION in _conditions(found),
        )
        condition = _conditions(node)[INVENTORY_CONDITION]
        # No driver on a test machine; a machine with one gets its real GPUs written.
        assert condition["reason"] in {"NVMLUnavailable", "Discovered"}, condition
        if condition["reason"] == "Discovered":
            assert keys.GPU_INVENTORY_ANNOTATION in node["metadata"]["annotations"]
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
            metrics = response.read().decode()
        assert f'aistack_gpu_nvml_up{{node="{name}"}}' in metrics
        assert f'aistack_agent_last_sync_timestamp_seconds{{node="{name}"}}' in metrics
        assert f'aistack_agent_sync_failures_total{{node="{name}"}} 0.0' in metrics
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert "Traceback" not in log.read_text()
