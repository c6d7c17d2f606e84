"""The webhooks reach the service, trust the certificate it serves, and select the right objects."""

from __future__ import annotations

import argparse
import base64
import datetime
import json

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from scheduler_service import cli
from scheduler_service.cli import _serve as serve_cli
from tests.helm._chart import (
    NAMESPACE,
    RELEASE,
    TESTDATA,
    Manifest,
    container,
    find,
    kinds,
    render,
    sha256,
)

DNS_NAMES = [f"{RELEASE}.{NAMESPACE}.svc", f"{RELEASE}.{NAMESPACE}.svc.cluster.local"]
PATHS = {
    "mutate-pod.aistack.io": "/webhooks/mutate-pod",
    "mutate-gpu-pod.aistack.io": "/webhooks/mutate-pod",
    "validate-queue.aistack.io": "/webhooks/validate-queue",
}


def _webhooks(manifests: list[Manifest]) -> dict[str, Manifest]:
    """Every webhook of both configurations, by name."""
    configurations = kinds(manifests, "MutatingWebhookConfiguration")
    configurations += kinds(manifests, "ValidatingWebhookConfiguration")
    return {hook["name"]: hook for c in configurations for hook in c["webhooks"]}


def _serving_secret_name(manifests: list[Manifest]) -> str:
    """The Secret whose tls.crt/tls.key the service's --tls-cert/--tls-key read."""
    pod = find(manifests, "Deployment")["spec"]["template"]["spec"]
    (volume,) = [v for v in pod["volumes"] if v["name"] == "config"]
    (secret,) = [
        s["secret"]
        for s in volume["projected"]["sources"]
        if "secret" in s and s["secret"]["items"][0]["key"] != "allocation.key"
    ]
    return str(secret["name"])


def _pem(data: str) -> x509.Certificate:
    return x509.load_pem_x509_certificate(base64.b64decode(data))


def test_both_configurations_exist_once_with_their_webhooks() -> None:
    manifests = render()

    find(manifests, "MutatingWebhookConfiguration", RELEASE)
    find(manifests, "ValidatingWebhookConfiguration", RELEASE)
    assert set(_webhooks(manifests)) == set(PATHS)


def test_webhooks_call_the_chart_service_on_443_which_reaches_the_https_port() -> None:
    manifests = render()
    service = find(manifests, "Service", RELEASE)
    ports = {p["name"]: p for p in service["spec"]["ports"]}
    container_ports = {p["name"]: p["containerPort"] for p in container(manifests)["ports"]}

    for name, hook in _webhooks(manifests).items():
        assert hook["clientConfig"]["service"] == {
            "name": service["metadata"]["name"],
            "namespace": NAMESPACE,
            "path": PATHS[name],
            "port": 443,
        }
    assert ports["https"]["port"] == 443
    assert container_ports[ports["https"]["targetPort"]] == 8443
    labels = find(manifests, "Deployment")["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= labels.items()


def test_common_webhook_settings() -> None:
    for hook in _webhooks(render()).values():
        assert hook["failurePolicy"] == "Fail"
        assert hook["sideEffects"] == "None"
        assert hook["admissionReviewVersions"] == ["v1"]
        assert hook["timeoutSeconds"] == 10
    timeouts = {
        h["timeoutSeconds"]
        for h in _webhooks(render(set_json=["webhook.timeoutSeconds=3"])).values()
    }
    assert timeouts == {3}


def test_pod_webhook_gates_queue_labelled_pods_outside_excluded_namespaces() -> None:
    hook = _webhooks(render())["mutate-pod.aistack.io"]

    assert hook["rules"] == [
        {
            "apiGroups": [""],
            "apiVersions": ["v1"],
            "operations": ["CREATE"],
            "resources": ["pods"],
            "scope": "Namespaced",
        }
    ]
    assert hook["reinvocationPolicy"] == "IfNeeded"
    assert hook["objectSelector"] == {
        "matchExpressions": [{"key": "aistack.io/queue", "operator": "Exists"}]
    }
    assert hook["namespaceSelector"] == {
        "matchExpressions": [
            {
                "key": "kubernetes.io/metadata.name",
                "operator": "NotIn",
                "values": [NAMESPACE, "kube-system"],
            }
        ]
    }


def test_pod_webhook_namespace_selection_is_configurable() -> None:
    opt_in = {
        "matchExpressions": [{"key": "team", "operator": "In", "values": ["ml"]}],
        "matchLabels": {"aistack.io/enabled": "true"},
    }
    manifests = render(
        set_json=[
            f"webhook.excludedNamespaces={json.dumps(['kube-system', 'monitoring', NAMESPACE])}",
            f"webhook.namespaceSelector={json.dumps(opt_in)}",
        ]
    )

    selector = _webhooks(manifests)["mutate-pod.aistack.io"]["namespaceSelector"]

    assert selector["matchLabels"] == {"aistack.io/enabled": "true"}
    excluded, team = selector["matchExpressions"]
    assert excluded["values"] == [NAMESPACE, "kube-system", "monitoring"]
    assert team == {"key": "team", "operator": "In", "values": ["ml"]}


def test_gpu_pod_webhook_sees_only_unlabelled_pods_that_name_nvidia_gpus() -> None:
    hooks = _webhooks(render())
    hook = hooks["mutate-gpu-pod.aistack.io"]

    # The same call as the labelled pods' webhook: the service decides from the pod.
    for field in ("rules", "clientConfig", "reinvocationPolicy", "failurePolicy"):
        assert hook[field] == hooks["mutate-pod.aistack.io"][field], field
    assert hook["objectSelector"] == {
        "matchExpressions": [{"key": "aistack.io/queue", "operator": "DoesNotExist"}]
    }
    (condition,) = hook["matchConditions"]
    expression = " ".join(condition["expression"].split())
    for where in ("object.spec.containers", "object.spec.initContainers"):
        assert f"{where}.exists(c," in expression
    for field in ("limits", "requests"):
        assert f"'nvidia.com/gpu' in c.resources.{field}" in expression
    assert hook["namespaceSelector"] == {
        "matchExpressions": [
            {
                "key": "kubernetes.io/metadata.name",
                "operator": "NotIn",
                "values": [NAMESPACE, "kube-system"],
            }
        ]
    }


def test_gpu_pod_webhook_exempts_excluded_and_gpu_exempt_namespaces() -> None:
    manifests = render(
        set_json=[
            'webhook.excludedNamespaces=["kube-system","monitoring"]',
            'gpuPods.exemptNamespaces=["gpu-operator","monitoring"]',
            'webhook.namespaceSelector={"matchLabels":{"aistack.io/enabled":"true"}}',
        ]
    )
    hooks = _webhooks(manifests)
    labelled = hooks["mutate-pod.aistack.io"]["namespaceSelector"]
    unlabelled = hooks["mutate-gpu-pod.aistack.io"]["namespaceSelector"]

    assert labelled["matchExpressions"][0]["values"] == [NAMESPACE, "kube-system", "monitoring"]
    assert unlabelled["matchExpressions"][0]["values"] == [
        NAMESPACE,
        "kube-system",
        "monitoring",
        "gpu-operator",
    ]
    assert labelled["matchLabels"] == unlabelled["matchLabels"] == {"aistack.io/enabled": "true"}


def test_queue_webhook_validates_every_change_of_a_queue() -> None:
    hook = _webhooks(render())["validate-queue.aistack.io"]

    assert hook["rules"] == [
        {
            "apiGroups": ["aistack.io"],
            "apiVersions": ["v1alpha1"],
            "operations": ["CREATE", "UPDATE", "DELETE"],
            "resources": ["queues"],
            "scope": "Cluster",
        }
    ]


def test_generated_certificate_is_served_and_trusted() -> None:
    manifests = render()
    secret = find(manifests, "Secret", _serving_secret_name(manifests))
    data = secret["data"]
    ca = _pem(data["ca.crt"])
    cert = _pem(data["tls.crt"])

    assert secret["type"] == "kubernetes.io/tls"
    for hook in _webhooks(manifests).values():
        assert hook["clientConfig"]["caBundle"] == data["ca.crt"]
    # The API server verifies the serving certificate against caBundle for <svc>.<ns>.svc.
    assert cert.issuer == ca.subject
    ca_key = ca.public_key()
    assert isinstance(ca_key, rsa.RSAPublicKey)
    assert cert.signature_hash_algorithm is not None
    ca_key.verify(
        cert.signature,
        cert.tbs_certificate_bytes,
        padding.PKCS1v15(),
        cert.signature_hash_algorithm,
    )
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.DNSName) == DNS_NAMES
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert cert.not_valid_after_utc - datetime.datetime.now(datetime.UTC) > datetime.timedelta(
        days=3000
    )
    assert b"PRIVATE KEY" in base64.b64decode(data["tls.key"])


def test_two_installs_get_different_certificates() -> None:
    """Nothing is baked into the chart: each install (no Secret to look up) generates its own."""
    first = find(render(), "Secret", f"{RELEASE}-tls")["data"]["ca.crt"]
    second = find(render(set_json=["podLabels={}"]), "Secret", f"{RELEASE}-tls")["data"]["ca.crt"]

    assert first != second


def test_cert_manager_issues_the_secret_and_injects_the_ca() -> None:
    manifests = render(set_json=['certManager={"enabled":true}'])
    certificate = find(manifests, "Certificate")
    issuer = find(manifests, "Issuer")

    assert kinds(manifests, "Secret", f"{RELEASE}-tls") == []
    assert certificate["spec"]["secretName"] == _serving_secret_name(manifests)
    assert certificate["spec"]["dnsNames"] == DNS_NAMES
    assert certificate["spec"]["issuerRef"] == {
        "name": issuer["metadata"]["name"],
        "kind": "Issuer",
        "group": "cert-manager.io",
    }
    assert issuer["spec"] == {"selfSigned": {}}
    injected = f"{certificate['metadata']['namespace']}/{certificate['metadata']['name']}"
    for kind in ("MutatingWebhookConfiguration", "ValidatingWebhookConfiguration"):
        configuration = find(manifests, kind)
        assert configuration["metadata"]["annotations"] == {
            "cert-manager.io/inject-ca-from": injected
        }
        assert all("caBundle" not in hook["clientConfig"] for hook in configuration["webhooks"])


def test_cert_manager_can_use_an_existing_issuer() -> None:
    issuer = {"name": "corp-ca", "kind": "ClusterIssuer", "group": "cert-manager.io"}
    manifests = render(
        set_json=[f'certManager={{"enabled":true,"issuerRef":{json.dumps(issuer)}}}']
    )

    assert kinds(manifests, "Issuer") == []
    assert find(manifests, "Certificate")["spec"]["issuerRef"] == issuer


def test_an_existing_secret_is_mounted_and_its_ca_given_to_the_webhooks() -> None:
    manifests = render(TESTDATA / "existing-secret.values.yaml")
    webhooks = _webhooks(manifests)

    assert kinds(manifests, "Secret", f"{RELEASE}-tls") == []
    assert kinds(manifests, "Certificate") == []
    assert _serving_secret_name(manifests) == "aistack-webhook-tls"
    bundles = {hook["clientConfig"]["caBundle"] for hook in webhooks.values()}
    assert bundles == {
        "LS0tLS1CRUdJTiBDRVJUSUZJQ0FURS0tLS0tCk1JSUJmYWtlQ0FGb3JUZXN0c09ubHlOb3RBUmVhbENlcnRpZmljYXRlCi0tLS0tRU5EIENFUlRJRklDQVRFLS0tLS0K"
    }
    # fullnameOverride renames the service, and the webhooks follow it.
    assert {hook["clientConfig"]["service"]["name"] for hook in webhooks.values()} == {
        "gpu-scheduler"
    }


def test_cert_manager_rotates_the_key_on_renewal() -> None:
    certificate = find(render(set_json=['certManager={"enabled":true}']), "Certificate")

    assert certificate["spec"]["privateKey"] == {
        "algorithm": "ECDSA",
        "size": 256,
        "rotationPolicy": "Always",
    }


def _pod_annotations(manifests: list[Manifest]) -> dict[str, str]:
    annotations = find(manifests, "Deployment")["spec"]["template"]["metadata"]["annotations"]
    return dict(annotations)


def test_pods_restart_when_the_generated_certificate_changes() -> None:
    """The service loads its certificate at start; the Deployment names the one it must load."""
    manifests = render()
    served = find(manifests, "Secret", f"{RELEASE}-tls")["data"]["tls.crt"]

    assert _pod_annotations(manifests)["checksum/tls"] == sha256(served)


def test_pods_restart_when_an_existing_secret_gets_a_new_ca() -> None:
    values = TESTDATA / "existing-secret.values.yaml"
    before = _pod_annotations(render(values))["checksum/tls"]
    after = _pod_annotations(render(values, set_json=['tls.caBundle="QUJD"']))["checksum/tls"]

    assert before != after


def test_cert_manager_pods_carry_no_certificate_checksum() -> None:
    """cert-manager renews behind Helm's back; the chart cannot know the certificate."""
    assert "checksum/tls" not in _pod_annotations(render(set_json=['certManager={"enabled":true}']))


def test_the_pod_policy_exempts_exactly_the_scheduler_s_service_account() -> None:
    for set_json, account in (
        ([], RELEASE),
        (['serviceAccount={"create":false,"name":"platform-sa"}'], "platform-sa"),
    ):
        manifests = render(set_json=set_json)
        policy = find(manifests, "ValidatingAdmissionPolicy", f"{RELEASE}-pod-contract")
        conditions = {c["name"]: c["expression"] for c in policy["spec"]["matchConditions"]}
        assert conditions["not-the-scheduler"] == (
            f"request.userInfo.username != 'system:serviceaccount:{NAMESPACE}:{account}'"
        )
        binding = find(manifests, "ValidatingAdmissionPolicyBinding", f"{RELEASE}-pod-contract")
        assert binding["spec"] == {
            "policyName": f"{RELEASE}-pod-contract",
            "validationActions": ["Deny"],
        }


CLIENT_CA = "-----BEGIN CERTIFICATE-----\nMIIBfake\n-----END CERTIFICATE-----\n"


def test_with_a_client_ca_the_webhooks_take_only_the_api_server_on_their_own_port(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    manifests = render(set_json=[f"webhook.clientCA={json.dumps(CLIENT_CA)}"])

    for kind in ("MutatingWebhookConfiguration", "ValidatingWebhookConfiguration"):
        for hook in find(manifests, kind)["webhooks"]:
            assert hook["clientConfig"]["service"]["port"] == 9443
    service = find(manifests, "Service", RELEASE)
    assert {(p["name"], p["port"]) for p in service["spec"]["ports"]} >= {("webhooks", 9443)}
    scheduler = container(manifests)
    assert {(p["name"], p["containerPort"]) for p in scheduler["ports"]} >= {("webhooks", 9443)}
    config = find(manifests, "ConfigMap", RELEASE)["data"]
    assert config["webhook-client-ca.crt"] == CLIENT_CA
    # The command is one the real CLI accepts, with the CA where the volume puts it.
    seen: list[argparse.Namespace] = []

    def record(args: argparse.Namespace) -> int:
        seen.append(args)
        return 0

    monkeypatch.setattr(serve_cli, "run_serve_command", record)
    assert cli.main(scheduler["command"][1:]) == 0
    (args,) = seen
    assert (args.webhook_port, str(args.webhook_client_ca)) == (
        9443,
        "/etc/aistack/webhook-client-ca.crt",
    )


def test_without_a_client_ca_the_webhooks_share_the_api_port() -> None:
    manifests = render()
    for hook in find(manifests, "MutatingWebhookConfiguration")["webhooks"]:
        assert hook["clientConfig"]["service"]["port"] == 443
    assert "--webhook-port" not in container(manifests)["command"]
