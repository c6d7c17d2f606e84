"""A pod the scheduler took back is run again by Airflow without using one of the task's retries.

`GpuPodOperator.cleanup` decides; the provider's own cleanup, which talks to the cluster, is
replaced by what it does with a pod that did not succeed (raise `AirflowException`). The real
one, against the real service, is in tests/integration/test_airflow.py.
"""

from __future__ import annotations

from typing import Any

import pytest
from airflow.providers.cncf.kubernetes.operators.pod import KubernetesPodOperator
from airflow.sdk.exceptions import (
    AirflowException,
    AirflowRescheduleException,
    AirflowSkipException,
)
from kubernetes.client import V1ObjectMeta, V1Pod, V1PodCondition, V1PodStatus

import aistack_flows as af
from aistack_flows.airflow import GpuPodOperator, eviction_message
from scheduler_service import pod_contract as contract
from tests.airflow.pods import FakeTaskInstance, task_context

RECLAIMED = f"{contract.RECLAIMED_MESSAGE_PREFIX}mlops/owner: queue research held 8 GPUs"
PREEMPTED = f"{contract.PREEMPTED_MESSAGE_PREFIX}mlops/urgent (priority 5 > 0) in queue mlops"


def pod(phase: str, message: str | None = None, *, condition: str | None = None) -> V1Pod:
    conditions = None
    if condition is not None:
        conditions = [
            V1PodCondition(
                type="DisruptionTarget",
                status="True",
                reason=contract.EVICTION_REASON,
                message=condition,
            )
        ]
    return V1Pod(
        metadata=V1ObjectMeta(name="train-x1", namespace="mlops"),
        status=V1PodStatus(phase=phase, message=message, conditions=conditions),
    )


@pytest.mark.parametrize(
    ("evicted", "expected"),
    [
        (pod("Failed", RECLAIMED), RECLAIMED),
        (pod("Failed", PREEMPTED), PREEMPTED),
        (pod("Failed", "OOMKilled", condition=RECLAIMED), RECLAIMED),
        (pod("Failed", f"{contract.DEADLINE_MESSAGE_PREFIX}passed: waited 600s"), None),
        (pod("Failed", "aistack: gang ddp lost member ddp-1 (failed)"), None),
        (pod("Failed", "Error"), None),
        (pod("Running", RECLAIMED), None),
        (V1Pod(metadata=V1ObjectMeta(name="train-x1")), None),
    ],
)
def test_only_a_failed_pod_the_service_reclaimed_or_preempted_is_an_eviction(
    evicted: V1Pod, expected: str | None
) -> None:
    assert eviction_message(evicted) == expected


class FailingCleanup:
    """The provider's cleanup as the decision sees it: a pod that did not succeed raises."""

    def __init__(self) -> None:
        self.cleaned: list[V1Pod] = []

    def cleanup(self, operator: Any, pod: V1Pod, remote_pod: V1Pod, *_: Any) -> None:
        self.cleaned.append(remote_pod)
        if remote_pod.status is None or remote_pod.status.phase != "Succeeded":
            raise AirflowException("Pod train-x1 returned a failure.")


@pytest.fixture
def provider_cleanup(monkeypatch: pytest.MonkeyPatch) -> FailingCleanup:
    fake = FailingCleanup()

    def cleanup(operator: Any, pod: V1Pod, remote_pod: V1Pod, *rest: Any) -> None:
        fake.cleanup(operator, pod, remote_pod, *rest)

    monkeypatch.setattr(KubernetesPodOperator, "cleanup", cleanup)
    return fake


def train(reclaim_retries: int = 10) -> GpuPodOperator:
    return GpuPodOperator(
        task_id="train",
        image="trainer:1",
        annotations=af.gpus(4, queue="mlops", reclaim_retries=reclaim_retries),
    )


def context(reschedules: int = 0) -> Any:
    return task_context(FakeTaskInstance("nightly", "train"), task_reschedule_count=reschedules)


@pytest.mark.usefixtures("provider_cleanup")
def test_a_reclaimed_pod_reschedules_the_task_instead_of_failing_it() -> None:
    with pytest.raises(AirflowRescheduleException) as rescheduled:
        train().cleanup(pod("Pending"), pod("Failed", RECLAIMED), context=context(2))
    assert isinstance(rescheduled.value.__cause__, AirflowException)


@pytest.mark.usefixtures("provider_cleanup")
def test_past_reclaim_retries_a_reclaim_is_a_failure_of_the_task() -> None:
    with pytest.raises(AirflowException) as failed:
        train(reclaim_retries=2).cleanup(
            pod("Pending"), pod("Failed", RECLAIMED), context=context(2)
        )
    assert not isinstance(failed.value, AirflowRescheduleException)
    with pytest.raises(AirflowException) as failed:
        train(reclaim_retries=0).cleanup(pod("Pending"), pod("Failed", PREEMPTED))
    assert not isinstance(failed.value, AirflowRescheduleException)


@pytest.mark.usefixtures("provider_cleanup")
def test_a_failure_of_the_task_itself_is_left_to_its_retries() -> None:
    with pytest.raises(AirflowException) as failed:
        train().cleanup(pod("Pending"), pod("Failed", "Error"), context=context())
    assert not isinstance(failed.value, AirflowRescheduleException)
    train().cleanup(pod("Pending"), pod("Succeeded"), context=context())


def test_a_skip_stays_a_skip(monkeypatch: pytest.MonkeyPatch) -> None:
    def skip(*_: Any) -> None:
        raise AirflowSkipException("exit code 99")

    monkeypatch.setattr(KubernetesPodOperator, "cleanup", skip)
    with pytest.raises(AirflowSkipException):
        train().cleanup(pod("Pending"), pod("Failed", RECLAIMED), context=context())


class ApiServer:
    """`pod_manager.read_pod`, answering with the pod as the service left it."""

    def __init__(self, current: V1Pod) -> None:
        self.current = current
        self.reads = 0

    def read_pod(self, _: V1Pod) -> V1Pod:
        self.reads += 1
        return self.current


def test_a_pod_stopped_before_it_started_is_read_again_to_find_the_reason(
    provider_cleanup: FailingCleanup, monkeypatch: pytest.MonkeyPatch
) -> None:
    operator = train()
    server = ApiServer(pod("Failed", RECLAIMED))
    # The provider's cached client, replaced at its seam (without building the real one first).
    monkeypatch.setitem(operator.__dict__, "pod_manager", server)
    with pytest.raises(AirflowRescheduleException):
        operator.cleanup(pod("Pending"), pod("Pending"), context=context())
    assert server.reads == 1
    ended = ApiServer(pod("Failed", RECLAIMED))
    monkeypatch.setitem(operator.__dict__, "pod_manager", ended)
    with pytest.raises(AirflowRescheduleException):
        operator.cleanup(pod("Pending"), pod("Failed", RECLAIMED), context=context())
    assert ended.reads == 0  # the pod the provider watched to its end is what it was
    assert len(provider_cleanup.cleaned) == 2
