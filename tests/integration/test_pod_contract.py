"""Ways around the scheduler through a pod update, each refused by the chart's pod policy.

A user who may edit pods tries what a hostile or careless one would on a managed pod: write an
allocation, lift the gate, change the request. Each is refused by the API server with the
policy's message, and the pod is unchanged; the scheduler itself still admits pods.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from kubernetes.client import (
    AdmissionregistrationV1Api,
    ApiClient,
    CoreV1Api,
    CustomObjectsApi,
    V1ObjectMeta,
)
from kubernetes.client.exceptions import ApiException

from scheduler_service import pod_contract as keys
from tests.integration.cluster import GpuNodes, wait_for
from tests.integration.pods import is_gated, pods_in, pool_nodes, read
from tests.integration.service import make_queue, managed_pod

MERGE = "application/merge-patch+json"
POLICY = "aistack-pod-contract"
"""The chart's pod policy and its binding, as the test service applied them."""


def waiting_pod(core: CoreV1Api, namespace: str, admin: ApiClient, name: str) -> dict[str, Any]:
    """A managed pod that waits (its queue has no quota anywhere)."""
    queue = make_queue(admin, {"nowhere": 0})
    core.create_namespaced_pod(namespace, managed_pod(name, queue, gpus=1))  # type: ignore[arg-type]
    return read(core, namespace, name)


@pytest.mark.parametrize(
    ("patch", "says"),
    [
        (
            {"metadata": {"annotations": {keys.NODE_ANNOTATION: "n1", keys.GPUS_ANNOTATION: "0"}}},
            "annotations alloc.aistack.io/* are the scheduler's record",
        ),
        (
            {"metadata": {"annotations": {keys.GANG_ALLOCATION_ANNOTATION: '{"p":{"node":"n1"}}'}}},
            "annotations alloc.aistack.io/* are the scheduler's record",
        ),
        ({"spec": {"schedulingGates": None}}, "only the scheduler removes the scheduling gates"),
        (
            {"metadata": {"labels": {keys.QUEUE_LABEL: "another"}}},
            "cannot change after it is created",
        ),
        ({"metadata": {"labels": {keys.MANAGED_LABEL: None}}}, "cannot change after it is created"),
        (
            {"metadata": {"annotations": {keys.PRIORITY_ANNOTATION: "100"}}},
            "cannot change after it is created",
        ),
    ],
    ids=[
        "forged-allocation",
        "forged-gang-record",
        "gate-removed",
        "queue-changed",
        "unmanaged",
        "priority-raised",
    ],
)
def test_an_edit_around_the_scheduler_is_refused_and_changes_nothing(
    core: CoreV1Api, namespace: str, admin_client: ApiClient, patch: dict[str, Any], says: str
) -> None:
    before = waiting_pod(core, namespace, admin_client, "p")

    with pytest.raises(ApiException) as refused:
        core.patch_namespaced_pod("p", namespace, patch, _content_type=MERGE)

    assert refused.value.status == 403
    assert says in json.loads(refused.value.body or "{}")["message"]
    after = read(core, namespace, "p")
    for part in ("labels", "annotations"):
        assert after["metadata"].get(part) == before["metadata"].get(part)
    assert after["spec"] == before["spec"]
    assert is_gated(after)


def test_other_edits_of_a_managed_pod_and_the_scheduler_s_own_still_go_through(
    core: CoreV1Api, namespace: str, admin_client: ApiClient, make_gpu_node: GpuNodes
) -> None:
    waiting_pod(core, namespace, admin_client, "p")
    core.patch_namespaced_pod(
        "p", namespace, {"metadata": {"labels": {"team": "vision"}}}, _content_type=MERGE
    )
    assert read(core, namespace, "p")["metadata"]["labels"]["team"] == "vision"

    pool = pool_nodes(make_gpu_node, 1, gpus=1)
    queue = make_queue(admin_client, {pool: 1})
    core.create_namespaced_pod(namespace, managed_pod("q", queue, gpus=1))  # type: ignore[arg-type]
    admitted = wait_for(
        "the scheduler to admit a pod (its patch is its own)",
        lambda: read(core, namespace, "q"),
        lambda pod: not is_gated(pod),
    )
    assert admitted["metadata"]["annotations"][keys.NODE_ANNOTATION]


def test_a_queue_that_names_its_namespaces_takes_no_pods_of_others(
    core: CoreV1Api, namespace: str, admin_client: ApiClient
) -> None:
    queue = make_queue(admin_client, {"nowhere": 1})
    CustomObjectsApi(admin_client).patch_cluster_custom_object(
        keys.GROUP,
        keys.QUEUE_VERSION,
        keys.QUEUE_PLURAL,
        queue,
        {"spec": {"namespaces": ["someone-else"]}},
    )

    def refusal() -> str:
        """The refusal of a new pod in this queue; "" when it was let in (and is removed)."""
        try:
            core.create_namespaced_pod(namespace, managed_pod("p", queue, gpus=1))  # type: ignore[arg-type]
        except ApiException as refused:
            return f"{refused.status} {json.loads(refused.body or '{}')['message']}"
        core.delete_namespaced_pod("p", namespace, grace_period_seconds=0)
        wait_for("the pod let in to go", lambda: pods_in(core, namespace), lambda pods: not pods)
        return ""

    # The service's watch brings the patch within a moment; until then a pod may still pass.
    message = wait_for("a pod of this namespace to be refused", refusal, bool)
    assert message.startswith("403 admission webhook")
    assert f"queue '{queue}' takes pods of namespace(s) someone-else only" in message
    assert f"not of '{namespace}'" in message


def test_where_the_policy_is_missing_a_gate_lifted_by_hand_stops_the_pod(
    core: CoreV1Api, namespace: str, admin_client: ApiClient
) -> None:
    admission = AdmissionregistrationV1Api(admin_client)
    binding = admission.read_validating_admission_policy_binding(POLICY)
    admission.delete_validating_admission_policy_binding(POLICY)
    try:
        waiting_pod(core, namespace, admin_client, "p")

        def lifted() -> bool:
            try:
                core.patch_namespaced_pod(
                    "p", namespace, {"spec": {"schedulingGates": None}}, _content_type=MERGE
                )
            except ApiException as refused:
                if refused.status != 403:  # 403: the API server still has the policy cached
                    raise
                return False
            return True

        wait_for("the API server to forget the policy's binding", lifted, bool)
        stopped = wait_for(
            "the service to stop the ungated pod",
            lambda: read(core, namespace, "p"),
            lambda pod: pod["status"].get("phase") == "Failed",
        )
        assert stopped["status"]["reason"] == "GateRemoved"
        assert "was removed outside the scheduler" in stopped["status"]["message"]
        # An allocation forged and the gate lifted with it: not signed by the scheduler.
        waiting_pod(core, namespace, admin_client, "f")
        core.patch_namespaced_pod(
            "f",
            namespace,
            {
                "metadata": {
                    "annotations": {keys.NODE_ANNOTATION: "n1", keys.GPUS_ANNOTATION: "0"}
                },
                "spec": {"schedulingGates": None},
            },
            _content_type=MERGE,
        )
        forged = wait_for(
            "the service to stop the pod with a forged allocation",
            lambda: read(core, namespace, "f"),
            lambda pod: pod["status"].get("phase") == "Failed",
        )
        assert forged["status"]["reason"] == "ForgedAllocation"
    finally:
        binding.metadata = V1ObjectMeta(name=POLICY)
        admission.create_validating_admission_policy_binding(binding)
    # The next tests need the policy back in force: a forged allocation is refused again.
    waiting_pod(core, namespace, admin_client, "q")

    def refused_again() -> bool:
        try:
            core.patch_namespaced_pod(
                "q",
                namespace,
                {"metadata": {"annotations": {keys.NODE_ANNOTATION: "n1"}}},
                _content_type=MERGE,
                dry_run="All",  # admission runs, nothing is stored
            )
        except ApiException:
            return True
        return False

    wait_for("the policy to be in force again", refused_again, bool)
