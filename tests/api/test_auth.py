from __future__ import annotations

from dataclasses import dataclass

import pytest

from scheduler_service.api import (
    ApiSettings,
    AuthUnavailable,
    ClusterStatus,
    Permission,
    User,
    create_app,
)
from tests.api.support import (
    ADMIN_AUTH,
    ALICE_AUTH,
    FakeActions,
    FakeAuthorizer,
    FakeWebhooks,
    TestClient,
    bearer,
    error_of,
)

ROUTES = [
    "/api/v1/queues",
    "/api/v1/queues/org",
    "/api/v1/workloads",
    "/api/v1/workloads/team-a/next",
    "/api/v1/nodes",
    "/api/v1/nodes/n1",
    "/api/v1/explain/team-a/next",
]


@pytest.mark.parametrize("path", ROUTES)
def test_every_api_route_needs_a_bearer_token(client: TestClient, path: str) -> None:
    response = client.get(path)

    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == "Bearer"
    code, message = error_of(response)
    assert code == "unauthenticated"
    assert message.startswith("no bearer token: send the header `Authorization: Bearer <token>`")
    assert "kubectl create token" in message


def test_a_basic_auth_header_is_not_a_bearer_token(client: TestClient) -> None:
    response = client.get("/api/v1/queues", headers={"Authorization": "Basic YWxpY2U6eA=="})

    assert response.status_code == 401
    assert error_of(response)[1].startswith("no bearer token")


def test_a_token_the_api_server_rejects_is_401(client: TestClient) -> None:
    response = client.get("/api/v1/queues", headers=bearer("expired"))

    assert response.status_code == 401
    code, message = error_of(response)
    assert code == "unauthenticated"
    assert message.startswith("the Kubernetes API server does not accept this bearer token")


def test_an_unreachable_api_server_is_503_not_401(
    client: TestClient, authorizer: FakeAuthorizer
) -> None:
    authorizer.down = True

    response = client.get("/api/v1/queues", headers=ALICE_AUTH)

    assert response.status_code == 503
    code, message = error_of(response)
    assert code == "unavailable"
    assert message.startswith(
        "cannot check your token or rights right now: the Kubernetes API server is unreachable"
    )


@dataclass
class _AuthorizerDownForReviews(FakeAuthorizer):
    def allowed(self, user: User, permission: Permission) -> bool:
        raise AuthUnavailable("the Kubernetes API server failed a subjectaccessreview (500)")


def test_an_access_review_that_fails_is_503(cluster_status: ClusterStatus) -> None:
    app = create_app(
        ApiSettings(),
        status=lambda: cluster_status,
        authorizer=_AuthorizerDownForReviews(),
        webhooks=FakeWebhooks(),
        actions=FakeActions(),
    )

    response = TestClient(app).get("/api/v1/workloads", headers=ALICE_AUTH)

    assert response.status_code == 503
    assert "subjectaccessreview (500)" in error_of(response)[1]


def test_with_auth_off_everyone_is_allowed_everything(cluster_status: ClusterStatus) -> None:
    authorizer = FakeAuthorizer(down=True)  # would fail any question it were asked
    app = create_app(
        ApiSettings(auth=False),
        status=lambda: cluster_status,
        authorizer=authorizer,
        webhooks=FakeWebhooks(),
        actions=FakeActions(),
    )
    client = TestClient(app)

    for path in ROUTES:
        assert client.get(path).status_code == 200, path
    assert len(client.get("/api/v1/workloads").json()) == 7
    assert authorizer.questions == []


def test_unknown_routes_and_methods_answer_with_the_error_body(client: TestClient) -> None:
    missing = client.get("/api/v2/queues", headers=ADMIN_AUTH)
    wrong_method = client.post("/api/v1/queues", headers=ADMIN_AUTH)

    assert missing.status_code == 404
    assert error_of(missing) == (
        "not_found",
        "no route GET /api/v2/queues: the API lives under /api/v1 (queues, workloads, nodes, "
        "explain); see /docs for every route",
    )
    assert wrong_method.status_code == 405
    assert error_of(wrong_method)[0] == "method_not_allowed"


def test_settings_refuse_unknown_fields() -> None:
    with pytest.raises(ValueError, match="auht"):
        ApiSettings.model_validate({"auht": False})
