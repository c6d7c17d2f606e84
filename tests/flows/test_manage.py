"""`manage`: what reaches each step's pod, what is left alone, and every refusal, named."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
from hera.workflows import (
    DAG,
    Container,
    CronWorkflow,
    Env,
    Parallel,
    Resources,
    RetryStrategy,
    Steps,
    UserContainer,
    Workflow,
    WorkflowTemplate,
)
from hera.workflows import models as m

import aistack_flows as af
from aistack_flows._gang import RANK_PARAMETER
from aistack_flows._retry import FREE_RETRY
from scheduler_service import pod_contract as contract

EXAMPLES = Path(__file__).parents[2] / "examples"
HERA_EXAMPLES = sorted(p for p in EXAMPLES.glob("*.py") if not p.name.startswith("airflow_"))

Json = dict[str, Any]


def container(name: str, annotations: dict[str, str] | None = None, **kwargs: Any) -> Container:
    return Container(
        name=name,
        image="registry.invalid/x:1",
        command=["run", name],
        annotations=annotations,
        **kwargs,
    )


def build(*templates: Container, queue: str | None = "research", **workflow: Any) -> Json:
    """A workflow whose DAG calls each template once, built (so managed) by Hera."""
    labels = {af.QUEUE_LABEL: queue} if queue else None
    with Workflow(name="wf", entrypoint="main", labels=labels, **workflow) as w:
        with DAG(name="main"):
            for template in templates:
                template()
    built: Json = w.to_dict()
    return built


def template(manifest: Json, name: str) -> Json:
    found: Json = next(t for t in manifest["spec"]["templates"] if t["name"] == name)
    return found


def env(step: Json) -> dict[str, str]:
    main = step.get("container") or step["script"]
    return {e["name"]: e.get("value", "") for e in main.get("env") or ()}


def task(manifest: Json, name: str) -> Json:
    found: Json = next(t for t in template(manifest, "main")["dag"]["tasks"] if t["name"] == name)
    return found


# -- what a GPU step's pod gets ---------------------------------------------------------------


def test_a_gpu_step_carries_its_queue_kind_gpus_and_the_gate() -> None:
    step = template(build(container("train", af.gpus(2))), "train")
    assert step["metadata"]["labels"] == {
        contract.QUEUE_LABEL: "research",
        contract.KIND_LABEL: "train",
    }
    assert step["container"]["resources"]["limits"] == {contract.GPU_RESOURCE: "2"}
    assert json.loads(step["podSpecPatch"]) == {
        "schedulingGates": [{"name": contract.SCHEDULING_GATE}]
    }
    assert "annotations" not in step["metadata"]  # the declaration is consumed


def test_a_plain_hera_gpu_step_gets_the_workflows_queue() -> None:
    manifest = build(container("train", resources=Resources(gpus=4, cpu_request=8)))
    step = template(manifest, "train")
    assert step["metadata"]["labels"][contract.QUEUE_LABEL] == "research"
    assert step["container"]["resources"]["limits"][contract.GPU_RESOURCE] == "4"
    assert step["container"]["resources"]["requests"]["cpu"] == "8"


def test_a_steps_own_queue_wins_over_the_workflows() -> None:
    step = template(build(container("train", af.gpus(1, queue="other"))), "train")
    assert step["metadata"]["labels"][contract.QUEUE_LABEL] == "other"


def test_a_slice_asks_for_no_whole_gpu() -> None:
    step = template(
        build(container("b", af.gpu_slice(memory_gib=8, compute_percent=25, kind="build"))), "b"
    )
    assert "resources" not in step["container"]
    assert step["metadata"]["annotations"] == {
        contract.GPU_MEMORY_ANNOTATION: "8192",
        contract.GPU_COMPUTE_ANNOTATION: "25",
    }
    assert "retryStrategy" not in step  # build steps are not preemptible: no free retries


def test_cpu_steps_and_exit_handlers_are_left_exactly_as_written() -> None:
    def pipeline(*, with_gpu: bool) -> Json:
        with Workflow(
            name="wf", entrypoint="main", labels={af.QUEUE_LABEL: "research"}, on_exit="notify"
        ) as w:
            cpu = container("cpu", env=[Env(name="A", value="1")])
            container("notify")
            with DAG(name="main"):
                cpu()
                if with_gpu:
                    container("train", af.gpus(1))()
        built: Json = w.to_dict()
        return built

    before = {t["name"]: t for t in pipeline(with_gpu=False)["spec"]["templates"]}
    after = {t["name"]: t for t in pipeline(with_gpu=True)["spec"]["templates"]}
    assert after["cpu"] == before["cpu"]
    assert after["notify"] == before["notify"]
    assert "podSpecPatch" not in after["notify"]


def test_the_env_goes_to_the_main_container_only_and_keeps_the_authors() -> None:
    step = template(
        build(container("t", af.gpus(1, checkpoint="/ckpt"), env=[Env(name="LR", value="0.1")])),
        "t",
    )
    assert env(step)["LR"] == "0.1"
    assert env(step)[af.CHECKPOINT_DIR_ENV].startswith("/ckpt/{{=")
    assert env(step)[af.ATTEMPT_ENV] == "{{retries}}"
    assert "sidecars" not in step
    assert "initContainers" not in step


def test_the_authors_pod_spec_patch_is_merged_with_the_gate() -> None:
    step = template(
        build(container("t", af.gpus(1), pod_spec_patch="terminationGracePeriodSeconds: 90")),
        "t",
    )
    assert json.loads(step["podSpecPatch"]) == {
        "schedulingGates": [{"name": contract.SCHEDULING_GATE}],
        "terminationGracePeriodSeconds": 90,
    }


def test_the_workflow_says_what_its_gpu_steps_ask_for() -> None:
    manifest = build(
        container("t", af.gpus(2)), container("b", af.gpu_slice(memory_gib=4, compute_percent=10))
    )
    description = manifest["metadata"]["annotations"]["workflows.argoproj.io/description"]
    assert "t: train, 2 GPU(s), queue research" in description
    assert "b: train, slice 4 GiB / 10%" in description


def test_a_cron_workflows_runs_carry_the_queue_label() -> None:
    with (
        CronWorkflow(
            name="nightly",
            schedules=["0 3 * * *"],
            entrypoint="main",
            labels={af.QUEUE_LABEL: "mlops"},
        ) as cron,
        DAG(name="main"),
    ):
        container("train", af.gpus(4))()
    manifest = cron.to_dict()
    runs = manifest["spec"]["workflowSpec"]["workflowMetadata"]
    assert runs["labels"] == {af.QUEUE_LABEL: "mlops"}
    steps = {t["name"]: t for t in manifest["spec"]["workflowSpec"]["templates"]}
    assert steps["train"]["metadata"]["labels"][contract.QUEUE_LABEL] == "mlops"


def test_a_workflow_that_never_mentions_the_scheduler_is_not_touched() -> None:
    with Workflow(name="wf", entrypoint="main") as w, DAG(name="main"):
        container("train", resources=Resources(gpus=2))()
    manifest = w.to_dict()
    assert not af.uses_scheduler(manifest)
    assert "podSpecPatch" not in template(manifest, "train")


# -- retries ------------------------------------------------------------------------------------


def test_a_preemptible_step_without_retries_of_its_own_is_retried_only_when_reclaimed() -> None:
    step = template(build(container("t", af.gpus(1, reclaim_retries=5))), "t")
    assert step["retryStrategy"] == {
        "limit": "5",
        "retryPolicy": "Always",
        "expression": FREE_RETRY,
    }


@pytest.mark.parametrize(
    ("author", "limit", "clause"),
    [
        (RetryStrategy(limit=2), "12", '(lastRetry.status == "Failed")'),
        (RetryStrategy(limit=1, retry_policy="OnError"), "11", '(lastRetry.status == "Error")'),
        (RetryStrategy(limit=3, retry_policy="Always"), "13", "(true)"),
        (
            RetryStrategy(limit=2, expression="lastRetry.exitCode == 7"),
            "12",
            "((true) && (lastRetry.exitCode == 7))",
        ),
    ],
)
def test_the_authors_retries_keep_their_policy_and_gain_the_free_ones(
    author: RetryStrategy, limit: str, clause: str
) -> None:
    step = template(build(container("t", af.gpus(1), retry_strategy=author)), "t")
    strategy = step["retryStrategy"]
    assert strategy["limit"] == limit
    assert strategy["retryPolicy"] == "Always"
    assert strategy["expression"] == f"{FREE_RETRY} || {clause}"


def test_a_non_preemptible_step_keeps_the_authors_retry_strategy() -> None:
    step = template(
        build(container("t", af.gpus(1, preemptible=False), retry_strategy=RetryStrategy(limit=2))),
        "t",
    )
    assert step["retryStrategy"] == {"limit": 2}


def test_backoff_is_kept_when_retries_are_composed() -> None:
    strategy = RetryStrategy(limit=1, backoff={"duration": "10s", "factor": 2})  # type: ignore[arg-type]
    step = template(build(container("t", af.gpus(1), retry_strategy=strategy)), "t")
    assert step["retryStrategy"]["backoff"] == {"duration": "10s", "factor": 2}


# -- gangs --------------------------------------------------------------------------------------


def test_a_gang_is_fanned_out_once_per_rank_with_its_identity_and_rendezvous() -> None:
    manifest = build(container("ddp", af.gpus(8, gang=3)))
    step = template(manifest, "ddp")
    call = task(manifest, "ddp")
    assert call["withSequence"] == {"count": "3"}
    assert {"name": RANK_PARAMETER, "value": "{{item}}"} in call["arguments"]["parameters"]
    labels = step["metadata"]["labels"]
    gang = labels[contract.GANG_LABEL]
    assert "workflow.uid" in gang
    assert "node.name" in gang
    assert gang.endswith("-{{retries}}")
    assert labels[contract.GANG_DNS_LABEL] == "true"
    assert step["metadata"]["annotations"][contract.GANG_SIZE_ANNOTATION] == "3"
    variables = env(step)
    assert variables["PET_NNODES"] == "3"
    assert variables["PET_NODE_RANK"] == f"{{{{inputs.parameters.{RANK_PARAMETER}}}}}"
    assert variables["MASTER_ADDR"] == f"{gang}-0.{contract.GANG_SUBDOMAIN}"
    patch = json.loads(step["podSpecPatch"])
    assert patch["subdomain"] == contract.GANG_SUBDOMAIN
    assert patch["hostname"] == f"{gang}-{{{{inputs.parameters.{RANK_PARAMETER}}}}}"


def test_a_gang_fan_out_the_author_wrote_is_accepted_when_it_lists_the_ranks() -> None:
    step = container("ddp", af.gpus(8, gang=2))
    with Workflow(name="wf", entrypoint="main", labels={af.QUEUE_LABEL: "q"}) as w:
        with DAG(name="main"):
            step(with_items=[0, 1])
    assert "withSequence" not in task(w.to_dict(), "ddp")


def test_a_gang_in_a_steps_template_is_fanned_out_too() -> None:
    ddp = container("ddp", af.gpus(8, gang=2))
    with Workflow(name="wf", entrypoint="main", labels={af.QUEUE_LABEL: "q"}) as w:
        with Steps(name="main"):
            with Parallel():
                ddp()
    manifest = w.to_dict()
    (group,) = template(manifest, "main")["steps"]
    assert group[0]["withSequence"] == {"count": "2"}


def problems_of(call: Any) -> list[str]:
    with pytest.raises(af.PipelineError) as refused:
        call()
    return [f"{where}: {problem}" for where, problem in refused.value.problems]


def test_a_gang_whose_fan_out_is_not_its_ranks_is_refused() -> None:
    ddp = container("ddp", af.gpus(8, gang=2))
    with Workflow(name="wf", entrypoint="main", labels={af.QUEUE_LABEL: "q"}) as w:
        with DAG(name="main"):
            ddp(name="a", with_items=["x", "y"])
            ddp(name="b", with_param="{{workflow.parameters.shards}}")
    problems = problems_of(w.to_dict)
    assert any("called as a from main" in p and "withItems" in p for p in problems)
    assert any(
        "called as b from main" in p and "withParam cannot be checked" in p for p in problems
    )


def test_a_gang_that_argo_parallelism_would_split_is_refused() -> None:
    problems = problems_of(lambda: build(container("ddp", af.gpus(8, gang=4)), parallelism=2))
    assert any("the workflow's parallelism is 2" in p for p in problems)


def test_a_gang_as_the_entrypoint_is_refused() -> None:
    with Workflow(name="wf", entrypoint="ddp", labels={af.QUEUE_LABEL: "q"}) as w:
        container("ddp", af.gpus(8, gang=2))
    assert any("cannot be the entrypoint" in p for p in problems_of(w.to_dict))


def test_a_gang_sized_by_a_parameter_follows_the_argument_its_caller_passes() -> None:
    manifest: Json = {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "WorkflowTemplate",
        "metadata": {"name": "t"},
        "spec": {
            "entrypoint": "main",
            "templates": [
                {
                    "name": "main",
                    "inputs": {"parameters": [{"name": "nodes"}]},
                    "dag": {
                        "tasks": [
                            {
                                "name": "m",
                                "template": "member",
                                "arguments": {
                                    "parameters": [
                                        {"name": "nodes", "value": "{{inputs.parameters.nodes}}"}
                                    ]
                                },
                            }
                        ]
                    },
                },
                {
                    "name": "member",
                    "inputs": {"parameters": [{"name": "nodes"}]},
                    "metadata": {
                        "annotations": af.gpus(
                            8, gang="{{inputs.parameters.nodes}}", queue="{{inputs.parameters.q}}"
                        )
                    },
                    "container": {"image": "x", "command": ["x"]},
                },
            ],
        },
    }
    managed = af.manage(manifest)
    (call,) = managed["spec"]["templates"][0]["dag"]["tasks"]
    assert call["withSequence"] == {"count": "{{inputs.parameters.nodes}}"}
    del manifest["spec"]["templates"][0]["dag"]["tasks"][0]["arguments"]
    assert any("pass it as an argument here" in p for p in problems_of(lambda: af.manage(manifest)))


# -- refusals -------------------------------------------------------------------------------------


def test_a_gpu_step_without_any_queue_is_refused() -> None:
    problems = problems_of(lambda: build(container("train", af.gpus(1)), queue=None))
    assert problems == [
        "step train: queue: no queue: name one (gpus(..., queue=...)) or label the workflow "
        "aistack.io/queue: <queue> as the default for its GPU steps"
    ]


def test_the_queue_on_every_pod_is_refused() -> None:
    with Workflow(
        name="wf",
        entrypoint="main",
        pod_metadata=m.Metadata(labels={af.QUEUE_LABEL: "q"}),
    ) as w:
        with DAG(name="main"):
            container("train", af.gpus(1))()
    assert any("CPU-only steps and exit handlers too" in p for p in problems_of(w.to_dict))


def test_every_problem_of_every_step_is_reported_at_once() -> None:
    bad = {**af.gpus(1), contract.GPU_COMPUTE_ANNOTATION: "500"}
    problems = problems_of(
        lambda: build(
            container("a", bad),
            container("b", {contract.PRIORITY_ANNOTATION: "1"}),
            container(
                "c",
                af.gpus(1),
                sidecars=[UserContainer(name="s", image="x", resources=Resources(gpus=1))],
            ),
        )
    )
    assert len(problems) >= 3
    assert any(p.startswith("step a:") for p in problems)
    assert any(p.startswith("step b: metadata: declares aistack.io settings") for p in problems)
    assert any(p.startswith("step c: sidecars:") for p in problems)


def test_an_unmergeable_pod_spec_patch_is_refused() -> None:
    problems = problems_of(
        lambda: build(container("t", af.gpus(1), pod_spec_patch="{{inputs.parameters.patch}}"))
    )
    assert any("podSpecPatch: must be a JSON or YAML object" in p for p in problems)


def test_a_retry_policy_that_cannot_be_combined_is_refused() -> None:
    strategy = RetryStrategy(limit=1, retry_policy="OnTransientError")
    problems = problems_of(lambda: build(container("t", af.gpus(1), retry_strategy=strategy)))
    assert any("OnTransientError cannot be combined" in p for p in problems)


def test_a_manifest_of_another_kind_is_refused() -> None:
    problems = problems_of(lambda: af.manage({"kind": "Deployment", "metadata": {"name": "d"}}))
    assert len(problems) == 1
    assert problems[0].startswith("workflow: kind: 'Deployment' is not one of")


# -- hooks and idempotence ----------------------------------------------------------------------


def test_building_does_not_change_the_authors_objects() -> None:
    step = container("t", af.gpus(2), retry_strategy=RetryStrategy(limit=1))
    with Workflow(name="wf", entrypoint="main", labels={af.QUEUE_LABEL: "q"}) as w:
        with DAG(name="main"):
            step()
    first = w.to_dict()
    assert w.to_dict() == first
    assert step.annotations == af.gpus(2)
    assert isinstance(step.retry_strategy, RetryStrategy)


def test_every_hera_workflow_kind_is_managed() -> None:
    with WorkflowTemplate(name="wt", entrypoint="main", labels={af.QUEUE_LABEL: "q"}) as w:
        with DAG(name="main"):
            container("t", af.gpus(1))()
    assert template(w.to_dict(), "t")["metadata"]["labels"][contract.QUEUE_LABEL] == "q"


@pytest.mark.parametrize("example", HERA_EXAMPLES, ids=lambda p: p.stem)
def test_managing_is_idempotent_on_every_example(example: Path) -> None:
    for pipeline in af.load_pipelines(example):
        built = pipeline.to_dict()
        assert af.manage(copy.deepcopy(built)) == built
