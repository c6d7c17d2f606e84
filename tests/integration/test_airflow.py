"""Airflow tasks' pods against the real API server and the real service, like any Argo step.

The pod a GpuPodOperator task makes (rendered by the real cncf-kubernetes provider) is created,
gated by the webhook, admitted and placed by the service, and reclaimed when the GPUs' owner
comes back. Then the operator itself runs against the cluster (its own client, its own polling,
its own cleanup), with a fake task instance for the context Airflow would pass: a reclaim ends
the task with `AirflowRescheduleException`, the exception Airflow reruns a task for without
counting a retry. Airflow's scheduler, which reruns it, is not started here (docs/airflow.md).

kwok plays the kubelet but does not stop the containers of a pod the service marked Failed; the
test does that part (exit 143, as SIGTERM ends a process), as a kubelet would.
"""

from __future__ import annotations

from tests.airflow import home  # noqa: F401 (AIRFLOW_HOME, before Airflow is imported)

# isort: split

import datetime
import json
import threading
from pathlib import Path
from typing import Any

import pytest
from airflow.sdk.exceptions import AirflowException, AirflowRescheduleException
from kubernetes.client import ApiClient, CoreV1Api

import aistack_flows as af
from aistack_flows.airflow import GpuPodOperator, eviction_message
from scheduler_service import pod_contract as keys
from tests.airflow.pods import FakeTaskInstance, render_pod, task_context
from tests.integration.cluster import GpuNodes, wait_for
from tests.integration.pods import Pod, is_gated, phase, pods_in, pool_nodes, read
from tests.integration.service import make_queue, managed_pod, pod_env

IMAGE = "registry.invalid/aistack/train:test"


def train_task(namespace: str, queue: str, **arguments: Any) -> GpuPodOperator:
    return GpuPodOperator(
        task_id="train",
        namespace=namespace,
        image=IMAGE,
        cmds=["python", "train.py"],
        annotations=af.gpus(8, queue=queue),
        **arguments,
    )


def lender_and_borrower(nodes: GpuNodes, admin: ApiClient) -> tuple[str, str]:
    """One 8-GPU node; the lender's quota is all of it, the borrower's nothing."""
    pool = pool_nodes(nodes, 1)
    return make_queue(admin, {pool: 8}), make_queue(admin, {pool: 0})


def running(pod: Pod) -> bool:
    return phase(pod) == "Running" and not is_gated(pod)


def test_an_airflow_task_s_pod_is_admitted_placed_and_reclaimed_like_a_step(
    core: CoreV1Api, namespace: str, make_gpu_node: GpuNodes, admin_client: ApiClient
) -> None:
    owner, borrower = lender_and_borrower(make_gpu_node, admin_client)
    pod = render_pod(train_task(namespace, borrower, name="train", random_name_suffix=False))
    core.create_namespaced_pod(namespace, pod)  # type: ignore[arg-type]
    created = read(core, namespace, "train")
    assert created["metadata"]["labels"][keys.MANAGED_LABEL] == "true"  # the webhook's
    placed = wait_for(
        "the borrower's task to be admitted and placed",
        lambda: read(core, namespace, "train"),
        running,
    )
    assert placed["spec"]["nodeName"] == f"{make_gpu_node.prefix}-g0"
    assert placed["metadata"]["annotations"][keys.NODE_ANNOTATION] == placed["spec"]["nodeName"]
    assert len(pod_env(placed, container="base")["AISTACK_GPUS"].split(",")) == 8

    core.create_namespaced_pod(namespace, managed_pod("owner", owner, gpus=8))  # type: ignore[arg-type]
    wait_for("the owner to get its GPUs back", lambda: read(core, namespace, "owner"), running)
    reclaimed = read(core, namespace, "train")
    assert (phase(reclaimed), reclaimed["status"]["reason"]) == ("Failed", "Reclaimed")
    message = eviction_message(core.read_namespaced_pod("train", namespace))
    assert message is not None
    assert message.startswith(f"{keys.RECLAIMED_MESSAGE_PREFIX}{namespace}/owner: ")


def stop_containers(core: CoreV1Api, namespace: str, pod: Pod) -> None:
    """What a kubelet does to a pod marked Failed: SIGTERM ends the step's process (143)."""
    now = datetime.datetime.now(datetime.UTC).isoformat()
    statuses = [
        {
            "name": container["name"],
            "image": container["image"],
            "imageID": "",
            "ready": False,
            "restartCount": 0,
            "state": {
                "terminated": {
                    "exitCode": 143,
                    "reason": "Error",
                    "startedAt": pod["status"]["startTime"],
                    "finishedAt": now,
                }
            },
        }
        for container in pod["spec"]["containers"]
    ]
    core.patch_namespaced_pod_status(
        pod["metadata"]["name"], namespace, {"status": {"containerStatuses": statuses}}
    )


@pytest.fixture
def kubernetes_connection(kubeconfig_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Airflow's default Kubernetes connection, pointing at the test cluster (an env variable)."""
    extra = {"kube_config_path": str(kubeconfig_path), "in_cluster": False}
    monkeypatch.setenv(
        "AIRFLOW_CONN_KUBERNETES_DEFAULT", json.dumps({"conn_type": "kubernetes", "extra": extra})
    )


@pytest.mark.usefixtures("kubernetes_connection")
def test_a_reclaimed_airflow_task_is_rescheduled_without_using_a_retry(
    core: CoreV1Api, namespace: str, make_gpu_node: GpuNodes, admin_client: ApiClient
) -> None:
    owner, borrower = lender_and_borrower(make_gpu_node, admin_client)
    task = train_task(
        namespace,
        borrower,
        get_logs=False,  # kwok runs no containers, so there are no logs to follow
        startup_check_interval_seconds=1,
    )
    ti = FakeTaskInstance(dag_id="nightly", task_id="train")
    ended: list[BaseException] = []

    def run_task() -> None:
        try:
            task.execute(task_context(ti, task_reschedule_count=1))
        except BaseException as error:  # what Airflow's task runner would catch
            ended.append(error)

    runner = threading.Thread(target=run_task, name="airflow-task", daemon=True)
    runner.start()
    (pod,) = wait_for(
        "the task's pod to be admitted and placed",
        lambda: pods_in(core, namespace),
        lambda pods: len(pods) == 1 and running(pods[0]),
        timeout=60,
    )
    assert pod["metadata"]["labels"]["task_id"] == "train"  # the provider's own labels
    assert ti.xcoms["pod_name"] == pod["metadata"]["name"]

    core.create_namespaced_pod(namespace, managed_pod("owner", owner, gpus=8))  # type: ignore[arg-type]
    name = pod["metadata"]["name"]
    reclaimed = wait_for(
        "the service to reclaim the task's pod",
        lambda: read(core, namespace, name),
        lambda found: phase(found) == "Failed",
    )
    stop_containers(core, namespace, reclaimed)
    runner.join(timeout=60)
    assert not runner.is_alive(), "the operator did not end after its pod was reclaimed"
    (error,) = ended
    assert isinstance(error, AirflowRescheduleException), repr(error)
    assert isinstance(error.__cause__, AirflowException)
    assert "returned a failure" in str(error.__cause__)  # the provider's own verdict
    wait_for(
        "the provider to delete the reclaimed pod, as after any failure",
        lambda: [p["metadata"]["name"] for p in pods_in(core, namespace)],
        lambda names: name not in names,
    )
