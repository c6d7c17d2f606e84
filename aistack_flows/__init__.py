"""AI-Stack Flows: the library for pipeline authors.

Declare what each step of a Hera pipeline needs, and the scheduler does the rest:

    from hera.workflows import DAG, Workflow, script
    import aistack_flows as af

    @script(image="pytorch/pytorch:2.5.1", annotations=af.gpus(8, gang=2, checkpoint="/ckpt"))
    def train() -> None: ...

    with Workflow(generate_name="train-", entrypoint="main",
                  labels={af.QUEUE_LABEL: "research"}) as w:
        with DAG(name="main"):
            train()

Importing the package registers Hera pre-build hooks: when a workflow that mentions the
scheduler is built (`to_dict`, `to_yaml`, `create`), its GPU steps get the pod contract of
`scheduler_service.pod_contract` (`manage`), and anything that could not run is refused with
a `PipelineError` that names the step and the field. See docs/authors.md.
"""

from aistack_flows import _hera  # noqa: F401 (registers the hooks)
from aistack_flows._checkpoint import (
    ATTEMPT_ENV,
    CHECKPOINT_DIR_ENV,
    attempt,
    checkpoint_dir,
)
from aistack_flows._declare import (
    GpuRequest,
    Kind,
    StepOptions,
    Topology,
    gpu_slice,
    gpus,
    pod_metadata,
)
from aistack_flows._errors import PipelineError, Problem, RequestError
from aistack_flows._load import LoadError, Pipeline, load_pipelines
from aistack_flows._manage import manage, uses_scheduler
from aistack_flows._submit import Submitted, render, submit, submit_to_argo
from scheduler_service.pod_contract import QUEUE_LABEL

__all__ = [
    "ATTEMPT_ENV",
    "CHECKPOINT_DIR_ENV",
    "QUEUE_LABEL",
    "GpuRequest",
    "Kind",
    "LoadError",
    "Pipeline",
    "PipelineError",
    "Problem",
    "RequestError",
    "StepOptions",
    "Submitted",
    "Topology",
    "attempt",
    "checkpoint_dir",
    "gpu_slice",
    "gpus",
    "load_pipelines",
    "manage",
    "pod_metadata",
    "render",
    "submit",
    "submit_to_argo",
    "uses_scheduler",
]
