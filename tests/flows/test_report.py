"""What `aistack status`, `explain`, `list` and `queues` make of the objects Kubernetes returns."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from aistack_flows.cli._report import (
    Attempt,
    QueueRow,
    age,
    queue_rows,
    step_rows,
    workflow_row,
)
from scheduler_service import pod_contract as contract

Json = dict[str, Any]
NOW = 1_800_000_000.0


def node(node_id: str, kind: str, phase: str, **extra: Any) -> Json:
    return {"id": node_id, "name": f"wf.{node_id}", "type": kind, "phase": phase, **extra}


def pod(node_id: str, *, gated: bool = False, annotations: dict[str, str] | None = None) -> Json:
    return {
        "metadata": {
            "name": f"wf-{node_id}",
            "labels": {contract.QUEUE_LABEL: "research", "workflows.argoproj.io/workflow": "wf"},
            "annotations": {"workflows.argoproj.io/node-id": node_id, **(annotations or {})},
        },
        "spec": {
            "containers": [{"name": "main", "resources": {"limits": {contract.GPU_RESOURCE: "2"}}}],
            "schedulingGates": [{"name": contract.SCHEDULING_GATE}] if gated else [],
        },
        "status": {
            "phase": "Pending",
            "conditions": [
                {
                    "type": "PodScheduled",
                    "status": "False",
                    "reason": "Unschedulable",
                    "message": "aistack: queue research, 2nd of 3 waiting",
                }
            ]
            if gated
            else [],
        },
    }


def test_a_reclaimed_and_retried_step_is_one_row_with_its_attempts() -> None:
    workflow = {
        "metadata": {"name": "wf", "namespace": "team"},
        "status": {
            "nodes": {
                "r": node("r", "Retry", "Running", displayName="train", children=["a0", "a1"]),
                "a0": node(
                    "a0",
                    "Pod",
                    "Failed",
                    startedAt="2027-01-15T08:00:00Z",
                    message="aistack: reclaimed for team/owner: queue research held 16 GPUs",
                ),
                "a1": node("a1", "Pod", "Pending", startedAt="2027-01-15T08:05:00Z"),
            }
        },
    }
    (row,) = step_rows(workflow, [pod("a1", gated=True)])
    assert row.step == "train"
    assert row.state == "Waiting"
    assert row.queue == "research"
    assert row.gpus == "2 GPUs"
    assert row.message == "aistack: queue research, 2nd of 3 waiting"
    assert row.attempts == (
        Attempt(0, "Failed", "aistack: reclaimed for team/owner: queue research held 16 GPUs"),
        Attempt(1, "Pending", ""),
    )


def test_a_running_step_shows_where_and_the_gpus_it_holds() -> None:
    workflow = {"status": {"nodes": {"p": node("p", "Pod", "Running", displayName="infer")}}}
    running = pod(
        "p",
        annotations={
            contract.NODE_ANNOTATION: "gpu-7",
            contract.GPUS_ANNOTATION: "GPU-1,GPU-2",
            contract.GPU_MEMORY_ANNOTATION: "8192",
            contract.GPU_COMPUTE_ANNOTATION: "25",
        },
    )
    (row,) = step_rows(workflow, [running])
    assert row.node == "gpu-7"
    assert row.gpus == "slice 8 GiB / 25% [GPU-1,GPU-2]"


def test_a_cpu_step_has_no_queue() -> None:
    workflow = {"status": {"nodes": {"c": node("c", "Pod", "Succeeded", displayName="prep")}}}
    cpu_pod = pod("c")
    del cpu_pod["metadata"]["labels"][contract.QUEUE_LABEL]
    cpu_pod["spec"]["containers"][0]["resources"] = {}
    (row,) = step_rows(workflow, [cpu_pod])
    assert (row.queue, row.gpus, row.state) == ("-", "-", "Succeeded")


def test_a_workflow_counts_its_gpu_steps_waiting_and_running() -> None:
    workflow = {
        "metadata": {
            "name": "wf",
            "namespace": "team",
            "creationTimestamp": "2027-01-15T08:00:00Z",
            "labels": {contract.QUEUE_LABEL: "research"},
        },
        "status": {"phase": "Running"},
    }
    running = pod("b")
    running["status"]["phase"] = "Running"
    done = pod("c")
    done["status"]["phase"] = "Succeeded"
    row = workflow_row(workflow, [pod("a", gated=True), running, done], now=NOW)
    assert (row.waiting, row.running, row.queue, row.phase) == (1, 1, "research", "Running")


def test_a_queue_row_says_what_it_borrows_and_waits_for() -> None:
    queue = {
        "metadata": {"name": "research"},
        "spec": {"parent": "org", "pools": [{"pool": "h100", "quota": 8, "limit": 24}]},
        "status": {
            "pending": 3,
            "pools": [{"pool": "h100", "quota": 8, "allocated": 12, "demand": 20, "fairShare": 12}],
        },
    }
    assert queue_rows([queue]) == [
        QueueRow(
            queue="research",
            parent="org",
            pool="h100",
            quota=8,
            limit=24,
            fair_share=12,
            used=12,
            borrowed=4,
            waiting=8,
            pending_workloads=3,
        )
    ]


def test_ages_read_as_kubectl_prints_them() -> None:
    def ago(seconds: float) -> str:
        return datetime.fromtimestamp(NOW - seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")

    assert age(None, NOW) == "-"
    assert [age(ago(s), NOW) for s in (45, 90, 2 * 3600 + 5, 3 * 86400)] == [
        "45s",
        "1m",
        "2h",
        "3d",
    ]
