"""What the API serves and what it asks of the driver: the seam between FastAPI and Kubernetes.

The driver (scheduler_service.kube) publishes a `ClusterStatus` after every cycle and implements
`Authorizer`, `Webhooks` and `Actions`; the API turns them into HTTP. Tests replace each with an
in-memory value, so the routes are tested without a cluster, and the real ones are tested against
a real API server.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from scheduler_service.core import Plan, Snapshot

__all__ = [
    "Actions",
    "AdmissionDecision",
    "AuthUnavailable",
    "Authorizer",
    "ClusterStatus",
    "Permission",
    "User",
    "Webhooks",
    "WorkloadPods",
]


@dataclass(frozen=True, slots=True)
class WorkloadPods:
    """The Kubernetes identity of one workload: its namespace and its pods, in gang order."""

    namespace: str
    pods: tuple[str, ...]
    workflow: str = ""
    """The Argo Workflow whose step the pods are (their `workflows.argoproj.io/workflow`
    label), or "" for pods Argo did not make."""


@dataclass(frozen=True, slots=True)
class ClusterStatus:
    """The driver's view after its last cycle: immutable, replaced as a whole.

    `snapshot` is what the cycle decided on and `plan` what it decided (fair shares, reasons of
    pending workloads); `pods` maps every workload name of the snapshot to its pods. `cycle_at`
    is the wall-clock time of the cycle (Unix seconds); `leader` says whether this replica is
    the one that acts (a follower serves the API from its own watch of the cluster).
    """

    snapshot: Snapshot
    plan: Plan
    pods: Mapping[str, WorkloadPods] = field(default_factory=dict)
    cycle_at: float = 0.0
    leader: bool = False


@dataclass(frozen=True, slots=True)
class User:
    """An authenticated Kubernetes user, as TokenReview reports it."""

    name: str
    groups: tuple[str, ...] = ()
    uid: str = ""
    extra: Mapping[str, tuple[str, ...]] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Permission:
    """One RBAC question: may a user `verb` this resource? As a SubjectAccessReview asks it.

    An empty `namespace` asks cluster-wide; an empty `name`, about every object of the resource.
    """

    verb: str
    resource: str
    group: str = ""
    """The resource's API group ("" for the core group: pods, nodes)."""
    namespace: str = ""
    name: str = ""
    subresource: str = ""

    def __str__(self) -> str:
        """How a user reads it: "list pods in namespace team-a", "get queues.aistack.io org"."""
        what = f"{self.resource}.{self.group}" if self.group else self.resource
        if self.subresource:
            what = f"{what}/{self.subresource}"
        if self.name:
            what = f"{what} {self.name}"
        where = f"in namespace {self.namespace}" if self.namespace else "cluster-wide"
        return f"{self.verb} {what} {where}"


class AuthUnavailable(Exception):  # noqa: N818 - it names a state, not a programming error
    """The Authorizer could not ask the API server (unreachable, or the service lacks the right).

    The API answers 503 with the message, not 401 or 403: the user's token or rights may be
    fine, it is the service that cannot check them. The message says what failed and what to do.
    """


class Authorizer(Protocol):
    """Kubernetes authentication (TokenReview) and authorisation (SubjectAccessReview).

    Both methods raise `AuthUnavailable` when the API server cannot answer.
    """

    def authenticate(self, token: str) -> User | None:
        """The user behind a bearer token, or None if the API server does not accept it."""

    def allowed(self, user: User, permission: Permission) -> bool:
        """Whether RBAC grants `user` the `permission`."""


@dataclass(frozen=True, slots=True)
class AdmissionDecision:
    """The answer to one AdmissionReview request.

    Refused requests carry a `message` that says what was wrong and what to do; allowed
    mutations carry a JSON patch (RFC 6902 operations). `code` is the HTTP status the API server
    reports with a refusal (kubectl shows it as "Error from server (Forbidden)"): 403 when policy
    refuses, 400 when the object itself is invalid (a bad queue spec, a bad request annotation).
    """

    allowed: bool
    message: str = ""
    patch: Sequence[Mapping[str, Any]] = ()
    warnings: tuple[str, ...] = ()
    code: int = 403


class Webhooks(Protocol):
    """Admission logic; the API wraps it in AdmissionReview envelopes."""

    def mutate_pod(self, request: Mapping[str, Any]) -> AdmissionDecision:
        """Decide on a pod CREATE (`request` is AdmissionReview.request as JSON)."""

    def validate_queue(self, request: Mapping[str, Any]) -> AdmissionDecision:
        """Decide on a Queue CREATE, UPDATE or DELETE."""


class Actions(Protocol):
    """What a user may ask the service to do; the API checks RBAC before calling."""

    def delete_workload(self, name: str) -> None:
        """Delete every pod of the workload (its creator, e.g. Argo, decides what follows).

        Raises KeyError if no such workload exists.
        """
