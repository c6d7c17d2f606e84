"""Ready-made steps: ClusterWorkflowTemplates for build, train, evaluate and inference.

An administrator installs them once (`kubectl apply -f templates/`); every team then calls them
by reference from its own pipelines (`TemplateRef(name="aistack-train", template="train",
cluster_scope=True)`, see examples/from_templates.py), passing its queue, image and command.
Each is built here with the library, like any pipeline, so its GPU steps carry the scheduler's
contract; the YAML in `templates/` is generated from this module
(`python -m aistack_flows.library templates`) and a test fails when the two differ.

Every template takes `queue`, `image` and `command` (a shell command line) plus what its kind
of step needs. Training steps mount the PersistentVolumeClaim named by `checkpoint-claim` at
/checkpoints and resume from AISTACK_CHECKPOINT_DIR when reclaimed.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

import yaml
from hera.workflows import (
    DAG,
    ClusterWorkflowTemplate,
    Container,
    Parameter,
    Resource,
    Task,
)
from hera.workflows import models as m

from aistack_flows._declare import GpuRequest, Kind, gpu_slice, gpus, pod_metadata
from aistack_flows._submit import render

__all__ = ["step_templates", "write_templates"]

_CHECKPOINTS = "/checkpoints"


def _p(name: str) -> str:
    return f"{{{{inputs.parameters.{name}}}}}"


def _common(*extra: Parameter) -> list[Parameter]:
    return [
        Parameter(name="queue", description="the leaf queue the step runs in"),
        Parameter(name="image", description="the container image"),
        Parameter(name="command", description="a shell command line, run with sh -c"),
        *extra,
    ]


def _checkpoint_volume() -> tuple[list[m.Volume], list[m.VolumeMount]]:
    volume = m.Volume(
        name="checkpoints",
        persistent_volume_claim=m.PersistentVolumeClaimVolumeSource(
            claim_name=_p("checkpoint-claim")
        ),
    )
    return [volume], [m.VolumeMount(name="checkpoints", mount_path=_CHECKPOINTS)]


def _slice_step(name: str, kind: Kind) -> ClusterWorkflowTemplate:
    """A one-container step on a slice of a GPU (build/test, evaluation)."""
    with ClusterWorkflowTemplate(name=f"aistack-{name}", entrypoint=name) as template:
        Container(
            name=name,
            image=_p("image"),
            command=["sh", "-c", _p("command")],
            inputs=_common(
                Parameter(name="memory-gib", default="8", description="GPU memory, GiB"),
                Parameter(name="compute-percent", default="25", description="share of a GPU"),
            ),
            annotations=gpu_slice(
                memory_gib=_p("memory-gib"),
                compute_percent=_p("compute-percent"),
                queue=_p("queue"),
                kind=kind,
            ),
        )
    return template


def _train() -> ClusterWorkflowTemplate:
    """Single-node training on whole GPUs, preemptible, resuming from its checkpoint."""
    volumes, mounts = _checkpoint_volume()
    with ClusterWorkflowTemplate(name="aistack-train", entrypoint="train") as template:
        Container(
            name="train",
            image=_p("image"),
            command=["sh", "-c", _p("command")],
            inputs=_common(
                Parameter(name="gpus", default="1", description="whole GPUs"),
                Parameter(name="checkpoint-claim", description="PVC for checkpoints"),
            ),
            annotations=gpus(_p("gpus"), queue=_p("queue"), checkpoint=_CHECKPOINTS),
            volumes=volumes,
            volume_mounts=mounts,
        )
    return template


def _train_distributed() -> ClusterWorkflowTemplate:
    """Multi-node training: a gang of `nodes` pods with `gpus-per-node` GPUs each."""
    volumes, mounts = _checkpoint_volume()
    sizes = [
        Parameter(name="nodes", default="2", description="pods in the gang"),
        Parameter(name="gpus-per-node", default="8", description="whole GPUs per pod"),
        Parameter(name="checkpoint-claim", description="PVC for checkpoints"),
    ]
    with ClusterWorkflowTemplate(
        name="aistack-train-distributed", entrypoint="train-distributed"
    ) as template:
        member = Container(
            name="member",
            image=_p("image"),
            command=["sh", "-c", _p("command")],
            inputs=_common(*sizes),
            annotations=gpus(
                _p("gpus-per-node"),
                queue=_p("queue"),
                gang=_p("nodes"),
                checkpoint=_CHECKPOINTS,
            ),
            volumes=volumes,
            volume_mounts=mounts,
        )
        with DAG(name="train-distributed", inputs=_common(*sizes)):
            Task(
                name="member",
                template=member,
                arguments={p.name: _p(p.name) for p in _common(*sizes) if p.name},
            )
    return template


def _batch_inference() -> ClusterWorkflowTemplate:
    """Inference over shards: one pod per shard, each on a slice, preemptible."""
    shard = [
        Parameter(name="memory-gib", default="10", description="GPU memory per shard, GiB"),
        Parameter(name="compute-percent", default="20", description="share of a GPU per shard"),
    ]
    with ClusterWorkflowTemplate(
        name="aistack-batch-inference", entrypoint="batch-inference"
    ) as template:
        one = Container(
            name="shard",
            image=_p("image"),
            command=["sh", "-c", _p("command")],
            env=[m.EnvVar(name="AISTACK_SHARD", value=_p("shard"))],
            inputs=_common(*shard, Parameter(name="shard", description="one item of shards")),
            annotations=gpu_slice(
                memory_gib=_p("memory-gib"),
                compute_percent=_p("compute-percent"),
                queue=_p("queue"),
                kind="infer",
                preemptible=True,
            ),
        )
        outer = _common(*shard, Parameter(name="shards", description="a JSON list of shards"))
        with DAG(name="batch-inference", inputs=outer):
            Task(
                name="shard",
                template=one,
                arguments={
                    **{p.name: _p(p.name) for p in _common(*shard) if p.name},
                    "shard": "{{item}}",
                },
                with_param=_p("shards"),
            )
    return template


def _deploy_inference() -> ClusterWorkflowTemplate:
    """An inference server: a Deployment whose pods the scheduler admits on slices (kind infer).

    The workflow's service account needs the right to apply Deployments in its namespace.
    """
    request = GpuRequest(
        memory_gib=_p("memory-gib"), compute_percent=_p("compute-percent"), kind="infer"
    )
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": _p("name"), "labels": {"app": _p("name")}},
        "spec": {
            "replicas": _p("replicas"),
            "selector": {"matchLabels": {"app": _p("name")}},
            "template": {
                "metadata": _with_app(pod_metadata(request, queue=_p("queue")), _p("name")),
                "spec": {
                    "containers": [
                        {
                            "name": "server",
                            "image": _p("image"),
                            "command": ["sh", "-c", _p("command")],
                            "ports": [{"containerPort": 8080}],
                        }
                    ]
                },
            },
        },
    }
    with ClusterWorkflowTemplate(
        name="aistack-deploy-inference", entrypoint="deploy-inference"
    ) as template:
        Resource(
            name="deploy-inference",
            action="apply",
            # Argo substitutes parameters into the manifest's text: unquoted, the replica count
            # becomes the integer the Deployment needs.
            manifest=yaml.safe_dump(deployment, sort_keys=False).replace(
                f"replicas: '{_p('replicas')}'", f"replicas: {_p('replicas')}"
            ),
            success_condition="status.availableReplicas > 0",
            inputs=_common(
                Parameter(name="name", description="the Deployment's name"),
                Parameter(name="replicas", default="1", description="server pods"),
                Parameter(name="memory-gib", default="8", description="GPU memory per pod, GiB"),
                Parameter(name="compute-percent", default="25", description="share per pod"),
            ),
        )
    return template


def _with_app(metadata: dict[str, dict[str, str]], app: str) -> dict[str, dict[str, str]]:
    return {**metadata, "labels": {**metadata["labels"], "app": app}}


def step_templates() -> list[ClusterWorkflowTemplate]:
    """Every ready-made step, in the order the docs list them."""
    return [
        _slice_step("build", "build"),
        _train(),
        _train_distributed(),
        _slice_step("evaluate", "train"),
        _batch_inference(),
        _deploy_inference(),
    ]


def write_templates(directory: Path) -> list[Path]:
    """Write each template as `<name>.yaml` into `directory`; return the paths written."""
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for template in step_templates():
        path = directory / f"{template.name}.yaml"
        path.write_text(render_template(template), encoding="utf-8")
        written.append(path)
    return written


def render_template(template: ClusterWorkflowTemplate) -> str:
    """One template as the YAML file `templates/` holds."""
    header = (
        "# Generated by `python -m aistack_flows.library templates` from aistack_flows/library.py;"
        "\n# edit that module, not this file.\n"
    )
    return header + render([template])


def main(argv: Sequence[str]) -> int:
    """`python -m aistack_flows.library DIRECTORY`: (re)write the templates there."""
    if len(argv) != 1:
        print("usage: python -m aistack_flows.library DIRECTORY", file=sys.stderr)
        return 2
    for path in write_templates(Path(argv[0])):
        print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
