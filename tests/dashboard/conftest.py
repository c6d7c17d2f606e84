"""Fixtures for the dashboard tests: the API's test cluster and fakes, with the dashboard mounted.

The cluster and the RBAC table are tests/api/support.py's: admin may do anything; alice may
list and get pods in team-a only, and list queues; bob may do nothing.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi import FastAPI

from scheduler_service.api import ApiSettings, ClusterStatus, Services, create_app
from scheduler_service.dashboard import DashboardSettings, create_dashboard
from tests.api import support
from tests.api.support import FakeActions, FakeAuthorizer, FakeWebhooks, TestClient
from tests.dashboard.cluster import StatusHolder

SETTINGS = DashboardSettings(
    argo_ui_url="https://argo.example.com", live_poll_seconds=0.02, live_stream_seconds=0.3
)


@pytest.fixture(scope="session")
def cluster_status() -> ClusterStatus:
    return support.cluster_status()


@pytest.fixture
def authorizer() -> FakeAuthorizer:
    return FakeAuthorizer()


@pytest.fixture
def holder(cluster_status: ClusterStatus) -> StatusHolder:
    return StatusHolder(cluster_status)


def make_app(
    holder: StatusHolder,
    authorizer: FakeAuthorizer,
    settings: DashboardSettings = SETTINGS,
    *,
    auth: bool = True,
) -> FastAPI:
    def dashboard(services: Services) -> FastAPI:
        return create_dashboard(settings, services)

    return create_app(
        ApiSettings(auth=auth),
        status=holder.status,
        authorizer=authorizer,
        webhooks=FakeWebhooks(),
        actions=FakeActions(),
        dashboard=dashboard,
    )


@pytest.fixture
def client(holder: StatusHolder, authorizer: FakeAuthorizer) -> Iterator[TestClient]:
    """A client without credentials, of the service with the dashboard under /ui."""
    with TestClient(make_app(holder, authorizer), base_url="https://testserver") as test_client:
        yield test_client
