"""build -> train -> evaluate -> deploy: a Hera pipeline whose steps get GPUs from the scheduler.

- `build` tests the code and prepares the data on a quarter of a GPU (kind build: never
  preempted, runs within the queue's guaranteed quota);
- `train` fits the model on a whole GPU (kind train: may borrow idle GPUs beyond the quota; if
  their owner takes them back, it is retried for free and resumes from its checkpoint);
- `evaluate` scores it on a slice and fails the pipeline if it is not good enough;
- `deploy` starts an inference server (a Deployment whose pods the scheduler admits too, on
  slices, kind infer).

The queue is the workflow's label: every GPU step that names none uses it.

    aistack render examples/pipeline.py          # the manifest, as the cluster gets it
    aistack submit examples/pipeline.py -n research
    aistack status <workflow> -n research
"""

import yaml
from hera.workflows import DAG, Artifact, Resource, Workflow, script
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
        model["w"] -= 0.5 * sum(2 * e * x for e, x in errors) / len(data)
        model["b"] -= 0.5 * sum(2 * e for e, _ in errors) / len(data)
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


SERVER = {
    "apiVersion": "apps/v1",
    "kind": "Deployment",
    "metadata": {"name": "linear-model", "labels": {"app": "linear-model"}},
    "spec": {
        "replicas": 2,
        "selector": {"matchLabels": {"app": "linear-model"}},
        "template": {
            "metadata": {
                # Serving pods carry the same contract as pipeline steps: the scheduler admits
                # them into the queue and puts each on a slice.
                **af.pod_metadata(
                    af.GpuRequest(memory_gib=4, compute_percent=10, kind="infer"), queue="research"
                ),
            },
            "spec": {
                "containers": [
                    {
                        "name": "server",
                        "image": IMAGE,
                        "command": ["python", "-m", "http.server", "8080"],
                        "ports": [{"containerPort": 8080}],
                    }
                ]
            },
        },
    },
}

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
    deploy = Resource(
        name="deploy",
        action="apply",
        manifest=yaml.safe_dump(SERVER, sort_keys=False),
        success_condition="status.availableReplicas > 0",
    )
    with DAG(name="main"):
        built = build()
        trained = train(arguments=built.get_artifact("dataset").with_name("dataset"))
        evaluated = evaluate(
            arguments=[
                built.get_artifact("dataset").with_name("dataset"),
                trained.get_artifact("model").with_name("model"),
            ]
        )
        built >> trained >> evaluated >> deploy()
