"""Accounting against the real control plane: what the service records, reports and keeps.

`aistack serve` runs with its accounting store in a SQLite file of its own; a pod runs to
completion, borrowed GPUs are reclaimed, and the usage report (CSV) must add up to the records
behind it, before and after the service restarts.
"""

from __future__ import annotations

import csv
import io
import ssl
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes.client import ApiClient, CoreV1Api

from tests.integration.cluster import GpuNodes, TestCluster, wait_for
from tests.integration.pods import Pod, is_gated, pool_nodes, read
from tests.integration.service import RunningService, make_queue, managed_pod

USER = {"workflows.argoproj.io/creator": "alice-test"}


@pytest.fixture(scope="module")
def service(cluster: TestCluster, admin_client: ApiClient) -> Iterator[RunningService]:
    """The service with its accounting records in a file of this module's (not the default)."""
    store = cluster.workdir / "aistack-accounting" / "accounting.db"
    running = RunningService(
        cluster,
        admin_client,
        name="aistack-accounting",
        config={"accounting": {"url": f"sqlite:///{store.as_posix().lstrip('/')}"}},
    )
    running.start()
    yield running
    running.remove()


def get_text(service: RunningService, path: str) -> tuple[int, str]:
    """GET as the cluster admin; the status and the body as text (a CSV stays a CSV)."""
    request = urllib.request.Request(service.url + path)
    request.add_header("Authorization", f"Bearer {service.cluster.tokens['admin']}")
    context = ssl.create_default_context(cafile=str(service.cluster.ca_path))
    try:
        with urllib.request.urlopen(request, timeout=10, context=context) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def history(service: RunningService, namespace: str, workload: str) -> dict[str, Any]:
    status, body = service.get(
        f"/api/v1/workloads/{namespace}/{workload}/history", service.cluster.tokens["admin"]
    )
    return body if status == 200 else {}


def kinds(found: dict[str, Any], workload: str) -> list[str]:
    return [e["kind"] for e in found.get("events", ()) if e["workload"] == workload]


def running(pod: Pod) -> bool:
    return pod["status"].get("phase") == "Running" and not is_gated(pod)


def expected_gpu_hours(records: list[dict[str, Any]], since: float, until: float) -> float:
    """The report's definition, from the records the history route returns."""
    total = 0.0
    for record in records:
        if record["admitted_at"] is None:
            continue
        end = min(record["ended_at"] if record["ended_at"] is not None else until, until)
        total += record["gpus"] * max(0.0, end - max(record["admitted_at"], since))
    return total / 3600


@pytest.mark.timeout(420)
def test_usage_adds_up_to_the_records_and_survives_a_restart(
    service: RunningService, admin_client: ApiClient, namespace: str, make_gpu_node: GpuNodes
) -> None:
    core = CoreV1Api(admin_client)
    since = time.time() - 60
    pool = pool_nodes(make_gpu_node, 1)
    lender = make_queue(admin_client, {pool: 8})
    borrower = make_queue(admin_client, {pool: 0})

    def create(pod: dict[str, Any]) -> None:
        core.create_namespaced_pod(namespace, pod)  # type: ignore[arg-type]

    # 1. Admitted, and ended on its own.
    create(managed_pod("done", lender, gpus=2, run_for="2s", labels=USER))
    wait_for(
        "the finished pod's record to end",
        lambda: history(service, namespace, "done"),
        lambda h: kinds(h, "done") == ["submitted", "admitted", "finished"],
        timeout=60,
    )
    # 2. Borrowed GPUs, reclaimed by the queue that owns them.
    for name in ("b0", "b1"):
        create(managed_pod(name, borrower, gpus=4, labels=USER))
    wait_for(
        "the borrower to run on all 8 GPUs",
        lambda: [read(core, namespace, n) for n in ("b0", "b1")],
        lambda pods: all(running(p) for p in pods),
    )
    create(managed_pod("owner", lender, gpus=8))
    wait_for("the owner to run", lambda: read(core, namespace, "owner"), running)
    for name in ("b0", "b1"):
        found = wait_for(
            f"{name}'s record to end as reclaimed",
            lambda name=name: history(service, namespace, name),  # type: ignore[misc]
            lambda h, name=name: "evicted" in kinds(h, name),  # type: ignore[misc]
        )
        (evicted,) = [e for e in found["events"] if e["kind"] == "evicted"]
        assert evicted["cause"] == "Reclaimed"
        assert evicted["message"].startswith(f"aistack: reclaimed for {namespace}/owner")
    wait_for(
        "the owner's admission to be recorded",
        lambda: history(service, namespace, "owner"),
        lambda h: kinds(h, "owner") == ["submitted", "admitted"],
    )

    # 3. The report over a period that is over: the same answer every time it is asked. (Times
    # on pods are to the second, and all of the above takes a second or two with kwok.)
    time.sleep(2)
    until = time.time() - 1
    path = f"/api/v1/usage?since={since}&until={until}&by=queue&namespace={namespace}"

    def report() -> list[dict[str, str]]:
        status, text = get_text(service, path + "&format=csv")
        assert status == 200, text
        return list(csv.DictReader(io.StringIO(text)))

    before = report()
    rows, total = before[:-1], before[-1]
    assert total["queue"] == "(total)"
    assert {r["queue"] for r in rows} == {lender, borrower}
    assert float(total["allocated_gpu_hours"]) == pytest.approx(
        sum(float(r["allocated_gpu_hours"]) for r in rows), abs=1e-3
    )
    assert int(total["workloads"]) == 4
    records = [
        record
        for name in ("done", "b0", "b1", "owner")
        for record in history(service, namespace, name)["records"]
        if record["workload"] == name
    ]
    assert len(records) == 4
    assert float(total["allocated_gpu_hours"]) == pytest.approx(
        expected_gpu_hours(records, since, until), abs=1e-3
    )
    by_user = get_text(service, path.replace("by=queue", "by=user") + "&format=csv")[1]
    users = {r["user"]: r["workloads"] for r in csv.DictReader(io.StringIO(by_user))}
    assert users == {"alice-test": "3", "": "1", "(total)": "4"}

    # 4. A restart: the records are still there and nothing is counted twice.
    owner_before = history(service, namespace, "owner")
    service.stop()
    service.start()
    wait_for(
        "the restarted service to serve the owner's history",
        lambda: history(service, namespace, "owner"),
        lambda h: bool(h.get("records")),
    )
    time.sleep(2)  # several cycles of the new process, each diffed against the store
    assert report() == before
    assert history(service, namespace, "owner") == owner_before
    assert kinds(history(service, namespace, "done"), "done") == [
        "submitted",
        "admitted",
        "finished",
    ]
