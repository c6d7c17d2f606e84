"""The dashboard in a real browser, against `aistack serve` on the test cluster with real pods.

Debian's Chromium (`/usr/bin/chromium`, installed by scripts/system-packages) is driven by
Playwright for Python; `playwright install` is never run. The service's certificate is signed by
the test cluster's own CA, which the browser does not know, so contexts ignore HTTPS errors.
Admin browses as an authenticating proxy would send it (the `Authorization` header on every
request, event streams included); alice signs in with the form (the cookie). Screenshots of
each view are left in `out/dashboard/` for a person to look at. The service keeps its accounting
records in a SQLite file of this module's (the usage page and the workload histories read it).
"""

from __future__ import annotations

import contextlib
import csv
import io
import secrets
import ssl
import time
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes.client import ApiClient, CoreV1Api, RbacAuthorizationV1Api
from kubernetes.client.exceptions import ApiException
from playwright.sync_api import Browser, BrowserContext, Page

from tests.browser import LIVE_MS, Console, chromium, screenshot
from tests.integration.cluster import GpuNodes, TestCluster, wait_for
from tests.integration.pods import pool_nodes, read, waiting_message
from tests.integration.service import RunningService, make_queue, managed_pod


@pytest.fixture(scope="module")
def service(cluster: TestCluster, admin_client: ApiClient) -> Iterator[RunningService]:
    """The service, with its accounting records in a file of this module's."""
    store = cluster.workdir / "aistack-dashboard" / "accounting.db"
    running = RunningService(
        cluster,
        admin_client,
        name="aistack-dashboard",
        config={"accounting": {"url": f"sqlite:///{store.as_posix().lstrip('/')}"}},
    )
    running.start()
    yield running
    running.remove()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with chromium() as launched:
        yield launched


@pytest.fixture
def as_admin(browser: Browser, service: RunningService) -> Iterator[tuple[Page, Console]]:
    """A page whose every request carries admin's token, as an authenticating proxy sends it."""
    context = browser.new_context(
        ignore_https_errors=True,
        viewport={"width": 1400, "height": 900},
        extra_http_headers={"Authorization": f"Bearer {service.cluster.tokens['admin']}"},
    )
    page = context.new_page()
    console = Console(page)
    yield page, console
    context.close()


@contextlib.contextmanager
def signed_in(browser: Browser, service: RunningService, user: str) -> Iterator[Page]:
    """A page of a fresh browser where `user` signed in with the form (the cookie)."""
    context: BrowserContext = browser.new_context(ignore_https_errors=True)
    try:
        page = context.new_page()
        page.goto(f"{service.url}/ui/workloads")
        assert "/ui/login" in page.url
        page.fill("textarea[name=token]", service.cluster.tokens[user])
        page.click("form.login button[type=submit]")
        page.wait_for_url(f"{service.url}/ui/workloads")
        cookie = next(c for c in context.cookies() if c["name"] == "aistack_token")
        assert (cookie["httpOnly"], cookie["secure"], cookie["sameSite"]) == (True, True, "Strict")
        yield page
    finally:
        context.close()


def go_live(page: Page, url: str) -> None:
    """Open `url` and wait until its event stream is open (the badge says `live`)."""
    response = page.goto(url)
    assert response is not None
    assert response.status == 200, f"{url}: {response.status} {page.inner_text('main')[:300]}"
    page.wait_for_selector("#live-state.on", timeout=LIVE_MS)


def field(page: Page, row: str, name: str) -> str:
    return page.inner_text(f"{row} [data-field={name}]").strip()


def create(core: CoreV1Api, namespace: str, pod: dict[str, Any]) -> None:
    core.create_namespaced_pod(namespace, pod)  # type: ignore[arg-type]


def running(core: CoreV1Api, namespace: str, name: str) -> dict[str, Any]:
    return wait_for(
        f"pod {name} to run",
        lambda: read(core, namespace, name),
        lambda pod: pod["status"].get("phase") == "Running",
    )


def test_every_view_loads_without_console_errors_and_shows_the_apis_numbers(  # noqa: PLR0917
    core: CoreV1Api,
    namespace: str,
    make_gpu_node: GpuNodes,
    admin_client: ApiClient,
    service: RunningService,
    as_admin: tuple[Page, Console],
) -> None:
    page, console = as_admin
    pool = pool_nodes(make_gpu_node, 1)
    queue = make_queue(admin_client, {pool: 2})
    create(core, namespace, managed_pod("train", queue, gpus=4))  # 2 borrowed beyond quota
    create(core, namespace, managed_pod("infer", queue, slice_=(20000, 30)))
    for name in ("train", "infer"):
        running(core, namespace, name)
    token = service.cluster.tokens["admin"]
    standing = wait_for(
        "the queue's standing to count both pods",
        lambda: service.get(f"/api/v1/queues/{queue}", token),
        lambda r: r[0] == 200 and r[1]["pools"][0]["allocated_gpus"] > 4,
    )[1]["pools"][0]
    views = {
        "overview": "/ui/",
        "queues": f"/ui/queues?pool={pool}",
        "nodes": f"/ui/nodes?pool={pool}",
        "workloads": f"/ui/workloads?namespace={namespace}",
        "workload": f"/ui/workloads/{namespace}/train",
        "pod": f"/ui/pods/{namespace}/infer",
    }
    for name, path in views.items():
        go_live(page, service.url + path)
        screenshot(page, f"integration-{name}")
    assert console.errors == []

    go_live(page, f"{service.url}/ui/queues?pool={pool}")
    row = f'tr[data-queue="{queue}"][data-pool="{pool}"]'
    assert float(field(page, row, "quota")) == standing["quota_gpus"]
    assert float(field(page, row, "allocated")) == round(standing["allocated_gpus"], 3)
    assert float(field(page, row, "borrowed")) == round(standing["allocated_gpus"] - 2, 3)
    go_live(page, f"{service.url}/ui/nodes?pool={pool}")
    node = service.get(f"/api/v1/nodes/{pool}-g0", token)[1]
    assert (
        int(page.inner_text(f'[data-node="{pool}-g0"] [data-field=free_gpus]')) == node["free_gpus"]
    )
    go_live(page, f"{service.url}/ui/workloads?namespace={namespace}")
    listed = service.get(f"/api/v1/workloads?namespace={namespace}", token)[1]
    shown = page.eval_on_selector_all(
        "tr[data-workload]", "rows => rows.map(r => [r.dataset.workload, r.dataset.state])"
    )
    assert shown == [[w["name"], w["state"]] for w in listed]


def test_a_slice_admitted_by_the_service_appears_on_the_gpu_map_without_a_reload(  # noqa: PLR0917
    core: CoreV1Api,
    namespace: str,
    make_gpu_node: GpuNodes,
    admin_client: ApiClient,
    service: RunningService,
    as_admin: tuple[Page, Console],
) -> None:
    page, console = as_admin
    pool = pool_nodes(make_gpu_node, 1, gpus=1)
    queue = make_queue(admin_client, {pool: 1})
    go_live(page, f"{service.url}/ui/nodes?pool={pool}")
    page.evaluate("window.aistackNotReloaded = true")
    assert page.query_selector('li.holder[data-pod="slice"]') is None

    create(core, namespace, managed_pod("slice", queue, slice_=(20000, 25)))

    holder = page.wait_for_selector('li.holder[data-pod="slice"]', timeout=LIVE_MS)
    assert holder is not None
    assert "19.5 GiB, 25 %" in holder.inner_text()
    assert page.evaluate("window.aistackNotReloaded") is True
    compute = page.query_selector_all(f'[data-node="{pool}-g0"] .gpu-bar:nth-of-type(3) rect')
    assert len(compute) >= 2  # the bar's background and the slice's part
    screenshot(page, "integration-nodes-live")
    assert console.errors == []


def test_a_waiting_pods_page_says_why_it_waits_with_the_apis_words(  # noqa: PLR0917
    core: CoreV1Api,
    namespace: str,
    make_gpu_node: GpuNodes,
    admin_client: ApiClient,
    service: RunningService,
    as_admin: tuple[Page, Console],
) -> None:
    page, _ = as_admin
    pool = pool_nodes(make_gpu_node, 1)
    queue = make_queue(admin_client, {pool: (1, 1)})
    create(core, namespace, managed_pod("first", queue, gpus=1))
    running(core, namespace, "first")
    create(core, namespace, managed_pod("second", queue, gpus=1))
    wait_for(
        "the second pod to be told why it waits",
        lambda: read(core, namespace, "second"),
        lambda pod: bool(waiting_message(pod)),
    )
    token = service.cluster.tokens["admin"]
    explained = service.get(f"/api/v1/explain/{namespace}/second", token)[1]

    go_live(page, f"{service.url}/ui/pods/{namespace}/second")

    assert page.inner_text("[data-field=summary]").strip() == explained["summary"]
    assert page.inner_text("[data-field=reason-code]").strip() == "QueueAtLimit"
    assert page.inner_text('[data-fact="Place in line"]').startswith("1st of 1 waiting")
    screenshot(page, "integration-waiting")


@pytest.fixture
def other_namespace(admin_client: ApiClient) -> Iterator[str]:
    """A second namespace for the test, whose pods are force-deleted after it."""
    core = CoreV1Api(admin_client)
    name = f"dashboard-other-{secrets.token_hex(3)}"
    core.create_namespace({"metadata": {"name": name}})  # type: ignore[arg-type]
    yield name
    core.delete_collection_namespaced_pod(name, grace_period_seconds=0)
    core.delete_namespace(name)


@pytest.fixture
def alice_reads(admin_client: ApiClient, namespace: str) -> Iterator[None]:
    """Alice may list and get pods in the test's namespace, and see the queues; nothing else.

    The queues through the chart's own viewer role, as a namespace's editors get it.
    """
    rbac = RbacAuthorizationV1Api(admin_client)
    subject = [{"kind": "User", "name": "alice", "apiGroup": "rbac.authorization.k8s.io"}]
    rbac.create_namespaced_role(
        namespace,
        {  # type: ignore[arg-type]
            "metadata": {"name": "pod-reader"},
            "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list"]}],
        },
    )
    rbac.create_namespaced_role_binding(
        namespace,
        {  # type: ignore[arg-type]
            "metadata": {"name": "alice-reads-pods"},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "Role",
                "name": "pod-reader",
            },
            "subjects": subject,
        },
    )
    binding = f"alice-views-queues-{secrets.token_hex(3)}"
    rbac.create_cluster_role_binding(
        {  # type: ignore[arg-type]
            "metadata": {"name": binding},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": "aistack-queue-viewer",
            },
            "subjects": subject,
        }
    )
    yield
    with contextlib.suppress(ApiException):
        rbac.delete_cluster_role_binding(binding)


def first_update(service: RunningService, path: str, token: str) -> str:
    """The first `update` event of a page's stream (no `at`: the current cycle comes at once)."""
    request = urllib.request.Request(f"{service.url}{path}")
    request.add_header("Authorization", f"Bearer {token}")
    context = ssl.create_default_context(cafile=str(service.cluster.ca_path))
    lines: list[str] = []
    with urllib.request.urlopen(request, timeout=15, context=context) as response:
        assert response.headers["Content-Type"].startswith("text/event-stream")
        for raw in response:
            line = raw.decode().rstrip("\n")
            if lines and line == "" and lines[0] == "event: update":
                break
            if line.startswith("event: "):
                lines = [line]
            elif lines:
                lines.append(line)
    return "\n".join(line.removeprefix("data: ") for line in lines[1:])


def test_a_viewer_sees_only_the_workloads_of_namespaces_they_may_read(  # noqa: PLR0917
    core: CoreV1Api,
    namespace: str,
    other_namespace: str,
    make_gpu_node: GpuNodes,
    admin_client: ApiClient,
    service: RunningService,
    browser: Browser,
    alice_reads: None,
) -> None:
    pool = pool_nodes(make_gpu_node, 1)
    queue = make_queue(admin_client, {pool: 8})
    create(core, namespace, managed_pod("mine", queue, gpus=1))
    create(core, other_namespace, managed_pod("theirs", queue, gpus=1))
    running(core, namespace, "mine")
    running(core, other_namespace, "theirs")

    with signed_in(browser, service, "alice") as page:
        go_live(page, f"{service.url}/ui/workloads")
        shown = page.eval_on_selector_all(
            "tr[data-workload]", "rows => rows.map(r => r.dataset.workload)"
        )
        assert f"{namespace}/mine" in shown
        assert not [name for name in shown if name.startswith(f"{other_namespace}/")]
        go_live(page, f"{service.url}/ui/queues?pool={pool}")  # queues: every one, in aggregate
        assert page.inner_text(f'tr[data-queue="{queue}"] [data-field=allocated]').strip() == "2"
        refused = page.goto(f"{service.url}/ui/workloads?namespace={other_namespace}")
        assert refused is not None
        assert refused.status == 403
        assert f"alice may not list pods in namespace {other_namespace}" in page.inner_text("main")
        refused = page.goto(f"{service.url}/ui/pods/{other_namespace}/theirs")
        assert refused is not None
        assert refused.status == 403

    token = service.cluster.tokens["alice"]
    region = first_update(service, "/ui/workloads?live=1", token)
    assert f"{namespace}/mine" in region
    assert other_namespace not in region
    nodes = first_update(service, f"/ui/nodes?pool={pool}&live=1", token)
    assert "alice may not list nodes" in nodes
    assert "theirs" not in nodes


def recorded_gpu_hours(service: RunningService, namespace: str, names: list[str]) -> float:
    """GPU-hours of the workloads' records, computed from the history route's records."""
    token = service.cluster.tokens["admin"]
    total = 0.0
    for name in names:
        status, found = service.get(f"/api/v1/workloads/{namespace}/{name}/history", token)
        assert status == 200, found
        for record in found["records"]:
            if record["workload"] == name and record["admitted_at"] is not None:
                assert record["ended_at"] is not None, record
                total += record["gpus"] * (record["ended_at"] - record["admitted_at"])
    return total / 3600


def test_the_usage_csv_adds_up_to_the_recorded_allocations(  # noqa: PLR0917
    core: CoreV1Api,
    namespace: str,
    make_gpu_node: GpuNodes,
    admin_client: ApiClient,
    service: RunningService,
    as_admin: tuple[Page, Console],
) -> None:
    page, console = as_admin
    since = int(time.time()) - 60
    pool = pool_nodes(make_gpu_node, 1)
    queue = make_queue(admin_client, {pool: 8})
    create(core, namespace, managed_pod("whole", queue, gpus=2, run_for="2s"))
    create(core, namespace, managed_pod("slice", queue, slice_=(20000, 25), run_for="2s"))
    token = service.cluster.tokens["admin"]
    for name in ("whole", "slice"):
        wait_for(
            f"{name}'s record to end",
            lambda name=name: service.get(f"/api/v1/workloads/{namespace}/{name}/history", token),  # type: ignore[misc]
            lambda r: r[0] == 200 and [e["kind"] for e in r[1]["events"]][-1] == "finished",
            timeout=60,
        )
    until = int(time.time()) + 1
    query = f"since={since}&until={until}&by=namespace&namespace={namespace}"

    go_to = page.goto(f"{service.url}/ui/usage?{query}")
    assert go_to is not None
    assert go_to.status == 200
    page.wait_for_selector("svg.chart", timeout=LIVE_MS)
    screenshot(page, "integration-usage")
    shown = float(page.inner_text(f'tr[data-key="{namespace}"] [data-field=allocated]'))
    # The page's own link, fetched with the browser context's credentials (a download would
    # leave the context's headers behind).
    link = page.get_attribute("a.csv", "href")
    assert link is not None
    fetched = page.request.get(f"{service.url}{link}")
    assert fetched.status == 200
    assert fetched.headers["content-type"] == "text/csv; charset=utf-8"
    rows = list(csv.DictReader(io.StringIO(fetched.text())))

    recorded = recorded_gpu_hours(service, namespace, ["whole", "slice"])
    assert [r["namespace"] for r in rows] == [namespace, "(total)"]
    assert float(rows[0]["allocated_gpu_hours"]) == pytest.approx(recorded, abs=1e-4)
    assert float(rows[-1]["allocated_gpu_hours"]) == pytest.approx(recorded, abs=1e-4)
    assert rows[0]["workloads"] == "2"
    assert shown == pytest.approx(recorded, abs=0.005)
    assert console.errors == []
