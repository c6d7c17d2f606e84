"""What the service does for Argo, against a real API server, kwok nodes and Argo's controller.

A stopped step is a Failed pod whose message Argo shows and retries by its retry policy; a
waiting step's node message says its queue, its place there and why; a gang that loses a member
is stopped as a unit; a step's deadline counts while it waits. Each test has its own pool,
queues and namespace (see test_service.py).
"""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from kubernetes.client import ApiClient, CoreV1Api, CustomObjectsApi
from kubernetes.client.exceptions import ApiException

from scheduler_service import pod_contract as keys
from scheduler_service.kube._ledger import PodEviction, stop_patch
from tests.integration.cluster import GpuNodes, wait_for, wait_for_workflow_phase
from tests.integration.pods import phase, pods_in, read, submit_gpu_workflow
from tests.integration.service import make_queue, managed_pod

_DONE = ("Succeeded", "Failed", "Error")


def pod_nodes(workflow: dict[str, Any]) -> list[dict[str, Any]]:
    """The Workflow's Pod nodes (one per attempt), oldest first."""
    nodes = [n for n in workflow.get("status", {}).get("nodes", {}).values() if n["type"] == "Pod"]
    return sorted(nodes, key=lambda n: str(n.get("startedAt", "")))


def test_a_reclaimed_argo_step_is_retried_by_the_default_policy_and_says_why(
    core: CoreV1Api, namespace: str, make_gpu_node: GpuNodes, admin_client: ApiClient, argo: object
) -> None:
    pool = make_gpu_node.prefix
    make_gpu_node("g0", labels={keys.POOL_LABEL: pool})
    owner = make_queue(admin_client, {pool: 8})
    borrower = make_queue(admin_client, {pool: 0})
    # No retryPolicy: Argo's default, OnFailure, retries Failed attempts and not Errors.
    submit_gpu_workflow(
        admin_client,
        namespace,
        "borrowed",
        borrower,
        gpus=8,
        run_for="8s",
        retry_strategy={"limit": "3"},
    )
    wait_for(
        "the borrowed step to run",
        lambda: pods_in(core, namespace),
        lambda pods: len(pods) == 1 and phase(pods[0]) == "Running",
    )
    core.create_namespaced_pod(namespace, managed_pod("owner", owner, gpus=8, run_for="2s"))  # type: ignore[arg-type]
    done = wait_for_workflow_phase(admin_client, namespace, "borrowed", _DONE, timeout=120)
    assert done["status"]["phase"] == "Succeeded"
    first, retry = pod_nodes(done)
    assert first["phase"] == "Failed"
    assert first["message"].startswith(f"{keys.RECLAIMED_MESSAGE_PREFIX}{namespace}/owner: ")
    assert retry["phase"] == "Succeeded"
    # The reclaimed attempt's pod is kept (not deleted), with the service's reason and
    # condition. Its phase is not checked: kwok, which plays the kubelet, later applies the
    # "Succeeded" it had scheduled for the pod's end to the Failed pod (Argo saw Failed first).
    (evicted,) = [p for p in pods_in(core, namespace) if p["status"].get("reason") == "Reclaimed"]
    assert evicted["status"]["message"] == first["message"]
    (condition,) = [c for c in evicted["status"]["conditions"] if c["type"] == "DisruptionTarget"]
    assert condition["reason"] == keys.EVICTION_REASON
    events = wait_for(
        "the reclaim to be recorded on the Workflow (its Events tab)",
        lambda: core.list_namespaced_event(namespace).items,
        lambda found: any(
            e.reason == "Reclaimed" and e.involved_object.kind == "Workflow" for e in found
        ),
    )
    assert {e.message for e in events if e.reason == "Reclaimed"} == {first["message"]}


def test_a_waiting_argo_step_shows_its_queue_and_place_in_the_workflow(
    core: CoreV1Api, namespace: str, make_gpu_node: GpuNodes, admin_client: ApiClient, argo: object
) -> None:
    pool = make_gpu_node.prefix
    make_gpu_node("g0", labels={keys.POOL_LABEL: pool})
    queue = make_queue(admin_client, {pool: 8})
    submit_gpu_workflow(admin_client, namespace, "first", queue, gpus=8, run_for="10m")
    wait_for(
        "the first step to run",
        lambda: pods_in(core, namespace),
        lambda pods: len(pods) == 1 and phase(pods[0]) == "Running",
    )
    for name in ("second", "third"):
        submit_gpu_workflow(admin_client, namespace, name, queue, gpus=8, run_for="1s")
    custom = CustomObjectsApi(admin_client)

    def node_message() -> str:
        found: Any = custom.get_namespaced_custom_object(
            "argoproj.io", "v1alpha1", namespace, "workflows", "third"
        )
        return " ".join(str(n.get("message", "")) for n in pod_nodes(found))

    message = wait_for("the waiting step's node message", node_message, lambda m: "aistack" in m)
    assert message == (
        f"Unschedulable: aistack: queue {queue}, 2nd of 2 waiting; pool {pool}: quota 8, used 8 "
        f"(0 borrowed) GPUs; needs 1 x 8 GPUs: 0 GPUs free, best node has 0 GPUs free "
        f"({pool}-g0); queue {queue} holds 8 of its 8-GPU fair share: this step's 8 more may only "
        "use idle GPUs, not reclaim"
    )


def test_a_gang_that_loses_a_running_member_is_stopped_as_a_unit(
    core: CoreV1Api, namespace: str, make_gpu_node: GpuNodes, admin_client: ApiClient
) -> None:
    pool = make_gpu_node.prefix
    for i in range(2):
        make_gpu_node(f"g{i}", labels={keys.POOL_LABEL: pool})
    queue = make_queue(admin_client, {pool: 16})
    for rank in range(2):
        pod = managed_pod(
            f"ddp-{rank}", queue, gpus=8, gang=("ddp", 2), labels={keys.GANG_DNS_LABEL: "true"}
        )
        pod["spec"] |= {"hostname": f"ddp-{rank}", "subdomain": keys.GANG_SUBDOMAIN}
        core.create_namespaced_pod(namespace, pod)  # type: ignore[arg-type]
    wait_for(
        "the gang to run",
        lambda: [read(core, namespace, f"ddp-{rank}") for rank in range(2)],
        lambda pods: all(phase(p) == "Running" for p in pods),
    )
    # Released, so the Service that names the gang's pods exists.
    response: Any = core.read_namespaced_service(
        keys.GANG_SUBDOMAIN, namespace, _preload_content=False
    )
    spec = json.loads(response.data)["spec"]
    assert (spec["clusterIP"], spec["selector"], spec["publishNotReadyAddresses"]) == (
        "None",
        {keys.GANG_DNS_LABEL: "true"},
        True,
    )
    core.delete_namespaced_pod("ddp-1", namespace, grace_period_seconds=0)
    survivor = wait_for(
        "the other member to be stopped",
        lambda: read(core, namespace, "ddp-0"),
        lambda pod: phase(pod) == "Failed",
    )
    assert survivor["status"]["reason"] == "GangMemberLost"
    assert survivor["status"]["message"].startswith(
        "aistack: gang ddp lost member ddp-1 (deleted); "
    )
    wait_for(
        "the stop to be recorded as an event on the pod",
        lambda: core.list_namespaced_event(namespace).items,
        lambda found: any(
            e.reason == "GangMemberLost" and e.involved_object.name == "ddp-0" for e in found
        ),
    )


def test_a_waiting_pod_fails_when_its_active_deadline_passes(
    core: CoreV1Api, namespace: str, make_gpu_node: GpuNodes, admin_client: ApiClient
) -> None:
    queue = make_queue(admin_client, {make_gpu_node.prefix: 8})  # a pool with no node: it waits
    pod = managed_pod("late", queue, gpus=1)
    pod["spec"]["activeDeadlineSeconds"] = 3
    core.create_namespaced_pod(namespace, pod)  # type: ignore[arg-type]
    failed = wait_for(
        "the waiting pod to fail at its deadline",
        lambda: read(core, namespace, "late"),
        lambda found: phase(found) == "Failed",
        timeout=30,
    )
    assert failed["status"]["reason"] == "DeadlineExceeded"
    message = failed["status"]["message"]
    assert message.startswith(f"{keys.DEADLINE_MESSAGE_PREFIX}passed: waited ")
    assert message.endswith(f"s in queue {queue} (activeDeadlineSeconds 3)")
    assert failed["spec"].get("nodeName") is None  # never released


def test_a_stop_is_refused_for_a_new_pod_of_the_same_name(
    core: CoreV1Api, namespace: str, make_gpu_node: GpuNodes, admin_client: ApiClient
) -> None:
    queue = make_queue(admin_client, {make_gpu_node.prefix: 8})
    core.create_namespaced_pod(namespace, managed_pod("p", queue, gpus=1))  # type: ignore[arg-type]
    # A stop decided for an earlier pod called "p" (another uid) must not touch this one.
    earlier = PodEviction(
        namespace, "p", "0e1d2c3b-0000-4000-8000-000000000000", "x", "w", queue, "X"
    )
    with pytest.raises(ApiException) as refused:
        core.patch_namespaced_pod_status(
            "p",
            namespace,
            stop_patch(earlier, time.time()),
            _content_type="application/strategic-merge-patch+json",
        )
    assert refused.value.status == 422
    assert phase(read(core, namespace, "p")) == "Pending"
