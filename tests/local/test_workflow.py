"""`Run`: Argo's semantics worked out from the nodes, without processes.

Each test builds a small workflow manifest, advances it, and plays the runner: it finishes the
pods that `advance` created, with the phase and outputs a step would have, and advances again.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

import pytest

from aistack_flows.local import Node, Phase, Run, RunError, RunRow
from aistack_flows.local._view import run_lines

Json = dict[str, Any]
Finish = Callable[[Node], tuple[Phase, Json]]


def workflow(*templates: Json, entrypoint: str = "main", **spec: Any) -> Json:
    return {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "Workflow",
        "metadata": {"name": "wf"},
        "spec": {"entrypoint": entrypoint, "templates": list(templates), **spec},
    }


def container(name: str, *args: str, **fields: Any) -> Json:
    return {"name": name, "container": {"image": "x", "command": ["echo", *args]}, **fields}


def dag(name: str, *tasks: Json, **fields: Any) -> Json:
    return {"name": name, "dag": {"tasks": list(tasks)}, **fields}


def succeed(node: Node) -> tuple[Phase, Json]:
    del node
    return Phase.SUCCEEDED, {}


def play(run: Run, finish: Finish = succeed, *, limit: int = 200) -> list[str]:
    """Advance until the run ends; return the pods in the order they started."""
    started: list[str] = []
    now = 0.0
    for _ in range(limit):
        now += 1
        run.advance(now)
        pending = [n for n in run.pods() if n.phase is Phase.PENDING]
        if run.phase in {Phase.SUCCEEDED, Phase.FAILED, Phase.ERROR} and not pending:
            return started
        for node in pending:
            started.append(node.name)
            run.pod_started(node.id, now)
        for node in [n for n in run.pods() if n.phase is Phase.RUNNING]:
            phase, outputs = finish(node)
            run.pod_finished(
                node.id, phase, "" if phase is Phase.SUCCEEDED else "failed", outputs, now
            )
    raise AssertionError(f"the run did not end within {limit} passes: {run.phase}")


def make_run(manifest: Json, **parameters: str) -> Run:
    return Run(
        manifest, name="wf", uid="uid-1", directory="/state/runs/wf", created_at=0.0,
        parameters=parameters,
    )  # fmt: skip


def test_a_dag_runs_each_task_after_what_it_depends_on() -> None:
    manifest = workflow(
        dag(
            "main",
            {"name": "c", "template": "step", "depends": "a && b"},
            {"name": "a", "template": "step"},
            {"name": "b", "template": "step", "depends": "a"},
        ),
        container("step"),
    )
    run = make_run(manifest)
    assert play(run) == ["a", "b", "c"]
    assert run.phase is Phase.SUCCEEDED


def test_a_failed_task_fails_the_dag_and_what_depends_on_it_is_omitted() -> None:
    manifest = workflow(
        dag(
            "main",
            {"name": "a", "template": "step"},
            {"name": "b", "template": "step", "depends": "a"},
            {"name": "cleanup", "template": "step", "depends": "a.Failed"},
        ),
        container("step"),
    )
    run = make_run(manifest)
    started = play(run, lambda n: (Phase.FAILED if n.name == "a" else Phase.SUCCEEDED, {}))
    assert started == ["a", "cleanup"]
    assert run.nodes["wf.b"].phase is Phase.OMITTED
    # A failure that a task handles (a.Failed) does not fail the DAG.
    assert run.phase is Phase.SUCCEEDED


def test_an_unhandled_failure_fails_the_run() -> None:
    manifest = workflow(
        dag("main", {"name": "a", "template": "step"}, {"name": "b", "template": "step"}),
        container("step"),
    )
    run = make_run(manifest)
    play(run, lambda n: (Phase.FAILED if n.name == "a" else Phase.SUCCEEDED, {}))
    assert run.phase is Phase.FAILED


def test_parameters_flow_from_outputs_to_inputs_and_fan_out_over_with_param() -> None:
    manifest = workflow(
        dag(
            "main",
            {"name": "plan", "template": "plan"},
            {
                "name": "shard",
                "template": "shard",
                "depends": "plan",
                "withParam": "{{tasks.plan.outputs.result}}",
                "arguments": {"parameters": [{"name": "part", "value": "{{item}}"}]},
            },
            {
                "name": "merge",
                "template": "merge",
                "depends": "shard",
                "arguments": {
                    "parameters": [
                        {"name": "parts", "value": "{{tasks.shard.outputs.parameters.size}}"}
                    ]
                },
            },
        ),
        container("plan"),
        {
            **container("shard", "{{inputs.parameters.part}}"),
            "inputs": {"parameters": [{"name": "part"}]},
            "outputs": {"parameters": [{"name": "size", "valueFrom": {"path": "/tmp/size"}}]},
        },
        {
            **container("merge", "{{inputs.parameters.parts}}"),
            "inputs": {"parameters": [{"name": "parts"}]},
        },
    )
    run = make_run(manifest)

    def finish(node: Node) -> tuple[Phase, Json]:
        if node.name == "plan":
            return Phase.SUCCEEDED, {"result": json.dumps(["x", "yy", "zzz"])}
        if node.name.startswith("shard"):
            part = node.inputs["parameters"]["part"]
            return Phase.SUCCEEDED, {"parameters": {"size": str(len(part))}}
        return Phase.SUCCEEDED, {}

    started = play(run, finish)
    assert started == ["plan", "shard(0:x)", "shard(1:yy)", "shard(2:zzz)", "merge"]
    merge = next(n for n in run.pods() if n.name == "merge")
    assert merge.pod is not None
    assert merge.pod.argv == ["echo", '["1","2","3"]']
    assert run.phase is Phase.SUCCEEDED


def test_parallelism_caps_the_pods_of_a_fan_out_that_run_at_once() -> None:
    manifest = workflow(
        dag(
            "main",
            {"name": "many", "template": "step", "withSequence": {"count": "5"}},
            parallelism=2,
        ),
        container("step"),
    )
    run = make_run(manifest)
    run.advance(1)
    assert sum(1 for _ in run.pods()) == 2
    assert play(run) == [f"many({i}:{i})" for i in range(5)]


def test_when_false_skips_a_task_and_its_dependents_still_run() -> None:
    manifest = workflow(
        dag(
            "main",
            {"name": "flip", "template": "step"},
            {
                "name": "heads",
                "template": "step",
                "depends": "flip",
                "when": "{{tasks.flip.outputs.result}} == heads",
            },
            {
                "name": "tails",
                "template": "step",
                "depends": "flip",
                "when": "{{tasks.flip.outputs.result}} == tails",
            },
            {"name": "after", "template": "step", "depends": "heads && tails"},
        ),
        container("step"),
    )
    run = make_run(manifest)
    started = play(run, lambda n: (Phase.SUCCEEDED, {"result": "tails"}))
    assert started == ["flip", "tails", "after"]
    assert run.nodes["wf.heads"].phase is Phase.SKIPPED


def test_a_retry_strategy_retries_until_its_limit_then_fails() -> None:
    manifest = workflow(
        dag("main", {"name": "flaky", "template": "flaky"}),
        {**container("flaky"), "retryStrategy": {"limit": "2", "retryPolicy": "OnFailure"}},
    )
    run = make_run(manifest)
    started = play(run, lambda n: (Phase.FAILED, {}))
    assert started == ["flaky(0)", "flaky(1)", "flaky(2)"]
    assert run.phase is Phase.FAILED


def test_the_free_retry_of_a_reclaimed_step_sees_the_attempt_number() -> None:
    reclaim = (
        'lastRetry.status == "Failed" && lastRetry.message startsWith "aistack: reclaimed for "'
    )
    manifest = workflow(
        dag("main", {"name": "train", "template": "train"}),
        {
            **container("train", "{{retries}}"),
            "retryStrategy": {"limit": "10", "retryPolicy": "Always", "expression": reclaim},
        },
    )
    run = make_run(manifest)
    now = 1.0
    run.advance(now)
    first = next(run.pods())
    run.pod_started(first.id, now)
    run.pod_finished(first.id, Phase.FAILED, "aistack: reclaimed for b: ...", {}, now)
    run.advance(now + 1)
    second = [n for n in run.pods() if not n.complete]
    assert [n.name for n in second] == ["train(1)"]
    assert second[0].pod is not None
    assert second[0].pod.argv == ["echo", "1"]
    run.pod_started(second[0].id, now)
    run.pod_finished(second[0].id, Phase.FAILED, "exit code 1", {}, now)
    run.advance(now + 2)
    assert run.phase is Phase.FAILED  # an ordinary failure is not retried for free


def test_the_exit_handler_runs_after_the_entrypoint_and_sees_its_status() -> None:
    manifest = workflow(
        dag("main", {"name": "a", "template": "step"}),
        container("step"),
        container("notify", "{{workflow.status}}"),
        onExit="notify",
    )
    run = make_run(manifest)
    started = play(run, lambda n: (Phase.FAILED if n.name == "a" else Phase.SUCCEEDED, {}))
    assert started == ["a", "wf.onExit"]
    handler = run.nodes["wf.onExit"]
    assert handler.pod is not None
    assert handler.pod.argv == ["echo", "Failed"]
    assert run.phase is Phase.FAILED


def test_steps_run_group_after_group() -> None:
    manifest = workflow(
        {
            "name": "main",
            "steps": [
                [{"name": "one", "template": "step"}],
                [{"name": "two", "template": "step"}, {"name": "three", "template": "step"}],
            ],
        },
        container("step"),
    )
    run = make_run(manifest)
    assert play(run) == ["one", "two", "three"]
    assert "wf[1].three" in run.nodes


def test_declared_paths_are_rewritten_under_the_pod_directory() -> None:
    manifest = workflow(
        dag("main", {"name": "a", "template": "write"}),
        {
            "name": "write",
            "script": {
                "image": "python",
                "command": ["python"],
                "source": "open('/tmp/out.json', 'w').write('{}')\nprint('/tmp/out.jsonx')",
                "volumeMounts": [{"name": "ckpt", "mountPath": "/ckpt"}],
                "env": [{"name": "CKPT", "value": "/ckpt/{{pod.name}}"}],
            },
            "outputs": {"artifacts": [{"name": "out", "path": "/tmp/out.json"}]},
        },
        volumes=[{"name": "ckpt", "emptyDir": {}}],
    )
    run = make_run(manifest)
    run.advance(1)
    pod = next(run.pods()).pod
    assert pod is not None
    assert pod.script is not None
    root = f"{pod.directory}/root"
    assert f"open('{root}/tmp/out.json'" in pod.script
    assert "print('/tmp/out.jsonx')" in pod.script  # another path is left alone
    assert pod.output_artifacts[0]["path"] == f"{root}/tmp/out.json"
    assert pod.env["CKPT"].endswith(f"/volumes/ckpt/{pod.name}")
    assert pod.argv == ["python", f"{pod.directory}/script"]


def test_a_missing_template_or_parameter_is_an_error_that_names_it() -> None:
    with pytest.raises(RunError, match="no template named 'nope'"):
        make_run(workflow(dag("main", {"name": "a", "template": "nope"}))).advance(1)
    needs = {**container("step"), "inputs": {"parameters": [{"name": "size"}]}}
    with pytest.raises(RunError, match="needs input parameter 'size'"):
        make_run(workflow(dag("main", {"name": "a", "template": "step"}), needs)).advance(1)


def test_a_run_rebuilt_from_its_saved_nodes_goes_on_where_it_was() -> None:
    manifest = workflow(
        dag(
            "main",
            {"name": "a", "template": "step"},
            {"name": "b", "template": "step", "depends": "a"},
        ),
        container("step"),
    )
    run = make_run(manifest)
    run.advance(1)
    a = next(run.pods())
    run.pod_started(a.id, 1)
    run.pod_finished(a.id, Phase.SUCCEEDED, "", {}, 2)
    saved: Mapping[str, Node] = {
        i: Node.from_json(json.loads(json.dumps(n.to_json()))) for i, n in run.nodes.items()
    }
    again = Run(manifest, name="wf", uid="uid-1", directory="/d", created_at=0.0, nodes=saved)
    assert play(again) == ["b"]  # a is not run twice


def test_the_view_sums_up_a_fan_out_as_a_progress_bar() -> None:
    manifest = workflow(
        dag("main", {"name": "many", "template": "step", "withSequence": {"count": "4"}}),
        container("step"),
    )
    run = make_run(manifest)
    run.advance(1)
    for node in list(run.pods())[:2]:
        run.pod_started(node.id, 1)
        run.pod_finished(node.id, Phase.SUCCEEDED, "", {}, 2)
    run.advance(3)
    row = RunRow(
        name="wf", uid="u", source="f.py", manifest=manifest, parameters={}, phase="Running",
        created_at=0.0,
    )  # fmt: skip
    lines = run_lines(row, run.nodes, {}, now=3.0)
    assert lines[0] == "wf  Running  3.0s  (f.py)"
    assert lines[1] == f"  . many                     [{'#' * 10}{'.' * 10}] 2/4 2 waiting"
