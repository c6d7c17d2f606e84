"""`GpuPodOperator`: a KubernetesPodOperator whose pod the scheduler admits, reclaims retried free.

Everything a KubernetesPodOperator takes, it takes; its pod gets the contract
(`pod_operator_arguments`), checked when the DAG is parsed. What it adds is one decision at the
end of the task: the provider's `cleanup` (the sync and the deferrable paths both end there, with
the pod's last state, before it is deleted) raises `AirflowException` for a pod that did not
succeed. When the scheduler had reclaimed or preempted that pod, the failure is turned into
`AirflowRescheduleException`, so Airflow runs the task again without counting a retry, up to the
request's `reclaim_retries` times per try; past that, the failure is the task's as usual.
"""

from __future__ import annotations

import datetime
from typing import Any

from airflow.providers.cncf.kubernetes.operators.pod import KubernetesPodOperator
from airflow.sdk.definitions.context import Context
from airflow.sdk.exceptions import (
    AirflowException,
    AirflowRescheduleException,
    AirflowSkipException,
)
from kubernetes.client import V1Pod
from kubernetes.client.exceptions import ApiException

from aistack_flows.airflow._pod import managed_arguments
from aistack_flows.airflow._reclaim import eviction_message

__all__ = ["GpuPodOperator"]

_TERMINAL_PHASES = frozenset({"Succeeded", "Failed"})


class GpuPodOperator(KubernetesPodOperator):
    """A KubernetesPodOperator for a GPU task: `annotations=af.gpus(...)` or `af.gpu_slice(...)`.

    `GpuPodOperator(task_id="train", image=..., cmds=[...], annotations=af.gpus(4,
    queue="mlops", checkpoint="/checkpoints"))`. Raises `RequestError` naming every bad field
    when the DAG is parsed. A reclaimed or preempted pod is run again by Airflow without using one
    of the task's `retries`, at most `reclaim_retries` (default 10) times per try.
    """

    def __init__(self, **kwargs: Any) -> None:
        """Write the contract into the operator's arguments; see `pod_operator_arguments`."""
        arguments, request = managed_arguments(kwargs, retries_reclaims=True)
        super().__init__(**arguments)
        self.reclaim_retries = request.reclaim_retries

    def cleanup(
        self,
        pod: V1Pod,
        remote_pod: V1Pod,
        xcom_result: dict[Any, Any] | None = None,
        context: Context | None = None,
    ) -> None:
        """The provider's cleanup; a failure the scheduler caused becomes a free reschedule."""
        eviction = eviction_message(self._last_state(remote_pod)) if remote_pod else None
        try:
            super().cleanup(pod, remote_pod, xcom_result, context)
        except AirflowSkipException:
            raise
        except AirflowException as failure:
            if eviction is None:
                raise
            reschedules = int((context or {}).get("task_reschedule_count", 0))
            if reschedules >= self.reclaim_retries:
                self.log.warning(
                    "%s; its reclaims in this try have used all %d reclaim_retries, so it "
                    "counts as a failure of the task",
                    eviction,
                    self.reclaim_retries,
                )
                raise
            self.log.warning(
                "%s; rescheduled without using a retry (reclaim %d of %d in this try)",
                eviction,
                reschedules + 1,
                self.reclaim_retries,
            )
            now = datetime.datetime.now(datetime.UTC)
            # Airflow leaves this one constructor's argument untyped.
            reschedule = AirflowRescheduleException(now)  # type: ignore[no-untyped-call]
            raise reschedule from failure

    def _last_state(self, remote_pod: V1Pod) -> V1Pod:
        """The pod as the API server has it now, unless `remote_pod` has already ended.

        A pod stopped before its containers started ends the provider's wait with the state it
        read when it created the pod; the scheduler's message is only in a fresh read.
        """
        status = remote_pod.status
        if status is not None and status.phase in _TERMINAL_PHASES:
            return remote_pod
        try:
            fresh: V1Pod = self.pod_manager.read_pod(remote_pod)
        except ApiException:
            return remote_pod
        return fresh
