"""The checkpoint contract: where a step's checkpoint lives and what tells the step about it.

A step declared with `checkpoint="/ckpt"` (a path on a volume the author mounts, or a URI
prefix such as `s3://bucket/runs`) reads, in its environment:

- `AISTACK_CHECKPOINT_DIR`: `<checkpoint>/<step>`, where `<step>` names this step of this run.
  Every attempt of the step sees the same directory (a retry after a reclaim resumes from what
  the evicted attempt saved); every member of a gang sees the same one (rank 0 writes, all
  read); each member of a plain fan-out (shards) has its own. A new run starts empty.
- `AISTACK_ATTEMPT`: 0 for the first attempt, then 1, 2, ... (steps with a retry strategy).

When the scheduler reclaims a step it marks the pod Failed; the kubelet then sends the step's
processes SIGTERM and waits the pod's `terminationGracePeriodSeconds` before SIGKILL: save
there, or save periodically. The helpers below are what a step's code calls.
"""

from __future__ import annotations

import os
from pathlib import Path

from aistack_flows._gang import FAN_OUT_NODE

__all__ = [
    "ATTEMPT_ENV",
    "CHECKPOINT_DIR_ENV",
    "attempt",
    "checkpoint_dir",
    "checkpoint_environment",
]

CHECKPOINT_DIR_ENV = "AISTACK_CHECKPOINT_DIR"
ATTEMPT_ENV = "AISTACK_ATTEMPT"


def checkpoint_environment(root: str, *, gang: bool) -> dict[str, str]:
    """The step's checkpoint variable, with Argo expressions that name the step of this run."""
    node = FAN_OUT_NODE if gang else "node.name"
    step = f"{{{{=sprig.regexReplaceAll('[^A-Za-z0-9._-]+', {node}, '_')}}}}"
    return {CHECKPOINT_DIR_ENV: f"{root.rstrip('/')}/{step}"}


def checkpoint_dir(default: str | os.PathLike[str] | None = None) -> Path | None:
    """In a step: the directory to save checkpoints in and resume from (created if missing).

    Reads `AISTACK_CHECKPOINT_DIR`; outside a scheduled step, `default` (or None). Only for
    paths: a step whose checkpoint is a URI reads the variable itself.
    """
    chosen = os.environ.get(CHECKPOINT_DIR_ENV) or default
    if chosen is None:
        return None
    path = Path(chosen)
    path.mkdir(parents=True, exist_ok=True)
    return path


def attempt() -> int:
    """In a step: which attempt this is (0 for the first; after a reclaim or a retry, more)."""
    return int(os.environ.get(ATTEMPT_ENV, "0"))
