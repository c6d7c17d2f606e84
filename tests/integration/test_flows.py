"""Pipelines built with aistack_flows, run by the real Argo workflow-controller under the service.

Each test builds a Hera pipeline with the library, submits it with `aistack_flows.submit`
(the Kubernetes API, as `aistack submit` does) and watches what Argo and the service make of
it. kwok plays the kubelet: a pod runs for its `aistack.io/test-run-for` annotation, then
succeeds. Every test has its own namespace, pool of nodes and queues.
"""

from __future__ import annotations

import json
from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest
from hera.workflows import (
    DAG,
    Container,
    CronWorkflow,
    Resources,
    RetryStrategy,
    Task,
    Workflow,
)
from kubernetes.client import ApiClient, CoreV1Api, CustomObjectsApi

import aistack_flows as af
from scheduler_service import pod_contract as keys
from scheduler_service.cli import main
from tests.integration.cluster import (
    RUN_FOR_ANNOTATION,
    GpuNodes,
    TestCluster,
    wait_for,
    wait_for_workflow_phase,
)
from tests.integration.pods import is_gated, phase, pods_in, pool_nodes, waiting_message
from tests.integration.service import make_queue, managed_pod, pod_env

Json = dict[str, Any]

pytestmark = pytest.mark.usefixtures("argo")


def step(
    name: str, request: dict[str, str] | None, run_for: str = "1s", **kwargs: Any
) -> Container:
    """A step that kwok runs for `run_for`; `request` is its GPU declaration (None: CPU only)."""
    return Container(
        name=name,
        image="registry.invalid/step:1",
        command=["run", name],
        annotations={**(request or {}), RUN_FOR_ANNOTATION: run_for},
        **kwargs,
    )


def node_of_step(pod: Json) -> str:
    return str(pod["metadata"]["annotations"]["workflows.argoproj.io/node-name"])


def workflow(admin: ApiClient, namespace: str, name: str) -> Json:
    found: Any = CustomObjectsApi(admin).get_namespaced_custom_object(
        "argoproj.io", "v1alpha1", namespace, "workflows", name
    )
    return dict(found)


def submit(pipeline: af.Pipeline, admin: ApiClient, namespace: str) -> str:
    return af.submit(pipeline, admin, namespace=namespace).name


def test_a_build_train_infer_pipeline_runs_each_gpu_step_through_the_scheduler_in_order(
    core: CoreV1Api, namespace: str, make_gpu_node: GpuNodes, admin_client: ApiClient
) -> None:
    queue = make_queue(admin_client, {pool_nodes(make_gpu_node, 1): 8})
    with Workflow(name="pipeline", entrypoint="main", labels={af.QUEUE_LABEL: queue}) as w:
        templates = [
            step("prepare", None),
            step("build", af.gpu_slice(memory_gib=4, compute_percent=20, kind="build")),
            step("train", af.gpus(4), run_for="2s"),
            step("infer", af.gpu_slice(memory_gib=8, compute_percent=25, kind="infer")),
        ]
        with DAG(name="main"):
            tasks = [Task(name=str(t.name), template=t) for t in templates]
            for before, after in pairwise(tasks):
                before >> after
    name = submit(w, admin_client, namespace)
    done = wait_for_workflow_phase(admin_client, namespace, name, timeout=120)
    assert done["status"]["phase"] == "Succeeded"
    # A node name is "<workflow>.<step>", "(0)" after it for the first attempt of a retried one.
    pods = {
        node_of_step(p).rsplit(".", 1)[1].removesuffix("(0)"): p
        for p in pods_in(core, namespace, workflow=name)
    }
    assert sorted(pods) == ["build", "infer", "prepare", "train"]
    cpu = pods["prepare"]
    assert keys.MANAGED_LABEL not in cpu["metadata"]["labels"]  # never gated, never queued
    assert keys.NODE_ANNOTATION not in cpu["metadata"]["annotations"]
    admitted = []
    for name_ in ("build", "train", "infer"):
        annotations = pods[name_]["metadata"]["annotations"]
        assert pods[name_]["metadata"]["labels"][keys.MANAGED_LABEL] == "true"
        admitted.append(annotations[keys.ADMITTED_AT_ANNOTATION])
    assert admitted == sorted(admitted)
    assert pod_env(pods["build"])["CUDA_MPS_ACTIVE_THREAD_PERCENTAGE"] == "20"
    assert len(pod_env(pods["train"])["AISTACK_GPUS"].split(",")) == 4
    for pod in pods.values():
        assert all(
            not e["name"].startswith(("AISTACK_GPUS", "NVIDIA_", "CUDA_"))
            for c in pod["spec"]["containers"]
            if c["name"] == "wait"
            for e in c.get("env") or ()
        )


def gang_pipeline(queue: str, name: str) -> Workflow:
    with Workflow(name=name, entrypoint="main", labels={af.QUEUE_LABEL: queue}) as w:
        with DAG(name="main"):
            step("ddp", af.gpus(8, gang=2), run_for="4s")()
    return w


def test_a_gang_waits_until_all_its_pods_fit_starts_together_and_two_runs_never_mix(
    core: CoreV1Api, namespace: str, make_gpu_node: GpuNodes, admin_client: ApiClient
) -> None:
    queue = make_queue(admin_client, {pool_nodes(make_gpu_node, 1): 16})
    runs = [submit(gang_pipeline(queue, f"ddp-{i}"), admin_client, namespace) for i in range(2)]

    def all_pods() -> list[Json]:
        return [p for run in runs for p in pods_in(core, namespace, workflow=run)]

    waiting = wait_for(
        "both gangs to be told why they wait (one node holds half a gang)",
        all_pods,
        lambda pods: len(pods) == 4 and all(waiting_message(p) for p in pods),
        timeout=60,
    )
    assert all(is_gated(p) for p in waiting)
    gangs = {
        run: {
            p["metadata"]["labels"][keys.GANG_LABEL] for p in pods_in(core, namespace, workflow=run)
        }
        for run in runs
    }
    assert all(len(names) == 1 for names in gangs.values())  # each run: one gang
    assert gangs[runs[0]] != gangs[runs[1]]  # two runs never pair their pods
    make_gpu_node("g1", labels={keys.POOL_LABEL: make_gpu_node.prefix})
    first = wait_for(
        "one gang to start, both of its pods",
        all_pods,
        lambda pods: sum(phase(p) == "Running" for p in pods) == 2,
        timeout=60,
    )
    running = [p for p in first if phase(p) == "Running"]
    assert len({p["metadata"]["labels"][keys.GANG_LABEL] for p in running}) == 1
    assert len({p["spec"]["nodeName"] for p in running}) == 2
    envs = [pod_env(p) for p in running]
    assert sorted(e["PET_NODE_RANK"] for e in envs) == ["0", "1"]
    assert {e["PET_MASTER_ADDR"] for e in envs} == {
        f"{running[0]['metadata']['labels'][keys.GANG_LABEL]}-0.{keys.GANG_SUBDOMAIN}"
    }
    assert {p["spec"]["hostname"] for p in running} == {
        f"{p['metadata']['labels'][keys.GANG_LABEL]}-{pod_env(p)['PET_NODE_RANK']}" for p in running
    }
    for run in runs:
        assert (
            wait_for_workflow_phase(admin_client, namespace, run, timeout=120)["status"]["phase"]
            == "Succeeded"
        )


def test_a_pending_steps_node_message_is_the_schedulers_reason_and_the_cli_shows_it(  # noqa: PLR0917
    core: CoreV1Api,
    namespace: str,
    make_gpu_node: GpuNodes,
    admin_client: ApiClient,
    cluster: TestCluster,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    queue = make_queue(admin_client, {pool_nodes(make_gpu_node, 1): 8})
    core.create_namespaced_pod(namespace, managed_pod("holder", queue, gpus=8))  # type: ignore[arg-type]
    wait_for(
        "the holder to run",
        lambda: core.read_namespaced_pod("holder", namespace),
        lambda pod: pod.status is not None and pod.status.phase == "Running",
    )
    pipeline = tmp_path / "waits.py"
    pipeline.write_text(
        "from hera.workflows import DAG, Container, Workflow\n"
        "import aistack_flows as af\n"
        f"labels = {{af.QUEUE_LABEL: {queue!r}}}\n"
        "with Workflow(name='waits', entrypoint='main', labels=labels) as w:\n"
        "    with DAG(name='main'):\n"
        "        Container(name='train', image='x', command=['x'], annotations=af.gpus(4))()\n"
    )
    kubeconfig = cluster.write_kubeconfig(tmp_path / "kubeconfig", namespace=namespace)
    cli = ["--kubeconfig", str(kubeconfig)]
    assert main(["submit", str(pipeline), *cli]) == 0
    assert f"workflow waits created in namespace {namespace}" in capsys.readouterr().out

    def step_message() -> str:
        nodes = workflow(admin_client, namespace, "waits").get("status", {}).get("nodes", {})
        messages = [n.get("message", "") for n in nodes.values() if n["type"] == "Pod"]
        return messages[0] if messages else ""

    message = wait_for("the step's node to say why it waits", step_message, timeout=60)
    assert message.startswith("Unschedulable: aistack: ")  # Argo prefixes the pod's reason
    assert queue in message
    assert main(["status", "waits", *cli]) == 0
    status = capsys.readouterr().out
    assert "Waiting" in status
    assert queue in status
    assert "4 GPUs" in status
    assert main(["explain", "waits", *cli, "-o", "json"]) == 0
    (explained,) = json.loads(capsys.readouterr().out)["steps"]
    assert explained["state"] == "Waiting"
    assert message.endswith(explained["message"])
    assert main(["list", *cli]) == 0
    assert "waits" in capsys.readouterr().out
    assert main(["queues", *cli, "-o", "json"]) == 0
    (row,) = [r for r in json.loads(capsys.readouterr().out) if r["queue"] == queue]
    assert (row["quota"], row["used"]) == (8, 8)


def test_a_cron_workflow_fires_a_run_whose_gpu_step_is_admitted(
    core: CoreV1Api, namespace: str, make_gpu_node: GpuNodes, admin_client: ApiClient
) -> None:
    queue = make_queue(admin_client, {pool_nodes(make_gpu_node, 1): 8})
    with CronWorkflow(
        name="every-minute",
        schedules=["* * * * *"],
        entrypoint="main",
        labels={af.QUEUE_LABEL: queue},
    ) as cron:
        with DAG(name="main"):
            step("train", af.gpus(2))()
    submit(cron, admin_client, namespace)
    custom = CustomObjectsApi(admin_client)

    def runs() -> list[Json]:
        found: Any = custom.list_namespaced_custom_object(
            "argoproj.io",
            "v1alpha1",
            namespace,
            "workflows",
            label_selector="workflows.argoproj.io/cron-workflow=every-minute",
        )
        return list(found["items"])

    (run, *_) = wait_for("the schedule to fire", runs, timeout=90, interval=1)
    done = wait_for_workflow_phase(admin_client, namespace, run["metadata"]["name"], timeout=90)
    assert done["metadata"]["labels"][af.QUEUE_LABEL] == queue  # the run is in the queue
    (pod,) = pods_in(core, namespace, workflow=run["metadata"]["name"])
    assert pod["metadata"]["annotations"][keys.NODE_ANNOTATION] == f"{make_gpu_node.prefix}-g0"


def test_a_reclaimed_step_is_retried_for_free_resumes_its_checkpoint_and_keeps_its_retries(  # noqa: PLR0917
    core: CoreV1Api,
    namespace: str,
    make_gpu_node: GpuNodes,
    admin_client: ApiClient,
    cluster: TestCluster,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    """A reclaim, then a failure of the step's own, then success.

    The author's one retry (Argo's default policy) covers the failure because the reclaim did
    not use it up.
    """
    pool_name = pool_nodes(make_gpu_node, 1)
    owner = make_queue(admin_client, {pool_name: 8})
    borrower = make_queue(admin_client, {pool_name: 0})
    # The first two attempts would run for ten minutes (one is reclaimed, the other fails);
    # the third finishes at once. Argo resolves `retries` for each attempt.
    run_for = "{{=asInt(retries) >= 2 ? '1s' : '600s'}}"
    with Workflow(name="borrowed", entrypoint="main", labels={af.QUEUE_LABEL: borrower}) as w:
        with DAG(name="main"):
            step(
                "train",
                af.gpus(8, checkpoint="/ckpt"),
                run_for=run_for,
                retry_strategy=RetryStrategy(limit=1),
            )()
    name = submit(w, admin_client, namespace)

    def attempts() -> list[Json]:
        return pods_in(core, namespace, workflow=name)

    wait_for(
        "attempt 0 to run", attempts, lambda p: len(p) == 1 and phase(p[0]) == "Running", timeout=60
    )
    owner_pod = managed_pod("owner", owner, gpus=8, run_for="3s")
    core.create_namespaced_pod(namespace, owner_pod)  # type: ignore[arg-type]
    second = wait_for(
        "attempt 0 to be reclaimed, and attempt 1 to run once the owner is done",
        attempts,
        lambda p: len(p) == 2 and phase(p[1]) == "Running",
        timeout=90,
    )
    reclaimed = second[0]
    assert phase(reclaimed) == "Failed"
    assert reclaimed["status"]["message"].startswith(
        f"{keys.RECLAIMED_MESSAGE_PREFIX}{namespace}/owner"
    )
    first_env, second_env = pod_env(reclaimed), pod_env(second[1])
    assert second_env[af.ATTEMPT_ENV] == "1"
    assert first_env[af.CHECKPOINT_DIR_ENV].startswith("/ckpt/")
    assert second_env[af.CHECKPOINT_DIR_ENV] == first_env[af.CHECKPOINT_DIR_ENV]  # resumes
    fail_on_its_own(core, second[1])
    done = wait_for_workflow_phase(admin_client, namespace, name, timeout=90)
    assert done["status"]["phase"] == "Succeeded"
    nodes = sorted(
        (n for n in done["status"]["nodes"].values() if n["type"] == "Pod"),
        key=lambda n: n["name"],
    )
    assert [n["phase"] for n in nodes] == ["Failed", "Failed", "Succeeded"]
    assert nodes[0]["message"].startswith(f"{keys.RECLAIMED_MESSAGE_PREFIX}{namespace}/owner")
    assert not nodes[1].get("message", "").startswith("aistack: ")  # the step's own failure
    kubeconfig = cluster.write_kubeconfig(tmp_path / "kubeconfig", namespace=namespace)
    assert main(["explain", name, "--kubeconfig", str(kubeconfig), "-o", "json"]) == 0
    explained = json.loads(capsys.readouterr().out)
    (history,) = [row["attempts"] for row in explained["steps"]]
    assert history[0]["message"].startswith(keys.RECLAIMED_MESSAGE_PREFIX)
    reclaims = [e for e in explained["events"] if e["reason"] == "Reclaimed"]
    assert {e["involvedObject"]["kind"] for e in reclaims} == {"Pod", "Workflow"}


def fail_on_its_own(core: CoreV1Api, pod: Json) -> None:
    """What a kubelet reports when the step's program exits 1 (kwok only ever succeeds)."""
    containers = [c["name"] for c in pod["spec"]["containers"]]
    core.patch_namespaced_pod_status(
        pod["metadata"]["name"],
        pod["metadata"]["namespace"],
        {
            "status": {
                "phase": "Failed",
                "containerStatuses": [
                    {
                        "name": c,
                        "image": "registry.invalid/step:1",
                        "imageID": "",
                        "ready": False,
                        "restartCount": 0,
                        "state": {"terminated": {"exitCode": 1, "reason": "Error"}},
                    }
                    for c in containers
                ],
            }
        },
    )


def test_a_plain_gpu_workflow_without_a_queue_is_refused_where_argo_shows_it(
    core: CoreV1Api, namespace: str, admin_client: ApiClient
) -> None:
    with Workflow(name="plain", entrypoint="train") as w:
        Container(
            name="train",
            image="registry.invalid/x:1",
            command=["x"],
            resources=Resources(gpus=1),
        )
    name = submit(w, admin_client, namespace)
    done = wait_for_workflow_phase(admin_client, namespace, name, ("Failed", "Error"), timeout=60)
    messages = " ".join(n.get("message", "") for n in done["status"]["nodes"].values())
    assert keys.QUEUE_LABEL in messages
    assert (
        pods_in(core, namespace, workflow=name) == []
    )  # no pod ever got a GPU around the scheduler
