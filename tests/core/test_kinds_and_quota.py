"""Kinds and queue gates: build only within quota, train may borrow, nobody past a limit."""

from __future__ import annotations

from scheduler_service.core import (
    Kind,
    OverQuotaNotAllowed,
    QueueAtLimit,
)
from tests.core.builders import admitted, decide_workloads, make_node, make_queue, make_step, reason

NODES = [make_node("n1", gpus=8), make_node("n2", gpus=8)]
QUEUES = [
    make_queue("org", quota=8, limit=12),
    make_queue("team", "org", quota=4, limit=10),
    make_queue("other", "org", quota=4),
]


def test_a_build_step_runs_within_its_queues_quota() -> None:
    plan = decide_workloads(NODES, QUEUES, make_step("build", "team", gpus=4, kind=Kind.BUILD))
    assert list(admitted(plan)) == ["build"]


def test_a_build_step_beyond_quota_waits_even_on_idle_gpus() -> None:
    plan = decide_workloads(
        NODES,
        QUEUES,
        make_step("b1", "team", gpus=3, kind=Kind.BUILD),
        make_step("b2", "team", gpus=2, kind=Kind.BUILD, submitted_at=1),
    )
    assert list(admitted(plan)) == ["b1"]
    why = reason(plan, "b2")
    assert isinstance(why, OverQuotaNotAllowed)
    assert (why.queue, why.allocated_milli, why.requested_milli, why.quota_milli) == (
        "team",
        3000,
        2000,
        4000,
    )
    assert why.message == (
        "build steps are not preemptible and run only within quota: queue team uses 3/4 "
        "guaranteed GPUs in pool h100, this step needs 2"
    )


def test_a_train_step_borrows_idle_gpus_beyond_quota() -> None:
    plan = decide_workloads(NODES, QUEUES, make_step("train", "team", gpus=8))
    assert list(admitted(plan)) == ["train"]


def test_an_inference_step_is_protected_and_so_bound_to_quota() -> None:
    plan = decide_workloads(NODES, QUEUES, make_step("serve", "team", gpus=6, kind=Kind.INFER))
    assert isinstance(reason(plan, "serve"), OverQuotaNotAllowed)


def test_extra_inference_replicas_marked_preemptible_may_borrow() -> None:
    plan = decide_workloads(
        NODES, QUEUES, make_step("burst", "team", gpus=6, kind=Kind.INFER, preemptible=True)
    )
    assert list(admitted(plan)) == ["burst"]


def test_a_train_step_marked_not_preemptible_is_bound_to_quota() -> None:
    plan = decide_workloads(NODES, QUEUES, make_step("pinned", "team", gpus=6, preemptible=False))
    assert isinstance(reason(plan, "pinned"), OverQuotaNotAllowed)


def test_a_queue_never_goes_past_its_limit() -> None:
    plan = decide_workloads(
        NODES,
        QUEUES,
        make_step("first", "team", gpus=8),
        make_step("second", "team", gpus=4, submitted_at=1),
    )
    assert list(admitted(plan)) == ["first"]
    why = reason(plan, "second")
    assert isinstance(why, QueueAtLimit)
    assert (why.queue, why.allocated_milli, why.requested_milli, why.limit_milli) == (
        "team",
        8000,
        4000,
        10000,
    )
    assert "queue team at limit 8/10 GPUs in pool h100" in why.message
    assert "needs 4 more" in why.message


def test_a_parents_limit_caps_its_children_together() -> None:
    plan = decide_workloads(
        NODES,
        QUEUES,
        make_step("mine", "team", gpus=8),
        make_step("theirs", "other", gpus=8),
    )
    assert len(admitted(plan)) == 1
    (waiting,) = plan.pending
    why = waiting.reason
    assert isinstance(why, QueueAtLimit)
    assert why.queue == "org"
    assert why.limit_milli == 12000
