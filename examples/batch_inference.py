"""Batch inference on GPU slices: one pod per shard, many shards sharing each GPU.

The step fans out over the shards (`with_items`); each pod asks for 10 GiB and 20% of one GPU,
so five shards share a GPU instead of five GPUs sitting mostly idle. Batch inference may be
interrupted (`preemptible=True` overrides the infer kind's default): a reclaimed shard is
retried for free and skips the rows it already scored (its own checkpoint directory records
them).

    aistack submit examples/batch_inference.py -n serving
"""

from hera.workflows import DAG, Workflow, script

import aistack_flows as af

SHARDS = list(range(8))


@script(
    image="python:3.12-slim",
    annotations=af.gpu_slice(
        memory_gib=10, compute_percent=20, kind="infer", preemptible=True, checkpoint="/tmp/done"
    ),
)
def score(shard: int, rows_per_shard: int = 1000) -> None:
    """Score one shard with the model y = 3x + 2, resuming after the rows already scored."""
    import json
    import os
    from pathlib import Path

    done = Path(os.environ.get("AISTACK_CHECKPOINT_DIR", "/tmp/done")) / "scored.json"
    done.parent.mkdir(parents=True, exist_ok=True)
    start = json.loads(done.read_text())["rows"] if done.exists() else 0
    first = shard * rows_per_shard
    total = 0.0
    for row in range(start, rows_per_shard):
        total += 3 * (first + row) / 1000 + 2
        if row % 100 == 99:
            done.write_text(json.dumps({"rows": row + 1}))
    print(f"shard {shard}: scored rows {start}..{rows_per_shard - 1}, sum {total:.1f}")


with Workflow(
    generate_name="batch-inference-",
    entrypoint="main",
    labels={af.QUEUE_LABEL: "serving"},
    parallelism=20,
) as workflow:
    with DAG(name="main"):
        score(arguments={"shard": "{{item}}"}, with_items=SHARDS)
