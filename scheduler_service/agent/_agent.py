"""The node agent's loop: discover the node's GPUs, write what changed on its Node, again and again.

`NodeAgent.sync()` is one pass: NVML through `gpu_discovery.discover`, the Node read from the API
server, then at most two patches (the metadata patch and the condition of `_inventory`), each
sent only when it changes something, so a node whose GPUs stay as they are costs one GET per
interval. `run()` repeats it until stopped; a pass that fails on the API server (unreachable,
403, 404, 5xx) is retried after 1, 2, 4 ... seconds with jitter, never later than the next
regular pass would have come, and never stops the loop.

NVML is opened and shut down inside each pass (and each scrape, `_metrics`) rather than held
open: between passes the agent holds no GPU device file, so a driver upgrade can unload the
kernel module without evicting the agent first, and a reloaded driver is simply found on the
next pass. It costs little where nvidia-persistenced keeps the devices set up, as it does on
GPU nodes. Passes and scrapes run in different threads; `nvml_lock` serialises their NVML
sessions.

Patches are not guarded by a resourceVersion: each sets only keys the agent owns (its
annotation, its condition) or keys that were absent (the two labels, which any writer would set
to the same value), so a concurrent change by the kubelet or anyone else is never lost, and a
guard would only make the agent lose races against the kubelet's status updates.
"""

from __future__ import annotations

import datetime
import json
import logging
import random
import threading
import time
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass
from typing import Any, Final

import urllib3
from kubernetes.client import CoreV1Api
from kubernetes.client.exceptions import ApiException
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from scheduler_service.agent._inventory import (
    InventoryStatus,
    condition_patch,
    inventory_status,
    node_patch,
)
from scheduler_service.agent._metrics import PodRef
from scheduler_service.agent._sharing import MpsKeeper
from scheduler_service.gpu_discovery import Machine, discover

__all__ = ["AgentCollector", "NodeAgent", "PodDirectory", "SyncResult"]

_log = logging.getLogger(__name__)

_MERGE: Final = "application/merge-patch+json"
_STRATEGIC: Final = "application/strategic-merge-patch+json"

_RETRYABLE: Final = (ApiException, urllib3.exceptions.HTTPError, OSError)
"""What a failed request to the API server raises: its answer, or no answer at all."""

_MAX_DOUBLINGS: Final = 30


@dataclass(frozen=True, slots=True)
class SyncResult:
    """What one pass found and wrote.

    Attributes:
        machine: What NVML reported.
        status: Whether that is a complete read, and the condition's words.
        metadata_patch: The merge patch sent to the Node, None when nothing changed.
        condition_patch: The strategic merge patch sent to its status, None when unchanged.
    """

    machine: Machine
    status: InventoryStatus
    metadata_patch: dict[str, Any] | None
    condition_patch: dict[str, Any] | None


class NodeAgent:
    """Keeps one Node's GPU inventory, labels and condition in step with what NVML reports.

    Owns nothing but what `_inventory` writes. Idempotent: a pass over an unchanged machine and
    node sends no write. Not meant to run twice for one node at once (a DaemonSet runs one per
    node), though two would only write the same values.
    """

    def __init__(
        self,
        node_name: str,
        core_api: CoreV1Api,
        *,
        nvml: Any = None,
        clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
        nvml_lock: threading.Lock | None = None,
        request_timeout_seconds: float = 10.0,
        retry_initial_seconds: float = 1.0,
        mps: MpsKeeper | None = None,
    ) -> None:
        """An agent for node `node_name`.

        Args:
            node_name: The Node this agent runs on (the downward API's `spec.nodeName`).
            core_api: The client it reads and patches the Node with.
            nvml: The NVML module, `pynvml` when None; tests pass a fake.
            clock: Unix seconds now, for the condition's times and the last-sync metric.
            rng: Draws the retry jitter; a fresh `random.Random()` when None.
            nvml_lock: Held while NVML is open; share it with the metrics' collector.
            request_timeout_seconds: Limit of each request, so a hung connection cannot stall
                the loop.
            retry_initial_seconds: Wait before the first retry of a failed pass; it doubles.
            mps: Keeps the node's MPS daemons where its pool's slices run under MPS; each pass
                that reached the API server gives it the GPUs, the Node's labels and its pods.
        """
        self.node_name = node_name
        self.nvml_lock = nvml_lock or threading.Lock()
        self._core = core_api
        self._nvml = nvml
        self._clock = clock
        self._rng = rng or random.Random()
        self._timeout = request_timeout_seconds
        self._retry_initial = retry_initial_seconds
        self.mps = mps
        self.last_success_at: float | None = None
        self.failures_total = 0

    def __repr__(self) -> str:
        return f"NodeAgent(node={self.node_name!r})"

    def sync(self) -> SyncResult:
        """One pass: discover the GPUs, read the Node, patch what differs.

        Raises:
            ApiException: The API server refused a request (e.g. 404: no such node, 403: RBAC).
            urllib3.exceptions.HTTPError, OSError: It could not be reached.
        """
        with self.nvml_lock:
            machine = discover(self._nvml)
        status = inventory_status(machine)
        response: Any = self._core.read_node(
            self.node_name, _preload_content=False, _request_timeout=self._timeout
        )
        node = json.loads(response.data)
        metadata = node_patch(machine, node)
        if metadata is not None:
            self._core.patch_node(
                self.node_name,
                metadata,
                _content_type=_MERGE,
                _preload_content=False,
                _request_timeout=self._timeout,
            )
            _log.info("node %s: wrote %s", self.node_name, _what(metadata))
        now = datetime.datetime.fromtimestamp(self._clock(), datetime.UTC)
        condition = condition_patch(machine, node, now)
        if condition is not None:
            self._core.patch_node_status(
                self.node_name,
                condition,
                _content_type=_STRATEGIC,
                _preload_content=False,
                _request_timeout=self._timeout,
            )
            _log.log(
                logging.INFO if status.complete else logging.WARNING,
                "node %s: GPU inventory %s: %s",
                self.node_name,
                status.reason,
                status.message,
            )
        if self.mps is not None:
            labels = {**(node.get("metadata") or {}).get("labels", {})}
            labels.update((metadata or {}).get("metadata", {}).get("labels", {}))
            self.mps.pass_(machine, self._node_pods(), labels)
        self.last_success_at = self._clock()
        return SyncResult(machine, status, metadata, condition)

    def _node_pods(self) -> list[dict[str, Any]] | None:
        """The pods bound to the node, from the API server's cache; None if it did not answer."""
        try:
            response: Any = self._core.list_pod_for_all_namespaces(
                field_selector=f"spec.nodeName={self.node_name}",
                resource_version="0",
                _preload_content=False,
                _request_timeout=self._timeout,
            )
        except _RETRYABLE as error:
            _log.warning(
                "pods on node %s could not be listed: %s", self.node_name, _describe(error)
            )
            return None
        items: list[dict[str, Any]] = json.loads(response.data).get("items") or []
        return items

    def run(self, stop: threading.Event, interval_seconds: float) -> None:
        """Run `sync()` every `interval_seconds` until `stop` is set.

        A pass that fails on the API server is logged and retried sooner, with backoff (see
        the module); any other exception is a bug and propagates.
        """
        failures = 0
        while not stop.is_set():
            try:
                self.sync()
            except _RETRYABLE as error:
                failures += 1
                self.failures_total += 1
                delay = self._retry_delay(failures, interval_seconds)
                _log.warning(
                    "node %s: sync failed (%s), retrying in %.1f s",
                    self.node_name,
                    _describe(error),
                    delay,
                )
            else:
                failures = 0
                delay = interval_seconds
            stop.wait(delay)

    def _retry_delay(self, failures: int, interval_seconds: float) -> float:
        """1, 2, 4 ... seconds, at most the interval, drawn from its upper half (jitter).

        The jitter spreads the retries of a whole DaemonSet after the API server comes back.
        """
        doublings = min(failures - 1, _MAX_DOUBLINGS)
        ceiling = min(interval_seconds, self._retry_initial * 2.0**doublings)
        return ceiling / 2 + self._rng.uniform(0, ceiling / 2)


class PodDirectory:
    """The pods bound to one node, by UID, to name the pods in GPU metrics (a `PodResolver`).

    Lists pods with the field selector `spec.nodeName=<node>` from the API server's cache
    (`resourceVersion=0`), and lists again only when asked for a UID it does not know and its
    last list is at least `refresh_seconds` old, so a scrape costs no request while the node's
    pods stay the same. A failed list keeps the last answer. Thread-safe.
    """

    def __init__(
        self,
        core_api: CoreV1Api,
        node_name: str,
        *,
        clock: Callable[[], float] = time.monotonic,
        refresh_seconds: float = 10.0,
        request_timeout_seconds: float = 10.0,
    ) -> None:
        """A directory of `node_name`'s pods, read through `core_api`."""
        self._core = core_api
        self._node = node_name
        self._clock = clock
        self._refresh = refresh_seconds
        self._timeout = request_timeout_seconds
        self._lock = threading.Lock()
        self._pods: dict[str, PodRef] = {}
        self._listed_at: float | None = None

    def __repr__(self) -> str:
        return f"PodDirectory(node={self._node!r}, pods={len(self._pods)})"

    def __call__(self, uids: Collection[str]) -> dict[str, PodRef]:
        """The pods of those `uids` that are bound to the node."""
        with self._lock:
            stale = self._listed_at is None or self._clock() - self._listed_at >= self._refresh
            if stale and not set(uids) <= self._pods.keys():
                self._list()
            return {uid: self._pods[uid] for uid in uids if uid in self._pods}

    def _list(self) -> None:
        self._listed_at = self._clock()
        try:
            response: Any = self._core.list_pod_for_all_namespaces(
                field_selector=f"spec.nodeName={self._node}",
                resource_version="0",
                _preload_content=False,
                _request_timeout=self._timeout,
            )
        except _RETRYABLE as error:
            _log.warning("pods on node %s could not be listed: %s", self._node, _describe(error))
            return
        items = json.loads(response.data).get("items") or ()
        self._pods = {
            item["metadata"]["uid"]: PodRef(item["metadata"]["namespace"], item["metadata"]["name"])
            for item in items
        }


class AgentCollector:
    """Prometheus collector of the agent's own health: when it last synced, how often it failed.

    aistack_agent_last_sync_timestamp_seconds{node}   the last successful pass, Unix seconds
    aistack_agent_sync_failures_total{node}           passes that failed on the API server
    aistack_agent_mps_daemons{node}                   MPS daemons running (with --gpu-sharing mps)
    aistack_agent_mps_failing_gpus{node}              GPUs whose daemon the last pass could not
                                                      start or configure (the log says why)
    """

    def __init__(self, agent: NodeAgent) -> None:
        """Report on `agent`."""
        self._agent = agent

    def collect(self) -> Iterator[Metric]:
        """The two series; the timestamp is absent until a pass has succeeded."""
        node = [self._agent.node_name]
        last = GaugeMetricFamily(
            "aistack_agent_last_sync_timestamp_seconds",
            "When the node agent last brought its Node up to date, Unix seconds.",
            labels=["node"],
        )
        if self._agent.last_success_at is not None:
            last.add_metric(node, self._agent.last_success_at)
        failures = CounterMetricFamily(
            "aistack_agent_sync_failures",
            "Passes of the node agent that failed on the API server.",
            labels=["node"],
        )
        failures.add_metric(node, self._agent.failures_total)
        yield from (last, failures)
        keeper = self._agent.mps
        if keeper is not None:
            daemons = GaugeMetricFamily(
                "aistack_agent_mps_daemons",
                "MPS control daemons the node agent keeps running, one per GPU.",
                labels=["node"],
            )
            daemons.add_metric(node, len(keeper.last))
            failing = GaugeMetricFamily(
                "aistack_agent_mps_failing_gpus",
                "GPUs whose MPS daemon the last pass could not start or configure.",
                labels=["node"],
            )
            failing.add_metric(node, len(keeper.failures))
            yield from (daemons, failing)


def _what(patch: dict[str, Any]) -> str:
    metadata = patch["metadata"]
    keys = [*metadata.get("annotations", {}), *metadata.get("labels", {})]
    return ", ".join(keys)


def _describe(error: BaseException) -> str:
    if isinstance(error, ApiException):
        return f"{error.status} {error.reason}"
    return f"{type(error).__name__}: {error}"
