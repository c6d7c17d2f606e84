"""`LocalPages`: the local runner's dashboard, served on 127.0.0.1 by a thread of its own.

Driven as the runner drives it (`publish` with core values) and read over real HTTP.
"""

from __future__ import annotations

import socket
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest

from scheduler_service.api import ClusterStatus, unauthenticated_services
from scheduler_service.dashboard import LocalPages


@pytest.fixture
def pages() -> Iterator[LocalPages]:
    served = LocalPages(0)
    yield served
    served.close()


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def test_a_published_cycle_is_what_the_pages_show_to_anyone_on_this_machine(
    pages: LocalPages, cluster_status: ClusterStatus
) -> None:
    assert pages.url.startswith("http://127.0.0.1:")
    assert "Sign in" not in get(pages.url)[1]
    workload = cluster_status.snapshot.workloads[0]
    pages.publish(
        cluster_status.snapshot,
        cluster_status.plan,
        {workload.name: ("run-1", ("pod-a",))},
        cluster_status.cycle_at,
    )
    status, page = get(f"{pages.url}workloads?namespace=run-1")
    assert status == 200
    assert "no authentication" in page
    assert workload.name.rpartition("/")[2] in page
    status, page = get(f"{pages.url}pods/run-1/pod-a")
    assert status == 200, page


def test_the_pages_end_with_close_and_free_their_port() -> None:
    served = LocalPages(0)
    port = int(served.url.rstrip("/").rpartition(":")[2])
    served.close()
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(served.url, timeout=5)
    socket.create_server(("127.0.0.1", port)).close()


def test_a_taken_port_is_refused_at_once() -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken, pytest.raises(OSError, match="in use"):
        LocalPages(taken.getsockname()[1])


def test_unauthenticated_services_answer_no_webhook_and_carry_out_no_action(
    cluster_status: ClusterStatus,
) -> None:
    services = unauthenticated_services(lambda: cluster_status)
    assert not services.settings.auth
    assert not services.webhooks.mutate_pod({}).allowed
    assert not services.webhooks.validate_queue({}).allowed
    with pytest.raises(KeyError):
        services.actions.delete_workload("anything")
    assert services.authorizer.authenticate("a-token") is None
