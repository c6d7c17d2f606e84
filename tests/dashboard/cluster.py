"""Cluster states for the dashboard's tests and benchmark: a publisher, and a cluster at scale.

`StatusHolder` plays the driver: it hands the app the current `ClusterStatus` and publishes a new
one when a test says so (as a cycle would). `cluster_at_scale` is the benchmarks' heterogeneous
cluster (tests/benchmarks/clusters.py) after its fill, with the pending work of one more
submission round, the plan of one cycle on it, and pods named as the cluster driver names them.
"""

from __future__ import annotations

import zlib
from dataclasses import replace

from scheduler_service.api import ClusterStatus, WorkloadPods
from scheduler_service.core import Workload, schedule
from tests.benchmarks.clusters import full_mixed_cluster, make_mixed_pending

__all__ = ["StatusHolder", "cluster_at_scale", "pods_of"]


class StatusHolder:
    """The driver's latest status, replaced as a whole by `publish`."""

    def __init__(self, status: ClusterStatus) -> None:
        self.current = status

    def __repr__(self) -> str:
        return f"<StatusHolder cycle_at={self.current.cycle_at}>"

    def status(self) -> ClusterStatus:
        return self.current

    def publish(self, status: ClusterStatus) -> None:
        self.current = status


def pods_of(workload: Workload, namespace: str) -> WorkloadPods:
    """The pods the cluster driver would report: `<name>-<i>` for a gang, the name for a step."""
    short = workload.name.removeprefix(f"{namespace}/")
    names = (short,) if workload.pods == 1 else tuple(f"{short}-{i}" for i in range(workload.pods))
    workflow = f"wf-{zlib.crc32(short.encode()) % 97}"
    return WorkloadPods(namespace=namespace, pods=names, workflow=workflow)


def cluster_at_scale(nodes: int, *, now: float = 1_000.0, seed: int = 1) -> ClusterStatus:
    """The heterogeneous benchmark cluster of `nodes` nodes, full, with work waiting.

    Each team is a namespace (its workloads are named `<team>/<name>`); the status carries the
    plan of one cycle at `now` (fair shares, every pending workload's reason).
    """
    full, left = full_mixed_cluster(nodes, seed=seed)
    more = make_mixed_pending(max(1, nodes // 10), seed=seed + 1)
    waiting = [
        replace(w, name=f"later-{w.name}", submitted_at=now - 60 + i * 0.001)
        for i, w in enumerate(more)
    ]
    workloads = []
    for workload in (*full.workloads, *left, *waiting):
        namespace = workload.queue
        workloads.append(replace(workload, name=f"{namespace}/{workload.name}"))
    snapshot = replace(full, workloads=tuple(workloads))
    pods = {w.name: pods_of(w, w.queue) for w in snapshot.workloads}
    plan = schedule(snapshot, now)
    return ClusterStatus(snapshot=snapshot, plan=plan, pods=pods, cycle_at=now, leader=True)
