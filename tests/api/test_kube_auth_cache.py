"""`KubeAuthorizer` against fakes of the two Kubernetes API classes: translation and caching.

The same class against a real API server: test_kube_authorizer.py.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import pytest
import urllib3
from kubernetes.client import (
    ApiClient,
    V1SubjectAccessReview,
    V1SubjectAccessReviewStatus,
    V1TokenReview,
    V1TokenReviewStatus,
    V1UserInfo,
)
from kubernetes.client.exceptions import ApiException

from scheduler_service.api import AuthUnavailable, Permission, User
from scheduler_service.kube import KubeAuthorizer

ALICE = User(name="alice", groups=("researchers",), uid="u1", extra={"scopes": ("a", "b")})


@dataclass
class FakeTokenReviews:
    users: dict[str, V1UserInfo] = field(
        default_factory=lambda: {
            "alice-token": V1UserInfo(
                username="alice", groups=["researchers"], uid="u1", extra={"scopes": ["a", "b"]}
            )
        }
    )
    failure: Exception | None = None
    reviews: list[V1TokenReview] = field(default_factory=list)

    def create_token_review(self, body: V1TokenReview, *, _request_timeout: float) -> V1TokenReview:
        self.reviews.append(body)
        if self.failure is not None:
            raise self.failure
        user = self.users.get(body.spec.token or "")
        body.status = V1TokenReviewStatus(
            authenticated=user is not None,
            user=user,
            error=None if user else "invalid bearer token",
        )
        return body


@dataclass
class FakeAccessReviews:
    allowed_namespaces: set[str] = field(default_factory=lambda: {"team-a"})
    failure: Exception | None = None
    reviews: list[V1SubjectAccessReview] = field(default_factory=list)

    def create_subject_access_review(
        self, body: V1SubjectAccessReview, *, _request_timeout: float
    ) -> V1SubjectAccessReview:
        self.reviews.append(body)
        if self.failure is not None:
            raise self.failure
        attributes = body.spec.resource_attributes
        assert attributes is not None
        body.status = V1SubjectAccessReviewStatus(
            allowed=attributes.namespace in self.allowed_namespaces
        )
        return body


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Setup:
    authorizer: KubeAuthorizer
    tokens: FakeTokenReviews
    access: FakeAccessReviews
    clock: Clock


@pytest.fixture
def setup() -> Setup:
    tokens, access, clock = FakeTokenReviews(), FakeAccessReviews(), Clock()
    authorizer = KubeAuthorizer(
        ApiClient(),
        cache_seconds=10,
        max_entries=2,
        clock=clock,
        token_reviews=tokens,
        access_reviews=access,
    )
    return Setup(authorizer, tokens, access, clock)


def test_a_token_review_becomes_a_user(setup: Setup) -> None:
    user = setup.authorizer.authenticate("alice-token")

    assert user == ALICE
    assert setup.tokens.reviews[0].spec.token == "alice-token"


def test_a_rejected_token_is_none(setup: Setup) -> None:
    assert setup.authorizer.authenticate("forged") is None


def test_token_answers_are_cached_for_cache_seconds(setup: Setup) -> None:
    for _ in range(5):
        setup.authorizer.authenticate("alice-token")
        setup.authorizer.authenticate("forged")
    assert len(setup.tokens.reviews) == 2

    setup.clock.now += 10

    setup.authorizer.authenticate("alice-token")
    assert len(setup.tokens.reviews) == 3
    assert repr(setup.authorizer) == "<KubeAuthorizer 2 tokens, 0 answers cached>"


def test_an_access_review_carries_the_whole_user_and_the_resource(setup: Setup) -> None:
    allowed = setup.authorizer.allowed(
        ALICE, Permission("list", "queues", group="aistack.io", name="org")
    )

    assert allowed is False
    spec = setup.access.reviews[0].spec
    assert (spec.user, spec.groups, spec.uid, spec.extra) == (
        "alice",
        ["researchers"],
        "u1",
        {"scopes": ["a", "b"]},
    )
    attributes = spec.resource_attributes
    assert attributes is not None
    assert (attributes.verb, attributes.resource, attributes.group) == (
        "list",
        "queues",
        "aistack.io",
    )
    assert (attributes.namespace, attributes.name, attributes.subresource) == (None, "org", None)


def test_access_answers_are_cached_per_question_and_bounded(setup: Setup) -> None:
    ask = setup.authorizer.allowed

    assert ask(ALICE, Permission("list", "pods", namespace="team-a")) is True
    assert ask(ALICE, Permission("list", "pods", namespace="team-a")) is True
    assert ask(ALICE, Permission("list", "pods", namespace="team-b")) is False
    assert len(setup.access.reviews) == 2
    # Another user with the same name but other groups is another question.
    ask(User(name="alice"), Permission("list", "pods", namespace="team-a"))
    assert len(setup.access.reviews) == 3
    # max_entries=2: the oldest answer (team-a for ALICE) was dropped.
    ask(ALICE, Permission("list", "pods", namespace="team-a"))
    assert len(setup.access.reviews) == 4


@pytest.mark.parametrize(
    ("failure", "complaint"),
    [
        (
            urllib3.exceptions.MaxRetryError(None, "/apis", None),  # type: ignore[arg-type]
            "the Kubernetes API server is unreachable (MaxRetryError)",
        ),
        (
            ApiException(status=403, reason="Forbidden"),
            "the scheduler service may not create tokenreviews (the API server answered 403 "
            "Forbidden); its ServiceAccount needs ClusterRole system:auth-delegator",
        ),
        (
            ApiException(status=500, reason="Internal Server Error"),
            "the Kubernetes API server failed a tokenreview (500 Internal Server Error)",
        ),
    ],
)
def test_a_token_review_that_fails_is_auth_unavailable_and_not_cached(
    setup: Setup, failure: Exception, complaint: str
) -> None:
    setup.tokens.failure = failure

    with pytest.raises(AuthUnavailable, match=f"^{re.escape(complaint)}"):
        setup.authorizer.authenticate("alice-token")

    setup.tokens.failure = None
    assert setup.authorizer.authenticate("alice-token") == ALICE


def test_an_access_review_that_fails_is_auth_unavailable(setup: Setup) -> None:
    setup.access.failure = ConnectionRefusedError(111, "Connection refused")

    with pytest.raises(AuthUnavailable, match="unreachable"):
        setup.authorizer.allowed(ALICE, Permission("get", "pods", namespace="team-a"))


def test_cache_seconds_zero_asks_every_time() -> None:
    tokens = FakeTokenReviews()
    authorizer = KubeAuthorizer(
        ApiClient(), cache_seconds=0, token_reviews=tokens, access_reviews=FakeAccessReviews()
    )

    authorizer.authenticate("alice-token")
    authorizer.authenticate("alice-token")

    assert len(tokens.reviews) == 2
