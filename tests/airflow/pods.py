"""Airflow tasks' pods as the provider builds them, and the context a task runs with, for tests.

`render_pod` asks the real KubernetesPodOperator for the pod it would create (its dry-run path:
no cluster, no connection) and returns it as the API server's JSON (camelCase, no nulls).
`task_context` is what Airflow hands a running task, reduced to what the operator reads: a fake
task instance that keeps its XComs, the run, and `task_reschedule_count`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, cast

from airflow.providers.cncf.kubernetes.operators.pod import KubernetesPodOperator
from airflow.sdk.definitions.context import Context
from kubernetes.client import ApiClient, V1Pod

__all__ = ["FakeTaskInstance", "as_json", "render_pod", "task_context"]

Pod = dict[str, Any]


def render_pod(operator: KubernetesPodOperator) -> Pod:
    """The pod `operator` would create, as JSON (its random name suffix left as it is)."""
    return as_json(operator.build_pod_request_obj(dry_run=True))


def as_json(pod: V1Pod) -> Pod:
    """A client model as the API server's JSON: camelCase keys, no nulls."""
    found: Pod = ApiClient().sanitize_for_serialization(pod)  # type: ignore[no-untyped-call]
    return found


@dataclass
class FakeTaskInstance:
    """The parts of Airflow's RuntimeTaskInstance that KubernetesPodOperator and Jinja read."""

    dag_id: str
    task_id: str
    run_id: str = "scheduled__2026-12-04T02:00:00+00:00"
    try_number: int = 1
    map_index: int = -1
    xcoms: dict[str, Any] = field(default_factory=dict)

    def xcom_push(self, key: str, value: Any) -> None:
        self.xcoms[key] = value


def task_context(ti: FakeTaskInstance, *, task_reschedule_count: int = 0) -> Context:
    """What Airflow passes to `execute` and to template rendering, for `ti`."""
    values = {
        "ti": ti,
        "task_instance": ti,
        "run_id": ti.run_id,
        "dag": None,
        "task_reschedule_count": task_reschedule_count,
    }
    return cast(Context, values)
