"""Reading pods and Workflows as the integration tests do, and submitting a one-step Workflow.

Pods are read as JSON (camelCase, as the API server sends them), not as client models, so a
test compares with what `kubectl get -o json` would show.
"""

from __future__ import annotations

import json
from typing import Any

from kubernetes.client import ApiClient, CoreV1Api, CustomObjectsApi
from kubernetes.client.exceptions import ApiException

from scheduler_service import pod_contract as keys
from tests.integration.cluster import RUN_FOR_ANNOTATION, GpuNodes

__all__ = [
    "Pod",
    "is_gated",
    "phase",
    "pods_in",
    "pool_nodes",
    "read",
    "refusal",
    "submit_gpu_workflow",
    "waiting_message",
]

Pod = dict[str, Any]


def pool_nodes(nodes: GpuNodes, count: int, gpus: int = 8, **labels: str) -> str:
    """`count` nodes in a pool of this test's own; returns the pool's name."""
    for i in range(count):
        nodes(f"g{i}", gpus=gpus, labels={keys.POOL_LABEL: nodes.prefix, **labels})
    return nodes.prefix


def read(core: CoreV1Api, namespace: str, name: str) -> Pod:
    """The pod as the API server sends it."""
    response: Any = core.read_namespaced_pod(name, namespace, _preload_content=False)
    pod: Pod = json.loads(response.data)
    return pod


def pods_in(core: CoreV1Api, namespace: str, *, workflow: str | None = None) -> list[Pod]:
    """The namespace's pods (only those of Argo Workflow `workflow`, if given), oldest first."""
    selector = f"workflows.argoproj.io/workflow={workflow}" if workflow else None
    response: Any = core.list_namespaced_pod(
        namespace, label_selector=selector, _preload_content=False
    )
    pods: list[Pod] = json.loads(response.data)["items"]
    return sorted(pods, key=lambda p: str(p["metadata"]["creationTimestamp"]))


def phase(pod: Pod) -> str:
    return str(pod["status"].get("phase", "Pending"))


def gates(pod: Pod) -> list[str]:
    """The names of the pod's scheduling gates, in order."""
    return [gate["name"] for gate in pod["spec"].get("schedulingGates") or ()]


def is_gated(pod: Pod) -> bool:
    return any(g["name"] == keys.SCHEDULING_GATE for g in pod["spec"].get("schedulingGates") or ())


def waiting_message(pod: Pod) -> str:
    """The service's reason on a waiting pod (its PodScheduled=False condition), or ""."""
    for condition in pod["status"].get("conditions") or ():
        if condition.get("type") == "PodScheduled" and condition.get("reason") == "Unschedulable":
            return str(condition.get("message", ""))
    return ""


def refusal(error: ApiException) -> str:
    """The message of the API server's refusal (a Status object)."""
    try:
        return str(json.loads(error.body or "")["message"])
    except (TypeError, ValueError, KeyError):
        return str(error.body)


def submit_gpu_workflow(
    admin: ApiClient,
    namespace: str,
    name: str,
    queue: str,
    *,
    gpus: int,
    run_for: str,
    retry_strategy: dict[str, Any] | None = None,
) -> None:
    """A one-step Argo Workflow (raw, no aistack_flows) asking `queue` for `gpus` whole GPUs."""
    template: dict[str, Any] = {
        "name": "train",
        "metadata": {
            "labels": {keys.QUEUE_LABEL: queue},
            "annotations": {RUN_FOR_ANNOTATION: run_for},
        },
        "container": {
            "image": "registry.invalid/train:test",
            "command": ["python", "train.py"],
            "resources": {"limits": {keys.GPU_RESOURCE: str(gpus)}},
        },
    }
    if retry_strategy is not None:
        template["retryStrategy"] = retry_strategy
    workflow = {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "Workflow",
        "metadata": {"name": name},
        "spec": {"entrypoint": "train", "templates": [template]},
    }
    CustomObjectsApi(admin).create_namespaced_custom_object(
        "argoproj.io", "v1alpha1", namespace, "workflows", workflow
    )


def gpu_uuid(prefix: str, index: int, node: int = 0) -> str:
    """A real-looking GPU uuid of GPU `index` of node `node` of a test's nodes `prefix`."""
    return f"GPU-{prefix}-{node:04}-4000-8000-{index:012}"


def gpu_inventory(prefix: str, count: int, node: int = 0) -> dict[str, str]:
    """The node agent's annotation for `count` H100s with uuids (`gpu_uuid`).

    MPS and GPU reservations need GPUs the service knows by uuid.
    """
    gpus = [
        {
            "index": i,
            "uuid": gpu_uuid(prefix, i, node),
            "model": "NVIDIA-H100-80GB-HBM3",
            "memory_mib": 81559,
        }
        for i in range(count)
    ]
    return {keys.GPU_INVENTORY_ANNOTATION: json.dumps(gpus)}
