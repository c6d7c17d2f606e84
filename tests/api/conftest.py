"""Fixtures for the API tests: the app built on `support`'s cluster and fakes."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi import FastAPI

from scheduler_service.api import ApiSettings, ClusterStatus, Metrics, create_app
from tests.api import support
from tests.api.support import FakeActions, FakeAuthorizer, FakeWebhooks, TestClient


@pytest.fixture(scope="session")
def cluster_status() -> ClusterStatus:
    return support.cluster_status()


@pytest.fixture
def authorizer() -> FakeAuthorizer:
    return FakeAuthorizer()


@pytest.fixture
def webhooks() -> FakeWebhooks:
    return FakeWebhooks()


@pytest.fixture
def actions() -> FakeActions:
    return FakeActions()


@pytest.fixture
def metrics(cluster_status: ClusterStatus) -> Metrics:
    return Metrics(lambda: cluster_status)


@pytest.fixture
def app(
    cluster_status: ClusterStatus,
    authorizer: FakeAuthorizer,
    webhooks: FakeWebhooks,
    actions: FakeActions,
    metrics: Metrics,
) -> FastAPI:
    return create_app(
        ApiSettings(),
        status=lambda: cluster_status,
        authorizer=authorizer,
        webhooks=webhooks,
        actions=actions,
        metrics=metrics,
    )


@pytest.fixture
def client(app: FastAPI) -> Iterator[TestClient]:
    """A client without credentials."""
    with TestClient(app) as test_client:
        yield test_client
