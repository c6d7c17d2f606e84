"""A small cluster driven by random events; after every event a cycle runs and is checked.

The machine plays the driver: it submits work, finishes or cancels it, completes evictions,
loses nodes and gets them back, and lets time pass. After every event it runs `schedule`,
asserts that the plan keeps every invariant (`check_plan`), and carries it out as a driver
would.

Across the whole run no workload may be lost: what was submitted and has neither finished nor
been cancelled is in the snapshot, and nothing else is. The machine learns each workload's state
from the plan alone (`carry_out`): admitted work runs, evicted work is leaving, running work the
plan does not evict keeps running, and pending work waits only if the plan lists it as pending.
A workload the core forgets is therefore missing from the machine's next snapshot (and one it
names twice makes the next snapshot invalid); `test_the_rule_catches_a_core_that_forgets_a_
workload` shows the rule failing on such a core.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from scheduler_service.core import (
    Kind,
    Plan,
    Policy,
    Snapshot,
    SnapshotError,
    TopologyWish,
    Workload,
    WorkloadState,
    check_plan,
    schedule,
)
from tests.core.builders import (
    A100_MIB,
    back_to_pending,
    complete_evictions,
    evicting,
    make_node,
    make_queue,
    make_step,
    run,
)

NODES = (
    make_node("h1", gpus=8, topology={"block": "b1", "rack": "r1"}, numa_groups=2),
    make_node("h2", gpus=8, topology={"block": "b1", "rack": "r2"}, numa_groups=2),
    make_node("h3", gpus=4, topology={"block": "b2", "rack": "r1"}),
    make_node("a1", gpus=4, model="A100", pool="a100", memory_mib=A100_MIB),
)
QUEUES = (
    make_queue("org", quota=12),
    make_queue("team-a", "org", quota=8, limit=16),
    make_queue("team-b", "org", quota=4, weight=2),
    make_queue("team-c", quota=4, priority=1, reclaim_min_runtime_seconds=30),
)
LEAVES = ("team-a", "team-b", "team-c")


@st.composite
def submissions(draw: st.DrawFn) -> Workload:
    """A step the machine submits (named and timed by the machine)."""
    shape = draw(st.sampled_from(("whole", "whole", "gang", "slice")))
    queue = draw(st.sampled_from(LEAVES))
    kind = draw(st.sampled_from((Kind.TRAIN,) * 5 + (Kind.BUILD, Kind.INFER)))
    priority = draw(st.integers(0, 2))
    pools = draw(st.sampled_from(((), ("h100",), ("h100",), ("a100", "h100"))))
    if shape == "slice":
        return make_step(
            "new",
            queue,
            slice=(draw(st.sampled_from((10240, 20480, 40960))), draw(st.sampled_from((20, 50)))),
            kind=kind,
            priority=priority,
            pools=pools,
        )
    step = make_step(
        "new",
        queue,
        gpus=draw(st.sampled_from((2, 1, 4, 8))),
        pods=draw(st.integers(2, 3)) if shape == "gang" else 1,
        kind=kind,
        priority=priority,
        pools=pools,
    )
    if shape == "gang" and draw(st.booleans()):
        return replace(step, topology=TopologyWish("rack", required=draw(st.booleans())))
    return step


def carry_out(snapshot: Snapshot, plan: Plan, now: float) -> Snapshot:
    """The next snapshot of a driver that knows each workload's state from `plan` alone.

    Admissions start (RUNNING from `now`), evictions begin (EVICTING, keeping their GPUs),
    placed work the plan does not evict stays as it is, and pending work stays only where the
    plan lists it as pending. Nothing is looked up in `snapshot` for pending work, so a workload
    the plan leaves out is gone and one it names twice is there twice.
    """
    by_name = {w.name: w for w in snapshot.workloads}
    evicted = {e.workload for e in plan.evictions}
    placed = [
        evicting(w) if w.name in evicted else w
        for w in snapshot.workloads
        if w.state is not WorkloadState.PENDING
    ]
    started = [run(by_name[a.workload], a.allocation, now) for a in plan.admissions]
    waiting = [by_name[p.workload] for p in plan.pending]
    return replace(snapshot, workloads=(*placed, *started, *waiting))


def lost_or_resurrected(alive: set[str], snapshot: Snapshot) -> list[str]:
    """The rule: what is alive but not in `snapshot`, or in it but not alive (sorted)."""
    return sorted(alive ^ {w.name for w in snapshot.workloads})


class ClusterMachine(RuleBasedStateMachine):
    """The driver's side of the loop; see the module docstring."""

    core: Callable[[Snapshot, float], Plan] = staticmethod(schedule)
    """What decides each cycle: the real core (a test swaps in a broken one)."""

    def __init__(self) -> None:
        super().__init__()
        self.now = 0.0
        self.count = 0
        self.alive: set[str] = set()
        self.snapshot = Snapshot(
            nodes=NODES, queues=QUEUES, policy=Policy(reclaim_min_runtime_seconds=10)
        )

    def cycle(self) -> None:
        plan = self.core(self.snapshot, self.now)
        self.check(plan)
        self.snapshot = carry_out(self.snapshot, plan, self.now)

    def check(self, plan: Plan) -> None:
        """The plan keeps every invariant."""
        assert check_plan(self.snapshot, plan) == []

    def in_state(self, state: WorkloadState) -> list[str]:
        return sorted(w.name for w in self.snapshot.workloads if w.state is state)

    @rule(workload=submissions())
    def submit(self, workload: Workload) -> None:
        self.count += 1
        named = replace(workload, name=f"w{self.count}", submitted_at=self.now)
        self.alive.add(named.name)
        self.snapshot = replace(self.snapshot, workloads=(*self.snapshot.workloads, named))
        self.cycle()

    @precondition(
        lambda self: any(w.state is WorkloadState.RUNNING for w in self.snapshot.workloads)
    )
    @rule(data=st.data())
    def finish(self, data: st.DataObject) -> None:
        done = data.draw(st.sampled_from(self.in_state(WorkloadState.RUNNING)))
        self.alive.discard(done)
        workloads = tuple(w for w in self.snapshot.workloads if w.name != done)
        self.snapshot = replace(self.snapshot, workloads=workloads)
        self.cycle()

    @precondition(
        lambda self: any(w.state is WorkloadState.PENDING for w in self.snapshot.workloads)
    )
    @rule(data=st.data())
    def cancel(self, data: st.DataObject) -> None:
        withdrawn = data.draw(st.sampled_from(self.in_state(WorkloadState.PENDING)))
        self.alive.discard(withdrawn)
        workloads = tuple(w for w in self.snapshot.workloads if w.name != withdrawn)
        self.snapshot = replace(self.snapshot, workloads=workloads)
        self.cycle()

    @rule()
    def evictions_complete(self) -> None:
        self.snapshot = complete_evictions(self.snapshot)
        self.cycle()

    @precondition(lambda self: any(node.ready for node in self.snapshot.nodes))
    @rule(data=st.data())
    def node_loss(self, data: st.DataObject) -> None:
        lost = data.draw(st.sampled_from([n.name for n in self.snapshot.nodes if n.ready]))

        def after(workload: Workload) -> Workload:
            on_lost = any(pod.node == lost for pod in workload.allocation or ())
            return back_to_pending(workload) if on_lost else workload

        self.snapshot = replace(
            self.snapshot,
            nodes=tuple(replace(n, ready=n.ready and n.name != lost) for n in self.snapshot.nodes),
            workloads=tuple(after(w) for w in self.snapshot.workloads),
        )
        self.cycle()

    @precondition(lambda self: not all(node.ready for node in self.snapshot.nodes))
    @rule(data=st.data())
    def node_return(self, data: st.DataObject) -> None:
        back = data.draw(st.sampled_from([n.name for n in self.snapshot.nodes if not n.ready]))
        self.snapshot = replace(
            self.snapshot,
            nodes=tuple(replace(n, ready=n.ready or n.name == back) for n in self.snapshot.nodes),
        )
        self.cycle()

    @rule(seconds=st.sampled_from((1.0, 5.0, 30.0)))
    def tick(self, seconds: float) -> None:
        self.now += seconds
        self.cycle()

    @invariant()
    def no_workload_is_lost(self) -> None:
        assert lost_or_resurrected(self.alive, self.snapshot) == []


ClusterMachine.TestCase.settings = settings(max_examples=60, stateful_step_count=40)
TestClusterMachine = ClusterMachine.TestCase


def forgetful_core(snapshot: Snapshot, now: float) -> Plan:
    """A deliberately broken core: its plan leaves out the last pending workload it lists."""
    plan = schedule(snapshot, now)
    return replace(plan, pending=plan.pending[:-1])


class ForgetfulCoreMachine(ClusterMachine):
    """The machine on `forgetful_core`, with only the no-workload-is-lost rule checking it."""

    core = staticmethod(forgetful_core)

    def check(self, plan: Plan) -> None:
        """Left out on purpose: `check_plan` would report the lost workload first."""


def test_the_rule_catches_a_core_that_forgets_a_workload() -> None:
    with pytest.raises(AssertionError, match=r"assert \['w\d+'\] == \[\]"):
        run_state_machine_as_test(
            ForgetfulCoreMachine, settings=settings(max_examples=50, stateful_step_count=10)
        )


def test_a_workload_the_plan_names_twice_stops_the_machine() -> None:
    step = make_step("w1", "team-a", gpus=64)  # more than the cluster: it waits
    snapshot = Snapshot(nodes=NODES, queues=QUEUES, workloads=(step,))
    plan = schedule(snapshot, 0.0)

    assert lost_or_resurrected({"w1"}, carry_out(snapshot, plan, 0.0)) == []
    with pytest.raises(SnapshotError, match="duplicate"):
        carry_out(snapshot, replace(plan, pending=plan.pending * 2), 0.0)
