"""Scheduled retraining: every night at 03:00 a new run trains on whole GPUs, then evaluates.

A CronWorkflow is built like any workflow. Each run is a new Workflow in the queue named by the
CronWorkflow's label, so the queue's quota and fair share apply to every run, and a run that
borrows idle GPUs overnight gives them back when their owner arrives in the morning (retried
for free, resuming from its checkpoint). `concurrency_policy="Forbid"` skips a night whose
previous run still goes.

    aistack submit examples/scheduled_retraining.py -n mlops
"""

from hera.workflows import DAG, Container, CronWorkflow
from hera.workflows import models as m

import aistack_flows as af

IMAGE = "registry.example.com/mlops/recommender:2026.12"

with CronWorkflow(
    name="nightly-retraining",
    schedules=["0 3 * * *"],
    timezone="Europe/Paris",
    concurrency_policy="Forbid",
    starting_deadline_seconds=600,
    entrypoint="main",
    labels={af.QUEUE_LABEL: "mlops"},
    volumes=[
        m.Volume(
            name="checkpoints",
            persistent_volume_claim=m.PersistentVolumeClaimVolumeSource(
                claim_name="recommender-checkpoints"
            ),
        )
    ],
) as cron:
    train = Container(
        name="train",
        image=IMAGE,
        command=["python", "-m", "recommender.train", "--since=yesterday"],
        annotations=af.gpus(4, checkpoint="/checkpoints"),
        volume_mounts=[m.VolumeMount(name="checkpoints", mount_path="/checkpoints")],
        # A night's run must finish before the day's users arrive; time spent waiting in
        # the queue counts too.
        active_deadline_seconds=5 * 3600,
    )
    evaluate = Container(
        name="evaluate",
        image=IMAGE,
        command=["python", "-m", "recommender.evaluate", "--publish-if-better"],
        annotations=af.gpu_slice(memory_gib=16, compute_percent=30, kind="build"),
    )
    with DAG(name="main"):
        train() >> evaluate()
