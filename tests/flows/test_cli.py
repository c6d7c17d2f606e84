"""The author's commands that need no cluster: render, submit through Argo Server, bad input."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml

from scheduler_service import pod_contract as contract
from scheduler_service.cli import main

EXAMPLES = Path(__file__).parents[2] / "examples"

PIPELINE = """
from hera.workflows import DAG, Container, Workflow
import aistack_flows as af

with Workflow(name="tiny", entrypoint="main", labels={af.QUEUE_LABEL: "research"}) as w:
    with DAG(name="main"):
        Container(name="train", image="x", command=["x"], annotations=af.gpus(%s))()

if __name__ == "__main__":
    raise SystemExit("the loader must not run the main block")
"""


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_render_prints_the_managed_manifest(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["render", str(write(tmp_path, "p.py", PIPELINE % "2"))]) == 0
    (manifest,) = yaml.safe_load_all(capsys.readouterr().out)
    (train,) = [t for t in manifest["spec"]["templates"] if t["name"] == "train"]
    assert train["metadata"]["labels"][contract.QUEUE_LABEL] == "research"
    assert train["container"]["resources"]["limits"][contract.GPU_RESOURCE] == "2"


def test_a_rendered_manifest_renders_to_itself(capsys: pytest.CaptureFixture[str]) -> None:
    golden = EXAMPLES / "distributed_training.yaml"
    assert main(["render", str(golden)]) == 0
    assert capsys.readouterr().out == golden.read_text()


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("p.py", PIPELINE % "0", "invalid GPU request: gpus: must be a whole number from 1 to 64"),
        ("p.py", "raise RuntimeError('boom')", "running it failed: RuntimeError: boom"),
        ("p.py", "x = 1", "defines no Workflow"),
        ("p.yaml", "kind: Deployment\nmetadata: {name: d}", "is a 'Deployment', not one of"),
        ("p.yaml", "a: [", "not YAML or JSON"),
        ("p.txt", "", "give a Hera pipeline (.py) or Argo manifests"),
        (
            "p.yaml",
            "kind: Workflow\nmetadata: {name: w}\nspec:\n  entrypoint: t\n  templates:\n"
            "  - name: t\n    container: {image: x, resources: {limits: {nvidia.com/gpu: '1'}}}\n"
            "    metadata: {annotations: {aistack.io/priority: '1'}}\n",
            "step t: queue: no queue",
        ),
    ],
)
def test_what_cannot_be_rendered_is_refused_with_exit_status_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], name: str, text: str, message: str
) -> None:
    assert main(["render", str(write(tmp_path, name, text))]) == 2
    err = capsys.readouterr().err
    assert message in err
    assert "Traceback" not in err


def test_a_missing_file_is_named(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["render", "no/such/file.py"]) == 2
    assert "no/such/file.py: no such file" in capsys.readouterr().err


class _ArgoServer(BaseHTTPRequestHandler):
    """Answers Argo Server's create-workflow call the way it does, and keeps what it got."""

    received: list[tuple[str, dict[str, Any], str]]

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.received.append((self.path, body, self.headers.get("Authorization", "")))
        workflow = body["workflow"]
        workflow["metadata"]["namespace"] = self.path.split("/")[-1]
        answer = json.dumps(workflow).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, format: str, *args: Any) -> None:
        """Keep the test output quiet."""


@pytest.fixture
def argo_server() -> Iterator[tuple[str, list[tuple[str, dict[str, Any], str]]]]:
    received: list[tuple[str, dict[str, Any], str]] = []
    handler = type("Handler", (_ArgoServer,), {"received": received})
    server = HTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", received
    server.shutdown()
    server.server_close()
    thread.join()


def test_submit_through_argo_server_sends_the_managed_workflow(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    argo_server: tuple[str, list[tuple[str, dict[str, Any], str]]],
) -> None:
    url, received = argo_server
    pipeline = write(tmp_path, "p.py", PIPELINE % "4")
    status = main(["submit", str(pipeline), "--argo-server", url, "--token", "t0k", "-n", "team"])
    assert status == 0, capsys.readouterr().err
    assert "workflow tiny created in namespace team" in capsys.readouterr().out
    ((path, body, authorization),) = received
    assert path == "/api/v1/workflows/team"
    assert authorization == "Bearer t0k"
    (train,) = [t for t in body["workflow"]["spec"]["templates"] if t["name"] == "train"]
    assert train["metadata"]["labels"][contract.QUEUE_LABEL] == "research"
    assert contract.SCHEDULING_GATE in train["podSpecPatch"]


def test_submit_checks_every_pipeline_before_creating_any(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    argo_server: tuple[str, list[tuple[str, dict[str, Any], str]]],
) -> None:
    url, received = argo_server
    good = write(tmp_path, "good.py", PIPELINE % "1")
    unqueued = PIPELINE.replace('labels={af.QUEUE_LABEL: "research"}', "labels=None")
    bad = write(tmp_path, "bad.py", unqueued % "1")
    status = main(["submit", str(good), str(bad), "--argo-server", url])
    assert status == 2
    assert "workflow tiny cannot run under the AI-Stack scheduler" in capsys.readouterr().err
    assert received == []


def test_a_cluster_that_cannot_be_reached_is_exit_status_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    kubeconfig = write(
        tmp_path,
        "kubeconfig",
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "c", "cluster": {"server": "https://127.0.0.1:9"}}],
                "users": [{"name": "u", "user": {"token": "x"}}],
                "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}],
                "current-context": "c",
            }
        ),
    )
    assert main(["queues", "--kubeconfig", str(kubeconfig)]) == 1
    assert "cannot reach the cluster" in capsys.readouterr().err
