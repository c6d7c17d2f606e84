"""The request mix placement scores against, and the choice among pools it drives.

The mix is learned online from submissions, per pool (`core._mix`).
"""

from __future__ import annotations

import pytest

from scheduler_service.core import Allocation, PoolQuota, Request, Scheduler, Workload, schedule
from scheduler_service.core._mix import HALF_LIFE, REFRESH, RecentRequests
from tests.core.builders import (
    admitted,
    make_node,
    make_queue,
    make_snapshot,
    make_step,
    pod_on,
    run,
)


def _weights(recent: RecentRequests, pool: str) -> dict[int, float]:
    """Live weights of `pool` by GPU count, in units of the next submission's weight."""
    (entry,) = [p for p in recent.history().pools if p.pool == pool]
    return {request.gpus: weight for (request, _), weight in entry.weights}


def test_a_submission_counts_in_every_pool_it_may_use() -> None:
    recent = RecentRequests()
    recent.record(make_step("any", gpus=2), ["a", "b"])
    recent.record(make_step("only-b", gpus=8), ["b"])
    assert set(_weights(recent, "a")) == {2}
    assert set(_weights(recent, "b")) == {2, 8}


def test_a_submission_weighs_half_as_much_after_a_half_life() -> None:
    recent = RecentRequests()
    recent.record(make_step("old", gpus=8), ["a"])
    for i in range(HALF_LIFE):
        recent.record(make_step(f"new-{i}", gpus=1), ["a"])
    # In units of the next submission: the newest weighs 2 ** (-1 / HALF_LIFE), not quite 1.
    assert _weights(recent, "a")[8] == pytest.approx(0.5, rel=1e-3)


def test_the_scored_mix_is_refreshed_early_then_every_refresh_interval() -> None:
    recent = RecentRequests()
    changes = []
    for count in range(1, 3 * REFRESH + 1):
        before = recent.version("a")
        recent.record(make_step(f"s{count}", gpus=1), ["a"])
        if recent.version("a") != before:
            changes.append(count)
    doubling = [2**k for k in range(REFRESH.bit_length())]
    assert changes == [*doubling, 2 * REFRESH, 3 * REFRESH]


def test_the_mix_weighs_shapes_by_gpu_demand() -> None:
    recent = RecentRequests()
    for i in range(3):
        recent.record(make_step(f"one-{i}", gpus=1), ["a"])
    recent.record(make_step("eight", gpus=8), ["a"])
    mix = recent.mix("a")
    assert mix is not None
    shares = {gpus: cumulative[-1] for gpus, _, _, _, cumulative in mix.groups}
    assert shares[8] == pytest.approx(8 / 11, rel=1e-3)  # the first three decayed a little


def test_what_was_learned_travels_through_a_snapshot() -> None:
    nodes = [make_node("n1")]
    scheduler = Scheduler(nodes, [make_queue("team", quota=8)])
    for i in range(40):
        scheduler.submit(make_step(f"s{i}", gpus=1 + i % 3, submitted_at=float(i)))
    restored = Scheduler.from_snapshot(scheduler.snapshot())
    for twin in (scheduler, restored):
        twin.submit(make_step("late", gpus=4, submitted_at=50.0))
    # The mix cycles score against is carried exactly; the live weights up to rounding.
    mine, theirs = (s.snapshot().requests for s in (scheduler, restored))
    assert mine is not None
    assert theirs is not None
    assert [p.scored for p in theirs.pools] == [p.scored for p in mine.pools]
    for ours, its in zip(mine.pools, theirs.pools, strict=True):
        assert [k for k, _ in its.weights] == [k for k, _ in ours.weights]
        assert [w for _, w in its.weights] == pytest.approx([w for _, w in ours.weights])
    assert restored.cycle(60.0) == scheduler.cycle(60.0) == schedule(scheduler.snapshot(), 60.0)


def test_a_world_without_history_learns_from_its_workloads() -> None:
    snapshot = make_snapshot([make_node("n1")], [make_queue("team")], [make_step("a", gpus=2)])
    learned = Scheduler.from_snapshot(snapshot).snapshot().requests
    assert learned is not None
    ((entry),) = learned.pools
    assert entry.submissions == 1
    ((shape, weight),) = entry.weights
    assert shape == (Request(gpus=2), ())
    assert weight == pytest.approx(1.0, rel=1e-3)


# -- the choice among pools ------------------------------------------------------------------


def _two_pools(
    *pending: Workload, quotas: tuple[PoolQuota, ...] | None = None
) -> dict[str, Allocation]:
    """What a cycle admits beside two pools, `a` first by name.

    Pool `a`: a fresh 8-GPU node; pool `b`: a node with 2 of 8 GPUs free, and 8-GPU work in
    the mix. A 2-GPU step fits both; in `a` it strands 6 GPUs an 8-GPU pod could have used,
    in `b` it fills the node.
    """
    busy = run(make_step("busy", gpus=2, pods=3), tuple(pod_on("b1", i, i + 1) for i in (0, 2, 4)))
    big = run(make_step("big", gpus=8), pod_on("b2", *range(8)))
    team = make_queue(
        "team", quotas=quotas or (PoolQuota(pool="a", quota=16), PoolQuota(pool="b", quota=16))
    )
    snapshot = make_snapshot(
        [make_node("a1", pool="a"), make_node("b1", pool="b"), make_node("b2", pool="b")],
        [team],
        [busy, big, *pending],
    )
    return admitted(schedule(snapshot, 100.0))


def test_a_step_that_accepts_any_pool_goes_where_it_strands_least() -> None:
    placed = _two_pools(make_step("new", gpus=2, submitted_at=10.0))
    assert placed["new"] == (pod_on("b1", 6, 7),)


def test_a_users_order_of_pools_wins_over_the_score() -> None:
    placed = _two_pools(make_step("new", gpus=2, submitted_at=10.0, pools=("a", "b")))
    assert placed["new"] == (pod_on("a1", 0, 1),)


def test_staying_within_quota_comes_before_fragmentation() -> None:
    # The queue owns GPUs in pool a only: in b the step would borrow (and could be reclaimed).
    only_a = (PoolQuota(pool="a", quota=16),)
    placed = _two_pools(make_step("new", gpus=2, submitted_at=10.0), quotas=only_a)
    assert placed["new"] == (pod_on("a1", 0, 1),)


def test_pools_that_tie_on_fragmentation_are_split_by_the_tightest_fit() -> None:
    # Only 1-GPU pods in the mix: a 1-GPU pod strands nothing anywhere, so every placement
    # adds no fragmentation. The tie goes to the tightest fit (b1, 2 GPUs free), not to the
    # pool first by name (a, a fresh node): by name, pools fill one after another.
    busy = run(make_step("busy", gpus=1, pods=6), tuple(pod_on("b1", i) for i in range(6)))
    team = make_queue("team", quotas=(PoolQuota(pool="a", quota=16), PoolQuota(pool="b", quota=16)))
    snapshot = make_snapshot(
        [make_node("a1", pool="a"), make_node("b1", pool="b")],
        [team],
        [busy, make_step("new", gpus=1, submitted_at=10.0)],
    )
    assert admitted(schedule(snapshot, 100.0))["new"] == (pod_on("b1", 6),)
