"""Scheduled retraining in Airflow: every night at 03:00, train on whole GPUs, evaluate on a slice.

The Airflow twin of scheduled_retraining.py. Each task is a KubernetesPodOperator whose pod the
AI-Stack scheduler admits like an Argo step: it waits in the queue `mlops` (its quota and fair
share apply), may borrow idle GPUs overnight, and gives them back when their owner arrives. A
reclaimed `train` is run again by Airflow without using one of its `retries`, and resumes from
its checkpoint (AISTACK_CHECKPOINT_DIR, the same directory for every run of the task in this DAG
run). Needs the `airflow` extra in the Airflow image (docs/airflow.md); put this file in the
DAGs folder. The pods it makes are in tests/airflow/testdata/airflow_retraining.pods.yaml.
"""

import datetime

import pendulum
from airflow.sdk import DAG
from kubernetes.client import models as k8s

import aistack_flows as af
from aistack_flows.airflow import GpuPodOperator

IMAGE = "registry.example.com/mlops/recommender:2026.12"

with DAG(
    dag_id="nightly_retraining",
    schedule="0 3 * * *",
    start_date=pendulum.datetime(2026, 12, 1, tz="Europe/Paris"),
    catchup=False,
    max_active_runs=1,  # a night whose previous run still goes waits for it
    default_args={"namespace": "mlops", "retries": 2},
) as dag:
    train = GpuPodOperator(
        task_id="train",
        image=IMAGE,
        cmds=["python", "-m", "recommender.train", "--since=yesterday"],
        annotations=af.gpus(4, queue="mlops", checkpoint="/checkpoints"),
        volumes=[
            k8s.V1Volume(
                name="checkpoints",
                persistent_volume_claim=k8s.V1PersistentVolumeClaimVolumeSource(
                    claim_name="recommender-checkpoints"
                ),
            )
        ],
        volume_mounts=[k8s.V1VolumeMount(name="checkpoints", mount_path="/checkpoints")],
        termination_grace_period=120,  # time to save a checkpoint when reclaimed
        # Each run of the task (a reclaim starts a new one) ends within 5 hours, time spent
        # waiting in the queue included (the pod may wait up to schedule_timeout_seconds, 24 h).
        execution_timeout=datetime.timedelta(hours=5),
    )
    evaluate = GpuPodOperator(
        task_id="evaluate",
        image=IMAGE,
        cmds=["python", "-m", "recommender.evaluate", "--publish-if-better"],
        annotations=af.gpu_slice(memory_gib=16, compute_percent=30, queue="mlops", kind="build"),
    )
    train >> evaluate
