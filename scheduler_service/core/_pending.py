"""The pending workloads, indexed the way every cycle reads them, kept up to date one by one.

A long queue is read by every cycle in the same few ways: phase 0's verdict on each workload,
phase 1's demand per queue, phase 3's queue order, and which (pool, shape)s each queue waits
with. Rebuilding that each cycle costs time in every pending workload; `PendingIndex` pays it
once per workload, when it starts or stops waiting (`add`, `remove`). Everything it holds is
order-free or sorted by a unique key, so an index built from a snapshot and one kept up to
date event by event read the same.
"""

from __future__ import annotations

from bisect import bisect_left, insort
from collections import Counter
from collections.abc import Callable, Iterable
from typing import NamedTuple, TypeVar

from scheduler_service.core._model import Workload, WorkloadState

__all__ = ["PendingIndex", "Target", "pending_order", "workload_order"]

OrderKey = tuple[int, float, str]
_K = TypeVar("_K")


def workload_order(workload: Workload) -> OrderKey:
    """Inside a queue: higher priority first, then earlier submission, then name."""
    return (-workload.priority, workload.submitted_at, workload.name)


def pending_order(workloads: Iterable[Workload]) -> dict[str, list[str]]:
    """The PENDING ones of `workloads`, by queue, in queue order (`workload_order`), by name.

    What a user is told as a waiting workload's place in its queue (the pod's message, the
    API's explain); workloads that name no usable pool are counted too.
    """
    waiting: dict[str, list[Workload]] = {}
    for workload in workloads:
        if workload.state is WorkloadState.PENDING:
            waiting.setdefault(workload.queue, []).append(workload)
    return {
        queue: [w.name for w in sorted(items, key=workload_order)]
        for queue, items in waiting.items()
    }


class Target(NamedTuple):
    """What phase 0 finds for a pending workload, worked out once while it waits."""

    pools: str | list[str]
    """The pools it may use, in order of preference, or what its user must fix."""
    shape: int
    """Its placement shape, as a number: equal shapes fit (or fail) on the same nodes."""
    charges: tuple[int, ...]
    """What it charges in each of `pools` (milli-GPUs)."""
    limit_only: bool
    """One pool, preemptible, no limit above its own queue: at most its queue's limit gates it,
    so whether it is admitted depends on its (pool, shape, charge) and that limit alone."""
    ungated: bool
    """Limit-only, and no limit on its queue either: no queue gate can apply."""


class PendingIndex:
    """Pending workloads and what the cycle reads of them; see the module docstring.

    The cycle reads the public attributes and never changes them.
    """

    def __init__(self, target_of: Callable[[Workload], Target]) -> None:
        """Index workloads with `target_of` as phase 0's verdict (a pure function of it)."""
        self._target_of = target_of
        self.workloads: dict[str, Workload] = {}
        """Every pending workload, by name."""
        self.names: list[str] = []
        """Their names, sorted."""
        self.invalid: dict[str, str] = {}
        """Workloads whose target can never work: what their user must fix."""
        self.pools_for: dict[str, list[str]] = {}
        """The others: the pools each may use, in order of preference."""
        self.shape_of: dict[str, int] = {}
        """The others: their placement shape (`Target.shape`)."""
        self.in_order: dict[str, list[Workload]] = {}
        """The others, per queue, in queue order (`workload_order`)."""
        self.demand: dict[tuple[str, str], int] = {}
        """What the others ask, by (queue, pool), in every pool they accept (milli-GPUs)."""
        self.not_limit_only: Counter[str] = Counter()
        """Per queue, how many of its workloads are not limit-only (`Target.limit_only`)."""
        self.may_be_gated: Counter[str] = Counter()
        """Per queue, how many of its workloads a queue gate may hold back (not
        `Target.ungated`)."""
        self.limit_only_key: dict[str, tuple[str, int, int]] = {}
        """Per limit-only workload, its (pool, shape, charge)."""
        self.limit_only_shapes: dict[str, Counter[tuple[str, int, int]]] = {}
        """Per queue, its limit-only workloads by (pool, shape, charge)."""
        self.ungated_needs: dict[tuple[str, str], Counter[int]] = {}
        """Per (queue, pool), its ungated workloads by charge."""
        self.first_pools: dict[str, Counter[str]] = {}
        """Per queue, its workloads by the first pool they accept."""
        self.multi_pool: Counter[str] = Counter()
        """Per queue, how many of its workloads accept more than one pool."""
        self.class_of: dict[str, tuple[str, str, int]] = {}
        """Per workload, its (queue, first pool, shape): what phase 6 says of most workloads
        depends on that only."""
        self.classes: dict[tuple[str, str, int], set[str]] = {}
        """The workloads of each class (`class_of`)."""
        self._keys: dict[str, list[OrderKey]] = {}
        self._targets: dict[str, Target] = {}

    def add(self, workload: Workload) -> None:
        """`workload` waits (a new name)."""
        name = workload.name
        self.workloads[name] = workload
        insort(self.names, name)
        target = self._target_of(workload)
        pools = target.pools
        if isinstance(pools, str):
            self.invalid[name] = pools
            return
        self._targets[name] = target
        self.pools_for[name] = pools
        self.shape_of[name] = target.shape
        queue = workload.queue
        self.class_of[name] = kind = (queue, pools[0], target.shape)
        self.classes.setdefault(kind, set()).add(name)
        key = workload_order(workload)
        keys = self._keys.setdefault(queue, [])
        at = bisect_left(keys, key)
        keys.insert(at, key)
        self.in_order.setdefault(queue, []).insert(at, workload)
        self._count(workload, target, +1)

    def remove(self, name: str) -> Workload:
        """The pending workload `name` no longer waits; returns it."""
        workload = self.workloads.pop(name)
        del self.names[bisect_left(self.names, name)]
        if self.invalid.pop(name, None) is not None:
            return workload
        target = self._targets.pop(name)
        del self.pools_for[name], self.shape_of[name]
        kind = self.class_of.pop(name)
        members = self.classes[kind]
        members.discard(name)
        if not members:
            del self.classes[kind]
        queue = workload.queue
        keys = self._keys[queue]
        at = bisect_left(keys, workload_order(workload))
        del keys[at]
        del self.in_order[queue][at]
        if not keys:
            del self._keys[queue], self.in_order[queue]
        self._count(workload, target, -1)
        return workload

    def _count(self, workload: Workload, target: Target, sign: int) -> None:
        queue = workload.queue
        assert not isinstance(target.pools, str)
        for pool, charge in zip(target.pools, target.charges, strict=True):
            _change(self.demand, (queue, pool), sign * charge)
        _change(self.first_pools.setdefault(queue, Counter()), target.pools[0], sign)
        if len(target.pools) > 1:
            _change(self.multi_pool, queue, sign)
        if not target.ungated:
            _change(self.may_be_gated, queue, sign)
        if not target.limit_only:
            _change(self.not_limit_only, queue, sign)
            return
        pool, charge = target.pools[0], target.charges[0]
        key = (pool, target.shape, charge)
        if sign > 0:
            self.limit_only_key[workload.name] = key
        else:
            del self.limit_only_key[workload.name]
        _change(self.limit_only_shapes.setdefault(queue, Counter()), key, sign)
        if target.ungated:
            _change(self.ungated_needs.setdefault((queue, pool), Counter()), charge, sign)


def _change(counts: dict[_K, int], key: _K, by: int) -> None:
    """Add `by` to `counts[key]`, dropping the key at zero (so a count's keys are what is there)."""
    left = counts.get(key, 0) + by
    if left:
        counts[key] = left
    else:
        counts.pop(key, None)
