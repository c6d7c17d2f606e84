"""A training step that survives reclaims: it saves a checkpoint and resumes from it.

The checkpoint contract (docs/authors.md): the step reads AISTACK_CHECKPOINT_DIR, the same
directory for every attempt of this step in this run. When the scheduler takes its GPUs back,
the pod gets SIGTERM and `terminationGracePeriodSeconds` to save; Argo retries it for free, and
the next attempt (AISTACK_ATTEMPT 1, 2, ...) starts where the last checkpoint left off.

Try the contract on this machine, no cluster needed:

    AISTACK_CHECKPOINT_DIR=/tmp/ckpt python examples/checkpointed_training.py &
    sleep 2; kill -TERM $!        # what a reclaim does: the step saves and stops
    AISTACK_CHECKPOINT_DIR=/tmp/ckpt python examples/checkpointed_training.py   # resumes

On a cluster: `aistack submit examples/checkpointed_training.py -n research`.
"""

from hera.workflows import DAG, Workflow, script
from hera.workflows import models as m

import aistack_flows as af


@script(
    image="python:3.12-slim",
    annotations=af.gpus(1, checkpoint="/checkpoints"),
    volume_mounts=[m.VolumeMount(name="checkpoints", mount_path="/checkpoints")],
    pod_spec_patch='{"terminationGracePeriodSeconds": 60}',  # time to save when reclaimed
)
def train(epochs: int = 400, save_every: int = 25, seconds_per_epoch: float = 0.01) -> None:
    """Fit y = 3x + 2 by gradient descent, checkpointing as the contract says."""
    import json
    import os
    import random
    import signal
    import sys
    import time
    from pathlib import Path

    directory = Path(os.environ.get("AISTACK_CHECKPOINT_DIR", "checkpoints"))
    directory.mkdir(parents=True, exist_ok=True)
    checkpoint = directory / "state.json"
    state = {"epoch": 0, "w": 0.0, "b": 0.0}
    if checkpoint.exists():
        state = json.loads(checkpoint.read_text())
        attempt = os.environ.get("AISTACK_ATTEMPT", "0")
        print(f"resuming from epoch {state['epoch']} (attempt {attempt})")

    def save() -> None:
        partial = checkpoint.with_suffix(".partial")
        partial.write_text(json.dumps(state))
        partial.replace(checkpoint)  # atomic: a kill mid-write never leaves half a checkpoint

    def stop(signum: int, _frame: object) -> None:
        save()
        print(f"stopped at epoch {state['epoch']}, checkpoint saved")
        sys.exit(128 + signum)

    signal.signal(signal.SIGTERM, stop)
    data = [(x / 10, 3 * x / 10 + 2 + random.Random(x).gauss(0, 0.01)) for x in range(-20, 21)]
    while state["epoch"] < epochs:
        grad_w = sum(2 * (state["w"] * x + state["b"] - y) * x for x, y in data) / len(data)
        grad_b = sum(2 * (state["w"] * x + state["b"] - y) for x, y in data) / len(data)
        state["w"] -= 0.05 * grad_w
        state["b"] -= 0.05 * grad_b
        state["epoch"] += 1
        if state["epoch"] % save_every == 0:
            save()
        time.sleep(seconds_per_epoch)
    save()
    print(f"done: w={state['w']:.3f} b={state['b']:.3f} after {state['epoch']} epochs")


with (
    Workflow(
        generate_name="checkpointed-training-",
        entrypoint="main",
        labels={af.QUEUE_LABEL: "research"},
        volume_claim_templates=[
            m.PersistentVolumeClaim(
                metadata=m.ObjectMeta(name="checkpoints"),
                spec=m.PersistentVolumeClaimSpec(
                    access_modes=["ReadWriteOnce"],
                    resources=m.VolumeResourceRequirements(requests={"storage": m.Quantity("1Gi")}),
                ),
            )
        ],
    ) as workflow,
    DAG(name="main"),
):
    train()


if __name__ == "__main__":
    train()
