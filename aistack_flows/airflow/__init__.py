"""Airflow tasks whose pods the AI-Stack scheduler admits, places and reclaims like Argo steps.

Needs the `airflow` extra (`pip install 'aistack-flows[airflow]'`, see docs/airflow.md). A task
declares its GPUs as a Hera step does, with `af.gpus(...)` or `af.gpu_slice(...)` as its pod's
annotations:

    import aistack_flows as af
    from aistack_flows.airflow import GpuPodOperator

    train = GpuPodOperator(
        task_id="train",
        image="registry.example.com/trainer:1",
        cmds=["python", "train.py"],
        annotations=af.gpus(4, queue="mlops", checkpoint="/checkpoints"),
    )

- `GpuPodOperator`: a KubernetesPodOperator whose pod carries the contract; a reclaimed or
  preempted pod is run again without using one of the task's retries.
- `pod_operator_arguments(**arguments)`: the same contract as arguments for any
  KubernetesPodOperator (or `@task.kubernetes`); a reclaim there is an ordinary failure.
- `pod_override(af.gpus(...))`: the KubernetesExecutor's `pod_override`, for a task whose own
  worker pod needs the GPU.

Every declaration is checked when the DAG is parsed (`RequestError`, naming every bad field).
"""

from aistack_flows.airflow._operator import GpuPodOperator
from aistack_flows.airflow._pod import (
    BASE_CONTAINER,
    DEFAULT_SCHEDULE_TIMEOUT_SECONDS,
    pod_operator_arguments,
    pod_override,
)
from aistack_flows.airflow._reclaim import eviction_message

__all__ = [
    "BASE_CONTAINER",
    "DEFAULT_SCHEDULE_TIMEOUT_SECONDS",
    "GpuPodOperator",
    "eviction_message",
    "pod_operator_arguments",
    "pod_override",
]
