"""What the API tests share: a real plan of a small cluster, fakes of the driver's seams.

The cluster (`cluster_status()`): node n1 (4 x H100, pool h100) carries team-a's 2-pod gang on
GPUs 0 and 1 and two team-b slices on GPU 2; n2 (2 x A100, pool a100) is empty; n3 (h100) is
not ready. Queues: org > team-a (quota 2), team-b (quota 1, limit 3; quota 2 in a100). Pending:
team-b/big (at its limit), team-b/later (no capacity), team-a/next (admitted by the plan),
team-a/lost (names an unknown queue).

RBAC (`FakeAuthorizer`): admin (system:masters) may do anything; alice (researchers) may list,
get and delete pods in team-a only, and list and get queues; bob (researchers) nothing.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx
from starlette.exceptions import StarletteDeprecationWarning

with warnings.catch_warnings():
    # Starlette's TestClient prefers the httpx2 package and warns once, at import, when it runs
    # on httpx. The project's dev dependencies name httpx (pyproject.toml); until they name
    # httpx2, this one warning is expected and every other warning is still an error.
    warnings.simplefilter("ignore", StarletteDeprecationWarning)
    from fastapi.testclient import TestClient

from scheduler_service.api import (
    AdmissionDecision,
    AuthUnavailable,
    ClusterStatus,
    Permission,
    User,
    WorkloadPods,
)
from scheduler_service.core import Kind, PoolQuota, schedule
from tests.core.builders import (
    A100_MIB,
    evicting,
    make_node,
    make_queue,
    make_snapshot,
    make_step,
    pod_on,
    run,
)

__all__ = [
    "ADMIN",
    "ADMIN_AUTH",
    "ALICE",
    "ALICE_AUTH",
    "BOB",
    "BOB_AUTH",
    "NOW",
    "TOKENS",
    "FakeActions",
    "FakeAuthorizer",
    "FakeWebhooks",
    "TestClient",
    "allow",
    "bearer",
    "cluster_status",
    "error_of",
]

NOW = 1_700_000_200.0
"""The cycle's time (Unix seconds); the workloads were submitted and started shortly before."""

ALICE = User(name="alice", groups=("researchers", "system:authenticated"), uid="u-alice")
BOB = User(name="bob", groups=("researchers", "system:authenticated"), uid="u-bob")
ADMIN = User(name="admin", groups=("system:masters", "system:authenticated"))
TOKENS = {"alice-token": ALICE, "bob-token": BOB, "admin-token": ADMIN}


def cluster_status() -> ClusterStatus:
    t = NOW - 200
    nodes = [
        make_node("n1", gpus=4),
        make_node("n2", gpus=2, model="A100", pool="a100", memory_mib=A100_MIB),
        make_node("n3", gpus=2, ready=False, topology={"block": "b1", "rack": "r2"}),
    ]
    queues = [
        make_queue("org", quota=4),
        make_queue("team-a", "org", quota=2),
        make_queue("team-b", "org", quota=1, limit=3, quotas=[PoolQuota("a100", quota=2)]),
    ]
    train = make_step("team-a/train", "team-a", gpus=1, pods=2, submitted_at=t + 10)
    infer = make_step(
        "team-b/infer", "team-b", slice=(20000, 30), kind=Kind.INFER, submitted_at=t + 20
    )
    notebook = make_step("team-b/notebook", "team-b", slice=(10000, 20), submitted_at=t + 21)
    workloads = [
        run(train, (pod_on("n1", 0), pod_on("n1", 1)), started_at=t + 100),
        run(infer, pod_on("n1", 2, slice=(20000, 30)), started_at=t + 110),
        evicting(run(notebook, pod_on("n1", 2, slice=(10000, 20)), started_at=t + 111)),
        make_step("team-b/big", "team-b", gpus=2, pods=2, submitted_at=t + 30, pools=["h100"]),
        make_step(
            "team-b/later", "team-b", gpus=2, submitted_at=t + 40, priority=-1, pools=["h100"]
        ),
        make_step("team-a/next", "team-a", gpus=1, submitted_at=t + 45),
        make_step("team-a/lost", "nowhere", gpus=1, submitted_at=t + 50),
    ]
    snapshot = make_snapshot(nodes, queues, workloads)
    pods = {
        "team-a/train": WorkloadPods("team-a", ("train-0", "train-1"), workflow="ddp-x7k2p"),
        "team-b/infer": WorkloadPods("team-b", ("infer-0",)),
        "team-b/notebook": WorkloadPods("team-b", ("notebook",)),
        "team-b/big": WorkloadPods("team-b", ("big-0", "big-1")),
        "team-b/later": WorkloadPods("team-b", ("later",)),
        "team-a/next": WorkloadPods("team-a", ("next",), workflow="ddp-x7k2p"),
        "team-a/lost": WorkloadPods("team-a", ("lost",)),
    }
    return ClusterStatus(
        snapshot=snapshot, plan=schedule(snapshot, NOW), pods=pods, cycle_at=NOW, leader=True
    )


Question = tuple[str, Permission]
"""(user name, permission), as the fake authorizer records it."""


@dataclass
class FakeAuthorizer:
    """RBAC from a table: `grants` holds (user, verb, resource, namespace or "*")."""

    grants: set[tuple[str, str, str, str]] = field(
        default_factory=lambda: (
            {("alice", verb, "pods", "team-a") for verb in ("list", "get", "delete")}
            | {("alice", verb, "queues.aistack.io", "*") for verb in ("list", "get")}
        )
    )
    down: bool = False
    questions: list[Question] = field(default_factory=list)

    def authenticate(self, token: str) -> User | None:
        if self.down:
            raise AuthUnavailable("the Kubernetes API server is unreachable (MaxRetryError)")
        return TOKENS.get(token)

    def allowed(self, user: User, permission: Permission) -> bool:
        self.questions.append((user.name, permission))
        if "system:masters" in user.groups:
            return True
        verb, resource, group = permission.verb, permission.resource, permission.group
        what = f"{resource}.{group}" if group else resource
        # A grant for "*" is a ClusterRoleBinding: it holds in every namespace too.
        namespaces = (permission.namespace or "*", "*")
        return any((user.name, verb, what, ns) in self.grants for ns in namespaces)


Decide = Callable[[Mapping[str, Any]], AdmissionDecision]


def allow(_: Mapping[str, Any]) -> AdmissionDecision:
    return AdmissionDecision(allowed=True)


@dataclass
class FakeWebhooks:
    """Answers with `pod` and `queue`, recording the requests it was given."""

    pod: Decide = allow
    queue: Decide = allow
    requests: list[Mapping[str, Any]] = field(default_factory=list)

    def mutate_pod(self, request: Mapping[str, Any]) -> AdmissionDecision:
        self.requests.append(request)
        return self.pod(request)

    def validate_queue(self, request: Mapping[str, Any]) -> AdmissionDecision:
        self.requests.append(request)
        return self.queue(request)


@dataclass
class FakeActions:
    """Records deletions; `gone` names workloads that vanish before the call (KeyError)."""

    deleted: list[str] = field(default_factory=list)
    gone: set[str] = field(default_factory=set)

    def delete_workload(self, name: str) -> None:
        if name in self.gone:
            raise KeyError(name)
        self.deleted.append(name)


def bearer(token: str) -> dict[str, str]:
    """The Authorization header for `token`."""
    return {"Authorization": f"Bearer {token}"}


ALICE_AUTH = bearer("alice-token")
BOB_AUTH = bearer("bob-token")
ADMIN_AUTH = bearer("admin-token")


def error_of(response: httpx.Response) -> tuple[str, str]:
    """The (code, message) of an error response, checking the body has exactly that shape."""
    body = response.json()
    assert set(body) == {"error"}, body
    assert set(body["error"]) == {"code", "message"}, body
    return body["error"]["code"], body["error"]["message"]
