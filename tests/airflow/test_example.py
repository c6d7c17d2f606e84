"""The Airflow example is a test: the pods its tasks make are its committed golden file.

`AISTACK_UPDATE_GOLDEN=1` rewrites testdata/airflow_retraining.pods.yaml after an intended
change (read its diff as code); CI always compares. The pods are rendered by the real provider
(`render_pod`); the two things in them that change from run to run or with the lock, the pod
name's random suffix and the `airflow_version` label, are written as placeholders.
"""

from __future__ import annotations

import runpy
from pathlib import Path
from typing import Any

import yaml
from airflow.providers.cncf.kubernetes.operators.pod import KubernetesPodOperator
from airflow.sdk import DAG

from scheduler_service.core import Kind
from scheduler_service.translate import parse_pod_request
from tests.airflow.pods import render_pod
from tests.golden import compare

ROOT = Path(__file__).parents[2]
EXAMPLE = ROOT / "examples" / "airflow_retraining.py"
GOLDEN = Path(__file__).parent / "testdata" / "airflow_retraining.pods.yaml"


def example_pods() -> dict[str, dict[str, Any]]:
    """The pod of every KubernetesPodOperator task of the example's DAGs, by dag.task id."""
    defined = runpy.run_path(str(EXAMPLE), run_name="__airflow__")
    pods = {}
    for dag in (v for v in defined.values() if isinstance(v, DAG)):
        for task in dag.tasks:  # in the order the DAG file defines them
            if isinstance(task, KubernetesPodOperator):
                pods[f"{dag.dag_id}.{task.task_id}"] = stable(render_pod(task))
    return pods


def stable(pod: dict[str, Any]) -> dict[str, Any]:
    metadata = pod["metadata"]
    metadata["name"] = metadata["name"].rsplit("-", 1)[0] + "-<random suffix>"
    metadata["labels"]["airflow_version"] = "<airflow version>"
    return pod


def test_the_example_renders_to_its_golden_pods() -> None:
    pods = example_pods()
    text = "---\n".join(yaml.safe_dump(pod, sort_keys=False, width=100) for pod in pods.values())
    compare(text, GOLDEN)


def test_the_example_trains_on_whole_gpus_and_evaluates_on_a_slice() -> None:
    pods = example_pods()
    train = parse_pod_request(pods["nightly_retraining.train"])
    evaluate = parse_pod_request(pods["nightly_retraining.evaluate"])
    assert (train.queue, train.kind, train.request.gpus) == ("mlops", Kind.TRAIN, 4)
    assert (evaluate.kind, evaluate.request.gpu_compute_percent) == (Kind.BUILD, 30)
