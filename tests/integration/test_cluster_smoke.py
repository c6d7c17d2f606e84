"""The test cluster itself: what the service's integration tests rely on, checked end to end.

Each test exercises one promise of the harness against the real programs: kwok keeps GPU nodes
Ready and fakes the kubelet, kube-scheduler binds pods (also once a scheduling gate is lifted),
the API server calls a webhook served by the test process, and Argo runs a workflow to the end.
"""

from __future__ import annotations

import base64
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar

import pytest
from hera.workflows import Container, Resources, Workflow
from kubernetes.client import (
    AdmissionregistrationV1Api,
    ApiClient,
    CoreV1Api,
    CustomObjectsApi,
    V1MutatingWebhookConfiguration,
    V1Pod,
)

from tests.integration.cluster import (
    GPU_RESOURCE,
    RUN_FOR_ANNOTATION,
    ArgoController,
    GpuNodes,
    TestCluster,
    gpu_pod,
    issue_cert,
    node_is_ready,
    wait_for,
    wait_for_workflow_phase,
)

GATE = "aistack.io/admission"


def _phase(pod: V1Pod) -> str | None:
    return pod.status.phase if pod.status else None


def _node_name(pod: V1Pod) -> str | None:
    return pod.spec.node_name if pod.spec else None


def test_kwok_gpu_node_becomes_ready_with_its_gpus(
    make_gpu_node: GpuNodes, admin_client: ApiClient
) -> None:
    created = make_gpu_node("h100", gpus=8, wait_ready=False)
    assert created.metadata is not None
    name = created.metadata.name
    assert name is not None
    core = CoreV1Api(admin_client)

    node = wait_for(f"node {name} to become Ready", lambda: core.read_node(name), node_is_ready)

    assert node.status is not None
    assert node.status.allocatable is not None
    assert node.status.allocatable[GPU_RESOURCE] == "8"
    assert node.metadata is not None
    assert node.metadata.labels is not None
    assert node.metadata.labels["nvidia.com/gpu.product"] == "NVIDIA-H100-80GB-HBM3"
    assert node.metadata.labels["nvidia.com/gpu.count"] == "8"
    assert node.metadata.labels["kubernetes.io/hostname"] == name


def test_gpu_pod_is_bound_by_kube_scheduler_runs_and_succeeds(
    make_gpu_node: GpuNodes, namespace: str, admin_client: ApiClient
) -> None:
    node = make_gpu_node("h100").metadata
    assert node is not None
    core = CoreV1Api(admin_client)
    core.create_namespaced_pod(
        namespace,
        gpu_pod(
            "train",
            gpus=1,
            run_for="2s",
            node_selector={"kubernetes.io/hostname": str(node.name)},
        ),
    )

    def pod() -> V1Pod:
        return core.read_namespaced_pod("train", namespace)

    running = wait_for("pod train to run", pod, lambda p: _phase(p) == "Running")
    assert _node_name(running) == node.name
    done = wait_for("pod train to succeed", pod, lambda p: _phase(p) in {"Succeeded", "Failed"})

    assert _phase(done) == "Succeeded"
    assert done.status is not None
    statuses = done.status.container_statuses or []
    assert [s.state.terminated.exit_code for s in statuses if s.state and s.state.terminated] == [0]


def test_gated_pod_waits_until_the_gate_is_lifted_then_lands_on_the_chosen_node(
    make_gpu_node: GpuNodes, namespace: str, admin_client: ApiClient
) -> None:
    first = make_gpu_node("a").metadata
    chosen = make_gpu_node("b").metadata
    assert first is not None
    assert chosen is not None
    core = CoreV1Api(admin_client)
    core.create_namespaced_pod(
        namespace,
        gpu_pod("gated", gpus=4, scheduling_gates=[GATE], node_selector=make_gpu_node.selector),
    )

    def pod() -> V1Pod:
        return core.read_namespaced_pod("gated", namespace)

    def gated(p: V1Pod) -> bool:
        conditions = p.status.conditions if p.status else None
        return any(
            c.type == "PodScheduled" and c.reason == "SchedulingGated" for c in conditions or []
        )

    wait_for("the pod to be marked SchedulingGated", pod, gated)
    # A pod created after the gated one gets bound: kube-scheduler is at work, and passes the
    # gated pod by.
    core.create_namespaced_pod(namespace, gpu_pod("control", node_selector=make_gpu_node.selector))
    wait_for(
        "kube-scheduler to bind the ungated control pod",
        lambda: core.read_namespaced_pod("control", namespace),
        lambda p: _node_name(p) is not None,
    )
    assert _node_name(pod()) is None

    # What the service does to admit a pod: lift the gate and pin the node in one patch.
    core.patch_namespaced_pod(
        "gated",
        namespace,
        {
            "spec": {
                "schedulingGates": None,
                "nodeSelector": {"kubernetes.io/hostname": chosen.name},
            }
        },
        _content_type="application/merge-patch+json",
    )

    bound = wait_for("the admitted pod to run", pod, lambda p: _phase(p) == "Running")
    assert _node_name(bound) == chosen.name


class _LabellingWebhook(BaseHTTPRequestHandler):
    """A mutating webhook that labels every pod `aistack.io/mutated: "true"`."""

    requests: ClassVar[list[str]] = []

    def do_POST(self) -> None:
        review = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        request = review["request"]
        type(self).requests.append(request["name"] or request["object"]["metadata"]["name"])
        labels = dict(request["object"]["metadata"].get("labels") or {})
        labels["aistack.io/mutated"] = "true"
        patch = [{"op": "add", "path": "/metadata/labels", "value": labels}]
        body = json.dumps(
            {
                "apiVersion": "admission.k8s.io/v1",
                "kind": "AdmissionReview",
                "response": {
                    "uid": request["uid"],
                    "allowed": True,
                    "patchType": "JSONPatch",
                    "patch": base64.b64encode(json.dumps(patch).encode()).decode(),
                },
            }
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: the test asserts on `requests` instead."""


@pytest.fixture
def webhook_url(cluster: TestCluster) -> Iterator[str]:
    """An HTTPS mutating webhook on 127.0.0.1, its certificate signed by the cluster's CA."""
    _LabellingWebhook.requests = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _LabellingWebhook)
    context = issue_cert(cluster.ca, ["127.0.0.1"]).server_context()
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"https://127.0.0.1:{server.server_address[1]}/mutate"
    server.shutdown()
    server.server_close()
    thread.join()


def test_api_server_calls_a_webhook_served_by_the_test_process(
    cluster: TestCluster, namespace: str, admin_client: ApiClient, webhook_url: str
) -> None:
    admission = AdmissionregistrationV1Api(admin_client)
    configuration = V1MutatingWebhookConfiguration.from_dict(
        {
            "metadata": {"name": namespace},
            "webhooks": [
                {
                    "name": "label.smoke.aistack.io",
                    "clientConfig": {
                        "url": webhook_url,
                        "caBundle": base64.b64encode(cluster.ca.cert_pem).decode(),
                    },
                    "rules": [
                        {
                            "operations": ["CREATE"],
                            "apiGroups": [""],
                            "apiVersions": ["v1"],
                            "resources": ["pods"],
                        }
                    ],
                    # Only this test's namespace: the cluster is shared by the session.
                    "namespaceSelector": {
                        "matchLabels": {"kubernetes.io/metadata.name": namespace}
                    },
                    "failurePolicy": "Fail",
                    "sideEffects": "None",
                    "admissionReviewVersions": ["v1"],
                    "timeoutSeconds": 5,
                }
            ],
        }
    )
    assert configuration is not None
    admission.create_mutating_webhook_configuration(configuration)
    core = CoreV1Api(admin_client)
    try:
        # The API server picks the configuration up asynchronously; dry runs show when.
        wait_for(
            "the API server to call the webhook (dry-run pod labelled)",
            lambda: core.create_namespaced_pod(namespace, gpu_pod("probe"), dry_run="All"),
            lambda p: bool(p.metadata and (p.metadata.labels or {}).get("aistack.io/mutated")),
        )
        created = core.create_namespaced_pod(namespace, gpu_pod("real"))
    finally:
        admission.delete_mutating_webhook_configuration(namespace)

    assert created.metadata is not None
    assert (created.metadata.labels or {}).get("aistack.io/mutated") == "true"
    assert "real" in _LabellingWebhook.requests


def test_argo_runs_a_one_step_gpu_workflow_to_success(
    argo: ArgoController, make_gpu_node: GpuNodes, namespace: str, admin_client: ApiClient
) -> None:
    node = make_gpu_node("h100").metadata
    assert node is not None
    with Workflow(generate_name="smoke-", namespace=namespace, entrypoint="train") as workflow:
        Container(
            name="train",
            image="registry.invalid/aistack/train:test",
            command=["python", "train.py"],
            annotations={RUN_FOR_ANNOTATION: "1s"},
            resources=Resources(gpus=1),
            node_selector={"kubernetes.io/hostname": str(node.name)},
        )
    created: dict[str, Any] = CustomObjectsApi(admin_client).create_namespaced_custom_object(  # type: ignore[assignment]
        "argoproj.io", "v1alpha1", namespace, "workflows", workflow.to_dict()
    )
    name = created["metadata"]["name"]

    finished = wait_for_workflow_phase(
        admin_client, namespace, name, ("Succeeded", "Failed", "Error"), timeout=90
    )

    assert finished["status"]["phase"] == "Succeeded", json.dumps(finished["status"], indent=2)
    pods = CoreV1Api(admin_client).list_namespaced_pod(
        namespace, label_selector=f"workflows.argoproj.io/workflow={name}"
    )
    assert [_node_name(pod) for pod in pods.items] == [node.name]
