"""GPUs held by pods the scheduler does not manage are counted on their node.

A GPU pod in a namespace the webhook does not serve (here the service's own, as kube-system or
an operator's namespace would be) runs on GPUs kube-scheduler and the device plugin give it.
The scheduler must not hand those GPUs to its own work: it counts every bound pod's GPUs, init
containers too, and gives them back when the pod ends.
"""

from __future__ import annotations

from kubernetes.client import ApiClient, CoreV1Api

from scheduler_service import pod_contract as keys
from tests.integration.cluster import SERVICE_NAMESPACE, GpuNodes, gpu_pod, wait_for
from tests.integration.pods import is_gated, pool_nodes, read, waiting_message
from tests.integration.service import make_queue, managed_pod


def test_a_managed_pod_waits_while_an_unmanaged_one_holds_the_gpus_then_runs(
    core: CoreV1Api, namespace: str, make_gpu_node: GpuNodes, admin_client: ApiClient
) -> None:
    pool = pool_nodes(make_gpu_node, 1, gpus=2)
    name = f"{make_gpu_node.prefix}-outsider"
    core.create_namespaced_pod(
        SERVICE_NAMESPACE, gpu_pod(name, 2, node_selector=make_gpu_node.selector)
    )
    try:
        wait_for(
            "the unmanaged pod to run on the test node",
            lambda: read(core, SERVICE_NAMESPACE, name),
            lambda pod: pod["status"].get("phase") == "Running",
        )
        queue = make_queue(admin_client, {pool: 2})
        core.create_namespaced_pod(namespace, managed_pod("p", queue, gpus=1))  # type: ignore[arg-type]
        told = wait_for(
            "the managed pod to wait, told why",
            lambda: read(core, namespace, "p"),
            lambda pod: bool(waiting_message(pod)),
        )
        assert is_gated(told)
    finally:
        core.delete_namespaced_pod(name, SERVICE_NAMESPACE, grace_period_seconds=0)

    admitted = wait_for(
        "the managed pod to be admitted once the unmanaged one is gone",
        lambda: read(core, namespace, "p"),
        lambda pod: not is_gated(pod),
    )
    assert admitted["metadata"]["annotations"][keys.NODE_ANNOTATION] == f"{pool}-g0"
