"""Leader election on a real Lease: one replica acts, another takes over when it goes."""

from __future__ import annotations

import time

from kubernetes.client import ApiClient, CoordinationV1Api

from scheduler_service.kube import LeaseElector
from tests.integration.cluster import wait_for


def elector(admin: ApiClient, namespace: str, identity: str) -> LeaseElector:
    return LeaseElector(
        admin,
        namespace=namespace,
        name="aistack-test",
        identity=identity,
        lease_duration_seconds=4,
        renew_deadline_seconds=3,
        retry_period_seconds=1,
    )


def test_one_replica_leads_and_the_other_takes_over_when_it_stops(
    admin_client: ApiClient, namespace: str
) -> None:
    first = elector(admin_client, namespace, "first")
    second = elector(admin_client, namespace, "second")
    first.start()
    wait_for("the first replica to lead", lambda: first.is_leader)
    second.start()
    try:
        wait_for("the second replica to try and fail", lambda: second.attempts >= 2)
        assert not second.is_leader
        lease = CoordinationV1Api(admin_client).read_namespaced_lease("aistack-test", namespace)
        assert lease.spec is not None
        assert lease.spec.holder_identity == "first"
        first.stop()  # gives the lease up: the second takes over without waiting it out
        wait_for("the second replica to lead", lambda: second.is_leader, timeout=5)
        assert not first.is_leader
    finally:
        first.stop()
        second.stop()


def test_a_leader_that_cannot_renew_stops_leading_before_the_lease_expires(
    admin_client: ApiClient, namespace: str
) -> None:
    clock = [time.time()]
    leader = LeaseElector(
        admin_client,
        namespace=namespace,
        name="aistack-test",
        identity="only",
        lease_duration_seconds=4,
        renew_deadline_seconds=3,
        retry_period_seconds=1,
        clock=lambda: clock[0],
    )
    assert leader.try_renew()
    assert leader.is_leader
    clock[0] += 3.5  # no renewal for longer than the renew deadline
    assert not leader.is_leader
