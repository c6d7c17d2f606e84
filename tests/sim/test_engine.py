"""The virtual-time engine: ordering, checkpoint accounting, nothing lost, determinism, errors."""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scheduler_service.core import (
    Admission,
    Kind,
    Plan,
    PodAllocation,
    Queue,
    Snapshot,
    Workload,
)
from scheduler_service.sim import (
    Admitted,
    Crashed,
    Engine,
    EngineSettings,
    Evicted,
    Faults,
    Finished,
    Lost,
    NodeChange,
    NodeDown,
    NodeUp,
    PatchFailed,
    Requeued,
    Resumed,
    SimulationError,
    SimulationResult,
    Submission,
    Submitted,
    TimelineEvent,
    Waiting,
)
from tests.core.builders import make_node, make_queue, make_step


def _engine(
    *,
    nodes: int = 1,
    gpus: int = 8,
    queues: Sequence[Queue] = (),
    checkpoint_seconds: float | None = None,
    grace_seconds: float = 30.0,
) -> Engine:
    return Engine(
        nodes=[make_node(f"n{i}", gpus=gpus) for i in range(1, nodes + 1)],
        queues=queues or [make_queue("team", quota=nodes * gpus)],
        settings=EngineSettings(
            checkpoint_seconds=checkpoint_seconds, eviction_grace_seconds=grace_seconds
        ),
    )


def _submit(engine: Engine, at: float, workload: Workload, duration: float) -> None:
    engine.post(Submission(at=at, workload=workload, duration_seconds=duration))


def _events_of(result: SimulationResult, workload: str) -> list[TimelineEvent]:
    return [e for e in result.timeline if getattr(e, "workload", None) == workload]


def _reclaim_setup(checkpoint_seconds: float | None) -> SimulationResult:
    """Queue borrower runs 4 GPUs over quota from t=0; queue owner takes them back at t=600."""
    engine = _engine(
        gpus=4,
        queues=[make_queue("borrower", quota=0), make_queue("owner", quota=4)],
        checkpoint_seconds=checkpoint_seconds,
    )
    _submit(engine, 0, make_step("borrowed", "borrower", gpus=4), 1000)
    _submit(engine, 600, make_step("owned", "owner", gpus=4), 100)
    engine.advance()
    return engine.result()


def test_a_workload_runs_for_its_duration() -> None:
    engine = _engine()
    _submit(engine, 5, make_step("train", gpus=2), 100)

    engine.advance()
    result = engine.result()

    kinds = [type(e) for e in result.timeline]
    assert kinds == [Submitted, Admitted, Finished]
    admitted, finished = result.timeline[1], result.timeline[2]
    assert admitted.at == 10, "cycles run at multiples of cycle_seconds"
    assert finished.at == 110
    assert result.ended_at == 110
    assert [o.state for o in result.outcomes] == ["finished"]


def test_the_clock_stops_at_until_with_work_still_running() -> None:
    engine = _engine()
    _submit(engine, 0, make_step("train", gpus=2), 1000)

    engine.advance(until=250)
    result = engine.result()

    assert result.ended_at == 250
    (outcome,) = result.outcomes
    assert (outcome.state, outcome.done_seconds) == ("running", 250)
    assert result.queues[0].allocated_milli == 2000
    assert result.queues[0].gpu_seconds == 500


def test_advance_can_be_called_again_with_more_events() -> None:
    engine = _engine()
    _submit(engine, 0, make_step("first", gpus=8), 100)
    engine.advance(until=50)
    _submit(engine, 60, make_step("second", gpus=8), 100)

    engine.advance()

    finished = [e for e in engine.result().timeline if isinstance(e, Finished)]
    assert [(e.workload, e.at) for e in finished] == [("first", 100), ("second", 200)]


@pytest.mark.parametrize(
    ("checkpoint_seconds", "kept", "lost", "finished_at"),
    [
        (None, 0, 600, 730 + 1000),  # no checkpoints: starts over
        (250, 500, 100, 730 + 500),  # last checkpoint at 500 s of work
        (300, 600, 0, 730 + 400),  # evicted exactly at a checkpoint
    ],
)
def test_an_evicted_workload_resumes_from_its_last_checkpoint(
    checkpoint_seconds: float | None, kept: float, lost: float, finished_at: float
) -> None:
    result = _reclaim_setup(checkpoint_seconds)

    story = _events_of(result, "borrowed")
    assert [type(e) for e in story] == [
        Submitted,
        Admitted,
        Evicted,
        Requeued,
        Waiting,
        Resumed,
        Finished,
    ]
    evicted, requeued, resumed, finished = story[2], story[3], story[5], story[6]
    assert isinstance(requeued, Requeued)
    assert isinstance(resumed, Resumed)
    assert isinstance(finished, Finished)
    assert evicted.at == 600, "work stops when the plan evicts"
    assert requeued.at == 630, "pods are gone after the grace period"
    assert (requeued.kept_seconds, requeued.lost_seconds) == (kept, lost)
    assert resumed.at == 730, "the owner ran from 630 to 730 and gave the GPUs back"
    assert resumed.done_seconds == kept
    assert finished.at == finished_at
    assert (finished.evictions, finished.lost_seconds) == (1, lost)


def test_a_resumed_workload_pays_the_restart_before_it_makes_progress() -> None:
    # As in `_reclaim_setup`, with a checkpoint every 300 s and 50 s to load it on resuming.
    engine = Engine(
        nodes=[make_node("n1", gpus=4)],
        queues=[make_queue("borrower", quota=0), make_queue("owner", quota=4)],
        settings=EngineSettings(checkpoint_seconds=300, restart_seconds=50),
    )
    _submit(engine, 0, make_step("borrowed", "borrower", gpus=4), 1000)
    _submit(engine, 600, make_step("owned", "owner", gpus=4), 100)
    engine.advance()
    finished = _events_of(engine.result(), "borrowed")[-1]
    assert isinstance(finished, Finished)
    # Resumed at 730 with 600 s kept: 50 s of restart, then the last 400 s of work.
    assert (finished.at, finished.lost_seconds) == (730 + 50 + 400, 50)


def test_gpu_time_counts_the_grace_period() -> None:
    result = _reclaim_setup(checkpoint_seconds=300)

    used = {row.queue: row.gpu_seconds for row in result.queues}
    assert used == {"borrower": 4 * (630 + 400), "owner": 4 * 100}


def test_a_waiting_line_is_recorded_only_when_the_reason_changes() -> None:
    engine = _engine(gpus=4)
    _submit(engine, 0, make_step("first", gpus=4), 1000)
    _submit(engine, 0, make_step("second", gpus=4), 100)

    engine.advance()

    waits = [e for e in engine.result().timeline if isinstance(e, Waiting)]
    assert [w.workload for w in waits] == ["second"], "100 cycles of waiting, one line"
    assert waits[0].code == "InsufficientCapacity"


def test_a_workload_that_can_never_fit_stops_the_run_instead_of_cycling_forever() -> None:
    engine = _engine()
    _submit(engine, 0, make_step("huge", gpus=16), 100)

    engine.advance()
    result = engine.result()

    assert result.cycles == 1
    (wait,) = [e for e in result.timeline if isinstance(e, Waiting)]
    assert wait.code == "InvalidRequest"
    assert [o.state for o in result.outcomes] == ["pending"]


def test_node_loss_returns_its_workloads_to_pending_and_they_are_placed_again() -> None:
    engine = _engine(nodes=2, gpus=4, checkpoint_seconds=100)
    _submit(engine, 0, make_step("gang", gpus=4, pods=2), 1000)
    engine.post(NodeChange(at=250, node="n1", ready=False))
    engine.post(NodeChange(at=400, node="n1", ready=True))

    engine.advance()
    result = engine.result()

    story = [type(e) for e in result.timeline]
    assert story == [Submitted, Admitted, NodeDown, Lost, Waiting, NodeUp, Resumed, Finished]
    lost = result.timeline[3]
    assert isinstance(lost, Lost)
    assert (lost.at, lost.kept_seconds, lost.lost_seconds) == (250, 200, 50)
    assert result.timeline[6].at == 400
    assert result.timeline[7].at == 400 + 800


def test_the_same_inputs_give_the_same_timeline_whatever_their_order() -> None:
    def replay(order: int) -> SimulationResult:
        nodes = [make_node(f"n{i}", gpus=4) for i in range(1, 4)]
        queues = [make_queue("a", quota=6), make_queue("b", quota=6)]
        submissions = [
            Submission(
                at=i * 37.0,
                workload=make_step(f"w{i}", "ab"[i % 2], gpus=1 + i % 4),
                duration_seconds=100 + 50 * i,
            )
            for i in range(12)
        ]
        if order:
            nodes.reverse()
            queues.reverse()
            submissions.reverse()  # different times: posting order must not matter
        engine = Engine(nodes=nodes, queues=queues, settings=EngineSettings(checkpoint_seconds=60))
        for submission in submissions:
            engine.post(submission)
        engine.advance()
        return engine.result()

    assert replay(0) == replay(1)


def test_a_plan_that_breaks_an_invariant_stops_the_run(monkeypatch: pytest.MonkeyPatch) -> None:
    def over_committing(snapshot: Snapshot, now: float) -> Plan:
        pod = PodAllocation(node="n1", gpus=("n1-gpu0",))
        return Plan(admissions=tuple(Admission(w.name, (pod,)) for w in snapshot.workloads))

    monkeypatch.setattr("scheduler_service.sim._engine.schedule", over_committing)
    engine = _engine()
    _submit(engine, 0, make_step("a", gpus=1), 100)
    _submit(engine, 0, make_step("b", gpus=1), 100)

    with pytest.raises(
        SimulationError, match=r"(?s)t=0s: the plan breaks 1 invariant.*overcommit: GPU n1-gpu0"
    ):
        engine.advance()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (NodeChange(at=10, node="n9", ready=False), "no node 'n9'"),
        (NodeChange(at=10, node="n1", ready=True), "node 'n1' is not down"),
    ],
)
def test_node_changes_that_contradict_the_cluster_are_errors(
    change: NodeChange, message: str
) -> None:
    engine = _engine()
    engine.post(change)

    with pytest.raises(SimulationError, match=f"t=10s: {message}"):
        engine.advance()


def test_events_cannot_be_posted_in_the_past() -> None:
    engine = _engine()
    _submit(engine, 0, make_step("a", gpus=1), 100)
    engine.advance()

    with pytest.raises(SimulationError, match="in the past"):
        _submit(engine, 50, make_step("b", gpus=1), 100)


def test_a_name_can_be_submitted_only_once() -> None:
    engine = _engine()
    _submit(engine, 0, make_step("a", gpus=1), 100)
    _submit(engine, 5, make_step("a", gpus=1), 100)

    with pytest.raises(SimulationError, match="'a' was already submitted"):
        engine.advance()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"cycle_seconds": 0}, "cycle_seconds must be > 0"),
        ({"eviction_grace_seconds": -1}, "eviction_grace_seconds must be >= 0"),
        ({"checkpoint_seconds": 0}, "checkpoint_seconds must be > 0"),
        ({"restart_seconds": -1}, "restart_seconds must be >= 0"),
    ],
)
def test_settings_are_validated(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        replace(EngineSettings(), **kwargs)


# -- nothing lost, on random clusters ----------------------------------------------------------

_SEEDS = st.integers(min_value=0, max_value=2**32 - 1)


def _random_run(seed: int, *, faults: bool = False) -> tuple[set[str], SimulationResult]:
    """A random mix of steps on three nodes, with node failures, replayed to t=3000.

    With `faults`, the engine also fails pod patches and crashes pods, from the same seed.
    """
    rng = random.Random(seed)
    queues = [make_queue(name, quota=rng.choice([0, 2, 4])) for name in ("a", "b", "c")]
    engine = Engine(
        nodes=[make_node(f"n{i}", gpus=4) for i in range(1, 4)],
        queues=queues,
        settings=EngineSettings(
            checkpoint_seconds=rng.choice([None, 60.0]),
            eviction_grace_seconds=rng.choice([0.0, 30.0]),
        ),
        faults=Faults(seed=seed, patch_failure=0.2, pod_crash=0.02) if faults else None,
    )
    names = set()
    for i in range(rng.randint(1, 15)):
        kind = rng.choice(list(Kind))
        slice_ = (rng.choice([10_240, 20_480]), rng.choice([10, 30, 50]))
        workload = make_step(
            f"w{i}",
            rng.choice("abc"),
            kind=kind,
            gpus=None if kind is Kind.INFER else rng.choice([1, 2, 4]),
            slice=slice_ if kind is Kind.INFER else None,
            pods=1 if kind is Kind.INFER else rng.choice([1, 1, 2]),
            priority=rng.choice([0, 0, 5]),
        )
        names.add(workload.name)
        _submit(engine, rng.randrange(0, 2000, 7), workload, rng.randrange(30, 900))
    down = rng.randrange(0, 2500, 5)
    engine.post(NodeChange(at=down, node="n2", ready=False))
    engine.post(NodeChange(at=down + rng.randrange(1, 500), node="n2", ready=True))
    engine.advance(until=3000)
    return names, engine.result()


@settings(max_examples=30)
@given(seed=_SEEDS)
def test_nothing_is_lost(seed: int) -> None:
    names, result = _random_run(seed)

    assert [o.workload for o in result.outcomes] == sorted(names)
    for outcome in result.outcomes:
        assert outcome.state in {"finished", "pending", "running", "evicting"}
        assert 0 <= outcome.done_seconds <= outcome.duration_seconds
        finished = [e for e in _events_of(result, outcome.workload) if isinstance(e, Finished)]
        assert len(finished) == (outcome.state == "finished")


@settings(max_examples=10)
@given(seed=_SEEDS)
def test_a_replay_is_deterministic(seed: int) -> None:
    assert _random_run(seed) == _random_run(seed)


@settings(max_examples=30)
@given(seed=_SEEDS)
def test_nothing_is_lost_under_injected_faults(seed: int) -> None:
    names, result = _random_run(seed, faults=True)

    assert [o.workload for o in result.outcomes] == sorted(names)
    for outcome in result.outcomes:
        assert 0 <= outcome.done_seconds <= outcome.duration_seconds
    assert _random_run(seed, faults=True) == (names, result)


def test_injected_faults_happen_and_keep_the_checkpointed_work() -> None:
    engine = Engine(
        nodes=[make_node("n1", gpus=4)],
        queues=[make_queue("team", quota=4)],
        settings=EngineSettings(checkpoint_seconds=60.0),
        faults=Faults(seed=7, patch_failure=0.5, pod_crash=0.05),
    )
    for i in range(4):
        _submit(engine, 0, make_step(f"w{i}", "team", gpus=1), 900)
    engine.advance(until=20_000)
    result = engine.result()
    failed = [e for e in result.timeline if isinstance(e, PatchFailed)]
    crashed = [e for e in result.timeline if isinstance(e, Crashed)]
    assert failed
    assert crashed
    for crash in crashed:
        assert crash.kept_seconds % 60 == 0  # only whole checkpoints survive a crash
    assert all(outcome.state == "finished" for outcome in result.outcomes)


@pytest.mark.parametrize("field", ["patch_failure", "pod_crash"])
def test_fault_probabilities_are_validated(field: str) -> None:
    with pytest.raises(ValueError, match=f"{field} must be a probability"):
        Faults(seed=1, **{field: 1.5})
