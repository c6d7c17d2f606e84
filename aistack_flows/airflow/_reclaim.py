"""Telling a pod the scheduler took back from a pod that failed, and what Airflow does with it.

When the scheduler reclaims or preempts a pod, it marks the pod Failed with a message that
starts with `pod_contract.RECLAIMED_MESSAGE_PREFIX` or `PREEMPTED_MESSAGE_PREFIX`, and a
`DisruptionTarget` condition (reason `AIStackEvicted`) with the same message (docs/kubernetes.md).
Only the service writes either (a pod's status is not its creator's to write), so the message is
the proof that the task itself did not fail.

Airflow counts retries per task instance (`try_number` against `retries`), and the one way a
running task can be run again without spending one is to raise `AirflowRescheduleException`:
the task goes `up_for_reschedule` and the scheduler runs it again with the same `try_number`
(Airflow's own task runner does this for a task whose DAG failed to load, "This does not count
as a retry"). `task_reschedule_count` in the task's context counts those reschedules in the
current try; `reclaim_retries` bounds them, as it bounds Argo's free retries.
"""

from __future__ import annotations

from typing import Final

from kubernetes.client import V1Pod

from scheduler_service import pod_contract as contract

__all__ = ["EVICTION_PREFIXES", "eviction_message"]

EVICTION_PREFIXES: Final = (contract.RECLAIMED_MESSAGE_PREFIX, contract.PREEMPTED_MESSAGE_PREFIX)
"""How the service's message on a pod it took back starts (not a deadline, not a lost gang)."""

_DISRUPTION_TARGET: Final = "DisruptionTarget"


def eviction_message(pod: V1Pod) -> str | None:
    """The service's message if it reclaimed or preempted `pod` (a Failed pod), else None."""
    status = pod.status
    if status is None or status.phase != "Failed":
        return None
    messages = [status.message or ""]
    messages += [
        condition.message or ""
        for condition in status.conditions or ()
        if condition.type == _DISRUPTION_TARGET and condition.reason == contract.EVICTION_REASON
    ]
    for message in messages:
        if message.startswith(EVICTION_PREFIXES):
            return message
    return None
