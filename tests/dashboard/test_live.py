"""Live pages: the event stream of a page sends its region again after each new cycle.

The streams of these tests last `live_stream_seconds` (0.3 s in conftest.SETTINGS), so a test
reads a whole stream; a browser would open the next one.
"""

from __future__ import annotations

from dataclasses import replace

import pytest

from scheduler_service.api import ClusterStatus
from tests.api.support import ADMIN_AUTH, ALICE_AUTH, NOW, FakeAuthorizer, TestClient
from tests.dashboard.cluster import StatusHolder
from tests.dashboard.html import parse


def events(body: str) -> list[tuple[str, str]]:
    """The (event, data) pairs of an event stream, comments and `retry` left out."""
    found = []
    for block in body.split("\n\n"):
        lines = block.split("\n")
        name = next((line[7:] for line in lines if line.startswith("event: ")), "")
        data = "\n".join(line[6:] for line in lines if line.startswith("data: "))
        if name:
            found.append((name, data))
    return found


def a_cycle_later(status: ClusterStatus, seconds: float = 5.0) -> ClusterStatus:
    return replace(status, cycle_at=status.cycle_at + seconds)


def test_a_page_names_its_stream_and_the_cycle_it_shows(client: TestClient) -> None:
    document = parse(client.get("/ui/queues?pool=h100", headers=ADMIN_AUTH).text)

    live = document.one("main", id="live")
    assert live.attrs["hx-ext"] == "sse"
    assert live.attrs["sse-swap"] == "update"
    assert live.attrs["sse-connect"] == f"/ui/queues?pool=h100&live=1&at={NOW!r}"
    assert (
        "As of the scheduling cycle of 2023-11-14 22:16:40 UTC"
        in live.one("p", class_="freshness").text
    )


def test_the_stream_stays_quiet_while_the_cycle_is_the_one_shown(client: TestClient) -> None:
    response = client.get(f"/ui/queues?live=1&at={NOW!r}", headers=ADMIN_AUTH)

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    assert response.headers["cache-control"] == "no-store"
    assert response.text.startswith("retry: ")
    assert events(response.text) == []


def test_a_new_cycle_sends_the_region_again(
    client: TestClient, holder: StatusHolder, cluster_status: ClusterStatus
) -> None:
    holder.publish(a_cycle_later(cluster_status))

    response = client.get(f"/ui/nodes?live=1&at={NOW!r}", headers=ADMIN_AUTH)

    ((name, region),) = events(response.text)
    assert name == "update"
    document = parse(region)
    assert document.find_all("main") == []  # the region, not a page
    assert "22:16:45 UTC" in document.one("p", class_="freshness").text
    assert document.one(data_gpu="n1-gpu2").find_all("li", class_="holder")


def test_a_live_region_shows_only_what_its_viewer_may_see(
    client: TestClient, holder: StatusHolder, cluster_status: ClusterStatus
) -> None:
    holder.publish(a_cycle_later(cluster_status))

    response = client.get(f"/ui/workloads?live=1&at={NOW!r}", headers=ALICE_AUTH)

    ((_, region),) = events(response.text)
    names = [
        r.attrs["data-workload"] for r in parse(region).find_all("tr") if "data-workload" in r.attrs
    ]
    assert names == ["team-a/lost", "team-a/next", "team-a/train"]


def test_rights_lost_while_a_page_is_open_take_effect_at_the_next_update(
    client: TestClient,
    holder: StatusHolder,
    cluster_status: ClusterStatus,
    authorizer: FakeAuthorizer,
) -> None:
    authorizer.grants.clear()
    holder.publish(a_cycle_later(cluster_status))

    response = client.get(f"/ui/workloads?namespace=team-a&live=1&at={NOW!r}", headers=ALICE_AUTH)

    ((_, region),) = events(response.text)
    assert "alice may not list pods in namespace team-a" in region
    assert "data-workload" not in region


def test_a_stream_without_a_valid_token_is_refused(client: TestClient) -> None:
    assert client.get("/ui/workloads?live=1").status_code == 401
    assert (
        client.get("/ui/workloads?live=1", headers={"Authorization": "Bearer x"}).status_code == 401
    )


def test_a_token_revoked_while_streaming_ends_the_stream_saying_so(
    client: TestClient,
    holder: StatusHolder,
    cluster_status: ClusterStatus,
    authorizer: FakeAuthorizer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with client.stream("GET", f"/ui/?live=1&at={NOW!r}", headers=ALICE_AUTH) as response:
        # The stream signed alice in; her token is gone by the next cycle.
        monkeypatch.setattr(authorizer, "authenticate", lambda token: None)
        holder.publish(a_cycle_later(cluster_status))
        body = "".join(response.iter_text())

    ((_, region),) = events(body)
    assert "Signed out" in region
