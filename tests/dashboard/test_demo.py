"""The demo cluster of the screenshots renders every view (scripts/dashboard-screenshots works)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from scheduler_service.accounting import open_store
from scheduler_service.api import ApiSettings, Services, create_app
from scheduler_service.dashboard import DashboardSettings, create_dashboard
from tests.api.support import FakeActions, FakeWebhooks, TestClient
from tests.dashboard.demo import DEMO_TOKEN, DemoAuthorizer, demo_records, demo_status
from tests.dashboard.html import parse
from tests.dashboard.screenshots import VIEWS

NOW = 1_790_000_000.0


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    store = open_store(f"sqlite:///{tmp_path / 'accounting.db'}")
    demo_records(store, NOW)
    status = demo_status(NOW)

    def dashboard(services: Services) -> object:
        return create_dashboard(DashboardSettings(), services)

    app = create_app(
        ApiSettings(),
        status=lambda: status,
        authorizer=DemoAuthorizer(),
        webhooks=FakeWebhooks(),
        actions=FakeActions(),
        dashboard=dashboard,  # type: ignore[arg-type]
        accounting=store,
    )
    with TestClient(app, headers={"Authorization": f"Bearer {DEMO_TOKEN}"}) as test_client:
        yield test_client
    store.close()


@pytest.mark.parametrize("view", sorted(VIEWS))
def test_every_view_of_the_demo_renders(client: TestClient, view: str) -> None:
    response = client.get(VIEWS[view])

    assert response.status_code == 200, response.text[:500]
    assert parse(response.text).find_all(role="alert") == []


def test_the_demo_shows_borrowing_reclaim_and_both_kinds_of_waiting(client: TestClient) -> None:
    queues = parse(client.get("/ui/queues").text)
    workloads = parse(client.get("/ui/workloads?state=pending").text)

    assert [li.attrs["data-queue"] for li in queues.find_all("li")] == ["nlp", "vision", "ci"]
    codes = {cell.text.split()[0] for cell in workloads.find_all("td", class_="reason")}
    assert codes == {"InsufficientCapacity", "QueueAtLimit"}
