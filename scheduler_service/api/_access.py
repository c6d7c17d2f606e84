"""What one request's user may do: RBAC answers from the Authorizer, asked once per request.

A page of workloads checks `list pods` in every namespace it shows; the answers are kept for
the request, so each namespace is asked about once (the Authorizer may cache across requests).
"""

from __future__ import annotations

from scheduler_service.api._contract import Authorizer, AuthUnavailable, Permission, User
from scheduler_service.api._errors import ApiError

__all__ = ["ANONYMOUS", "Access", "unavailable"]

ANONYMOUS = User(name="system:anonymous", groups=("system:unauthenticated",))
"""The user of every request when authentication is off (local use)."""


def unavailable(exc: AuthUnavailable) -> ApiError:
    """The 503 for an Authorizer that could not reach the API server."""
    return ApiError(
        503,
        f"cannot check your token or rights right now: {exc}; retry in a moment, and if it "
        "persists ask the cluster administrators to look at the scheduler service's log",
    )


class Access:
    """The RBAC rights of one request's `user`.

    With no `authorizer` (authentication off) every question is answered yes.
    """

    def __init__(self, user: User, authorizer: Authorizer | None) -> None:
        """Ask `authorizer` about `user`, or allow everything when it is None."""
        self.user = user
        self._authorizer = authorizer
        self._answers: dict[Permission, bool] = {}

    def __repr__(self) -> str:
        mode = "authorized" if self._authorizer is not None else "everything allowed"
        return f"<Access user={self.user.name!r} ({mode}), {len(self._answers)} answers cached>"

    def can(self, permission: Permission) -> bool:
        """Whether the user has `permission`."""
        if self._authorizer is None:
            return True
        answer = self._answers.get(permission)
        if answer is None:
            try:
                answer = self._authorizer.allowed(self.user, permission)
            except AuthUnavailable as exc:
                raise self.unavailable(exc) from exc
            self._answers[permission] = answer
        return answer

    def unavailable(self, exc: AuthUnavailable) -> Exception:
        """What `can` raises when the Authorizer cannot answer: the API's 503."""
        return unavailable(exc)

    def require(self, permission: Permission) -> None:
        """Raise a 403 `ApiError` that names the missing right unless the user has it."""
        if self.can(permission):
            return
        grant = (
            "a RoleBinding in that namespace" if permission.namespace else "a ClusterRoleBinding"
        )
        raise ApiError(
            403,
            f"user {self.user.name} may not {permission}; ask a cluster administrator for "
            f"{grant} that grants {permission.verb} on {permission.resource}"
            + (f" in API group {permission.group}" if permission.group else ""),
        )
