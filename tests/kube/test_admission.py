"""The admission webhooks' decisions, on the JSON the API server sends."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from scheduler_service import pod_contract as keys
from scheduler_service.core import Queue
from scheduler_service.kube import KubeWebhooks
from scheduler_service.kube._admission import QueueUnreadableError
from tests.kube.objects import make_pod, make_queue

QUEUES = {
    "org": Queue("org"),
    "a": Queue("a", parent="org"),
    "b": Queue("b", parent="org"),
}


def hooks(workloads: int = 0) -> KubeWebhooks:
    return KubeWebhooks(lambda: QUEUES, lambda _queue: workloads)


def apply_patch(document: dict[str, Any], patch: Any) -> dict[str, Any]:
    """Apply RFC 6902 `add` operations (all the pod webhook emits)."""
    result = copy.deepcopy(document)
    for op in patch:
        assert op["op"] == "add"
        *parents, last = [
            p.replace("~1", "/").replace("~0", "~") for p in op["path"][1:].split("/")
        ]
        target: Any = result
        for part in parents:
            target = target[int(part)] if isinstance(target, list) else target[part]
        if isinstance(target, list):
            target.append(op["value"]) if last == "-" else target.insert(int(last), op["value"])
        else:
            target[last] = op["value"]
    return result


def pod_create(pod: dict[str, Any]) -> dict[str, Any]:
    created = copy.deepcopy(pod)
    created["spec"].pop("schedulingGates", None)
    created["metadata"]["labels"].pop(keys.MANAGED_LABEL, None)
    return {"operation": "CREATE", "object": created, "namespace": "team"}


def test_a_slice_pod_is_gated_and_wired_to_its_allocation_annotations() -> None:
    pod = make_pod("s", "a", gpu_memory_mib=4096, gpu_compute_percent=30)
    pod["spec"]["containers"][0]["env"] = [
        {"name": "NVIDIA_VISIBLE_DEVICES", "value": "all"},
        {"name": "KEEP", "value": "me"},
    ]
    decision = hooks().mutate_pod(pod_create(pod))
    assert decision.allowed
    mutated = apply_patch(pod_create(pod)["object"], decision.patch)
    assert mutated["spec"]["schedulingGates"] == [{"name": keys.SCHEDULING_GATE}]
    assert mutated["metadata"]["labels"][keys.MANAGED_LABEL] == "true"
    env = {e["name"]: e for e in mutated["spec"]["containers"][0]["env"]}
    assert env["KEEP"] == {"name": "KEEP", "value": "me"}
    assert env["NVIDIA_VISIBLE_DEVICES"]["valueFrom"]["fieldRef"]["fieldPath"] == (
        f"metadata.annotations['{keys.GPUS_ANNOTATION}']"
    )
    assert "CUDA_MPS_PINNED_DEVICE_MEM_LIMIT" in env
    assert any("removed NVIDIA_VISIBLE_DEVICES" in w for w in decision.warnings)


def test_a_whole_gpu_pod_leaves_the_devices_to_the_device_plugin() -> None:
    pod = make_pod("w", "a", gpus=2)
    decision = hooks().mutate_pod(pod_create(pod))
    mutated = apply_patch(pod_create(pod)["object"], decision.patch)
    names = [e["name"] for e in mutated["spec"]["containers"][0]["env"]]
    assert names == ["AISTACK_GPUS"]


def test_a_second_invocation_adds_nothing_twice() -> None:
    pod = make_pod("w", "a", gpus=1)
    once = apply_patch(pod_create(pod)["object"], hooks().mutate_pod(pod_create(pod)).patch)
    again = hooks().mutate_pod({"operation": "CREATE", "object": once})
    twice = apply_patch(once, again.patch)
    assert twice["spec"]["schedulingGates"] == [{"name": keys.SCHEDULING_GATE}]
    assert [e["name"] for e in twice["spec"]["containers"][0]["env"]] == ["AISTACK_GPUS"]
    assert again.warnings == ()


@pytest.mark.parametrize(
    ("queue", "message"),
    [
        ("nope", "queue 'nope' does not exist (leaf queues: a, b)"),
        ("org", "queue 'org' is a parent queue (children: a, b)"),
    ],
)
def test_pods_for_unknown_or_parent_queues_are_refused(queue: str, message: str) -> None:
    decision = hooks().mutate_pod(pod_create(make_pod("p", queue, gpus=1)))
    assert not decision.allowed
    assert message in decision.message


def test_a_queue_the_watch_has_not_brought_yet_is_read_from_the_api_server() -> None:
    # A queue created a moment before its first pod: the cache lacks it, the API server has it.
    asked: list[str] = []

    def read_queue(name: str) -> Queue | None:
        asked.append(name)
        return Queue(name) if name == "new" else None

    webhooks = KubeWebhooks(lambda: QUEUES, lambda _queue: 0, read_queue)
    assert webhooks.mutate_pod(pod_create(make_pod("p", "new", gpus=1))).allowed
    missing = webhooks.mutate_pod(pod_create(make_pod("p", "nope", gpus=1)))
    assert "queue 'nope' does not exist (leaf queues: a, b)" in missing.message
    assert webhooks.mutate_pod(pod_create(make_pod("p", "a", gpus=1))).allowed
    assert asked == ["new", "nope"]  # a cached queue costs no API call


def test_a_queue_that_cannot_be_read_refuses_the_pod_with_a_retry() -> None:
    def read_queue(name: str) -> Queue | None:
        raise QueueUnreadableError("HTTP 503 Service Unavailable")

    webhooks = KubeWebhooks(lambda: QUEUES, lambda _queue: 0, read_queue)
    decision = webhooks.mutate_pod(pod_create(make_pod("p", "new", gpus=1)))
    assert not decision.allowed
    assert decision.message == (
        "queue 'new' is not known to the scheduler yet and could not be read from the API "
        "server (HTTP 503 Service Unavailable); create the pod again in a moment"
    )


def test_a_pod_that_names_its_node_is_refused() -> None:
    pod = make_pod("p", "a", gpus=1)
    pod["spec"]["nodeName"] = "n1"
    decision = hooks().mutate_pod(pod_create(pod))
    assert not decision.allowed
    assert "spec.nodeName is set" in decision.message


def test_a_pod_without_the_queue_label_is_not_touched() -> None:
    pod = make_pod("p", gpus=1)
    del pod["metadata"]["labels"][keys.QUEUE_LABEL]
    decision = hooks().mutate_pod(pod_create(pod))
    assert decision.allowed
    assert decision.patch == ()


def test_queue_parents_must_exist_and_not_loop() -> None:
    missing = hooks().validate_queue({"operation": "CREATE", "object": make_queue("c", parent="x")})
    assert not missing.allowed
    assert "parent 'x' does not exist" in missing.message
    loop = hooks().validate_queue({"operation": "UPDATE", "object": make_queue("org", parent="a")})
    assert not loop.allowed
    assert "its own ancestor" in loop.message
    fine = hooks().validate_queue({"operation": "CREATE", "object": make_queue("c", parent="org")})
    assert fine.allowed


def test_queues_with_children_or_workloads_cannot_be_deleted() -> None:
    parent = hooks().validate_queue(
        {"operation": "DELETE", "oldObject": {"metadata": {"name": "org"}}}
    )
    assert not parent.allowed
    assert "parent of a, b" in parent.message
    busy = hooks(workloads=3).validate_queue(
        {"operation": "DELETE", "oldObject": {"metadata": {"name": "a"}}}
    )
    assert not busy.allowed
    assert "3 workload(s)" in busy.message
    assert (
        hooks()
        .validate_queue({"operation": "DELETE", "oldObject": {"metadata": {"name": "a"}}})
        .allowed
    )
