"""The local runner's settings: this machine's pool, simulated GPUs, queues and quotas.

A YAML file, every field optional:

    pool: h100                  # the machine's pool (default: its GPU model, as on a cluster)
    simulateGpus: 4xH100-80GB   # run with simulated GPUs (what --simulate-gpus gives)
    stopGraceSeconds: 30        # SIGTERM to SIGKILL when a step is stopped
    queues:                     # as Queue objects on a cluster, or in short:
      - name: research
        quota: 2                # guaranteed GPUs of this machine's pool
        limit: 4                # the most it may hold, borrowing included
        overQuotaWeight: 1
      - apiVersion: aistack.io/v1alpha1
        kind: Queue
        metadata: {name: prod}
        spec: {pools: [{pool: h100, quota: 2}]}

Queues are read by the same parser as the cluster's Queue objects. Without `queues`, every
queue that a pipeline names is made when its run starts, and the queues of the runs in progress
share the machine's GPUs equally as their quotas (the rest may be borrowed).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from scheduler_service.core import PoolQuota, Queue
from scheduler_service.translate import QueueError, queue_from_k8s

__all__ = ["ConfigError", "LocalConfig", "default_queues", "load_config"]

MAX_CONFIG_BYTES = 1 << 20
MAX_QUEUES = 1000
MAX_GRACE_SECONDS = 3600.0

_FIELDS = {"pool", "simulateGpus", "stopGraceSeconds", "queues"}
_SHORT_FIELDS = {"name", "parent", "quota", "limit", "overQuotaWeight", "priority"}


class ConfigError(ValueError):
    """The settings file is wrong; the message names the file and the field."""


@dataclass(frozen=True, slots=True)
class LocalConfig:
    """The settings of one local runner."""

    pool: str | None = None
    simulate_gpus: str | None = None
    stop_grace_seconds: float = 30.0
    queues: tuple[Queue, ...] | None = None
    """None: made per run, sharing the machine (see `default_queues`)."""

    def resolve_queues(self, pool: str) -> tuple[Queue, ...] | None:
        """The configured queues with short-form quotas in `pool` (the machine's)."""
        if self.queues is None:
            return None
        return tuple(
            Queue(
                name=q.name,
                parent=q.parent,
                priority=q.priority,
                quotas=tuple(
                    PoolQuota(
                        pool=pool if p.pool == _THIS_POOL else p.pool,
                        quota=p.quota,
                        limit=p.limit,
                        over_quota_weight=p.over_quota_weight,
                    )
                    for p in q.quotas
                ),
                reclaim_min_runtime_seconds=q.reclaim_min_runtime_seconds,
                preempt_min_runtime_seconds=q.preempt_min_runtime_seconds,
            )
            for q in self.queues
        )


_THIS_POOL = "this-machine"
"""The pool of a short-form queue, replaced by the machine's pool once it is known."""


def load_config(path: Path) -> LocalConfig:
    """Read and check a settings file; raise `ConfigError` naming what is wrong."""
    try:
        if path.stat().st_size > MAX_CONFIG_BYTES:
            raise ConfigError(
                f"{path}: larger than {MAX_CONFIG_BYTES} bytes; is it the right file?"
            )
        data = yaml.safe_load(path.read_text()) or {}
    except OSError as error:
        raise ConfigError(f"{path}: cannot read it ({error.strerror})") from None
    except yaml.YAMLError as error:
        raise ConfigError(f"{path}: not YAML ({error})") from None
    if not isinstance(data, Mapping):
        raise ConfigError(f"{path}: must be a mapping of settings ({', '.join(sorted(_FIELDS))})")
    unknown = sorted(set(data) - _FIELDS)
    if unknown:
        raise ConfigError(
            f"{path}: unknown setting {unknown[0]!r}; use {', '.join(sorted(_FIELDS))}"
        )
    pool = data.get("pool")
    if pool is not None and (not isinstance(pool, str) or not pool):
        raise ConfigError(f"{path}: pool must be a name, got {pool!r}")
    grace = data.get("stopGraceSeconds", 30.0)
    if (
        isinstance(grace, bool)
        or not isinstance(grace, int | float)
        or not 0 <= grace <= MAX_GRACE_SECONDS
    ):
        raise ConfigError(
            f"{path}: stopGraceSeconds must be 0 to {MAX_GRACE_SECONDS:g}, got {grace!r}"
        )
    simulate = data.get("simulateGpus")
    if simulate is not None and not isinstance(simulate, str):
        raise ConfigError(
            f"{path}: simulateGpus must be text such as 4xH100-80GB, got {simulate!r}"
        )
    queues = None
    if "queues" in data:
        queues = _queues(path, data["queues"])
    return LocalConfig(
        pool=pool, simulate_gpus=simulate, stop_grace_seconds=float(grace), queues=queues
    )


def _queues(path: Path, entries: Any) -> tuple[Queue, ...]:
    if not isinstance(entries, Sequence) or isinstance(entries, str):
        raise ConfigError(f"{path}: queues must be a list")
    if len(entries) > MAX_QUEUES:
        raise ConfigError(f"{path}: {len(entries)} queues; the most is {MAX_QUEUES}")
    queues: list[Queue] = []
    for index, entry in enumerate(entries):
        where = f"{path}: queues[{index}]"
        if not isinstance(entry, Mapping):
            raise ConfigError(f"{where}: must be a mapping")
        obj = entry if entry.get("kind") == "Queue" else _short(where, entry)
        try:
            queues.append(queue_from_k8s(obj))
        except QueueError as error:
            raise ConfigError(f"{where}: {error}") from None
    names = [q.name for q in queues]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise ConfigError(f"{path}: queue {twice[0]} is defined twice")
    return tuple(queues)


def _short(where: str, entry: Mapping[str, Any]) -> dict[str, Any]:
    unknown = sorted(set(entry) - _SHORT_FIELDS)
    if unknown:
        raise ConfigError(
            f"{where}: unknown field {unknown[0]!r}; a queue has "
            f"{', '.join(sorted(_SHORT_FIELDS))} (or write a Queue object with apiVersion, "
            "kind, metadata and spec)"
        )
    name = entry.get("name")
    if not isinstance(name, str) or not name:
        raise ConfigError(f"{where}: needs a name")
    for key in ("quota", "limit", "overQuotaWeight"):
        value = entry.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)):
            raise ConfigError(f"{where}: {key} must be a number, got {value!r}")
    pool: dict[str, Any] = {"pool": _THIS_POOL, "quota": entry.get("quota", 0)}
    if entry.get("limit") is not None:
        pool["limit"] = entry["limit"]
    if entry.get("overQuotaWeight") is not None:
        pool["overQuotaWeight"] = entry["overQuotaWeight"]
    spec: dict[str, Any] = {"pools": [pool], "priority": entry.get("priority", 0)}
    if entry.get("parent"):
        spec["parent"] = entry["parent"]
    return {"metadata": {"name": name}, "spec": spec}


def default_queues(names: Sequence[str], pool: str, gpus: int) -> tuple[Queue, ...]:
    """Queues for `names` when none are configured: the machine's GPUs split equally as quotas."""
    unique = sorted(set(names))
    share = gpus / len(unique) if unique else 0.0
    return tuple(Queue(name=n, quotas=(PoolQuota(pool=pool, quota=share),)) for n in unique)
