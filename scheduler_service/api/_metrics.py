"""Prometheus metrics: gauges from the latest `ClusterStatus`, counters from the driver.

Gauges are computed at scrape time; counters and histograms are updated by the driver as it
works, through `Metrics`' methods. `Metrics` owns its `CollectorRegistry` (never the
process-global one), so two services in one test process do not share series. Every name
starts with `aistack_` and ends with its unit.
"""

from __future__ import annotations

from collections import Counter as Tally
from collections.abc import Callable, Iterator

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily, Metric

from scheduler_service.api._contract import ClusterStatus
from scheduler_service.core import MILLI_GPU, WorkloadState

__all__ = ["Metrics"]

_CYCLE_BUCKETS_SECONDS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class _StatusCollector:
    """The gauges derived from the latest status, computed when Prometheus scrapes."""

    def __init__(self, status: Callable[[], ClusterStatus | None]) -> None:
        self._status = status

    def collect(self) -> Iterator[Metric]:
        status = self._status()
        leader = GaugeMetricFamily(
            "aistack_leader", "1 if this replica is the leader that acts on the cluster, else 0."
        )
        leader.add_metric([], 1.0 if status is not None and status.leader else 0.0)
        yield leader
        if status is None:
            return
        cycle = GaugeMetricFamily(
            "aistack_last_cycle_timestamp_seconds", "When the last cycle ran, Unix seconds."
        )
        cycle.add_metric([], status.cycle_at)
        yield cycle
        yield from self._queues(status)
        yield from self._pools(status)

    @staticmethod
    def _queues(status: ClusterStatus) -> Iterator[Metric]:
        labels = ["queue", "pool"]
        quota = GaugeMetricFamily(
            "aistack_queue_quota_gpus", "Guaranteed GPUs of the queue in the pool.", labels=labels
        )
        limit = GaugeMetricFamily(
            "aistack_queue_limit_gpus",
            "Most GPUs the queue may hold in the pool (absent: no limit).",
            labels=labels,
        )
        share = GaugeMetricFamily(
            "aistack_queue_fair_share_gpus",
            "The queue's fair share in the pool after the last cycle.",
            labels=labels,
        )
        allocated = GaugeMetricFamily(
            "aistack_queue_allocated_gpus",
            "GPUs the queue's running work holds in the pool.",
            labels=labels,
        )
        demand = GaugeMetricFamily(
            "aistack_queue_demand_gpus",
            "GPUs the queue's running and pending work asks for in the pool.",
            labels=labels,
        )
        for entry in status.plan.shares:
            key = [entry.queue, entry.pool]
            quota.add_metric(key, entry.quota_milli / MILLI_GPU)
            if entry.limit_milli is not None:
                limit.add_metric(key, entry.limit_milli / MILLI_GPU)
            share.add_metric(key, entry.fair_share_milli / MILLI_GPU)
            allocated.add_metric(key, entry.allocated_milli / MILLI_GPU)
            demand.add_metric(key, entry.demand_milli / MILLI_GPU)
        yield from (quota, limit, share, allocated, demand)

        workloads = GaugeMetricFamily(
            "aistack_queue_workloads",
            "Workloads submitted to the queue, by state.",
            labels=["queue", "state"],
        )
        counts = Tally((w.queue, w.state) for w in status.snapshot.workloads)
        queues = {q.name for q in status.snapshot.queues} | {q for q, _ in counts}
        for queue in sorted(queues):
            for state in WorkloadState:
                workloads.add_metric([queue, state.value], counts[queue, state])
        yield workloads

    @staticmethod
    def _pools(status: ClusterStatus) -> Iterator[Metric]:
        snapshot = status.snapshot
        nodes = GaugeMetricFamily(
            "aistack_nodes", "Nodes in the pool, by readiness.", labels=["pool", "ready"]
        )
        gpus = GaugeMetricFamily("aistack_pool_gpus", "GPUs in the pool.", labels=["pool"])
        allocated = GaugeMetricFamily(
            "aistack_pool_allocated_gpus",
            "GPUs held by running and evicting work in the pool (slices count as the fraction "
            "they are charged).",
            labels=["pool"],
        )
        node_counts = Tally((n.pool, n.ready) for n in snapshot.nodes)
        gpu_counts = Tally({n.pool: 0 for n in snapshot.nodes})
        for node in snapshot.nodes:
            gpu_counts[node.pool] += len(node.gpus)
        pool_of = {n.name: n.pool for n in snapshot.nodes}
        memory_of = {g.uuid: g.memory_mib for n in snapshot.nodes for g in n.gpus}
        held = Tally(dict.fromkeys(gpu_counts, 0))
        for workload in snapshot.workloads:
            for pod in workload.allocation or ():
                if workload.request.is_slice:
                    milli = sum(workload.request.milli_gpus(memory_of[g]) for g in pod.gpus)
                else:
                    milli = len(pod.gpus) * MILLI_GPU
                held[pool_of[pod.node]] += milli
        for pool in sorted(gpu_counts):
            for ready in (True, False):
                nodes.add_metric([pool, str(ready).lower()], node_counts[pool, ready])
            gpus.add_metric([pool], gpu_counts[pool])
            allocated.add_metric([pool], held[pool] / MILLI_GPU)
        yield from (nodes, gpus, allocated)


class Metrics:
    """The service's metrics, in a registry of their own.

    Gauges come from `status()` (the driver's latest `ClusterStatus`, or None before its first
    cycle) at every scrape. The methods below are the counters and histograms: the driver calls
    them as it works; `webhook_decision` is called by the API's webhook routes when `create_app`
    is given these metrics (the `Webhooks` implementation should not count again).
    """

    def __init__(self, status: Callable[[], ClusterStatus | None]) -> None:
        """Serve gauges from `status()`; counters start at zero."""
        self.registry = CollectorRegistry()
        self.registry.register(_StatusCollector(status))
        # The service's own CPU time, memory and open files (process_*), as operators expect
        # from any exporter; the scale benchmark reads them too.
        ProcessCollector(registry=self.registry)
        self._cycle_seconds = Histogram(
            "aistack_cycle_duration_seconds",
            "Time one scheduling cycle took, from snapshot to plan carried out.",
            buckets=_CYCLE_BUCKETS_SECONDS,
            registry=self.registry,
        )
        self._cycle_pending = Gauge(
            "aistack_cycle_pending_workloads",
            "Workloads left pending by the last cycle.",
            registry=self.registry,
        )
        self._admitted_workloads = Counter(
            "aistack_admitted_workloads",
            "Workloads admitted and placed, by queue.",
            ["queue"],
            registry=self.registry,
        )
        self._admitted_pods = Counter(
            "aistack_admitted_pods",
            "Pods admitted and placed, by queue.",
            ["queue"],
            registry=self.registry,
        )
        self._evicted = Counter(
            "aistack_evicted_workloads",
            "Workloads the scheduler stopped, by queue and cause (Reclaimed, Preempted, "
            "GangMemberLost, GangIncomplete, DeadlineExceeded).",
            ["queue", "cause"],
            registry=self.registry,
        )
        self._patch_failures = Counter(
            "aistack_patch_failures",
            "Failed writes to the API server, by what was being written.",
            ["kind"],
            registry=self.registry,
        )
        self._webhook_decisions = Counter(
            "aistack_webhook_decisions",
            "Admission webhook answers, by hook and whether the request was allowed.",
            ["hook", "allowed"],
            registry=self.registry,
        )

    def cycle_finished(self, seconds: float, pending: int) -> None:
        """One cycle took `seconds` and left `pending` workloads waiting."""
        self._cycle_seconds.observe(seconds)
        self._cycle_pending.set(pending)

    def admitted(self, queue: str, pods: int) -> None:
        """A workload of `pods` pods in `queue` was admitted and its pods released."""
        self._admitted_workloads.labels(queue=queue).inc()
        self._admitted_pods.labels(queue=queue).inc(pods)

    def evicted(self, queue: str, cause: str) -> None:
        """A workload of `queue` was stopped for `cause` (`PodEviction.cause` in the driver)."""
        self._evicted.labels(queue=queue, cause=cause).inc()

    def patch_failed(self, kind: str) -> None:
        """A write of `kind` (e.g. "bind", "ungate", "evict", "condition") failed."""
        self._patch_failures.labels(kind=kind).inc()

    def webhook_decision(self, hook: str, allowed: bool) -> None:
        """The `hook` webhook answered a request, allowing it or not."""
        self._webhook_decisions.labels(hook=hook, allowed=str(allowed).lower()).inc()

    def exposition(self) -> bytes:
        """Every series in the Prometheus text format."""
        return generate_latest(self.registry)
