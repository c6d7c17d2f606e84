"""A pipeline made of the ready-made steps in templates/, called by reference.

An administrator installs the ClusterWorkflowTemplates once (`kubectl apply -f templates/`);
a team's pipeline then only says what to run, with what, in which queue. Each referenced step
already carries the scheduler's contract (slices for build and evaluation, whole GPUs and free
reclaim retries for training, a gang for distributed training).

    aistack submit examples/from_templates.py -n research
"""

from hera.workflows import DAG, Task, Workflow
from hera.workflows.models import TemplateRef

QUEUE = "research"
IMAGE = "registry.example.com/research/llm:2026.12"


def step(name: str, template: str, **arguments: str) -> Task:
    """A task that runs the ready-made `template` (its ClusterWorkflowTemplate is aistack-<it>)."""
    return Task(
        name=name,
        template_ref=TemplateRef(name=f"aistack-{template}", template=template, cluster_scope=True),
        arguments={"queue": QUEUE, "image": IMAGE, **arguments},
    )


with Workflow(generate_name="llm-finetune-", entrypoint="main") as workflow:
    with DAG(name="main"):
        test = step("test", "build", command="pytest -q tests/", **{"memory-gib": "8"})
        finetune = step(
            "finetune",
            "train-distributed",
            command="torchrun --nproc-per-node=8 finetune.py --resume-from=$AISTACK_CHECKPOINT_DIR",
            nodes="2",
            **{"gpus-per-node": "8", "checkpoint-claim": "llm-checkpoints"},
        )
        score = step(
            "score",
            "evaluate",
            command="python evaluate.py --suite=regression",
            **{"memory-gib": "24", "compute-percent": "50"},
        )
        test >> finetune >> score
