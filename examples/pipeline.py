"""build -> train -> evaluate -> deploy: a Hera pipeline whose steps get GPUs from the scheduler.

- `build` tests the code and prepares the data on a quarter of a GPU (kind build: never
  preempted, runs within the queue's guaranteed quota);
- `train` fits the model on a whole GPU (kind train: may borrow idle GPUs beyond the quota; if
  their owner takes them back, it is retried for free and resumes from its checkpoint);
- `evaluate` scores it on a slice and fails the pipeline if it is not good enough;
- `deploy` serves the model on a slice (kind infer), checks that it answers, and publishes the
  release.

The queue is the workflow's label: every GPU step that names none uses it.

    aistack run examples/pipeline.py --simulate-gpus 4xH100-80GB   # here, no cluster
    aistack render examples/pipeline.py          # the manifest, as the cluster gets it
    aistack submit examples/pipeline.py -n research
    aistack status <workflow> -n research
"""

from hera.workflows import DAG, Artifact, Workflow, script
from hera.workflows import models as m

import aistack_flows as af

IMAGE = "python:3.12-slim"


@script(
    image=IMAGE,
    annotations=af.gpu_slice(memory_gib=4, compute_percent=20, kind="build"),
    outputs=Artifact(name="dataset", path="/tmp/dataset.json"),
)
def build(samples: int = 400) -> None:
    """Check the training code's arithmetic, then write a synthetic dataset (y = 3x + 2)."""
    import json
    import random

    assert abs(sum(2 * x for x in (1.0, 2.0)) - 6.0) < 1e-9, "gradient arithmetic is broken"
    noise = random.Random(7)
    data = [(x / 100, 3 * x / 100 + 2 + noise.gauss(0, 0.05)) for x in range(samples)]
    with open("/tmp/dataset.json", "w") as out:
        json.dump(data, out)


@script(
    image=IMAGE,
    annotations=af.gpus(1, checkpoint="/checkpoints"),
    inputs=Artifact(name="dataset", path="/tmp/dataset.json"),
    outputs=Artifact(name="model", path="/tmp/model.json"),
    volume_mounts=[m.VolumeMount(name="checkpoints", mount_path="/checkpoints")],
)
def train(epochs: int = 300) -> None:
    """Fit the model by gradient descent, resuming from the step's checkpoint if there is one."""
    import json
    import os
    from pathlib import Path

    data = json.loads(Path("/tmp/dataset.json").read_text())
    checkpoint = Path(os.environ.get("AISTACK_CHECKPOINT_DIR", "/tmp/ckpt")) / "model.json"
    checkpoint.parent.mkdir(parents=True, exist_ok=True)
    model = (
        json.loads(checkpoint.read_text()) if checkpoint.exists() else {"w": 0, "b": 0, "epoch": 0}
    )
    while model["epoch"] < epochs:
        errors = [(model["w"] * x + model["b"] - y, x) for x, y in data]
        model["w"] -= 0.1 * sum(2 * e * x for e, x in errors) / len(data)
        model["b"] -= 0.1 * sum(2 * e for e, _ in errors) / len(data)
        model["epoch"] += 1
        if model["epoch"] % 50 == 0:
            checkpoint.write_text(json.dumps(model))
    Path("/tmp/model.json").write_text(json.dumps(model))


@script(
    image=IMAGE,
    annotations=af.gpu_slice(memory_gib=8, compute_percent=25),
    inputs=[
        Artifact(name="dataset", path="/tmp/dataset.json"),
        Artifact(name="model", path="/tmp/model.json"),
    ],
)
def evaluate(max_error: float = 0.01) -> None:
    """Fail the pipeline unless the model's mean squared error is below `max_error`."""
    import json
    from pathlib import Path

    data = json.loads(Path("/tmp/dataset.json").read_text())
    model = json.loads(Path("/tmp/model.json").read_text())
    error = sum((model["w"] * x + model["b"] - y) ** 2 for x, y in data) / len(data)
    print(f"mean squared error {error:.5f}")
    if error > max_error:
        raise SystemExit(f"error {error:.5f} above {max_error}: not deploying")


@script(
    image=IMAGE,
    annotations=af.gpu_slice(memory_gib=4, compute_percent=10, kind="infer"),
    inputs=Artifact(name="model", path="/tmp/model.json"),
    outputs=Artifact(name="release", path="/tmp/release"),
)
def deploy(probe: float = 2.0) -> None:
    """Serve the model over HTTP on its slice, answer a test request, then publish the release.

    A long-lived server would be a Deployment whose pods carry `af.pod_metadata(...)` (see
    docs/authors.md); this step serves long enough to prove the model answers, and hands the
    release (model and server settings) to whatever deploys it.
    """
    import json
    import shutil
    import threading
    import urllib.request
    from http.server import BaseHTTPRequestHandler, HTTPServer
    from pathlib import Path

    model = json.loads(Path("/tmp/model.json").read_text())

    class Predict(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            x = float(self.path.rpartition("=")[2])
            body = json.dumps({"y": model["w"] * x + model["b"]}).encode()
            self.send_response(200)
            self.end_headers()
            self.wfile.write(body)

    server = HTTPServer(("127.0.0.1", 0), Predict)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_port}/predict?x={probe}"
    answer = json.loads(urllib.request.urlopen(url, timeout=10).read())
    server.shutdown()
    print(f"serving: f({probe}) = {answer['y']:.3f}")
    if abs(answer["y"] - (3 * probe + 2)) > 0.1:
        raise SystemExit(
            f"the served model answers {answer['y']:.3f}, expected about {3 * probe + 2}"
        )
    release = Path("/tmp/release")
    release.mkdir(parents=True, exist_ok=True)
    shutil.copy("/tmp/model.json", release / "model.json")
    (release / "server.json").write_text(json.dumps({"port": 8080, "slice": "4 GiB / 10%"}))


with Workflow(
    generate_name="pipeline-",
    entrypoint="main",
    labels={af.QUEUE_LABEL: "research"},
    volume_claim_templates=[
        m.PersistentVolumeClaim(
            metadata=m.ObjectMeta(name="checkpoints"),
            spec=m.PersistentVolumeClaimSpec(
                access_modes=["ReadWriteOnce"],
                resources=m.VolumeResourceRequirements(requests={"storage": m.Quantity("1Gi")}),
            ),
        )
    ],
) as workflow:
    with DAG(name="main"):
        built = build()
        trained = train(arguments=built.get_artifact("dataset").with_name("dataset"))
        evaluated = evaluate(
            arguments=[
                built.get_artifact("dataset").with_name("dataset"),
                trained.get_artifact("model").with_name("model"),
            ]
        )
        deployed = deploy(arguments=trained.get_artifact("model").with_name("model"))
        built >> trained >> evaluated >> deployed
