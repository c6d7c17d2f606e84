"""Fixtures for tests against a real control plane (see cluster.py and docs/testing.md).

Session-wide, started by the first test that asks (directly or through another fixture):
    cluster          the `TestCluster`: etcd, kube-apiserver, kube-scheduler, kwok
    kubeconfig_path  an admin kubeconfig file, for Go subprocesses
    admin_client     an admin `ApiClient` shared by the session
    argo             the Argo workflow-controller (`ArgoController`), CRDs installed
Per test:
    make_api_client  `make_api_client(user="admin") -> ApiClient` (alice, bob, carol too)
    namespace        a new namespace's name, never reused; its pods are force-deleted after
    make_gpu_node    `GpuNodes`: creates kwok GPU nodes with per-test names, deletes them after
Per module:
    service          `aistack serve` (`RunningService`) with the chart's webhooks and RBAC
Per test:
    core             an admin CoreV1Api, with the module's service started (a restart test may
                     have left it stopped)

Every test under tests/integration is marked `integration` and gets a 300 s timeout unless it
sets its own: the first test also pays for starting the cluster (and Argo). A missing binary is
an error, never a skip: run scripts/build-test-binaries. With AISTACK_KEEP_TEST_CLUSTER=1 the
cluster's directory (logs, certificates, kubeconfig) is kept and its path printed at the end.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
from collections.abc import Callable, Generator, Iterator
from pathlib import Path

import pytest
from kubernetes.client import ApiClient, CoreV1Api, CustomObjectsApi, V1Namespace, V1ObjectMeta
from kubernetes.client.exceptions import ApiException

from tests.integration.cluster import ADMIN, ArgoController, GpuNodes, TestCluster
from tests.integration.service import RunningService

_INTEGRATION_DIR = Path(__file__).resolve().parent
_DEFAULT_TIMEOUT_SECONDS = 300
_KEEP_ENV = "AISTACK_KEEP_TEST_CLUSTER"
_KEPT_WORKDIR = pytest.StashKey[Path]()


@pytest.hookimpl(tryfirst=True)  # before `-m` deselects by marker
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every integration test `integration`; give it a timeout that covers cluster start."""
    for item in items:
        if _INTEGRATION_DIR not in Path(item.path).parents:
            continue
        item.add_marker(pytest.mark.integration)
        if item.get_closest_marker("timeout") is None:
            item.add_marker(pytest.mark.timeout(_DEFAULT_TIMEOUT_SECONDS))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """On a failure, attach the tails of the cluster's process logs to the report."""
    report = yield
    cluster = getattr(item, "funcargs", {}).get("cluster")
    if report.failed and isinstance(cluster, TestCluster):
        kept = "kept" if cluster.keep_workdir else f"deleted at session end unless {_KEEP_ENV}=1"
        lines = [f"cluster directory: {cluster.workdir} ({kept})"]
        for process in cluster.processes.values():
            lines.append(f"--- {process.name}: {process.log_path} (last 15 lines)")
            lines.append(process.log_tail(15))
        report.sections.append(("test cluster logs", "\n".join(lines)))
    return report


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Say where a kept cluster's files are (AISTACK_KEEP_TEST_CLUSTER=1)."""
    kept = terminalreporter.config.stash.get(_KEPT_WORKDIR, None)
    if kept is not None:
        terminalreporter.write_line(f"test cluster files kept in {kept} (logs in {kept}/logs)")


@pytest.fixture(scope="session")
def cluster(pytestconfig: pytest.Config) -> Iterator[TestCluster]:
    keep = os.environ.get(_KEEP_ENV) == "1"
    with TestCluster(keep_workdir=keep) as started:
        if keep:
            pytestconfig.stash[_KEPT_WORKDIR] = started.workdir
        yield started


@pytest.fixture(scope="session")
def kubeconfig_path(cluster: TestCluster) -> Path:
    return cluster.kubeconfig_path


@pytest.fixture(scope="session")
def admin_client(cluster: TestCluster) -> Iterator[ApiClient]:
    with cluster.api_client(ADMIN) as client:
        yield client


@pytest.fixture
def make_api_client(cluster: TestCluster) -> Iterator[Callable[..., ApiClient]]:
    with contextlib.ExitStack() as clients:

        def make(user: str = ADMIN) -> ApiClient:
            client = cluster.api_client(user)
            clients.callback(client.close)
            return client

        yield make


@pytest.fixture(scope="session")
def argo(cluster: TestCluster) -> ArgoController:
    return cluster.start_argo()


def _namespace_name(test_name: str) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", test_name.lower()).strip("-")[:40].strip("-")
    return f"{slug or 'test'}-{secrets.token_hex(3)}"


@pytest.fixture
def namespace(request: pytest.FixtureRequest, admin_client: ApiClient) -> Iterator[str]:
    core = CoreV1Api(admin_client)
    name = _namespace_name(request.node.name)
    core.create_namespace(
        V1Namespace(metadata=V1ObjectMeta(name=name, labels={"aistack.io/test": "true"}))
    )
    yield name
    # No namespace controller runs, so deleting the namespace deletes nothing in it: remove
    # what keeps running (workflows first, so Argo does not recreate their pods) by hand.
    with contextlib.suppress(ApiException):  # 404: Argo's CRDs are not installed
        CustomObjectsApi(admin_client).delete_collection_namespaced_custom_object(
            "argoproj.io", "v1alpha1", name, "workflows"
        )
    core.delete_collection_namespaced_pod(name, grace_period_seconds=0)
    core.delete_namespace(name)


@pytest.fixture
def make_gpu_node(admin_client: ApiClient) -> Iterator[GpuNodes]:
    nodes = GpuNodes(CoreV1Api(admin_client))
    yield nodes
    nodes.delete_all()


@pytest.fixture(scope="module")
def service(cluster: TestCluster, admin_client: ApiClient) -> Iterator[RunningService]:
    running = RunningService(cluster, admin_client)
    running.start()
    yield running
    running.remove()


@pytest.fixture
def core(admin_client: ApiClient, service: RunningService) -> CoreV1Api:
    service.start()
    return CoreV1Api(admin_client)
