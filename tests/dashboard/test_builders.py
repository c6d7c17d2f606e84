"""The view builders as pure functions: a cluster view, a viewer's scope and a time in, a model out.

Scopes here are built directly (`Scope(user, authorizer)`), so no app and no HTTP take part.
"""

from __future__ import annotations

import pytest

from scheduler_service.api import ClusterStatus, ClusterView, WorkloadPods
from scheduler_service.core import Policy, WorkloadState, schedule
from scheduler_service.dashboard import (
    ANONYMOUS,
    PageError,
    Scope,
    WorkloadFilters,
    build_nodes,
    build_overview,
    build_queues,
    build_workload,
    build_workloads,
)
from scheduler_service.dashboard._format import clock, duration, gpus, hours, memory
from scheduler_service.dashboard._paging import Pager
from tests.api.support import ALICE, FakeAuthorizer
from tests.core.builders import make_node, make_queue, make_snapshot, make_step, pod_on, run

EVERYONE = Scope(ANONYMOUS, None)
NOW = 1_000.0


def borrowing_cluster() -> ClusterView:
    """Queue b runs 16 GPUs on a quota of 8; queue a (quota 8) waits for 4.

    a may not reclaim yet: a long minimum runtime protects b's work.
    """
    nodes = [make_node("n1"), make_node("n2")]
    queues = [make_queue("a", quota=8), make_queue("b", quota=8)]
    workloads = [
        run(
            make_step(f"b{i}", "b", gpus=4, submitted_at=1),
            (pod_on(f"n{i // 2 + 1}", *range(i % 2 * 4, i % 2 * 4 + 4)),),
            started_at=900,
        )
        for i in range(4)
    ]
    workloads.append(make_step("a0", "a", gpus=4, submitted_at=950))
    snapshot = make_snapshot(nodes, queues, workloads, Policy(reclaim_min_runtime_seconds=3600))
    pods = {w.name: WorkloadPods(f"ns-{w.queue}", (w.name,)) for w in workloads}
    status = ClusterStatus(snapshot=snapshot, plan=schedule(snapshot, NOW), pods=pods, cycle_at=NOW)
    return ClusterView(status)


def alice() -> Scope:
    authorizer = FakeAuthorizer()
    authorizer.grants |= {("alice", "list", "pods", "ns-a"), ("alice", "get", "pods", "ns-a")}
    return Scope(ALICE, authorizer)


def test_the_queue_page_names_who_borrows_and_who_may_reclaim() -> None:
    page = build_queues(borrowing_cluster(), EVERYONE)

    assert [(s.queue, s.pool, s.gpus) for s in page.over_quota] == [("b", "h100", 8.0)]
    assert [(s.queue, s.pool, s.gpus) for s in page.could_reclaim] == [("a", "h100", 4.0)]
    (b,) = [row for row in page.rows if row.name == "b"]
    (entry,) = b.pools
    assert (entry.quota_gpus, entry.allocated_gpus, entry.borrowed_gpus) == (8, 16, 8)
    assert [s.kind for s in entry.segments] == ["used", "borrowed", "waiting"]
    assert [s.value for s in entry.segments] == [8, 8, 0]
    assert entry.scale == 16


def test_the_overview_sums_the_pool_and_counts_borrowing_per_leaf_queue() -> None:
    overview = build_overview(borrowing_cluster(), EVERYONE, NOW)

    (pool,) = overview.pools
    assert (pool.gpus, pool.allocated_gpus, pool.borrowed_gpus, pool.idle_gpus) == (16, 16, 8, 0)
    assert (pool.waiting_gpus, pool.free_gpus, pool.quota_gpus) == (4, 0, 16)
    assert overview.total is None  # one pool: no total row
    assert overview.counts == {"pending": 1, "running": 4, "evicting": 0}
    (wait,) = overview.longest_waits
    assert (wait.name, wait.place, wait.since_seconds) == ("a0", "1st of 1 waiting", 50.0)


def test_a_viewer_without_the_queue_right_gets_no_overview() -> None:
    with pytest.raises(PageError) as refused:
        build_overview(borrowing_cluster(), Scope(ALICE, FakeAuthorizer(grants=set())), NOW)

    assert refused.value.status_code == 403
    assert "may not list queues.aistack.io" in refused.value.message


def test_longest_waits_leave_out_namespaces_the_viewer_may_not_see() -> None:
    view = borrowing_cluster()
    scope = Scope(ALICE, FakeAuthorizer(grants={("alice", "list", "queues.aistack.io", "*")}))

    overview = build_overview(view, scope, NOW)

    assert overview.longest_waits == ()
    assert overview.hidden_waits


def test_the_workload_list_pages_and_filters() -> None:
    view = borrowing_cluster()

    first = build_workloads(view, EVERYONE, NOW, WorkloadFilters(), page=1, size=2)
    last = build_workloads(view, EVERYONE, NOW, WorkloadFilters(), page=9, size=2)
    running = build_workloads(
        view, EVERYONE, NOW, WorkloadFilters(state=WorkloadState.RUNNING), page=1, size=10
    )

    assert [r.name for r in first.rows] == ["a0", "b0"]
    assert (first.pager.pages, first.pager.next, last.pager.number) == (3, 2, 3)
    assert [r.name for r in last.rows] == ["b3"]
    assert [r.name for r in running.rows] == ["b0", "b1", "b2", "b3"]
    assert running.rows[0].since_seconds == 100.0
    assert running.rows[0].request == "1 pod x 4 GPUs"


def test_the_workload_list_of_a_viewer_leaves_other_namespaces_out() -> None:
    page = build_workloads(borrowing_cluster(), alice(), NOW, WorkloadFilters(), 1, 100)

    assert [r.name for r in page.rows] == ["a0"]
    assert page.namespaces == ("ns-a",)
    assert page.hidden


def test_a_waiting_workloads_page_concludes_with_its_numbers() -> None:
    page = build_workload(borrowing_cluster(), alice(), NOW, "ns-a", "a0", "https://argo")

    assert page.summary.startswith("pending in queue a, 1st of 1 waiting; pool h100: quota 8")
    facts = {fact.label: fact.value for fact in page.facts}
    assert facts["Place in line"] == "1st of 1 waiting in queue a"
    assert facts["Waited"] == "50 s (since 1970-01-01 00:15:50 UTC)"
    assert facts["Asks for"] == "1 pod x 4 GPUs"
    assert page.argo_url == ""  # not a step of a workflow
    assert [p.pod for p in page.pods] == ["a0"]


def test_a_workload_page_of_another_namespace_is_refused() -> None:
    with pytest.raises(PageError) as refused:
        build_workload(borrowing_cluster(), alice(), NOW, "ns-b", "b0")

    assert refused.value.status_code == 403


def test_the_gpu_map_shows_whole_gpus_and_pages() -> None:
    page = build_nodes(borrowing_cluster(), EVERYONE, page=2, size=1)

    (node,) = page.nodes
    assert (node.name, page.pager.pages) == ("n2", 2)
    assert [gpu.state for gpu in node.gpus] == ["whole"] * 8
    assert node.gpus[0].holders[0].label == "ns-b/b2"


def test_the_pager_moves_a_page_out_of_range_back_in() -> None:
    assert Pager.of(0, 10, 25).number == 1
    assert Pager.of(7, 10, 25).number == 3
    assert (Pager.of(3, 10, 25).start, Pager.of(3, 10, 25).stop) == (20, 25)
    assert Pager.of(1, 10, 0).pages == 1


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0, "0 s"), (59.9, "59 s"), (200, "3 min 20 s"), (7_500, "2 h 5 min"), (356_400, "4 d 3 h")],
)
def test_durations_read_in_their_two_largest_units(seconds: float, text: str) -> None:
    assert duration(seconds) == text


def test_numbers_read_as_the_apis_messages_write_them() -> None:
    assert (gpus(2.0), gpus(0.25), gpus(1 / 3)) == ("2", "0.25", "0.333")
    assert (memory(512), memory(20480), memory(81559)) == ("512 MiB", "20 GiB", "79.6 GiB")
    assert clock(0) == "1970-01-01 00:00:00 UTC"
    assert (hours(0), hours(0.0017), hours(3), hours(1234.567)) == (
        "0",
        "0.0017",
        "3.00",
        "1234.57",
    )
