"""Who is looking, and what RBAC lets them see: the dashboard's side of the API's auth.

A browser proves who it is with a Kubernetes bearer token, exactly as an API client does: in the
`Authorization: Bearer` header (set by an authenticating proxy in front of the service), or in
the HttpOnly cookie the sign-in form sets. The token is checked with the same `Authorizer`
(TokenReview), and every question with the same RBAC rights (SubjectAccessReview) the API asks.
"""

from __future__ import annotations

from collections.abc import Mapping

from scheduler_service.api import (
    Access,
    Authorizer,
    AuthUnavailable,
    Permission,
    Services,
    User,
)
from scheduler_service.dashboard._errors import PageError

__all__ = [
    "ANONYMOUS",
    "TOKEN_COOKIE",
    "NotSignedIn",
    "Scope",
    "sign_in",
    "token_of",
]

TOKEN_COOKIE = "aistack_token"
"""The cookie the sign-in form stores the pasted token in (HttpOnly, SameSite=Strict)."""

ANONYMOUS = User(name="system:anonymous", groups=("system:unauthenticated",))
"""The viewer of every page when the service runs without authentication (local use)."""

_QUEUES = Permission("list", "queues", group="aistack.io")
_NODES = Permission("list", "nodes")


class NotSignedIn(Exception):  # noqa: N818 - a state of the viewer, not a programming error
    """The request carries no token, or one the API server does not accept (the message says)."""


def token_of(headers: Mapping[str, str], cookies: Mapping[str, str]) -> str | None:
    """The bearer token of a request: its Authorization header first, else the sign-in cookie."""
    scheme, _, value = headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    return cookies.get(TOKEN_COOKIE) or None


def _unavailable(exc: AuthUnavailable) -> PageError:
    return PageError(
        503,
        "Cannot check who you are right now",
        f"{exc}. Reload in a moment; if it persists, ask the cluster administrators to look at "
        "the scheduler service's log.",
    )


class Scope(Access):
    """What one viewer may see; each RBAC question is asked once, when a page first needs it.

    Built anew for every page and every live update, so a removed RoleBinding takes effect
    at the next update (the `Authorizer` itself may keep answers for a few seconds). With no
    `authorizer` (authentication off) everything is visible.
    """

    def __init__(self, user: User, authorizer: Authorizer | None) -> None:
        """Ask `authorizer` about `user`, or allow everything when it is None."""
        super().__init__(user, authorizer)
        self._namespaces: dict[str, bool] = {}

    def __repr__(self) -> str:
        mode = "authorized" if self._authorizer is not None else "everything visible"
        return f"<Scope user={self.user.name!r} ({mode}), {len(self._answers)} answers>"

    def unavailable(self, exc: AuthUnavailable) -> Exception:
        """A page's 503 when the Authorizer cannot answer (not the API's JSON error)."""
        return _unavailable(exc)

    def sees_namespace(self, namespace: str) -> bool:
        """Whether the viewer may list pods in `namespace`: then its workloads are shown."""
        # Asked for every row of a long list: keep the answer by name, not by Permission.
        answer = self._namespaces.get(namespace)
        if answer is None:
            answer = self._namespaces[namespace] = self.can(
                Permission("list", "pods", namespace=namespace)
            )
        return answer

    @property
    def sees_queues(self) -> bool:
        """Whether the viewer may list Queues: quotas and usage of every queue, in aggregate."""
        return self.can(_QUEUES)

    @property
    def sees_nodes(self) -> bool:
        """Whether the viewer may list nodes: the node and GPU map."""
        return self.can(_NODES)

    def require_queues(self) -> None:
        """Raise a 403 `PageError` unless the viewer may list Queues."""
        self.require_to_see(_QUEUES, "the queues and their pools' GPUs")

    def require_nodes(self) -> None:
        """Raise a 403 `PageError` unless the viewer may list nodes."""
        self.require_to_see(_NODES, "the nodes and their GPUs")

    def require_to_see(self, permission: Permission, what: str) -> None:
        """Raise a 403 `PageError` naming the missing right unless the viewer has it."""
        if self.can(permission):
            return
        grant = (
            "a RoleBinding in that namespace" if permission.namespace else "a ClusterRoleBinding"
        )
        raise PageError(
            403,
            f"You may not see {what}",
            f"User {self.user.name} may not {permission}. Ask a cluster administrator for "
            f"{grant} that grants {permission.verb} on {permission.resource}"
            + (f" in API group {permission.group}" if permission.group else "")
            + ".",
        )


def sign_in(services: Services, token: str | None) -> Scope:
    """The viewer behind `token`, checked with the service's `Authorizer`.

    Raises `NotSignedIn` without a token or with one the API server rejects, and a 503
    `PageError` when the API server cannot be asked.
    """
    if not services.settings.auth:
        return Scope(ANONYMOUS, None)
    if not token:
        raise NotSignedIn("sign in with a Kubernetes token to see the dashboard")
    try:
        user = services.authorizer.authenticate(token)
    except AuthUnavailable as exc:
        raise _unavailable(exc) from exc
    if user is None:
        raise NotSignedIn(
            "the Kubernetes API server does not accept this token (expired, revoked, or for "
            "another cluster); sign in with a fresh one"
        )
    return Scope(user, services.authorizer)
