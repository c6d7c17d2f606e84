"""Phase 1: fair share, by water-filling, top-down through the queue tree, per pool.

At every level of the tree the parent's share (the pool's capacity at the root) is divided
among the children:

1. each child first gets `min(quota, demand, limit)`; when those guarantees together exceed
   what the parent has (quotas oversubscribed), the parent's amount is water-filled by quota;
2. what is left goes to children that still want more, highest queue priority first, split by
   `over_quota_weight` (water-filling: a child never gets past its demand or its limit, and
   what it cannot use flows to the others).

A parent's demand is the sum of its children's. Amounts are integer milli-GPUs; the few
milli-GPUs that proportional division cannot split evenly go to the largest remainders, ties
to the earlier child, so the result is exact and deterministic.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction

__all__ = ["ShareInput", "divide", "fair_shares", "water_fill"]


@dataclass(frozen=True, slots=True)
class ShareInput:
    """One queue in one pool, as phase 1 sees it (amounts in milli-GPUs)."""

    name: str
    parent: str | None
    quota: int
    limit: int | None
    weight: Fraction
    priority: int
    demand: int


def water_fill(amount: int, caps: Sequence[int], weights: Sequence[Fraction]) -> list[int]:
    """Split `amount` in proportion to `weights`, never giving entry i more than `caps[i]`.

    Entries with zero weight or zero cap get nothing. Returns the integer shares; their sum is
    `min(amount, sum of caps of entries with weight > 0)`.

    Exact: the weights are scaled to integers (by their denominators' least common multiple,
    which keeps every proportion), so each entry's exact slice is `amount * w / total` as an
    integer quotient and remainder, without fraction arithmetic.
    """
    shares = [0] * len(caps)
    active = [i for i, cap in enumerate(caps) if cap > 0 and weights[i] > 0]
    scale = math.lcm(*(weights[i].denominator for i in active)) if active else 1
    whole = {i: int(weights[i] * scale) for i in active}
    while amount > 0 and active:
        total = sum(whole[i] for i in active)
        # Entry i's exact slice is amount * whole[i] / total.
        saturated = [i for i in active if amount * whole[i] >= (caps[i] - shares[i]) * total]
        if saturated:
            # Fill the entries that want less than their slice, then share the rest again.
            for i in saturated:
                amount -= caps[i] - shares[i]
                shares[i] = caps[i]
            active = [i for i in active if i not in saturated]
            continue
        parts = {i: divmod(amount * whole[i], total) for i in active}
        for i in active:
            shares[i] += parts[i][0]
        leftover = amount - sum(floor for floor, _ in parts.values())
        by_remainder = sorted(active, key=lambda i: (-parts[i][1], i))
        for i in by_remainder[:leftover]:
            shares[i] += 1
        break
    return shares


def divide(amount: int, children: Sequence[ShareInput], demand: Mapping[str, int]) -> list[int]:
    """Divide a parent's `amount` among `children` (one tree level), as the module describes.

    `demand` gives each child's demand (for a parent queue: its subtree's, capped by its limit).
    """
    wanted = [_cap(child, demand[child.name]) for child in children]
    base = [min(child.quota, want) for child, want in zip(children, wanted, strict=True)]
    if sum(base) >= amount:
        return water_fill(amount, base, [Fraction(child.quota) for child in children])
    shares = base
    remaining = amount - sum(base)
    for priority in sorted({child.priority for child in children}, reverse=True):
        tier = [i for i, child in enumerate(children) if child.priority == priority]
        extra = water_fill(
            remaining,
            [wanted[i] - shares[i] for i in tier],
            [children[i].weight for i in tier],
        )
        for i, more in zip(tier, extra, strict=True):
            shares[i] += more
        remaining -= sum(extra)
    return shares


def fair_shares(capacity: int, queues: Sequence[ShareInput]) -> dict[str, int]:
    """Every queue's fair share (milli-GPUs) of a pool of `capacity`, given leaf demands.

    `queues` holds the whole tree for this pool; a queue's `demand` is used only for leaves
    (a queue without children), a parent's is derived from its children.
    """
    children: dict[str | None, list[ShareInput]] = {}
    for queue in sorted(queues, key=lambda q: q.name):
        children.setdefault(queue.parent, []).append(queue)
    demand: dict[str, int] = {}

    def subtree_demand(queue: ShareInput) -> int:
        kids = children.get(queue.name)
        own = queue.demand if not kids else sum(subtree_demand(kid) for kid in kids)
        demand[queue.name] = _cap(queue, own)
        return demand[queue.name]

    for root in children.get(None, []):
        subtree_demand(root)

    shares: dict[str, int] = {}
    pending: list[tuple[str | None, int]] = [(None, capacity)]
    while pending:
        parent, amount = pending.pop()
        kids = children.get(parent, [])
        for kid, share in zip(kids, divide(amount, kids, demand), strict=True):
            shares[kid.name] = share
            pending.append((kid.name, share))
    return shares


def _cap(queue: ShareInput, want: int) -> int:
    return want if queue.limit is None else min(want, queue.limit)
