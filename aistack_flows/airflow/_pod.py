"""What an Airflow task's pod must carry for the scheduler, as KubernetesPodOperator arguments.

An Airflow author declares a GPU task as a Hera author declares a step: `af.gpus(...)` or
`af.gpu_slice(...)` passed as the pod's `annotations=`. The declaration is read back with the
same `GpuRequest.from_metadata` as an Argo template's (so a hand-written contract label or
`nvidia.com/gpu` in `container_resources` gets the same checks) and written as the pod contract
of `scheduler_service.pod_contract`:

- `labels`: the queue and the kind; `annotations`: the slice, priority, preemptibility, pools
  and models (the `flows.aistack.io/` declaration keys are removed);
- `container_resources`: whole GPUs as `nvidia.com/gpu` in the limits (and in the requests,
  where the author put them there too);
- `env_vars`: the checkpoint directory of this task in this run, and the attempt, as Jinja
  templates that Airflow renders when the task runs;
- `schedule_timeout_seconds`: a queue's wait, not the provider's two minutes, unless the
  author set it.

The admission webhook adds the scheduling gate and the allocation variables when the pod is
created, as it does for every pod labelled with a queue. Nothing here imports Airflow: the
arguments are plain values and Kubernetes client models, which the provider takes as they are.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from kubernetes.client import (
    V1Container,
    V1EnvVar,
    V1ObjectMeta,
    V1Pod,
    V1PodSpec,
    V1ResourceRequirements,
)

from aistack_flows._checkpoint import ATTEMPT_ENV, CHECKPOINT_DIR_ENV
from aistack_flows._declare import DECLARATION_PREFIX, RECLAIM_RETRIES_DECLARATION, GpuRequest
from aistack_flows._errors import Problem, RequestError
from scheduler_service import pod_contract as contract

__all__ = [
    "BASE_CONTAINER",
    "DEFAULT_SCHEDULE_TIMEOUT_SECONDS",
    "managed_arguments",
    "pod_operator_arguments",
    "pod_override",
]

BASE_CONTAINER: Final = "base"
"""The container that runs the task: KubernetesPodOperator's and the KubernetesExecutor's."""

DEFAULT_SCHEDULE_TIMEOUT_SECONDS: Final = 24 * 3600
"""How long the operator lets its pod wait in the queue (the provider's default is 120 s)."""

_ATTEMPT_TEMPLATE: Final = "{{ ti.try_number - 1 + (task_reschedule_count | default(0)) }}"
"""0 for the first run of the task, more after a retry or a rescheduled reclaim (Jinja)."""

# Airflow's default `allowed_run_id_pattern` is ^[A-Za-z0-9_.~:+-]+$ and the scheduler's own run
# ids contain ':' and '+'; Jinja has no regex filter, so the three characters a path should not
# carry are replaced one by one.
_RUN_TEMPLATE: Final = "{{ run_id | replace(':', '_') | replace('+', '_') | replace('~', '_') }}"
_MAP_INDEX_TEMPLATE: Final = (
    "{% if ti.map_index is not none and ti.map_index >= 0 %}-{{ ti.map_index }}{% endif %}"
)


def pod_operator_arguments(**arguments: Any) -> dict[str, Any]:
    """KubernetesPodOperator arguments whose pod the scheduler admits: `arguments`, managed.

    `KubernetesPodOperator(**pod_operator_arguments(task_id="train", image=...,
    annotations=af.gpus(2, queue="research")))`. Every argument is passed through; `labels`,
    `annotations`, `container_resources` and `env_vars` get the contract (module docstring).
    A reclaim of such a task is an ordinary failure that uses one of the task's `retries`; use
    `GpuPodOperator` to have reclaims retried without them. Raises `RequestError` naming every
    bad field.
    """
    managed, _ = managed_arguments(arguments, retries_reclaims=False)
    return managed


def managed_arguments(
    arguments: Mapping[str, Any], *, retries_reclaims: bool
) -> tuple[dict[str, Any], GpuRequest]:
    """`arguments` with the contract written in, and the request read from them.

    `retries_reclaims`: whether the operator that takes them retries reclaims itself (only then
    may the declaration set `reclaim_retries`). Raises `RequestError` naming every bad field.
    """
    problems: list[Problem] = []
    labels = _strings(arguments.get("labels"), "labels", problems)
    annotations = _strings(arguments.get("annotations"), "annotations", problems)
    resources = arguments.get("container_resources")
    if resources is not None and not isinstance(resources, V1ResourceRequirements):
        problems.append(
            Problem("container_resources", "must be a kubernetes.client.V1ResourceRequirements")
        )
        resources = None
    env_vars = _environment(arguments.get("env_vars"), problems)
    if problems:
        raise RequestError(problems)
    request = _request(labels, annotations, resources, retries_reclaims=retries_reclaims)
    queue = request.queue
    assert queue is not None  # _request refuses a request without one
    ours, contract_annotations = request.pod_labels_and_annotations(queue)
    managed = dict(arguments)
    managed["labels"] = {**labels, **ours}
    managed["annotations"] = {
        **{
            k: v
            for k, v in annotations.items()
            if not k.startswith(DECLARATION_PREFIX) and k not in ours
        },
        **contract_annotations,
    }
    if request.gpus is not None:
        managed["container_resources"] = _with_gpus(resources, str(request.gpus))
    environment = {}
    if request.checkpoint is not None:
        environment[CHECKPOINT_DIR_ENV] = _checkpoint_template(request.checkpoint)
    environment[ATTEMPT_ENV] = _ATTEMPT_TEMPLATE
    kept = [e for e in env_vars if e.name not in environment]
    managed["env_vars"] = [*kept, *(V1EnvVar(name=k, value=v) for k, v in environment.items())]
    managed.setdefault("schedule_timeout_seconds", DEFAULT_SCHEDULE_TIMEOUT_SECONDS)
    return managed, request


def pod_override(declaration: Mapping[str, str]) -> V1Pod:
    """The KubernetesExecutor's `pod_override` that puts a task's worker pod in the queue.

    `PythonOperator(..., executor_config={"pod_override": pod_override(af.gpus(1,
    queue="research"))})`: the executor merges it into its worker pod (the container `base`).
    The worker pod is not templated per run, so `checkpoint` is refused (the task's code knows
    its run: save under a path of your own), and so is `reclaim_retries`: a reclaimed worker pod
    is an ordinary failure that uses one of the task's `retries`. Raises `RequestError`.
    """
    request = _request({}, declaration, None, retries_reclaims=False)
    if request.checkpoint is not None:
        raise RequestError(
            [
                Problem(
                    "checkpoint",
                    "the KubernetesExecutor's worker pod is not templated per run, so it cannot "
                    "name the run's directory; build the path from the task's context in its code, "
                    "or run the task with GpuPodOperator",
                )
            ]
        )
    queue = request.queue
    assert queue is not None
    labels, annotations = request.pod_labels_and_annotations(queue)
    limits = {contract.GPU_RESOURCE: str(request.gpus)} if request.gpus is not None else None
    return V1Pod(
        metadata=V1ObjectMeta(labels=labels, annotations=annotations or None),
        spec=V1PodSpec(
            containers=[
                V1Container(
                    name=BASE_CONTAINER,
                    resources=V1ResourceRequirements(limits=limits) if limits else None,
                )
            ]
        ),
    )


# -- reading --------------------------------------------------------------------------------------


def _request(
    labels: Mapping[str, str],
    annotations: Mapping[str, str],
    resources: V1ResourceRequirements | None,
    *,
    retries_reclaims: bool,
) -> GpuRequest:
    """The task's request, checked for what an Airflow task can do; raise `RequestError`."""
    parsed = GpuRequest.from_metadata(labels, annotations, resource_gpus=_resource_gpus(resources))
    if isinstance(parsed, list):
        raise RequestError(parsed)
    if parsed is None:
        raise RequestError(
            [
                Problem(
                    "annotations",
                    "no GPU request: pass annotations=af.gpus(N, queue=...) or "
                    "af.gpu_slice(memory_gib=..., compute_percent=..., queue=...)",
                )
            ]
        )
    problems = []
    if parsed.queue is None:
        problems.append(
            Problem(
                "queue",
                "no queue: name one (af.gpus(..., queue=...)) or label the pod "
                f"{contract.QUEUE_LABEL}: <queue>",
            )
        )
    if parsed.gang is not None:
        problems.append(
            Problem(
                "gang",
                "one Airflow task runs one pod, and a gang is the pods of one distributed step "
                "admitted together; run distributed training as an Argo step "
                "(docs/airflow.md)",
            )
        )
    if RECLAIM_RETRIES_DECLARATION in annotations and not retries_reclaims:
        problems.append(
            Problem(
                "reclaim_retries",
                "only GpuPodOperator retries a reclaimed pod without using the task's retries; "
                "here a reclaim is an ordinary failure (set the task's retries)",
            )
        )
    if problems:
        raise RequestError(problems)
    return parsed


def _strings(value: object, field: str, problems: list[Problem]) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, Mapping) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        problems.append(Problem(field, "must be a mapping of strings to strings"))
        return {}
    return dict(value)


def _resource_gpus(resources: V1ResourceRequirements | None) -> str | None:
    if resources is None:
        return None
    for part in (resources.limits, resources.requests):
        value = (part or {}).get(contract.GPU_RESOURCE)
        if value is not None:
            return str(value)
    return None


def _environment(value: object, problems: list[Problem]) -> list[V1EnvVar]:
    """The author's `env_vars` (a dict, or a list of V1EnvVar, as the provider takes them)."""
    if value is None:
        return []
    if isinstance(value, Mapping):
        return [V1EnvVar(name=k, value=v) for k, v in _strings(value, "env_vars", problems).items()]
    if isinstance(value, list) and all(isinstance(e, V1EnvVar) for e in value):
        return list(value)
    problems.append(Problem("env_vars", "must be a dict of strings or a list of V1EnvVar"))
    return []


# -- writing --------------------------------------------------------------------------------------


def _checkpoint_template(root: str) -> str:
    """`AISTACK_CHECKPOINT_DIR` of a task: one directory per DAG, run, task and mapped index.

    Every retry and every rescheduled reclaim of the task in a run sees the same directory; a new
    run starts empty (the Argo layer's rule, `aistack_flows._checkpoint`).
    """
    return (
        f"{root.rstrip('/')}/{{{{ ti.dag_id }}}}/{_RUN_TEMPLATE}/{{{{ ti.task_id }}}}"
        f"{_MAP_INDEX_TEMPLATE}"
    )


def _with_gpus(resources: V1ResourceRequirements | None, gpus: str) -> V1ResourceRequirements:
    """A copy of `resources` asking for `gpus` whole GPUs (requests too, if they named them)."""
    limits = dict((resources.limits if resources else None) or {})
    requests = dict((resources.requests if resources else None) or {})
    limits[contract.GPU_RESOURCE] = gpus
    if contract.GPU_RESOURCE in requests:
        requests[contract.GPU_RESOURCE] = gpus
    claims = resources.claims if resources else None
    return V1ResourceRequirements(limits=limits, requests=requests or None, claims=claims)
