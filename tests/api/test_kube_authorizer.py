"""`KubeAuthorizer` and the API against a real kube-apiserver (tests/integration/cluster.py).

The cluster's static-token users: admin (system:masters), and alice, bob and carol (group
researchers) with no rights until a test grants some. The module starts its own cluster, since
the session fixtures of tests/integration are not visible here; like those tests it is marked
`integration` and needs the binaries of scripts/build-test-binaries.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from kubernetes.client import (
    ApiClient,
    Configuration,
    CoreV1Api,
    RbacAuthorizationV1Api,
    RbacV1Subject,
    V1ClusterRole,
    V1ClusterRoleBinding,
    V1Namespace,
    V1ObjectMeta,
    V1PolicyRule,
    V1Role,
    V1RoleBinding,
    V1RoleRef,
)

from scheduler_service.api import ApiSettings, AuthUnavailable, Permission, User, create_app
from scheduler_service.kube import KubeAuthorizer
from tests.api.support import (
    FakeActions,
    FakeWebhooks,
    TestClient,
    bearer,
    cluster_status,
    error_of,
)
from tests.integration.cluster import ADMIN, RESEARCHERS_GROUP, TestCluster, free_port

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

_RBAC = "rbac.authorization.k8s.io"


@pytest.fixture(scope="module")
def cluster() -> Iterator[TestCluster]:
    with TestCluster() as started:
        yield started


@pytest.fixture(scope="module")
def admin_client(cluster: TestCluster) -> Iterator[ApiClient]:
    with cluster.api_client(ADMIN) as client:
        yield client


@pytest.fixture(scope="module")
def rbac(cluster: TestCluster, admin_client: ApiClient) -> RbacAuthorizationV1Api:
    """RBAC as support.py's fake has it: alice's rights to pods in team-a and to queues.

    She may list, get and delete pods in team-a (not team-b) and list and get queues; bob and
    carol have no rights.
    """
    core, rbac = CoreV1Api(admin_client), RbacAuthorizationV1Api(admin_client)
    for namespace in ("team-a", "team-b"):
        core.create_namespace(V1Namespace(metadata=V1ObjectMeta(name=namespace)))
    rbac.create_namespaced_role(
        "team-a",
        V1Role(
            metadata=V1ObjectMeta(name="pod-user"),
            rules=[
                V1PolicyRule(api_groups=[""], resources=["pods"], verbs=["list", "get", "delete"])
            ],
        ),
    )
    rbac.create_namespaced_role_binding(
        "team-a",
        V1RoleBinding(
            metadata=V1ObjectMeta(name="alice-pods"),
            role_ref=V1RoleRef(api_group=_RBAC, kind="Role", name="pod-user"),
            subjects=[RbacV1Subject(kind="User", name="alice", api_group=_RBAC)],
        ),
    )
    rbac.create_cluster_role(
        V1ClusterRole(
            metadata=V1ObjectMeta(name="aistack-queue-reader"),
            rules=[
                V1PolicyRule(api_groups=["aistack.io"], resources=["queues"], verbs=["list", "get"])
            ],
        )
    )
    rbac.create_cluster_role_binding(
        V1ClusterRoleBinding(
            metadata=V1ObjectMeta(name="alice-queues"),
            role_ref=V1RoleRef(api_group=_RBAC, kind="ClusterRole", name="aistack-queue-reader"),
            subjects=[RbacV1Subject(kind="User", name="alice", api_group=_RBAC)],
        )
    )
    return rbac


@pytest.fixture
def authorizer(admin_client: ApiClient) -> KubeAuthorizer:
    # The admin may create TokenReviews and SubjectAccessReviews, as the service's
    # ServiceAccount may through system:auth-delegator.
    return KubeAuthorizer(admin_client, cache_seconds=10)


def test_a_static_token_is_its_user(cluster: TestCluster, authorizer: KubeAuthorizer) -> None:
    user = authorizer.authenticate(cluster.tokens["alice"])

    assert user is not None
    assert (user.name, user.uid) == ("alice", "alice")
    assert RESEARCHERS_GROUP in user.groups
    assert "system:authenticated" in user.groups


def test_an_unknown_token_is_none(authorizer: KubeAuthorizer) -> None:
    assert authorizer.authenticate("not-a-token") is None


@pytest.mark.usefixtures("rbac")
def test_rbac_answers_namespaced_and_cluster_scoped_questions(
    cluster: TestCluster, authorizer: KubeAuthorizer
) -> None:
    alice = authorizer.authenticate(cluster.tokens["alice"])
    bob = authorizer.authenticate(cluster.tokens["bob"])
    admin = authorizer.authenticate(cluster.tokens[ADMIN])
    assert alice is not None
    assert bob is not None
    assert admin is not None

    assert authorizer.allowed(alice, Permission("list", "pods", namespace="team-a"))
    assert authorizer.allowed(alice, Permission("delete", "pods", namespace="team-a"))
    assert not authorizer.allowed(alice, Permission("list", "pods", namespace="team-b"))
    assert not authorizer.allowed(alice, Permission("list", "pods"))  # cluster-wide
    assert authorizer.allowed(alice, Permission("list", "queues", group="aistack.io"))
    assert not authorizer.allowed(alice, Permission("list", "nodes"))
    assert not authorizer.allowed(bob, Permission("list", "pods", namespace="team-a"))
    assert authorizer.allowed(admin, Permission("list", "nodes"))


@pytest.mark.usefixtures("rbac")
def test_groups_count_in_the_review(cluster: TestCluster, authorizer: KubeAuthorizer) -> None:
    # carol herself has no rights; a user claiming the system:masters group has all of them:
    # the review sends the groups TokenReview reported, so they must be the real ones.
    carol = authorizer.authenticate(cluster.tokens["carol"])
    assert carol is not None

    assert not authorizer.allowed(carol, Permission("list", "nodes"))
    assert authorizer.allowed(
        User(name="carol", groups=("system:masters",)), Permission("list", "nodes")
    )


def test_a_client_without_review_rights_is_auth_unavailable(cluster: TestCluster) -> None:
    with cluster.api_client("bob") as client:
        authorizer = KubeAuthorizer(client)

        with pytest.raises(AuthUnavailable, match="may not create tokenreviews"):
            authorizer.authenticate(cluster.tokens["alice"])


def test_an_unreachable_api_server_is_auth_unavailable() -> None:
    configuration = Configuration(host=f"https://127.0.0.1:{free_port()}")
    configuration.retries = 0
    with ApiClient(configuration) as client:
        authorizer = KubeAuthorizer(client)

        with pytest.raises(AuthUnavailable, match="unreachable"):
            authorizer.authenticate("any-token")


@pytest.fixture
def api(
    cluster: TestCluster, authorizer: KubeAuthorizer, rbac: RbacAuthorizationV1Api
) -> TestClient:
    status = cluster_status()
    app = create_app(
        ApiSettings(),
        status=lambda: status,
        authorizer=authorizer,
        webhooks=FakeWebhooks(),
        actions=FakeActions(),
    )
    return TestClient(app)


def test_the_api_shows_alice_her_namespace_only(cluster: TestCluster, api: TestClient) -> None:
    response = api.get("/api/v1/workloads", headers=bearer(cluster.tokens["alice"]))

    assert response.status_code == 200
    assert {w["namespace"] for w in response.json()} == {"team-a"}


def test_a_user_without_rights_gets_403_from_the_api(cluster: TestCluster, api: TestClient) -> None:
    headers = bearer(cluster.tokens["bob"])

    assert api.get("/api/v1/workloads", headers=headers).json() == []
    response = api.get("/api/v1/queues", headers=headers)
    assert response.status_code == 403
    assert error_of(response)[1].startswith("user bob may not list queues.aistack.io cluster-wide")
    assert api.get("/api/v1/explain/team-a/next", headers=headers).status_code == 403


def test_a_token_the_api_server_rejects_gets_401(api: TestClient) -> None:
    response = api.get("/api/v1/queues", headers=bearer("forged"))

    assert response.status_code == 401
    assert error_of(response)[0] == "unauthenticated"
