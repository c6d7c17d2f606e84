from __future__ import annotations

from dataclasses import replace

import pytest
from prometheus_client.parser import text_string_to_metric_families

from scheduler_service.api import ClusterStatus, Metrics, create_probe_app
from tests.api.support import NOW, TestClient


def _samples(metrics: Metrics) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of the exposition, by name and labels, parsed as Prometheus would."""
    text = metrics.exposition().decode()
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def _value(metrics: Metrics, name: str, **labels: str) -> float:
    return _samples(metrics)[name, frozenset(labels.items())]


def test_queue_gauges_come_from_the_plan_in_gpus(metrics: Metrics) -> None:
    assert _value(metrics, "aistack_queue_quota_gpus", queue="team-b", pool="h100") == 1.0
    assert _value(metrics, "aistack_queue_limit_gpus", queue="team-b", pool="h100") == 3.0
    assert _value(metrics, "aistack_queue_fair_share_gpus", queue="team-b", pool="h100") == 1.5
    assert _value(metrics, "aistack_queue_allocated_gpus", queue="team-a", pool="h100") == 2.0
    # team-a's 2 running + 1 pending, and team-b's 6.5: a parent's demand is its subtree's.
    assert _value(metrics, "aistack_queue_demand_gpus", queue="org", pool="h100") == 9.5
    # No limit, no series.
    assert ("aistack_queue_limit_gpus", frozenset({("queue", "org"), ("pool", "h100")})) not in (
        _samples(metrics)
    )


def test_workloads_by_queue_and_state(metrics: Metrics) -> None:
    assert _value(metrics, "aistack_queue_workloads", queue="team-b", state="pending") == 2
    assert _value(metrics, "aistack_queue_workloads", queue="team-b", state="evicting") == 1
    assert _value(metrics, "aistack_queue_workloads", queue="org", state="running") == 0
    # A workload naming a queue that does not exist is still counted, under that name.
    assert _value(metrics, "aistack_queue_workloads", queue="nowhere", state="pending") == 1


def test_nodes_and_gpus_by_pool(metrics: Metrics) -> None:
    assert _value(metrics, "aistack_nodes", pool="h100", ready="true") == 1
    assert _value(metrics, "aistack_nodes", pool="h100", ready="false") == 1
    assert _value(metrics, "aistack_pool_gpus", pool="h100") == 6
    assert _value(metrics, "aistack_pool_gpus", pool="a100") == 2
    # The gang's 2 GPUs, and both slices (still held while evicting): 0.3 + 0.2.
    assert _value(metrics, "aistack_pool_allocated_gpus", pool="h100") == pytest.approx(2.5)
    assert _value(metrics, "aistack_pool_allocated_gpus", pool="a100") == 0


def test_leader_and_cycle_time(metrics: Metrics) -> None:
    assert _value(metrics, "aistack_leader") == 1
    assert _value(metrics, "aistack_last_cycle_timestamp_seconds") == NOW


def test_gauges_follow_the_latest_status(cluster_status: ClusterStatus) -> None:
    current = [cluster_status]
    metrics = Metrics(lambda: current[0])

    current[0] = replace(cluster_status, leader=False)

    assert _value(metrics, "aistack_leader") == 0


def test_before_the_first_cycle_only_the_leader_gauge_and_counters() -> None:
    metrics = Metrics(lambda: None)

    names = {name for name, _ in _samples(metrics)}

    assert _value(metrics, "aistack_leader") == 0
    assert not any(name.startswith("aistack_queue_") for name in names)


def test_driver_counters_and_histogram(metrics: Metrics) -> None:
    metrics.cycle_finished(0.02, pending=3)
    metrics.cycle_finished(0.3, pending=1)
    metrics.admitted("team-a", pods=4)
    metrics.admitted("team-a", pods=1)
    metrics.evicted("team-b", "Reclaimed")
    metrics.patch_failed("ungate")

    assert _value(metrics, "aistack_cycle_duration_seconds_count") == 2
    assert _value(metrics, "aistack_cycle_duration_seconds_sum") == pytest.approx(0.32)
    assert _value(metrics, "aistack_cycle_duration_seconds_bucket", le="0.025") == 1
    assert _value(metrics, "aistack_cycle_pending_workloads") == 1
    assert _value(metrics, "aistack_admitted_workloads_total", queue="team-a") == 2
    assert _value(metrics, "aistack_admitted_pods_total", queue="team-a") == 5
    assert (
        _value(metrics, "aistack_evicted_workloads_total", queue="team-b", cause="Reclaimed") == 1
    )
    assert _value(metrics, "aistack_patch_failures_total", kind="ungate") == 1


def test_each_metrics_has_its_own_registry(cluster_status: ClusterStatus) -> None:
    first, second = Metrics(lambda: cluster_status), Metrics(lambda: cluster_status)

    first.patch_failed("bind")

    assert _value(first, "aistack_patch_failures_total", kind="bind") == 1
    assert 'aistack_patch_failures_total{kind="bind"}' not in second.exposition().decode()


def test_probe_app_serves_metrics_in_the_prometheus_text_format(metrics: Metrics) -> None:
    client = TestClient(create_probe_app(unready=str, metrics=metrics))

    response = client.get("/metrics")

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=")
    assert 'aistack_queue_quota_gpus{pool="h100",queue="team-a"} 2.0' in response.text


def test_probes_say_alive_and_ready(metrics: Metrics) -> None:
    why = ["the watch of pods has failed for over 30 s"]
    client = TestClient(create_probe_app(unready=lambda: why[0], metrics=metrics))

    assert client.get("/healthz").json() == {"status": "ok"}
    not_ready = client.get("/readyz")
    assert not_ready.status_code == 503
    assert not_ready.json()["error"]["message"].startswith(
        "not ready: the watch of pods has failed for over 30 s; wait"
    )
    why[0] = ""
    assert client.get("/readyz").status_code == 200
    assert client.get("/openapi.json").status_code == 404


def test_the_service_process_reports_its_cpu_and_memory(metrics: Metrics) -> None:
    assert _value(metrics, "process_cpu_seconds_total") > 0
    assert _value(metrics, "process_resident_memory_bytes") > 1024 * 1024
