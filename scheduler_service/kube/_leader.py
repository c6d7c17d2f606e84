"""Leader election on a coordination.k8s.io Lease, so that one replica acts and the others wait.

The kubernetes package ships an elector, but its config calls `sys.exit` on bad values and its
lock talks through the global default client; this one uses the service's client and reports
leadership as a property the driver checks before every write. A leader that cannot renew within
`renew_deadline_seconds` stops acting at once, before another replica can take over (the lease
lasts longer than the deadline), so two replicas never act together.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, cast

from kubernetes.client import ApiClient, CoordinationV1Api
from kubernetes.client.exceptions import ApiException

__all__ = ["LeaseElector"]

_log = logging.getLogger(__name__)


def _micro_time(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _parse(text: str | None) -> float:
    if not text:
        return 0.0
    return datetime.fromisoformat(text).timestamp()


class LeaseElector:
    """Campaign for the Lease `namespace/name` as `identity` in a daemon thread."""

    def __init__(
        self,
        api_client: ApiClient,
        *,
        namespace: str,
        name: str,
        identity: str,
        lease_duration_seconds: float = 15,
        renew_deadline_seconds: float = 10,
        retry_period_seconds: float = 2,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not retry_period_seconds < renew_deadline_seconds < lease_duration_seconds:
            raise ValueError(
                "leader election needs retry_period < renew_deadline < lease_duration, got "
                f"{retry_period_seconds}, {renew_deadline_seconds}, {lease_duration_seconds}"
            )
        self._api = CoordinationV1Api(api_client)
        self._namespace = namespace
        self._name = name
        self.identity = identity
        self._duration = lease_duration_seconds
        self._deadline = renew_deadline_seconds
        self._period = retry_period_seconds
        self._clock = clock
        self._renewed_at = 0.0
        self.attempts = 0
        """How many times this replica tried to acquire or renew the lease."""
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="leader-election", daemon=True)

    @property
    def is_leader(self) -> bool:
        """Whether this replica holds the lease now (renewed within the renew deadline)."""
        return self._clock() - self._renewed_at < self._deadline

    def start(self) -> None:
        """Start campaigning."""
        self._thread.start()

    def stop(self) -> None:
        """Stop, and give the lease up if held so that another replica takes over at once."""
        self._stop.set()
        self._thread.join(timeout=5)
        if self.is_leader:
            self._renewed_at = 0.0
            try:
                self._write(release=True)
            except ApiException as error:
                _log.warning("could not release lease %s: %s", self._name, error.reason)

    def try_renew(self) -> bool:
        """One attempt to acquire or renew the lease; True if this replica holds it now."""
        self.attempts += 1
        try:
            if self._write(release=False):
                self._renewed_at = self._clock()
        except ApiException as error:
            _log.warning("lease %s: %s", self._name, error.reason)
        except Exception as error:  # the API server is unreachable: keep trying
            _log.warning("lease %s: %s", self._name, error)
        return self.is_leader

    def _run(self) -> None:
        while not self._stop.is_set():
            was_leader = self.is_leader
            if self.try_renew() != was_leader:
                _log.info("%s %s leadership", self.identity, "took" if self.is_leader else "lost")
            self._stop.wait(self._period)

    def _write(self, *, release: bool) -> bool:
        """Acquire, renew or release the lease; True if this replica holds it afterwards."""
        now = self._clock()
        try:
            lease: Any = self._api.read_namespaced_lease(self._name, self._namespace)
        except ApiException as error:
            if error.status != 404 or release:
                raise
            body = {
                "metadata": {"name": self._name, "namespace": self._namespace},
                "spec": self._spec(now, acquire_time=now, transitions=0),
            }
            try:
                # The client accepts plain JSON bodies; its stubs name only the model class.
                self._api.create_namespaced_lease(self._namespace, cast(Any, body))
            except ApiException as conflict:
                if conflict.status == 409:
                    return False
                raise
            return True
        spec = lease.spec
        holder = spec.holder_identity if spec else None
        renewed = _parse_time(spec.renew_time if spec else None)
        duration = (spec.lease_duration_seconds if spec else None) or self._duration
        if holder and holder != self.identity and renewed + duration > now:
            return False
        transitions = (spec.lease_transitions or 0) if spec else 0
        acquired = _parse_time(spec.acquire_time if spec else None)
        if holder != self.identity:
            transitions += 1
            acquired = now
        new_spec = self._spec(now, acquire_time=acquired, transitions=transitions)
        if release:
            new_spec["holderIdentity"] = None
        body = {
            "metadata": {"resourceVersion": lease.metadata.resource_version},
            "spec": new_spec,
        }
        try:
            self._api.patch_namespaced_lease(
                self._name, self._namespace, body, _content_type="application/merge-patch+json"
            )
        except ApiException as error:
            if error.status == 409:  # someone else wrote it first
                return False
            raise
        return not release

    def _spec(self, now: float, *, acquire_time: float, transitions: int) -> dict[str, Any]:
        return {
            "holderIdentity": self.identity,
            "leaseDurationSeconds": int(self._duration),
            "acquireTime": _micro_time(acquire_time),
            "renewTime": _micro_time(now),
            "leaseTransitions": transitions,
        }


def _parse_time(value: Any) -> float:
    """A lease time as the client returns it (datetime or string) to Unix seconds."""
    if value is None:
        return 0.0
    if isinstance(value, datetime):
        return value.timestamp()
    return _parse(str(value))
