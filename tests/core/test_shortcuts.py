"""The cycle's shortcuts decide exactly as the plain searches they stand in for.

A replay runs tens of thousands of cycles, so the cycle skips work it can prove useless: a
reclaim search whose workload cannot fit even if every candidate went (`ReclaimRoom.may_fit`,
from GPU counts the world keeps between cycles when minimum runtimes cannot matter), a
placement of a shape that already failed in phase 3 (`_fails_for_good`), the rest of a queue
that can change nothing (`_inert`), the reclaim checks of a queue none of whose workloads may
reclaim (`_none_entitled`), the reserved nodes read off the pool's buckets (`_fullest_nodes`),
one reason per class of workloads and one holder search per shape in phase 6, and the fullest
node read off the buckets. Each test turns the shortcuts off and compares plans: the fast
algorithm checked against the naive one.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from hypothesis import given, settings

from scheduler_service.core import _cycle, schedule
from scheduler_service.core._cycle import _Cycle
from scheduler_service.core._room import ReclaimRoom
from scheduler_service.core._victims import VictimSearch, find_victims
from tests.core.builders import make_node, make_queue, make_snapshot, make_step, pod_on, run
from tests.core.strategies import Cycle, any_cycles

EXAMPLES = 200


@contextmanager
def plain_searches() -> Iterator[None]:
    """Every shortcut off: the cycle searches, sorts and scans as if it knew nothing."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(ReclaimRoom, "may_fit", lambda self, workload, pool: True)
        patch.setattr(_cycle, "_fails_for_good", lambda workload: False)
        patch.setattr(_Cycle, "_runtime_moot", lambda self: False)
        patch.setattr(_Cycle, "_inert", lambda self, queue, shapes: False)
        patch.setattr(_Cycle, "_none_entitled", lambda self, queue, pool: False)
        patch.setattr(_Cycle, "_own_reasons", lambda self: set(self.waiting.class_of))
        patch.setattr(
            _Cycle,
            "_reason",
            lambda self, workload: self._reason_of(workload, self.pools_for[workload.name][0]),
        )
        patch.setattr(
            _Cycle,
            "_fullest_nodes",
            lambda self, workload, pool: self._closest_nodes(workload, pool, None),
        )
        patch.setattr(_Cycle, "_reservation_holder", _Cycle._reservation_holder_uncached)
        patch.setattr(_Cycle, "_largest_free_uncached", _Cycle._largest_free_scan)
        yield


@settings(max_examples=EXAMPLES)
@given(any_cycles())
def test_the_shortcuts_do_not_change_the_plan(cycle: Cycle) -> None:
    fast = schedule(cycle.snapshot, cycle.now)
    with plain_searches():
        plain = schedule(cycle.snapshot, cycle.now)
    assert fast == plain


def test_a_reclaim_that_cannot_fit_is_not_searched(monkeypatch: pytest.MonkeyPatch) -> None:
    # Queue b borrows 4 GPUs on each node, beside a's work within a's quota: reclaim may take
    # b's but never a's, so no node can be emptied for c's 8-GPU step.
    nodes = [make_node("n1", gpus=8), make_node("n2", gpus=8)]
    queues = [make_queue("a", quota=8), make_queue("b", quota=0), make_queue("c", quota=8)]
    workloads = [
        run(make_step("a1", "a", gpus=4), pod_on("n1", 0, 1, 2, 3)),
        run(make_step("a2", "a", gpus=4), pod_on("n2", 0, 1, 2, 3)),
        run(make_step("b1", "b", gpus=4), pod_on("n1", 4, 5, 6, 7)),
        run(make_step("b2", "b", gpus=4), pod_on("n2", 4, 5, 6, 7)),
        make_step("c1", "c", gpus=8),
    ]
    snapshot = make_snapshot(nodes, queues, workloads)
    searches: list[str] = []

    def counted(*args: Any, **kwargs: Any) -> VictimSearch | None:
        searches.append("search")
        return find_victims(*args, **kwargs)

    monkeypatch.setattr(_cycle, "find_victims", counted)
    fast = schedule(snapshot, 100.0)
    assert searches == []
    with plain_searches():
        plain = schedule(snapshot, 100.0)
    assert searches == ["search"]
    assert fast == plain
    assert not fast.evictions


def test_a_reclaim_for_guaranteed_quota_counts_victims_within_their_fair_share() -> None:
    # a borrows 8 GPUs, 4 on each node, and its fair share is those 8 once c asks; c takes back
    # its guaranteed quota, so reclaim may take a's work although a is within its fair share.
    nodes = [make_node("n1", gpus=8), make_node("n2", gpus=8)]
    queues = [make_queue("a", quota=0), make_queue("c", quota=8)]
    workloads = [
        run(make_step("a1", "a", gpus=4), pod_on("n1", 0, 1, 2, 3)),
        run(make_step("a2", "a", gpus=4), pod_on("n2", 0, 1, 2, 3)),
        make_step("c1", "c", gpus=8),
    ]
    snapshot = make_snapshot(nodes, queues, workloads)
    fast = schedule(snapshot, 100.0)
    with plain_searches():
        assert schedule(snapshot, 100.0) == fast
    assert [e.workload for e in fast.evictions] == ["a1"]


def test_a_blocked_head_does_not_keep_smaller_work_of_its_queue_out() -> None:
    # The 8-GPU head fits nowhere and reserves n1; the queue's next step still fits on n2.
    nodes = [make_node("n1", gpus=8), make_node("n2", gpus=8)]
    queues = [make_queue("a", quota=16), make_queue("b", quota=0)]
    workloads = [
        run(make_step("b1", "b", gpus=4), pod_on("n1", 0, 1, 2, 3)),
        run(make_step("b2", "b", gpus=6), pod_on("n2", 0, 1, 2, 3, 4, 5)),
        make_step("big", "a", gpus=8, submitted_at=1.0),
        make_step("small", "a", gpus=1, submitted_at=2.0),
    ]
    snapshot = make_snapshot(nodes, queues, workloads)
    fast = schedule(snapshot, 100.0)
    with plain_searches():
        assert schedule(snapshot, 100.0) == fast
    assert [a.workload for a in fast.admissions] == ["small"]
    assert [pod.node for pod in fast.admissions[0].allocation] == ["n2"]
