"""The scheduler service against a real API server, kube-scheduler, kwok nodes and Argo.

Each test makes its own pool (nodes labelled `aistack.io/pool: <prefix>`), queues with quotas
in it, and pods in its own namespace, so tests share the service without seeing each other.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import pytest
from kubernetes.client import ApiClient, CoreV1Api, CustomObjectsApi
from kubernetes.client.exceptions import ApiException

from scheduler_service import pod_contract as keys
from tests.integration.cluster import GpuNodes, TestCluster, wait_for, wait_for_workflow_phase
from tests.integration.pods import (
    Pod,
    is_gated,
    pool_nodes,
    read,
    refusal,
    submit_gpu_workflow,
    waiting_message,
)
from tests.integration.service import RunningService, make_queue, managed_pod, pod_env


def create(core: CoreV1Api, namespace: str, pod: dict[str, Any]) -> None:
    core.create_namespaced_pod(namespace, pod)  # type: ignore[arg-type]


def phase_is(*phases: str) -> Callable[[Pod], bool]:
    return lambda pod: pod["status"].get("phase") in phases and not is_gated(pod)


def node_of(pod: Pod) -> str | None:
    node: str | None = pod["spec"].get("nodeName")
    return node


def annotations_of(pod: Pod) -> dict[str, str]:
    found: dict[str, str] = pod["metadata"].get("annotations") or {}
    return found


def test_a_gpu_pod_is_gated_wired_released_and_runs_to_completion(
    core: CoreV1Api, namespace: str, make_gpu_node: GpuNodes, admin_client: ApiClient
) -> None:
    pool = pool_nodes(make_gpu_node, 1)
    queue = make_queue(admin_client, {pool: 8})
    create(core, namespace, managed_pod("train", queue, gpus=2, run_for="2s"))
    created = read(core, namespace, "train")
    assert created["metadata"]["labels"][keys.MANAGED_LABEL] == "true"
    assert "all" not in pod_env(created).values()  # the user's NVIDIA_VISIBLE_DEVICES is gone
    done = wait_for(
        "the pod to be released and to succeed",
        lambda: read(core, namespace, "train"),
        phase_is("Succeeded"),
    )
    assert node_of(done) == f"{pool}-g0"
    assert annotations_of(done)[keys.NODE_ANNOTATION] == f"{pool}-g0"
    assert len(pod_env(done)["AISTACK_GPUS"].split(",")) == 2
    custom = CustomObjectsApi(admin_client)

    def queue_status() -> dict[str, Any]:
        found: Any = custom.get_cluster_custom_object(
            keys.GROUP, keys.QUEUE_VERSION, keys.QUEUE_PLURAL, queue
        )
        status: dict[str, Any] = found.get("status", {})
        return status

    status = wait_for(
        "the queue's status to show its quota", queue_status, lambda s: s.get("quota") == 8
    )
    assert status["pools"][0]["pool"] == pool


def test_a_gang_is_released_whole_or_not_at_all(
    core: CoreV1Api, namespace: str, make_gpu_node: GpuNodes, admin_client: ApiClient
) -> None:
    pool = pool_nodes(make_gpu_node, 2)
    queue = make_queue(admin_client, {pool: 24})
    for i in range(3):
        create(core, namespace, managed_pod(f"w{i}", queue, gpus=8, gang=("ddp", 3)))
    waiting = wait_for(
        "the gang to be told why it waits",
        lambda: [read(core, namespace, f"w{i}") for i in range(3)],
        lambda pods: all(waiting_message(p) for p in pods),
    )
    assert all(is_gated(p) for p in waiting)
    assert "aistack: " in waiting_message(waiting[0])
    make_gpu_node("g2", labels={keys.POOL_LABEL: pool})
    running = wait_for(
        "the whole gang to run",
        lambda: [read(core, namespace, f"w{i}") for i in range(3)],
        lambda pods: all(phase_is("Running")(p) for p in pods),
    )
    assert len({node_of(p) for p in running}) == 3
    records = {annotations_of(p)[keys.GANG_ALLOCATION_ANNOTATION] for p in running}
    assert len(records) == 1
    assert sorted(json.loads(records.pop())) == ["w0", "w1", "w2"]


def test_borrowed_gpus_are_reclaimed_with_a_recognisable_eviction(
    core: CoreV1Api, namespace: str, make_gpu_node: GpuNodes, admin_client: ApiClient
) -> None:
    pool = pool_nodes(make_gpu_node, 2)
    lender = make_queue(admin_client, {pool: 8})
    borrower = make_queue(admin_client, {pool: 8})
    for i in range(4):
        create(core, namespace, managed_pod(f"b{i}", borrower, gpus=4))
    wait_for(
        "the borrower to run on all 16 GPUs",
        lambda: [read(core, namespace, f"b{i}") for i in range(4)],
        lambda pods: all(phase_is("Running")(p) for p in pods),
    )
    create(core, namespace, managed_pod("owner", lender, gpus=8))
    wait_for(
        "the owner to get its quota back",
        lambda: read(core, namespace, "owner"),
        phase_is("Running"),
    )
    # Stopped, not deleted: Failed with the reason and the message Argo would show.
    borrowed = [read(core, namespace, f"b{i}") for i in range(4)]
    evicted = sorted(p["metadata"]["name"] for p in borrowed if p["status"]["phase"] == "Failed")
    assert len(evicted) == 2, [p["status"]["phase"] for p in borrowed]
    for pod in borrowed:
        if pod["metadata"]["name"] in evicted:
            assert pod["status"]["reason"] == "Reclaimed"
            assert pod["status"]["message"].startswith(
                f"{keys.RECLAIMED_MESSAGE_PREFIX}{namespace}/owner: "
            )
    events = wait_for(
        "the evictions to be recorded as events on the pods",
        lambda: core.list_namespaced_event(namespace).items,
        lambda found: sum(e.reason == "Reclaimed" for e in found) == 2,
    )
    told = {str(e.involved_object.name): e.message for e in events if e.reason == "Reclaimed"}
    assert sorted(told) == evicted
    assert all(
        str(m).startswith(f"aistack: reclaimed for {namespace}/owner") for m in told.values()
    )


def test_pools_of_two_gpu_models_are_kept_apart(
    core: CoreV1Api, namespace: str, make_gpu_node: GpuNodes, admin_client: ApiClient
) -> None:
    h100 = f"{make_gpu_node.prefix}-h100"
    a100 = f"{make_gpu_node.prefix}-a100"
    make_gpu_node("h", labels={keys.POOL_LABEL: h100})
    make_gpu_node("a", product="NVIDIA-A100-SXM4-80GB", labels={keys.POOL_LABEL: a100})
    queue = make_queue(admin_client, {h100: 8, a100: (0, 0)})
    create(core, namespace, managed_pod("anywhere", queue, gpus=8))
    create(
        core,
        namespace,
        managed_pod("a100-only", queue, gpus=8, annotations={keys.POOLS_ANNOTATION: a100}),
    )
    placed = wait_for(
        "the H100 pod to run", lambda: read(core, namespace, "anywhere"), phase_is("Running")
    )
    assert node_of(placed) == f"{make_gpu_node.prefix}-h"
    told = wait_for(
        "the A100 pod to be told its queue may not use that pool",
        lambda: read(core, namespace, "a100-only"),
        lambda pod: bool(waiting_message(pod)),
    )
    assert is_gated(told)
    assert a100 in waiting_message(told)


def test_slices_share_one_gpu_with_their_limits_in_the_containers_env(
    core: CoreV1Api, namespace: str, make_gpu_node: GpuNodes, admin_client: ApiClient
) -> None:
    pool = pool_nodes(make_gpu_node, 1, gpus=1)
    queue = make_queue(admin_client, {pool: 1})
    shares = [(20000, 25), (30000, 50), (20000, 25)]
    for i, share in enumerate(shares):
        create(core, namespace, managed_pod(f"s{i}", queue, slice_=share))
    pods = wait_for(
        "three slices to run on the one GPU",
        lambda: [read(core, namespace, f"s{i}") for i in range(3)],
        lambda found: all(phase_is("Running")(p) for p in found),
    )
    envs = [pod_env(p) for p in pods]
    assert {e["NVIDIA_VISIBLE_DEVICES"] for e in envs} == {"0"}
    assert [e["CUDA_MPS_PINNED_DEVICE_MEM_LIMIT"] for e in envs] == [
        "0=20000M",
        "0=30000M",
        "0=20000M",
    ]
    assert [e["CUDA_MPS_ACTIVE_THREAD_PERCENTAGE"] for e in envs] == ["25", "50", "25"]
    create(core, namespace, managed_pod("s3", queue, slice_=(20000, 25)))
    told = wait_for(
        "a fourth slice to wait: the GPU's compute is fully shared out",
        lambda: read(core, namespace, "s3"),
        lambda pod: bool(waiting_message(pod)),
    )
    assert is_gated(told)


def test_a_gang_asking_for_one_rack_gets_one_rack(
    core: CoreV1Api, namespace: str, make_gpu_node: GpuNodes, admin_client: ApiClient
) -> None:
    pool = make_gpu_node.prefix
    for name, rack in [("r1a", "r1"), ("r2a", "r2"), ("r2b", "r2")]:
        make_gpu_node(name, labels={keys.POOL_LABEL: pool, "aistack.io/rack": rack})
    queue = make_queue(admin_client, {pool: 24})
    topology = {keys.TOPOLOGY_ANNOTATION: "rack"}
    for i in range(2):
        create(
            core,
            namespace,
            managed_pod(f"t{i}", queue, gpus=8, gang=("t", 2), annotations=topology),
        )
    pods = wait_for(
        "the gang to run",
        lambda: [read(core, namespace, f"t{i}") for i in range(2)],
        lambda found: all(phase_is("Running")(p) for p in found),
    )
    assert {node_of(p) for p in pods} == {f"{pool}-r2a", f"{pool}-r2b"}


def test_a_restarted_service_places_nothing_twice_and_finishes_what_waits(
    core: CoreV1Api,
    namespace: str,
    make_gpu_node: GpuNodes,
    admin_client: ApiClient,
    service: RunningService,
) -> None:
    pool = pool_nodes(make_gpu_node, 1)
    queue = make_queue(admin_client, {pool: 8})
    create(core, namespace, managed_pod("first", queue, gpus=4))
    first = wait_for(
        "the first pod to run", lambda: read(core, namespace, "first"), phase_is("Running")
    )
    create(core, namespace, managed_pod("whole", queue, gpus=8))
    wait_for(
        "the 8-GPU pod to be told it waits",
        lambda: read(core, namespace, "whole"),
        lambda pod: bool(waiting_message(pod)),
    )
    service.stop()
    service.start()
    # The new process rebuilt the first pod's placement from the cluster: the 8-GPU pod must
    # still wait, and the first pod is not touched again.
    wait_for(
        "the restarted service to explain the wait again",
        lambda: service.get(f"/api/v1/explain/{namespace}/whole", service.cluster.tokens["admin"]),
        lambda answer: answer[0] == 200 and answer[1]["workload"]["state"] == "pending",
    )
    assert is_gated(read(core, namespace, "whole"))
    assert annotations_of(read(core, namespace, "first")) == annotations_of(first)
    core.delete_namespaced_pod("first", namespace, grace_period_seconds=0)
    wait_for(
        "the waiting pod to run once the first one is gone",
        lambda: read(core, namespace, "whole"),
        phase_is("Running"),
    )


def test_no_managed_pod_slips_past_admission_while_the_service_is_down(
    core: CoreV1Api,
    namespace: str,
    make_gpu_node: GpuNodes,
    admin_client: ApiClient,
    service: RunningService,
) -> None:
    pool = make_gpu_node.prefix
    queue = make_queue(admin_client, {pool: 8})
    create(core, namespace, managed_pod("early", queue, gpus=1))  # no node yet: it waits
    service.stop()
    with pytest.raises(ApiException) as refused:
        create(core, namespace, managed_pod("during-outage", queue, gpus=1))
    assert "mutate-pod.aistack.io" in refusal(refused.value)
    make_gpu_node("g0", labels={keys.POOL_LABEL: pool})
    time.sleep(3)  # kube-scheduler would bind an ungated pod to the new node by now
    early = read(core, namespace, "early")
    assert is_gated(early)
    assert node_of(early) is None
    service.start()
    wait_for(
        "the pod to run once the service is back",
        lambda: read(core, namespace, "early"),
        phase_is("Running"),
    )


@pytest.mark.parametrize(
    ("annotations", "gpus", "message"),
    [
        (
            {keys.GPU_COMPUTE_ANNOTATION: "150", keys.GPU_MEMORY_ANNOTATION: "1000"},
            0,
            "is out of range: use 1 to 100",
        ),
        ({keys.GPU_COMPUTE_ANNOTATION: "50"}, 0, "a GPU slice needs both"),
        (
            {keys.GPU_COMPUTE_ANNOTATION: "50", keys.GPU_MEMORY_ANNOTATION: "1000"},
            1,
            "ask for one or the other",
        ),
        ({keys.NODE_ANNOTATION: "somewhere"}, 1, "written by the scheduler only"),
        ({keys.TOPOLOGY_ANNOTATION: "galaxy"}, 1, "use a level"),
    ],
)
def test_bad_pod_requests_are_refused_with_a_clear_message(  # noqa: PLR0917 (fixtures + params)
    core: CoreV1Api,
    namespace: str,
    admin_client: ApiClient,
    annotations: dict[str, str],
    gpus: int,
    message: str,
) -> None:
    queue = make_queue(admin_client, {"any": 1})
    with pytest.raises(ApiException) as refused:
        create(core, namespace, managed_pod("bad", queue, gpus=gpus, annotations=annotations))
    assert message in refusal(refused.value)


def test_a_pod_for_a_missing_queue_is_refused(core: CoreV1Api, namespace: str) -> None:
    with pytest.raises(ApiException) as refused:
        create(core, namespace, managed_pod("lost", "no-such-queue", gpus=1))
    assert "queue 'no-such-queue' does not exist" in refusal(refused.value)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"pools": [{"pool": "x", "quota": 4, "limit": 2}]}, "limit must be >= quota"),
        ({"parent": "no-such-parent", "pools": []}, "parent 'no-such-parent' does not exist"),
        ({"pools": [{"pool": "x", "quota": -1}]}, "should be greater than or equal to 0"),
    ],
)
def test_bad_queues_are_refused_with_a_clear_message(
    admin_client: ApiClient, service: RunningService, spec: dict[str, Any], message: str
) -> None:
    body = {
        "apiVersion": "aistack.io/v1alpha1",
        "kind": "Queue",
        "metadata": {"name": "bad-queue"},
        "spec": spec,
    }
    with pytest.raises(ApiException) as refused:
        CustomObjectsApi(admin_client).create_cluster_custom_object(
            keys.GROUP, keys.QUEUE_VERSION, keys.QUEUE_PLURAL, body
        )
    assert message in refusal(refused.value)


def test_a_parent_queue_with_children_cannot_be_deleted(
    admin_client: ApiClient, service: RunningService
) -> None:
    parent = make_queue(admin_client, {"x": 4})
    make_queue(admin_client, {"x": 2}, parent=parent)
    custom = CustomObjectsApi(admin_client)
    wait_for(
        "the service to see the child",
        lambda: service.get("/api/v1/queues", service.cluster.tokens["admin"]),
        lambda r: r[0] == 200 and sum(q.get("parent") == parent for q in r[1]) == 1,
    )
    with pytest.raises(ApiException) as refused:
        custom.delete_cluster_custom_object(
            keys.GROUP, keys.QUEUE_VERSION, keys.QUEUE_PLURAL, parent
        )
    assert "delete or re-parent them first" in refusal(refused.value)


def test_the_api_answers_users_by_their_rbac_rights(service: RunningService) -> None:
    tokens = service.cluster.tokens
    status, body = service.get("/api/v1/nodes", tokens["admin"])
    assert status == 200
    status, body = service.get("/api/v1/nodes", tokens["alice"])
    assert status == 403
    assert "alice" in json.dumps(body)
    status, _ = service.get("/api/v1/nodes", None)
    assert status == 401


def test_an_argo_workflow_step_asking_for_a_gpu_is_admitted_and_succeeds(
    core: CoreV1Api, namespace: str, make_gpu_node: GpuNodes, admin_client: ApiClient, argo: object
) -> None:
    pool = pool_nodes(make_gpu_node, 1)
    queue = make_queue(admin_client, {pool: 8})
    submit_gpu_workflow(admin_client, namespace, "train", queue, gpus=1, run_for="1s")
    done = wait_for_workflow_phase(admin_client, namespace, "train", timeout=90)
    assert done["status"]["phase"] == "Succeeded"
    (listed,) = core.list_namespaced_pod(namespace).items
    assert listed.metadata is not None
    pod = read(core, namespace, str(listed.metadata.name))
    assert annotations_of(pod)[keys.NODE_ANNOTATION] == f"{pool}-g0"


def test_replicas_elect_one_leader_and_the_other_takes_over_when_it_goes(  # noqa: PLR0917
    core: CoreV1Api,
    namespace: str,
    make_gpu_node: GpuNodes,
    admin_client: ApiClient,
    cluster: TestCluster,
    service: RunningService,
) -> None:
    pool = make_gpu_node.prefix
    queue = make_queue(admin_client, {pool: 16})
    for name in ("first", "second"):  # no node yet: both wait
        create(core, namespace, managed_pod(name, queue, gpus=8))
    service.stop()  # from here on only the two replicas schedule
    replicas = [
        RunningService(cluster, admin_client, name=name, leader_election=True, webhooks=False)
        for name in ("replica-a", "replica-b")
    ]
    try:
        for replica in replicas:
            replica.start()
        leader = wait_for(
            "one replica to lead",
            lambda: [r for r in replicas if r.is_leader()],
            lambda leading: len(leading) == 1,
        )[0]
        make_gpu_node("g0", labels={keys.POOL_LABEL: pool})
        wait_for(
            "the leader to release one pod onto the new node",
            lambda: [read(core, namespace, n) for n in ("first", "second")],
            lambda pods: sum(phase_is("Running")(p) for p in pods) == 1,
        )
        leader.stop()  # gives the lease up on the way out
        (follower,) = [r for r in replicas if r is not leader]
        wait_for("the other replica to lead", follower.is_leader, timeout=15)
        make_gpu_node("g1", labels={keys.POOL_LABEL: pool})
        pods = wait_for(
            "the new leader to release the other pod",
            lambda: [read(core, namespace, n) for n in ("first", "second")],
            lambda found: all(phase_is("Running")(p) for p in found),
        )
        assert {node_of(p) for p in pods} == {f"{pool}-g0", f"{pool}-g1"}
    finally:
        for replica in replicas:
            replica.stop()
