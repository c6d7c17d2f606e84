"""Dashboard benchmarks: server-side render time and weight of each view; skipped unless asked.

Run with `pytest tests/benchmarks/test_dashboard.py --benchmarks -s` (or `scripts/bench`). The
cluster is the core benchmarks' heterogeneous one at 1,000 nodes x 8 GPUs after its fill
(tests/dashboard/cluster.py: about 11,000 workloads of 12,000 pods, nearly 2,000 of them
waiting, with the plan of one cycle), served by the real app (`create_app` with the dashboard)
through Starlette's TestClient, so a figure is a whole request: routing, the viewer's rights,
building the page's model, rendering its template and compressing it.

Each view is timed twice:
- **first**: the first request after a new status (a new cycle), which also indexes the status
  (`ClusterView`, shared with the API, and the dashboard's aggregates, shared by every view);
- **next**: the same request again, what every other page and live update of that cycle pays.
Times are CPU seconds of this process (the app runs in TestClient's thread), best of
`REPEATS`, as in tests/benchmarks/targets.py; the target, 300 ms, is on both. The weight is
the page's body uncompressed and gzip-compressed (the service compresses pages). The usage
views read a SQLite accounting store of `RECORDS` workload attempts over 30 days; the usage
chart, one store query per day, has no target (docs/benchmarks.md says why). Results are printed
and written to `out/benchmarks/dashboard.json`; docs/benchmarks.md ("The dashboard") records
them.
"""

from __future__ import annotations

import functools
import gc
import gzip
import json
import os
import platform
import random
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, replace
from pathlib import Path

import pytest

from scheduler_service.accounting import (
    AccountingStore,
    Admitted,
    Change,
    Ended,
    EndReason,
    RecordKey,
    Submitted,
    open_store,
)
from scheduler_service.api import ApiSettings, ClusterStatus, Services, create_app
from scheduler_service.core import WorkloadState
from scheduler_service.dashboard import DashboardSettings, create_dashboard
from tests.api.support import (
    ADMIN_AUTH,
    ALICE_AUTH,
    FakeActions,
    FakeAuthorizer,
    FakeWebhooks,
    TestClient,
)
from tests.benchmarks.targets import Timing, assert_targets_met, timed
from tests.dashboard.cluster import StatusHolder, cluster_at_scale

OUT = Path(__file__).resolve().parents[2] / "out" / "benchmarks" / "dashboard.json"
NODES = 1000
TARGET_SECONDS = 0.3
REPEATS = 5
RECORDS = 60_000
"""Accounting records of the month the usage views report on (about 2,000 attempts a day)."""


@dataclass(frozen=True)
class View:
    """A page to time, as `viewer` requests it; `target` None: timed, no target."""

    name: str
    path: str
    viewer: str = "admin"
    target: float | None = TARGET_SECONDS


@pytest.fixture(scope="module")
def cluster() -> ClusterStatus:
    return cluster_at_scale(NODES)


@pytest.fixture(scope="module")
def store(
    cluster: ClusterStatus, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[AccountingStore]:
    """A month of `RECORDS` workload attempts of the cluster's teams, finished or running."""
    path = tmp_path_factory.mktemp("accounting") / "accounting.db"
    opened = open_store(f"sqlite:///{path}")
    rng = random.Random(1)
    teams = sorted({pods.namespace for pods in cluster.pods.values()})
    now = time.time()  # the usage page reports on the month before the request
    changes: list[Change] = []
    for i in range(RECORDS):
        team = rng.choice(teams)
        key = RecordKey(team, f"w{i}", now - rng.uniform(0, 30 * 86_400))
        admitted = key.submitted_at + rng.uniform(0, 3_600)
        gpus = rng.choice((0.25, 1.0, 1.0, 2.0, 4.0, 8.0))
        changes += [
            Submitted(key, queue=team, user=f"user-{rng.randrange(200)}", gpus=gpus),
            Admitted(key, at=admitted, gpus=gpus, pool="h100"),
        ]
        if admitted + 3_600 < now:
            end = min(now, admitted + rng.uniform(60, 8 * 3_600))
            changes.append(Ended(key, at=end, reason=EndReason.FINISHED))
        if len(changes) >= 10_000:
            opened.apply(changes)
            changes = []
    opened.apply(changes)
    yield opened
    opened.close()


@pytest.fixture(scope="module")
def client(
    cluster: ClusterStatus, store: AccountingStore
) -> Iterator[tuple[TestClient, StatusHolder]]:
    holder = StatusHolder(cluster)
    # alice may see the workloads of every other team's namespace: a viewer asked per namespace.
    namespaces = sorted({pods.namespace for pods in cluster.pods.values()})
    grants = {("alice", "list", "queues.aistack.io", "*")} | {
        ("alice", verb, "pods", ns) for ns in namespaces[::2] for verb in ("list", "get")
    }

    def dashboard(services: Services) -> object:
        return create_dashboard(DashboardSettings(), services)

    app = create_app(
        ApiSettings(),
        status=holder.status,
        authorizer=FakeAuthorizer(grants=grants),
        webhooks=FakeWebhooks(),
        actions=FakeActions(),
        dashboard=dashboard,  # type: ignore[arg-type]
        accounting=store,
    )
    with TestClient(app) as test_client:
        yield test_client, holder


def views(cluster: ClusterStatus) -> list[View]:
    waiting = next(w for w in cluster.snapshot.workloads if w.state is WorkloadState.PENDING)
    running = next(w for w in cluster.snapshot.workloads if w.pods > 1 and w.allocation)
    (ns_waiting, name_waiting), (ns_running, name_running) = (
        w.name.split("/", 1) for w in (waiting, running)
    )
    pod = cluster.pods[running.name].pods[0]
    return [
        View("overview", "/ui/"),
        View("queues", "/ui/queues"),
        View("nodes (page 1 of 40)", "/ui/nodes"),
        View("nodes (page 40)", "/ui/nodes?page=40"),
        View("workloads (page 1)", "/ui/workloads"),
        View("workloads, pending", "/ui/workloads?state=pending"),
        View("workloads, half the namespaces", "/ui/workloads", viewer="alice"),
        View("workload, waiting", f"/ui/workloads/{ns_waiting}/{name_waiting}"),
        View("workload, running gang", f"/ui/workloads/{ns_running}/{name_running}"),
        View("pod (Argo UI link)", f"/ui/pods/{ns_running}/{pod}"),
        View("usage, 30 days by queue", "/ui/usage?since=30d&by=queue"),
        View("usage, by user, half the namespaces", "/ui/usage?since=30d&by=user", "alice"),
        # 31 reports, one per day: see docs/benchmarks.md ("The dashboard").
        View("usage chart, 30 days", "/ui/usage/chart?since=30d&by=queue", target=None),
    ]


@pytest.mark.benchmark
@pytest.mark.timeout(1800)
def test_dashboard_benchmark(
    cluster: ClusterStatus, client: tuple[TestClient, StatusHolder]
) -> None:
    test_client, holder = client
    headers = {"admin": ADMIN_AUTH, "alice": ALICE_AUTH}
    pods = sum(w.pods for w in cluster.snapshot.workloads)
    print(
        f"\n{len(cluster.snapshot.nodes)} nodes, {len(cluster.snapshot.workloads)} workloads, "
        f"{pods} pods, {len(cluster.plan.pending)} pending"
    )
    results: list[tuple[str, Timing]] = []
    recorded = {}
    for view in views(cluster):
        fetch = functools.partial(_fetch, test_client, view, headers[view.viewer])

        def new_cycle(fetch: Callable[[], int] = fetch) -> int:
            # A new status object, as a cycle publishes: every index is built again.
            holder.publish(replace(holder.current, cycle_at=holder.current.cycle_at + 1))
            return fetch()

        gc.collect()
        _, first = timed(new_cycle, repeats=REPEATS, target_seconds=view.target)
        _, warm = timed(fetch, repeats=REPEATS, target_seconds=view.target)
        raw = fetch()
        compressed = len(
            gzip.compress(test_client.get(view.path, headers=headers[view.viewer]).content)
        )
        print(f"{view.name:<32} first {first}")
        print(f"{'':<32} next  {warm}  {raw:>9,} B, gzip {compressed:>7,} B")
        results += [(f"{view.name} first", first), (f"{view.name} next", warm)]
        recorded[view.name] = {
            "path": view.path,
            "viewer": view.viewer,
            "first_best_cpu_seconds": first.best_seconds,
            "first_best_wall_seconds": first.best_wall_seconds,
            "next_best_cpu_seconds": warm.best_seconds,
            "next_best_wall_seconds": warm.best_wall_seconds,
            "bytes": raw,
            "gzip_bytes": compressed,
        }
    _record(cluster, recorded)
    assert_targets_met(results)


def _fetch(client: TestClient, view: View, headers: dict[str, str]) -> int:
    """Request `view` as its viewer; the size of the page's body (uncompressed)."""
    response = client.get(view.path, headers={**headers, "Accept-Encoding": "gzip"})
    assert response.status_code == 200, (view, response.text[:500])
    return len(response.content)


def _record(cluster: ClusterStatus, views: Mapping[str, object]) -> None:
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(
        json.dumps(
            {
                "nodes": len(cluster.snapshot.nodes),
                "gpus": sum(len(n.gpus) for n in cluster.snapshot.nodes),
                "workloads": len(cluster.snapshot.workloads),
                "pods": sum(w.pods for w in cluster.snapshot.workloads),
                "pending": len(cluster.plan.pending),
                "views": views,
                "target_seconds": TARGET_SECONDS,
                "python": platform.python_version(),
                "machine": f"{platform.machine()}, {os.cpu_count()} cores",
            },
            indent=2,
            sort_keys=True,
        )
        + "\n"
    )
