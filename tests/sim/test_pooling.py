"""Experiment 2 on tiny hand-made traces: what static wastes and what pooling recovers."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from scheduler_service.cli import main
from scheduler_service.sim import Faults
from scheduler_service.sim._decider import SnapshotDecider
from scheduler_service.sim._inputs import EngineSettings
from scheduler_service.sim._ledger import GpuTimeLedger
from scheduler_service.sim._philly import PhillyJob, PhillyTrace
from scheduler_service.sim._pooling import (
    Cluster,
    PolicyRun,
    WhatIf,
    run_policy,
    scale_cluster,
)
from scheduler_service.sim._pooling_metrics import figures_of, jain_index, percentile
from tests.sim.traces import write_philly

SETTINGS = EngineSettings(
    cycle_seconds=60,
    eviction_grace_seconds=30,
    checkpoint_seconds=1800,
    restart_seconds=60,
    check_plans=True,
)


def trace_of(*jobs: tuple[str, float, float, int]) -> PhillyTrace:
    """Jobs as (vc, submitted, duration, gpus); VCs a and b of one node (8 GPUs) each."""
    return PhillyTrace(
        jobs=tuple(
            PhillyJob(f"job-{i:05d}", vc, at, duration, gpus, i + 2)
            for i, (vc, at, duration, gpus) in enumerate(jobs)
        ),
        vc_nodes={"a": 1, "b": 1},
        unlisted_jobs=0,
        start=datetime(2017, 10, 1, tzinfo=UTC),
    )


# VC a asks for twice its GPUs at t=0; VC b asks for its own 8 GPUs at t=2400, 40 minutes later.
BORROW = trace_of(("a", 0, 3600, 8), ("a", 0, 3600, 8), ("b", 2400, 1000, 8))


def run(trace: PhillyTrace, policy: str) -> PolicyRun:
    return run_policy(trace, scale_cluster(trace, None), policy, SETTINGS)


def test_static_leaves_gpus_idle_while_a_vc_waits_and_aistack_does_not() -> None:
    static, ours = figures_of(run(BORROW, "static")), figures_of(run(BORROW, "aistack"))
    # Static: a's second job waits an hour beside b's 8 idle GPUs (b is busy 2400-3400 only).
    assert static.idle_waiting_gpu_hours == pytest.approx(8 * (2400 + 200) / 3600)
    assert static.overall.queue_avg_s == pytest.approx(3600 / 3)
    # Pooled, GPUs sit idle only between a release and the next cycle: 2430-2460 (the evicted
    # pods gone, b not yet started) and 3460-3480 (b done, the victim not yet resumed).
    assert ours.idle_waiting_gpu_hours == pytest.approx(8 * (30 + 20) / 3600)
    assert ours.overall.queue_avg_s == pytest.approx(60 / 3)  # b waits for the eviction
    assert ours.in_quota_late == 0
    assert ours.in_quota_max_wait_s == 60


def test_reclaimed_job_resumes_from_its_last_checkpoint() -> None:
    records = {r.job.workload.name: r for r in run(BORROW, "aistack").records}
    evicted = [r for r in records.values() if r.evictions]
    assert len(evicted) == 1
    victim = evicted[0]
    # Evicted at 2400 after 2400 s of work; the checkpoint at 1800 s is kept, 600 s are lost,
    # and so is the 60 s restart of the second run.
    # b starts at 2460 (after the 30 s grace, next cycle), ends at 3460; the victim resumes at
    # the 3480 cycle with 1800 s left plus 60 s of restart, and finishes at 5340.
    assert victim.lost_seconds == 600 + 60
    assert records["job-00002"].first_start == 2460
    assert victim.finished_at == 3480 + 1800 + 60
    figures = figures_of(run(BORROW, "aistack"))
    assert figures.overall.preemptions == 1
    # Lost GPU time: 600 s of work since the checkpoint plus the 60 s restart, on 8 GPUs.
    assert figures.overall.lost_gpu_hours == pytest.approx(8 * 660 / 3600)


def test_shared_fifo_has_no_quotas_and_no_preemption() -> None:
    figures = figures_of(run(BORROW, "fifo"))
    assert figures.overall.preemptions == 0
    records = run(BORROW, "fifo").records
    assert [r.first_start for r in records] == [0, 0, 3600]


def test_replays_are_deterministic_and_the_incremental_core_matches_the_snapshot_form() -> None:
    trace = trace_of(
        *[
            ("ab"[i % 2], 97.0 * i, 500.0 + 311 * (i % 7), (1, 2, 4, 8, 16)[i % 5])
            for i in range(60)
        ]
    )
    cluster = Cluster({"a": 2, "b": 1}, 0.0)
    first = run_policy(trace, cluster, "aistack", SETTINGS)
    # Unchecked, the replay asks for decisions without reasons: it must come out the same.
    again = run_policy(trace, cluster, "aistack", replace(SETTINGS, check_plans=False))
    reference = run_policy(
        trace,
        cluster,
        "aistack",
        SETTINGS,
        decider_factory=SnapshotDecider,
        skip_idle_cycles=False,
    )
    assert first.records == again.records == reference.records
    assert figures_of(first).overall == figures_of(reference).overall


@pytest.mark.parametrize("policy", ["static", "fifo", "aistack"])
def test_skipping_idle_cycles_changes_no_outcome(policy: str) -> None:
    trace = trace_of(
        *[
            ("ab"[i % 3 // 2], 53.0 * i, 900.0 + 97 * (i % 5), (1, 4, 8, 2)[i % 4])
            for i in range(80)
        ]
    )
    cluster = Cluster({"a": 1, "b": 1}, 0.0)
    gated = run_policy(trace, cluster, policy, SETTINGS)
    every = run_policy(trace, cluster, policy, SETTINGS, skip_idle_cycles=False)
    assert gated.records == every.records
    assert gated.skipped_cycles > 0
    assert gated.cycles + gated.skipped_cycles == every.cycles


def test_injected_faults_cost_work_not_jobs_and_replay_exactly() -> None:
    trace = trace_of(
        *[("ab"[i % 2], 120.0 * i, 2400.0 + 97 * (i % 5), (1, 2, 4, 8)[i % 4]) for i in range(30)]
    )
    cluster = Cluster({"a": 1, "b": 1}, 0.0)
    faults = Faults(seed=11, patch_failure=0.3, pod_crash=0.2)
    first = run_policy(trace, cluster, "aistack", SETTINGS, faults=faults)  # plans all checked
    again = run_policy(trace, cluster, "aistack", SETTINGS, faults=faults)
    plain = run_policy(trace, cluster, "aistack", SETTINGS)
    assert first.records == again.records != plain.records
    assert all(r.finished_at is not None for r in first.records)
    crashed = [r for r in first.records if r.crashes]
    assert crashed
    assert all(r.lost_seconds > 0 for r in crashed)  # work since the checkpoint, or restarts
    assert not any(r.crashes for r in plain.records)


def test_when_every_patch_fails_nothing_starts_and_the_replay_ends() -> None:
    faults = Faults(seed=1, patch_failure=1.0)
    records = run_policy(BORROW, scale_cluster(BORROW, None), "aistack", SETTINGS, faults=faults)
    assert [r.first_start for r in records.records] == [None, None, None]


def test_late_in_quota_jobs_are_named_with_their_wait() -> None:
    # a's 4-GPU job fits its unused quota (16 GPUs: 10 held + 4) but no node: its two 5-GPU
    # jobs leave 3 GPUs free on each of its two nodes until t=3600.
    trace = replace(
        trace_of(("a", 0, 3600, 5), ("a", 0, 3600, 5), ("a", 60, 600, 4)),
        vc_nodes={"a": 2},
    )
    static = figures_of(run(trace, "static"))
    assert static.in_quota_late == 1
    (late,) = static.in_quota_late_jobs
    assert (late.name, late.vc, late.gpus, late.wait_s) == ("job-00002", "a", 4, 3600 - 60)
    assert static.in_quota_max_wait_s == 3600 - 60


def test_ledger_integrates_exactly() -> None:
    ledger = GpuTimeLedger(total_gpus=16, quotas={"a": 8, "b": 8}, window_end=100)
    ledger.wait("a", 4)
    ledger.advance(10)  # 10 s: a waits for 4 with 16 idle
    ledger.wait("a", -4)
    ledger.hold("a", 12)
    ledger.wait("b", 8)
    ledger.advance(110)  # 100 s: a holds 12 (over its 8), b waits for 8 with 4 idle
    assert ledger.idle_waiting_seconds == 4 * 10 + 4 * 100
    assert ledger.busy_seconds == 12 * 100
    assert ledger.window_busy_seconds == 12 * 90
    assert ledger.entitled == {"a": 4 * 10 + 8 * 100, "b": 8 * 100}
    assert ledger.served == {"a": 8 * 100, "b": 0}


def test_percentile_and_jain_index() -> None:
    assert percentile([5, 1, 4, 2, 3], 0.5) == 3
    assert percentile(list(range(1, 101)), 0.99) == 99
    assert percentile([], 0.99) == 0
    assert jain_index([1, 1, 1]) == 1
    assert jain_index([1, 0]) == 0.5


def test_scaling_keeps_every_job_fitting_its_own_vc_and_says_when_that_misses_the_load() -> None:
    trace = trace_of(("a", 0, 3600, 16), ("b", 3600, 3600, 1))
    cluster = scale_cluster(trace, 0.9)
    assert cluster.vc_nodes == {"a": 2, "b": 1}
    assert cluster.offered_load == pytest.approx((16 * 3600 + 3600) / (24 * 3600))
    assert (cluster.target, cluster.floored) == (0.9, True)


def test_scaling_reaches_the_load_asked_by_shrinking_the_vcs_above_their_floor() -> None:
    # c's 32-GPU job keeps it 4 nodes, twice its native size. Scaling each VC by the same factor
    # (a, b: 10 nodes each) would reach 85% for 100% asked; a and b shrink further instead.
    trace = replace(
        trace_of(("a", 0, 360_000, 8), ("b", 0, 360_000, 8), ("c", 36_000, 3600, 32)),
        vc_nodes={"a": 8, "b": 8, "c": 2},
    )
    cluster = scale_cluster(trace, 1.0)
    assert cluster.vc_nodes == {"a": 8, "b": 8, "c": 4}
    assert cluster.offered_load == pytest.approx(5_875_200 / (160 * 36_000))
    assert not cluster.floored
    # Any whole number of nodes is reached, shared in proportion above the floors.
    for load in (0.3, 0.5, 0.7, 0.9):
        scaled = scale_cluster(trace, load)
        assert abs(scaled.offered_load - load) <= scaled.offered_load / sum(
            scaled.vc_nodes.values()
        )
        assert scaled.vc_nodes["c"] >= 4
        assert abs(scaled.vc_nodes["a"] - scaled.vc_nodes["b"]) <= 1


def test_periods_cut_the_trace_into_equal_job_counts_each_starting_at_zero() -> None:
    trace = trace_of(("a", 0, 60, 1), ("b", 100, 60, 1), ("a", 200, 60, 1), ("b", 250, 60, 1))
    first, second = trace.periods(2)
    assert [(j.name, j.submitted_seconds) for j in first.jobs] == [
        ("job-00000", 0),
        ("job-00001", 100),
    ]
    assert [(j.name, j.submitted_seconds) for j in second.jobs] == [
        ("job-00002", 0),
        ("job-00003", 50),
    ]
    assert second.start == trace.start + timedelta(seconds=200)
    assert (second.vc_nodes, second.label) == ({"a": 1, "b": 1}, "2017-10-01..2017-10-01")
    assert trace.periods(1) == [trace]
    with pytest.raises(ValueError, match="periods must be between 1 and 4"):
        trace.periods(5)


# -- what if ------------------------------------------------------------------------------------


def test_a_vc_given_more_servers_owns_them_and_its_quota_follows() -> None:
    cluster = scale_cluster(BORROW, None, WhatIf(vc_nodes={"a": 2}))
    assert cluster.vc_nodes == {"a": 2, "b": 1}
    assert (cluster.gpus, cluster.quota_of("a"), cluster.quota_of("b")) == (24, 16, 8)
    assert cluster.offered_load == pytest.approx(BORROW.offered_load(24))
    # a's two jobs now run side by side on its own servers: nothing waits, nothing is reclaimed.
    static = figures_of(run_policy(BORROW, cluster, "static", SETTINGS))
    assert static.overall.queue_avg_s == pytest.approx(0, abs=60)
    assert static.idle_waiting_gpu_hours == 0


def test_a_quota_set_apart_from_the_servers_binds_the_static_split_and_reclaim() -> None:
    # b keeps its server but is guaranteed nothing: static never runs its job (limit 0), and
    # under aistack b only borrows, so a's borrowed job is not reclaimed for it.
    cluster = scale_cluster(BORROW, None, WhatIf(quotas={"b": 0}))
    assert (cluster.quota_of("a"), cluster.quota_of("b")) == (8, 0)
    static = figures_of(run_policy(BORROW, cluster, "static", SETTINGS))
    assert static.per_vc["b"].never_started == 1
    ours = figures_of(run_policy(BORROW, cluster, "aistack", SETTINGS))
    assert ours.overall.preemptions == 0
    assert ours.per_vc["b"].never_started == 0


@pytest.mark.parametrize(
    ("what_if", "message"),
    [
        (WhatIf(vc_nodes={"c": 1}), "no VC 'c' in the trace; choose from a, b"),
        (WhatIf(quotas={"a": -8}), "--quota a=-8: give a count >= 0"),
        (WhatIf(vc_nodes={"a": 0, "b": 0}), "without nodes"),
        (WhatIf(quotas={"a": 16}), "the quotas add up to 24 GPUs, more than the cluster's 16"),
    ],
)
def test_a_what_if_that_cannot_be_is_refused_with_its_reason(what_if: WhatIf, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        scale_cluster(BORROW, None, what_if)


def test_cli_smoke_run_writes_table_json_and_plots(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write_philly(tmp_path)
    out = tmp_path / "out"
    argv = ["sim", "pooling", "--data", str(tmp_path), "--limit-jobs", "5", "--out", str(out)]
    assert main([*argv, "--load", "native", "--check-plans"]) == 0
    table = capsys.readouterr().out
    assert "load native: 16 GPUs" in table
    assert "aistack vs static" in table
    assert (out / "pooling.json").exists()
    assert sorted(p.name for p in out.glob("*.png")) == [
        "native-queue-cdf.png",
        "native-utilisation.png",
        "native-vc-share.png",
    ]
    assert main([*argv, "--policies", "static,nope"]) == 2
    assert "unknown policies ['nope']" in capsys.readouterr().err

    assert main([*argv, "--load", "native", "--vc-nodes", "a=2", "--quota", "b=4"]) == 0
    assert "load native: 24 GPUs" in capsys.readouterr().out
    loads = json.loads((out / "pooling.json").read_text(encoding="utf-8"))["loads"]
    assert (loads[0]["vc_nodes"], loads[0]["quotas"]) == ({"a": 2, "b": 1}, {"a": 16, "b": 4})
    assert main([*argv, "--vc-nodes", "z=2"]) == 2
    assert "no VC 'z' in the trace; choose from a, b" in capsys.readouterr().err
    assert main([*argv, "--quota", "a:4"]) == 2
    assert "give VC=N pairs" in capsys.readouterr().err

    periods = [*argv, "--load", "native", "--policies", "aistack", "--periods", "2"]
    assert main(periods) == 0
    assert "period 2/2: " in capsys.readouterr().out
    assert (out / "period-1" / "pooling.json").exists()
    assert (out / "period-2" / "pooling.json").exists()
    assert main([*periods, "--period", "3"]) == 2
    assert "--period 3: give 1 to 2" in capsys.readouterr().err
