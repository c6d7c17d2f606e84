"""`IdleGate`: a cheap, exact test that a cycle can neither admit nor evict, so it may be skipped.

A replay asks for a cycle whenever something changed; when a queue is long, most such cycles
change nothing (the freed GPUs are too few for anything waiting, or its queue is at its limit)
yet each costs the core time in everything pending. The gate keeps counts per queue and says
"may act" unless both hold:

- no admission: for every queue with waiting work, its smallest waiting gang needs more GPUs
  than are free in the pool, or more than the queue's limit leaves it;
- no eviction: no queue holds more than its quota while another queue waits (reclaim only
  takes over-quota work), and there is no preemption by priority (the gate is only used when
  every workload has the same priority).

Both are necessary conditions of the core's admission and reclaim rules, so a skipped cycle
is one whose plan would have admitted and evicted nothing: outcomes are unchanged (a property
the tests check by replaying with and without the gate). One pool only; EVICTING work holds its
GPUs but no longer counts for its queue, as in the core.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable

from scheduler_service.core import Queue

__all__ = ["IdleGate"]


class IdleGate:
    """Counts per queue for one pool of `total_gpus`; see the module docstring."""

    def __init__(self, queues: Iterable[Queue], pool: str, total_gpus: int) -> None:
        """Take each queue's quota and limit in `pool` (GPUs)."""
        self.total_gpus = total_gpus
        self.quota: dict[str, float] = {}
        self.limit: dict[str, float] = {}
        for queue in queues:
            entry = queue.quota_in(pool)
            self.quota[queue.name] = entry.quota
            self.limit[queue.name] = math.inf if entry.limit is None else entry.limit
        self.counted = dict.fromkeys(self.quota, 0)
        self.waiting: dict[str, Counter[int]] = {name: Counter() for name in self.quota}
        self.used = 0

    def submitted(self, queue: str, gpus: int) -> None:
        """A gang of `gpus` waits in `queue` (new, or back after an eviction)."""
        self.waiting[queue][gpus] += 1

    def started(self, queue: str, gpus: int) -> None:
        """A waiting gang now runs."""
        sizes = self.waiting[queue]
        sizes[gpus] -= 1
        if not sizes[gpus]:
            del sizes[gpus]
        self.counted[queue] += gpus
        self.used += gpus

    def evicting(self, queue: str, gpus: int) -> None:
        """A running gang is being evicted: it still holds its GPUs, uncounted for its queue."""
        self.counted[queue] -= gpus

    def released(self, queue: str, gpus: int, *, running: bool) -> None:
        """A gang gave its GPUs back (finished if `running`, else its eviction is done)."""
        if running:
            self.counted[queue] -= gpus
        self.used -= gpus

    def may_act(self) -> bool:
        """False only when a cycle now can neither admit nor evict anything."""
        free = self.total_gpus - self.used
        waiting = [name for name, sizes in self.waiting.items() if sizes]
        for name in waiting:
            smallest = min(self.waiting[name])
            if smallest <= free and smallest <= self.limit[name] - self.counted[name]:
                return True
        over = [name for name, held in self.counted.items() if held > self.quota[name]]
        return any(name != other for name in over for other in waiting)
