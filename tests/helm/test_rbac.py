"""RBAC: the service gets exactly what it uses (docs/helm.md says why), users get queue roles."""

from __future__ import annotations

import json
from collections.abc import Iterable

import pytest

from tests.helm._chart import NAMESPACE, RELEASE, Manifest, config_of, find, kinds, render

# (apiGroup, resource) -> verbs the service uses; the contract in docs/helm.md.
SERVICE_CLUSTER_RULES = {
    ("", "pods"): {"get", "list", "watch", "patch", "delete"},
    ("", "pods/status"): {"patch"},
    ("", "services"): {"get", "create"},
    ("", "nodes"): {"get", "list", "watch"},
    ("aistack.io", "queues"): {"get", "list", "watch"},
    ("aistack.io", "queues/status"): {"get", "patch", "update"},
    ("", "events"): {"create", "patch"},
    ("events.k8s.io", "events"): {"create", "patch"},
    ("authentication.k8s.io", "tokenreviews"): {"create"},
    ("authorization.k8s.io", "subjectaccessreviews"): {"create"},
}
REVIEWS = {
    ("authentication.k8s.io", "tokenreviews"),
    ("authorization.k8s.io", "subjectaccessreviews"),
}
LEASES = ("coordination.k8s.io", "leases")
READ = {"get", "list", "watch"}


def _grants(role: Manifest) -> dict[tuple[str, str], set[str]]:
    """(apiGroup, resource) -> verbs, over every rule of `role`, name restrictions ignored."""
    grants: dict[tuple[str, str], set[str]] = {}
    for rule in role["rules"]:
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                grants.setdefault((group, resource), set()).update(rule["verbs"])
    return grants


def _roles(manifests: Iterable[Manifest]) -> list[Manifest]:
    return [m for m in manifests if m["kind"] in {"Role", "ClusterRole"}]


def _bound_to_service_account(manifests: list[Manifest]) -> list[Manifest]:
    """The roles some binding grants to the service's ServiceAccount (the agent has its own)."""
    account = find(manifests, "ServiceAccount", RELEASE)["metadata"]["name"]
    bound = []
    for binding in kinds(manifests, "ClusterRoleBinding") + kinds(manifests, "RoleBinding"):
        subjects = binding["subjects"]
        if any(s["kind"] == "ServiceAccount" and s["name"] == account for s in subjects):
            assert subjects == [{"kind": "ServiceAccount", "name": account, "namespace": NAMESPACE}]
            ref = binding["roleRef"]
            bound.append(find(manifests, ref["kind"], ref["name"]))
    return bound


def test_the_service_gets_exactly_the_verbs_it_uses() -> None:
    manifests = render()

    (cluster_role,) = [
        r for r in _bound_to_service_account(manifests) if r["kind"] == "ClusterRole"
    ]

    assert _grants(cluster_role) == SERVICE_CLUSTER_RULES


def test_leases_only_in_the_release_namespace_and_only_its_own_lease() -> None:
    manifests = render()

    role = find(manifests, "Role", f"{RELEASE}-leader-election")

    assert role in _bound_to_service_account(manifests)
    assert role["metadata"]["namespace"] == NAMESPACE
    assert _grants(role) == {LEASES: {"get", "create", "update", "patch"}}
    lease = config_of(manifests)["leader_election"]["lease_name"]
    by_verbs = {tuple(rule["verbs"]): rule.get("resourceNames") for rule in role["rules"]}
    # create cannot name its object; the others may only touch the configured Lease.
    assert by_verbs == {("create",): None, ("get", "update", "patch"): [lease]}
    assert lease == RELEASE


def test_the_service_is_bound_to_nothing_else() -> None:
    manifests = render()

    names = sorted(r["metadata"]["name"] for r in _bound_to_service_account(manifests))

    assert names == [RELEASE, f"{RELEASE}-gpu-reservations", f"{RELEASE}-leader-election"]


def test_gpu_reservations_create_pods_in_the_release_namespace_that_may_patch_pods_there() -> None:
    manifests = render()

    created = find(manifests, "Role", f"{RELEASE}-gpu-reservations")
    assert created in _bound_to_service_account(manifests)
    assert (created["metadata"]["namespace"], _grants(created)) == (
        NAMESPACE,
        {("", "pods"): {"create"}},
    )
    own = find(manifests, "Role", f"{RELEASE}-gpu-reservation")
    assert (own["metadata"]["namespace"], _grants(own)) == (NAMESPACE, {("", "pods"): {"patch"}})
    binding = find(manifests, "RoleBinding", f"{RELEASE}-gpu-reservation")
    account = find(manifests, "ServiceAccount", f"{RELEASE}-gpu-reservation")
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": account["metadata"]["name"], "namespace": NAMESPACE}
    ]
    assert (
        config_of(manifests)["gpu_reservations"]["service_account"] == account["metadata"]["name"]
    )


@pytest.mark.parametrize(
    "set_json",
    [
        [],
        ['certManager={"enabled":true}', 'metrics={"serviceMonitor":{"enabled":true}}'],
        ['rbac.queueAdmins=[{"kind":"Group","name":"gpu-admins"}]'],
    ],
    ids=["defaults", "cert-manager", "queue-admins"],
)
def test_no_role_uses_a_wildcard_or_touches_secrets(set_json: list[str]) -> None:
    for role in _roles(render(set_json=set_json)):
        for rule in role["rules"]:
            fields = rule["apiGroups"] + rule["resources"] + rule["verbs"]
            fields += rule.get("resourceNames", [])
            assert "*" not in fields, (role["metadata"]["name"], rule)
            assert not {"secrets", "configmaps"} & set(rule["resources"]), rule
            assert not {"escalate", "bind", "impersonate"} & set(rule["verbs"]), rule


def test_without_api_auth_the_reviews_are_not_granted() -> None:
    manifests = render(set_json=["config.api.auth=false"])

    grants = _grants(find(manifests, "ClusterRole", RELEASE))

    assert grants == {k: v for k, v in SERVICE_CLUSTER_RULES.items() if k not in REVIEWS}


def test_without_leader_election_there_is_no_lease_role() -> None:
    manifests = render(
        set_json=[
            "replicas=1",
            "config.leader_election.enabled=false",
            "config.gpu_reservations.enabled=false",
        ]
    )

    assert kinds(manifests, "Role") == []
    assert kinds(manifests, "RoleBinding") == []
    assert kinds(manifests, "ServiceAccount", f"{RELEASE}-gpu-reservation") == []
    assert "image" not in config_of(manifests)["gpu_reservations"]
    assert _grants(find(manifests, "ClusterRole", RELEASE)) == SERVICE_CLUSTER_RULES


def test_rbac_create_false_creates_no_rbac_objects() -> None:
    manifests = render(set_json=["rbac.create=false"])

    rbac = [m for m in manifests if m["apiVersion"].startswith("rbac.authorization.k8s.io/")]

    assert rbac == []


def test_an_existing_service_account_is_bound_and_not_created() -> None:
    manifests = render(set_json=['serviceAccount={"create":false,"name":"platform-sa"}'])

    assert kinds(manifests, "ServiceAccount", RELEASE) == []
    pod = find(manifests, "Deployment")["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "platform-sa"
    binding = find(manifests, "ClusterRoleBinding", RELEASE)
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "platform-sa", "namespace": NAMESPACE}
    ]


def test_queue_viewer_is_read_only_and_aggregated_to_admin_and_edit() -> None:
    role = find(render(), "ClusterRole", f"{RELEASE}-queue-viewer")

    labels = role["metadata"]["labels"]
    assert labels["rbac.authorization.k8s.io/aggregate-to-admin"] == "true"
    assert labels["rbac.authorization.k8s.io/aggregate-to-edit"] == "true"
    assert _grants(role) == {
        ("aistack.io", "queues"): READ,
        ("aistack.io", "queues/status"): {"get"},
    }


def test_queue_admin_writes_queues_but_not_their_status() -> None:
    role = find(render(), "ClusterRole", f"{RELEASE}-queue-admin")

    assert not any(
        key.startswith("rbac.authorization.k8s.io/") for key in role["metadata"]["labels"]
    )
    assert _grants(role) == {
        ("aistack.io", "queues"): READ | {"create", "update", "patch", "delete"},
        ("aistack.io", "queues/status"): {"get"},
    }


def test_queue_admins_are_bound_when_named() -> None:
    subject = {"kind": "Group", "name": "gpu-admins", "apiGroup": "rbac.authorization.k8s.io"}
    manifests = render(set_json=[f"rbac.queueAdmins={json.dumps([subject])}"])

    binding = find(manifests, "ClusterRoleBinding", f"{RELEASE}-queue-admin")

    assert binding["roleRef"]["name"] == f"{RELEASE}-queue-admin"
    assert binding["subjects"] == [subject]
    assert kinds(render(), "ClusterRoleBinding", f"{RELEASE}-queue-admin") == []
