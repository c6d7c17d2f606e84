"""An Airflow task's pod, as the real cncf-kubernetes provider builds it, carries the contract.

Each pod is rendered by KubernetesPodOperator itself (or the KubernetesExecutor's
`PodGenerator`) and read back with the service's own reader (`parse_pod_request`), so these
tests check what the scheduler will see, not what the library meant to write.
"""

from __future__ import annotations

from typing import Any

import pytest
from airflow.providers.cncf.kubernetes.operators.pod import KubernetesPodOperator
from airflow.providers.cncf.kubernetes.pod_generator import PodGenerator
from kubernetes.client import V1EnvVar, V1ResourceRequirements
from kubernetes.client import models as k8s

import aistack_flows as af
from aistack_flows.airflow import (
    DEFAULT_SCHEDULE_TIMEOUT_SECONDS,
    GpuPodOperator,
    pod_operator_arguments,
    pod_override,
)
from scheduler_service import pod_contract as contract
from scheduler_service.core import Kind
from scheduler_service.translate import parse_pod_request
from tests.airflow.pods import FakeTaskInstance, as_json, render_pod, task_context

IMAGE = "registry.example.com/trainer:1"


def gpu_task(**arguments: Any) -> GpuPodOperator:
    return GpuPodOperator(
        **{"task_id": "train", "image": IMAGE, "cmds": ["python", "train.py"], **arguments}
    )


def main_container(pod: dict[str, Any]) -> dict[str, Any]:
    (container,) = [c for c in pod["spec"]["containers"] if c["name"] == "base"]
    found: dict[str, Any] = container
    return found


def env(pod: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e.get("value", "") for e in main_container(pod).get("env") or ()}


def test_whole_gpus_reach_the_pod_as_the_service_reads_them() -> None:
    pod = render_pod(gpu_task(namespace="mlops", annotations=af.gpus(4, queue="mlops")))
    read = parse_pod_request(pod)
    assert (read.queue, read.kind, read.request.gpus) == ("mlops", Kind.TRAIN, 4)
    assert pod["metadata"]["labels"][contract.QUEUE_LABEL] == "mlops"
    assert main_container(pod)["resources"]["limits"] == {contract.GPU_RESOURCE: "4"}
    assert not any(k.startswith("flows.aistack.io/") for k in pod["metadata"]["annotations"])


def test_a_slice_and_every_option_reach_the_pod() -> None:
    declaration = af.gpu_slice(
        memory_gib=8,
        compute_percent=25,
        queue="research",
        kind="infer",
        priority=5,
        preemptible=True,
        pools=["h100", "a100"],
        gpu_models=["NVIDIA-H100-80GB-HBM3"],
    )
    pod = render_pod(gpu_task(namespace="research", annotations=declaration))
    read = parse_pod_request(pod)
    assert read.request.gpu_memory_mib == 8192
    assert read.request.gpu_compute_percent == 25
    assert read.request.gpus == 0
    assert (read.kind, read.priority, read.preemptible) == (Kind.INFER, 5, True)
    assert read.pools == ("h100", "a100")
    assert read.models == ("NVIDIA-H100-80GB-HBM3",)
    assert "resources" not in main_container(pod)


def test_the_author_s_own_labels_annotations_env_and_resources_are_kept() -> None:
    operator = gpu_task(
        namespace="mlops",
        labels={"team": "recsys"},
        annotations={**af.gpus(2, queue="mlops"), "owner": "ana"},
        env_vars={"EPOCHS": "3", af.ATTEMPT_ENV: "mine"},
        container_resources=V1ResourceRequirements(
            requests={"cpu": "4", contract.GPU_RESOURCE: "2"}, limits={"memory": "32Gi"}
        ),
    )
    pod = render_pod(operator)
    assert pod["metadata"]["labels"]["team"] == "recsys"
    assert pod["metadata"]["annotations"] == {"owner": "ana"}
    assert main_container(pod)["resources"] == {
        "limits": {"memory": "32Gi", contract.GPU_RESOURCE: "2"},
        "requests": {"cpu": "4", contract.GPU_RESOURCE: "2"},
    }
    assert env(pod)["EPOCHS"] == "3"
    assert env(pod)[af.ATTEMPT_ENV].startswith("{{")  # ours: the attempt, as Airflow counts it
    assert operator.schedule_timeout_seconds == DEFAULT_SCHEDULE_TIMEOUT_SECONDS


def test_a_contract_written_by_hand_is_read_and_checked_the_same() -> None:
    by_hand = gpu_task(
        namespace="mlops",
        labels={contract.QUEUE_LABEL: "mlops"},
        container_resources=V1ResourceRequirements(limits={contract.GPU_RESOURCE: "2"}),
    )
    assert parse_pod_request(render_pod(by_hand)).request.gpus == 2
    with pytest.raises(af.RequestError, match="gpus: must be a whole number from 1 to 64"):
        gpu_task(
            labels={contract.QUEUE_LABEL: "mlops"},
            container_resources=V1ResourceRequirements(limits={contract.GPU_RESOURCE: "65"}),
        )


def test_a_plain_kubernetes_pod_operator_gets_the_same_pod() -> None:
    arguments = {"task_id": "train", "image": IMAGE, "cmds": ["python", "train.py"]}
    declaration = af.gpus(1, queue="mlops", priority=3)
    plain = KubernetesPodOperator(
        **pod_operator_arguments(**arguments, namespace="mlops", annotations=declaration)
    )
    ours = gpu_task(namespace="mlops", annotations=declaration)
    assert parse_pod_request(render_pod(plain)) == parse_pod_request(render_pod(ours))


def test_managing_is_idempotent() -> None:
    once = pod_operator_arguments(task_id="t", annotations=af.gpus(2, queue="q", checkpoint="/c"))
    assert pod_operator_arguments(**once) == once


def test_the_author_s_schedule_timeout_is_kept() -> None:
    task = gpu_task(annotations=af.gpus(1, queue="q"), schedule_timeout_seconds=600)
    assert task.schedule_timeout_seconds == 600


@pytest.mark.parametrize(
    ("arguments", "field"),
    [
        ({"annotations": af.gpus(1)}, "queue"),
        ({"annotations": {"owner": "ana"}}, "annotations"),
        ({"annotations": {"flows.aistack.io/gpus": "0.5", contract.QUEUE_LABEL: "q"}}, "gpus"),
        (
            {
                "annotations": {contract.GPU_COMPUTE_ANNOTATION: "150", contract.QUEUE_LABEL: "q"},
            },
            "compute_percent",
        ),
        ({"labels": {contract.QUEUE_LABEL: 7}, "annotations": af.gpus(1)}, "labels"),
        ({"annotations": af.gpus(1, queue="q"), "env_vars": "EPOCHS=3"}, "env_vars"),
        (
            {
                "annotations": af.gpus(1, queue="q"),
                "container_resources": {"limits": {"cpu": "1"}},
            },
            "container_resources",
        ),
        (
            {
                "annotations": af.gpus(2, queue="q"),
                "container_resources": V1ResourceRequirements(limits={contract.GPU_RESOURCE: "4"}),
            },
            "gpus",
        ),
    ],
)
def test_a_bad_declaration_is_refused_naming_the_field(
    arguments: dict[str, Any], field: str
) -> None:
    with pytest.raises(af.RequestError) as refused:
        gpu_task(**arguments)
    assert field in {p.field for p in refused.value.problems}, refused.value


def test_a_gang_is_refused_with_where_to_run_it_instead() -> None:
    with pytest.raises(af.RequestError, match="gang: one Airflow task runs one pod") as refused:
        gpu_task(annotations=af.gpus(8, queue="q", gang=2, topology="rack"))
    assert "Argo step" in str(refused.value)


def test_free_reclaim_retries_are_only_declared_where_they_are_given() -> None:
    assert gpu_task(annotations=af.gpus(1, queue="q", reclaim_retries=3)).reclaim_retries == 3
    with pytest.raises(af.RequestError, match="reclaim_retries: only GpuPodOperator"):
        pod_operator_arguments(task_id="t", annotations=af.gpus(1, queue="q", reclaim_retries=3))


def test_the_checkpoint_directory_names_the_task_in_this_run_when_airflow_renders_it() -> None:
    task = gpu_task(annotations=af.gpus(1, queue="q", checkpoint="s3://models/runs/"))
    ti = FakeTaskInstance(dag_id="nightly", task_id="train", try_number=2)
    task.render_template_fields(task_context(ti, task_reschedule_count=3))
    rendered = {e.name: e.value for e in task.env_vars if isinstance(e, V1EnvVar)}
    run = "scheduled__2026-12-04T02_00_00_00_00"
    assert rendered[af.CHECKPOINT_DIR_ENV] == f"s3://models/runs/nightly/{run}/train"
    assert rendered[af.ATTEMPT_ENV] == "4"  # one retry and three reclaims before this run

    mapped = gpu_task(annotations=af.gpus(1, queue="q", checkpoint="/c"))
    mapped.render_template_fields(task_context(FakeTaskInstance("d", "train", map_index=3)))
    rendered = {e.name: e.value for e in mapped.env_vars if isinstance(e, V1EnvVar)}
    assert str(rendered[af.CHECKPOINT_DIR_ENV]).endswith("/train-3")
    assert rendered[af.ATTEMPT_ENV] == "0"


def test_numbers_may_be_jinja_templates_that_airflow_renders_when_the_task_runs() -> None:
    task = gpu_task(annotations=af.gpus("{{ params.gpus }}", queue="{{ params.queue }}"))
    context = task_context(FakeTaskInstance("nightly", "train"))
    context["params"] = {"gpus": 3, "queue": "mlops"}
    task.render_template_fields(context)
    resources = task.container_resources
    assert resources is not None
    assert resources.limits == {contract.GPU_RESOURCE: "3"}
    assert task.labels[contract.QUEUE_LABEL] == "mlops"


def test_the_executor_s_worker_pod_carries_the_contract() -> None:
    override = pod_override(af.gpus(2, queue="mlops", kind="build", priority=-1))
    worker = PodGenerator.construct_pod(
        dag_id="nightly",
        task_id="publish",
        pod_id="nightly-publish",
        try_number=1,
        kube_image="apache/airflow:3.2.2",
        date=None,
        args=["airflow", "tasks", "run", "nightly", "publish"],
        pod_override_object=override,
        base_worker_pod=k8s.V1Pod(
            metadata=k8s.V1ObjectMeta(labels={"tier": "airflow"}),
            spec=k8s.V1PodSpec(containers=[k8s.V1Container(name="base")]),
        ),
        namespace="mlops",
        scheduler_job_id="1",
        run_id="scheduled__2026-12-04T02:00:00+00:00",
    )
    pod = as_json(worker)
    read = parse_pod_request(pod)
    assert (read.queue, read.kind, read.priority, read.request.gpus) == (
        "mlops",
        Kind.BUILD,
        -1,
        2,
    )
    assert pod["metadata"]["labels"]["tier"] == "airflow"
    assert main_container(pod)["args"][:3] == ["airflow", "tasks", "run"]


def test_the_executor_s_worker_pod_cannot_name_a_run_s_checkpoint() -> None:
    with pytest.raises(af.RequestError, match="checkpoint: the KubernetesExecutor"):
        pod_override(af.gpus(1, queue="q", checkpoint="/c"))
    slice_pod = as_json(pod_override(af.gpu_slice(memory_gib=4, compute_percent=20, queue="q")))
    assert slice_pod["metadata"]["annotations"][contract.GPU_MEMORY_ANNOTATION] == "4096"
