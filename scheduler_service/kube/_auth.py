"""`KubeAuthorizer`: the API's users are Kubernetes users, their rights are RBAC's.

A bearer token is checked with a TokenReview and each question with a SubjectAccessReview, as
the API server's own delegated authentication does (`system:auth-delegator` grants both to the
service's ServiceAccount). Answers are kept briefly, in a bounded cache, so a page of requests
(or a dashboard polling every few seconds) costs the API server a handful of reviews.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Generic, Protocol, TypeVar

import urllib3
from kubernetes.client import (
    ApiClient,
    AuthenticationV1Api,
    AuthorizationV1Api,
    V1ResourceAttributes,
    V1SubjectAccessReview,
    V1SubjectAccessReviewSpec,
    V1TokenReview,
    V1TokenReviewSpec,
)
from kubernetes.client.exceptions import ApiException

from scheduler_service.api import AuthUnavailable, Permission, User

__all__ = ["AccessReviews", "KubeAuthorizer", "TokenReviews"]

_REQUEST_TIMEOUT_SECONDS = 5.0
"""How long one review may take: an API request waits on it, so fail fast with a 503."""


class TokenReviews(Protocol):
    """The part of `AuthenticationV1Api` the authorizer uses."""

    def create_token_review(self, body: V1TokenReview, *, _request_timeout: float) -> V1TokenReview:
        """Create a TokenReview and return it with its status."""
        ...


class AccessReviews(Protocol):
    """The part of `AuthorizationV1Api` the authorizer uses."""

    def create_subject_access_review(
        self, body: V1SubjectAccessReview, *, _request_timeout: float
    ) -> V1SubjectAccessReview:
        """Create a SubjectAccessReview and return it with its status."""
        ...


_K = TypeVar("_K", bound=Hashable)
_V = TypeVar("_V")


class _TtlCache(Generic[_K, _V]):
    """At most `max_entries` answers, each kept `seconds`; the oldest go first. Thread-safe."""

    def __init__(self, seconds: float, max_entries: int, clock: Callable[[], float]) -> None:
        self._seconds = seconds
        self._max_entries = max_entries
        self._clock = clock
        self._entries: OrderedDict[_K, tuple[float, _V]] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: _K) -> tuple[bool, _V | None]:
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return False, None
            if entry[0] <= self._clock():
                del self._entries[key]
                return False, None
            return True, entry[1]

    def put(self, key: _K, value: _V) -> None:
        if self._seconds <= 0:
            return
        with self._lock:
            self._entries.pop(key, None)
            self._entries[key] = (self._clock() + self._seconds, value)
            while len(self._entries) > self._max_entries:
                self._entries.popitem(last=False)


def _unavailable(what: str, exc: Exception) -> AuthUnavailable:
    if isinstance(exc, ApiException) and exc.status in {401, 403}:
        return AuthUnavailable(
            f"the scheduler service may not create {what} (the API server answered "
            f"{exc.status} {exc.reason}); its ServiceAccount needs ClusterRole "
            "system:auth-delegator (the Helm chart binds it)"
        )
    if isinstance(exc, ApiException):
        return AuthUnavailable(
            f"the Kubernetes API server failed a {what[:-1]} ({exc.status} {exc.reason})"
        )
    return AuthUnavailable(f"the Kubernetes API server is unreachable ({type(exc).__name__})")


_ACCESS_ERRORS = (ApiException, urllib3.exceptions.HTTPError, OSError)


class KubeAuthorizer:
    """An `Authorizer` backed by TokenReview and SubjectAccessReview, with a short cache.

    Both accepted and rejected tokens, and both answers to an access question, are kept for
    `cache_seconds` (at most `max_entries` of each): a revoked token or a removed RoleBinding
    takes effect within that time. A review that cannot be made raises `AuthUnavailable`
    (never cached), which the API answers with 503.
    """

    def __init__(
        self,
        api_client: ApiClient,
        cache_seconds: float = 10,
        *,
        max_entries: int = 4096,
        clock: Callable[[], float] = time.monotonic,
        token_reviews: TokenReviews | None = None,
        access_reviews: AccessReviews | None = None,
    ) -> None:
        """Review through `api_client`; tests pass `token_reviews`/`access_reviews` fakes."""
        self._tokens = token_reviews or AuthenticationV1Api(api_client)
        self._access = access_reviews or AuthorizationV1Api(api_client)
        self._users: _TtlCache[str, User | None] = _TtlCache(cache_seconds, max_entries, clock)
        self._answers: _TtlCache[Hashable, bool] = _TtlCache(cache_seconds, max_entries, clock)

    def __repr__(self) -> str:
        return f"<KubeAuthorizer {len(self._users)} tokens, {len(self._answers)} answers cached>"

    def authenticate(self, token: str) -> User | None:
        """The user behind `token`, or None if the API server does not accept it."""
        # Keyed by a digest: the cache never holds a usable credential.
        key = hashlib.sha256(token.encode()).hexdigest()
        found, user = self._users.get(key)
        if found:
            return user
        review = V1TokenReview(spec=V1TokenReviewSpec(token=token))
        try:
            answer = self._tokens.create_token_review(
                review, _request_timeout=_REQUEST_TIMEOUT_SECONDS
            )
        except _ACCESS_ERRORS as exc:
            raise _unavailable("tokenreviews", exc) from exc
        status = answer.status
        user = None
        if status is not None and status.authenticated and status.user is not None:
            info = status.user
            user = User(
                name=info.username or "",
                groups=tuple(info.groups or ()),
                uid=info.uid or "",
                extra={k: tuple(v) for k, v in (info.extra or {}).items()},
            )
        self._users.put(key, user)
        return user

    def allowed(self, user: User, permission: Permission) -> bool:
        """Whether RBAC (any authorizer of the API server) grants `user` the `permission`."""
        key = (
            user.name,
            user.uid,
            tuple(sorted(user.groups)),
            tuple(sorted((k, tuple(v)) for k, v in user.extra.items())),
            permission,
        )
        found, answer = self._answers.get(key)
        if found:
            return bool(answer)
        review = V1SubjectAccessReview(
            spec=V1SubjectAccessReviewSpec(
                user=user.name,
                groups=list(user.groups),
                uid=user.uid or None,
                extra={k: list(v) for k, v in user.extra.items()} or None,
                resource_attributes=V1ResourceAttributes(
                    verb=permission.verb,
                    resource=permission.resource,
                    group=permission.group,
                    namespace=permission.namespace or None,
                    name=permission.name or None,
                    subresource=permission.subresource or None,
                ),
            )
        )
        try:
            result = self._access.create_subject_access_review(
                review, _request_timeout=_REQUEST_TIMEOUT_SECONDS
            )
        except _ACCESS_ERRORS as exc:
            raise _unavailable("subjectaccessreviews", exc) from exc
        allowed = result.status is not None and bool(result.status.allowed)
        self._answers.put(key, allowed)
        return allowed
