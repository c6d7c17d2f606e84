"""The retry strategy of a preemptible step: reclaims retried for free, the rest as the author said.

When the scheduler takes GPUs back, it marks the step's pod Failed with a message that starts
with `pod_contract.RECLAIMED_MESSAGE_PREFIX` (or the preemption prefix), and Argo shows that
message on the step. The strategy written here retries such an attempt whatever the author's
policy (Argo's default, OnFailure, included), and applies the author's own policy, expression
and backoff to every other failure.

Argo counts every attempt against one `limit`, and its retry expression sees only the last
attempt, so the author's failures cannot be counted apart from reclaims. The limit is raised by
`reclaim_retries`: a reclaim never uses up the author's retries. The price, said plainly in
docs/authors.md: a step that keeps failing on its own may be retried up to `reclaim_retries`
more times than its limit when its author asked for retries at all (a step without a retry
strategy of its own is never retried for its own failures).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from aistack_flows._errors import Problem
from scheduler_service import pod_contract as contract

__all__ = ["FREE_RETRY", "compose_retry_strategy"]

FREE_RETRY = (
    'lastRetry.status == "Failed" && ('
    f'lastRetry.message startsWith "{contract.RECLAIMED_MESSAGE_PREFIX}" || '
    f'lastRetry.message startsWith "{contract.PREEMPTED_MESSAGE_PREFIX}")'
)
"""The Argo expression (expr-lang) that is true for an attempt the scheduler evicted."""

_POLICY_CLAUSE = {
    "OnFailure": 'lastRetry.status == "Failed"',
    "OnError": 'lastRetry.status == "Error"',
    "Always": "true",
}


def compose_retry_strategy(
    author: Mapping[str, Any] | None, reclaim_retries: int
) -> dict[str, Any] | Problem:
    """The retry strategy for a preemptible step whose author wrote `author` (None: none).

    Idempotent: a strategy this function wrote is returned as it is. Returns a `Problem` when
    the author's strategy cannot be combined with free reclaim retries.
    """
    if author is None:
        return {"limit": str(reclaim_retries), "retryPolicy": "Always", "expression": FREE_RETRY}
    expression = author.get("expression")
    if isinstance(expression, str) and expression.startswith(FREE_RETRY):
        return dict(author)
    composed = {k: v for k, v in author.items() if k not in {"limit", "retryPolicy", "expression"}}
    # Argo's rule (RetryPolicyActual): an expression without a policy means Always.
    policy = author.get("retryPolicy") or ("Always" if expression else "OnFailure")
    clause = _POLICY_CLAUSE.get(policy)
    if clause is None:
        return Problem(
            "retryStrategy.retryPolicy",
            f"{policy} cannot be combined with the free retry of a reclaimed attempt; use "
            "OnFailure, OnError or Always (with an expression if you need one)",
        )
    if expression:
        clause = f"({clause}) && ({expression})"
    limit = author.get("limit")
    if limit is not None:
        try:
            limit = str(int(str(limit)) + reclaim_retries)
        except ValueError:
            return Problem(
                "retryStrategy.limit",
                f"{limit!r} must be a whole number for the scheduler to add its "
                f"{reclaim_retries} free reclaim retries to it",
            )
        composed["limit"] = limit
    composed["retryPolicy"] = "Always"
    composed["expression"] = f"{FREE_RETRY} || ({clause})"
    return composed
