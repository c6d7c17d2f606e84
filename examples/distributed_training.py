"""Distributed training as a gang: two pods of 8 GPUs each, started together or not at all.

`gang=2` makes the step one fan-out of two pods (rank 0 and rank 1) that the scheduler admits
as a unit, preferably inside one rack. Each pod learns its place from its environment:
`PET_NNODES`, `PET_NODE_RANK`, `PET_MASTER_ADDR` and `PET_MASTER_PORT` are torchrun's defaults
for its flags, so `torchrun --nproc-per-node=8 train.py` needs nothing else (MASTER_ADDR,
MASTER_PORT, AISTACK_GANG_RANK and AISTACK_GANG_SIZE serve other launchers). If the scheduler
reclaims the gang, both pods stop, are retried for free as a new gang, and resume from the
checkpoint that rank 0 wrote.

    aistack submit examples/distributed_training.py -n research
"""

from hera.workflows import DAG, Container, Workflow
from hera.workflows import models as m

import aistack_flows as af

train = Container(
    name="train",
    image="pytorch/pytorch:2.5.1-cuda12.4-cudnn9-runtime",
    command=["torchrun", "--nproc-per-node=8", "/workspace/train.py"],
    args=["--checkpoint-dir=$(AISTACK_CHECKPOINT_DIR)"],
    annotations=af.gpus(
        8, gang=2, topology="rack:preferred", checkpoint="/checkpoints", priority=10
    ),
    volume_mounts=[m.VolumeMount(name="checkpoints", mount_path="/checkpoints")],
    # The gang's pods talk to each other through NCCL; give them room to shut down cleanly.
    pod_spec_patch='{"terminationGracePeriodSeconds": 120}',
)

with Workflow(
    generate_name="ddp-",
    entrypoint="main",
    labels={af.QUEUE_LABEL: "research"},
    volumes=[
        m.Volume(
            name="checkpoints",
            persistent_volume_claim=m.PersistentVolumeClaimVolumeSource(
                claim_name="ddp-checkpoints"
            ),
        )
    ],
) as workflow:
    with DAG(name="main"):
        train()
