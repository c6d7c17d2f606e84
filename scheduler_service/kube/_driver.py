"""The cluster driver: watch pods, nodes and queues; run the core; carry out its plans.

One thread owns the `PodLedger` and runs the loop: take the watched events, run a cycle when
something changed (or every `cycle_interval_seconds`), and, on the leader only, carry out the
intents with a pool of API requests: stops (evictions) first, then releases, then pending
reasons and queue statuses. What the API server answers goes straight back into the ledger, so
the next cycle sees the patched pods even before their watch events arrive.
"""

from __future__ import annotations

import json
import logging
import queue
import re
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from http import HTTPStatus
from pathlib import Path
from typing import Any, Protocol, TypeVar, cast

import urllib3
from kubernetes.client import ApiClient, CoreV1Api, CustomObjectsApi
from kubernetes.client.exceptions import ApiException

from scheduler_service import pod_contract as keys
from scheduler_service.api import ClusterStatus
from scheduler_service.core import Node, Plan, Queue, Snapshot
from scheduler_service.kube._accountant import Accountant
from scheduler_service.kube._admission import KubeWebhooks, QueueUnreadableError
from scheduler_service.kube._ledger import (
    Intents,
    PodEviction,
    PodLedger,
    PodMessage,
    PodRelease,
    QueueStatusUpdate,
    format_time,
    stop_patch,
)
from scheduler_service.kube._reflector import Reflector, Relisted, Watched
from scheduler_service.kube._reservations import ReservationIntents, Reservations, SliceFinish
from scheduler_service.kube._settings import ServiceSettings, SettingsError
from scheduler_service.translate import (
    NodeError,
    QueueError,
    default_namespaces,
    node_from_k8s,
    queue_from_k8s,
)

__all__ = ["ClusterDriver", "DriverMetrics"]

_log = logging.getLogger(__name__)

WATCH_LOSS_SECONDS = 30.0
"""How long a watch may fail before the replica reports itself not ready."""
FAILED_CYCLES = 3
"""How many scheduling cycles may fail in a row before the replica reports itself not ready."""

_R = TypeVar("_R")
_MERGE = "application/merge-patch+json"
_STRATEGIC = "application/strategic-merge-patch+json"


class DriverMetrics(Protocol):
    """What the driver reports to the metrics (scheduler_service.api's Metrics implements it)."""

    def cycle_finished(self, seconds: float, pending: int) -> None:
        """A cycle ran."""

    def admitted(self, queue: str, pods: int) -> None:
        """A workload's pods were released (once per workload and cycle)."""

    def evicted(self, queue: str, cause: str) -> None:
        """A workload was stopped for `cause` (`PodEviction.cause`)."""

    def patch_failed(self, kind: str) -> None:
        """An API request that carries out a plan failed."""


class _NoMetrics:
    def cycle_finished(self, seconds: float, pending: int) -> None:
        """Nothing to record."""

    def admitted(self, queue: str, pods: int) -> None:
        """Nothing to record."""

    def evicted(self, queue: str, cause: str) -> None:
        """Nothing to record."""

    def patch_failed(self, kind: str) -> None:
        """Nothing to record."""


class ClusterDriver:
    """See the module docstring. `is_leader` says whether this replica may write."""

    def __init__(
        self,
        api_client: ApiClient,
        settings: ServiceSettings,
        *,
        is_leader: Callable[[], bool] = lambda: True,
        metrics: DriverMetrics | None = None,
        clock: Callable[[], float] = time.time,
        namespace: str = "default",
        accountant: Accountant | None = None,
    ) -> None:
        self._settings = settings
        self._accountant = accountant
        """Told every pod and cycle; it records the leader's on a thread of its own."""
        self._core = CoreV1Api(api_client)
        self._custom = CustomObjectsApi(api_client)
        self._is_leader = is_leader
        self._metrics = metrics or _NoMetrics()
        self._clock = clock
        key = signing_key(settings.allocation_key_file)
        self._ledger = PodLedger(
            pool_label=settings.pool_label,
            policy=settings.policy.to_policy(),
            eviction_grace_seconds=settings.eviction_grace_seconds,
            gang_assembly_timeout_seconds=settings.gang_assembly_timeout_seconds,
            gpu_sharing=settings.gpu_sharing.to_sharing(),
            gpu_reservations=settings.gpu_reservations.enabled,
            signing_key=key,
        )
        reserving = settings.gpu_reservations
        self._reservations = (
            Reservations(
                namespace=namespace,
                image=reserving.image,
                service_account=reserving.service_account,
                sharing=settings.gpu_sharing.to_sharing(),
                linger_seconds=reserving.linger_seconds,
                signing_key=key,
            )
            if reserving.enabled
            else None
        )
        self._events: queue.Queue[Watched | Relisted] = queue.Queue()
        self._known: dict[str, dict[str, Any]] = {
            "pods": {},
            "nodes": {},
            "queues": {},
            "reservations": {},
            "unmanaged": {},
        }
        self._listed: set[str] = set()
        self._gang_services: set[str] = set()
        """Namespaces where the gang Service is known to exist (touched by the loop only)."""
        self._lock = threading.Lock()
        self._failed_cycles = 0
        self._cycle_error = ""
        self._status = ClusterStatus(snapshot=Snapshot(), plan=Plan())
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="scheduler", daemon=True)
        self._pool = ThreadPoolExecutor(settings.parallel_requests, thread_name_prefix="apply")
        self._reflectors = [
            Reflector(
                "pods",
                self._core.list_pod_for_all_namespaces,
                self._events,
                label_selector=f"{keys.MANAGED_LABEL}=true",
            ),
            Reflector(
                "unmanaged",
                self._core.list_pod_for_all_namespaces,
                self._events,
                # Bound pods the scheduler does not manage; a pod that ends leaves the
                # selection, which the watch says as a deletion. Its own reservation pods are
                # among them and left out by `_counted` (a label alone would let any pod out).
                label_selector=f"!{keys.MANAGED_LABEL}",
                field_selector="spec.nodeName!=,status.phase!=Succeeded,status.phase!=Failed",
                transform=_gpu_holding,
            ),
            Reflector("nodes", self._core.list_node, self._events),
            Reflector(
                "queues",
                lambda **kw: self._custom.list_cluster_custom_object(
                    keys.GROUP, keys.QUEUE_VERSION, keys.QUEUE_PLURAL, **kw
                ),
                self._events,
            ),
        ]
        if self._reservations is not None:
            self._reflectors.append(
                Reflector(
                    "reservations",
                    lambda **kw: self._core.list_namespaced_pod(namespace, **kw),
                    self._events,
                    label_selector=f"{keys.RESERVATION_LABEL}=true",
                )
            )
        self.webhooks = KubeWebhooks(
            self._queues,
            self._workloads_in,
            self._read_queue,
            nodes=self._gpu_nodes,
            read_nodes=self._read_gpu_nodes,
            default_queues=self._default_queues,
            gpu_sharing=settings.gpu_sharing.to_sharing(),
            reservations=reserving.enabled,
            service_namespace=namespace,
            allowed_namespaces=self._allowed_namespaces,
        )

    # -- life cycle -------------------------------------------------------------------------------

    def start(self) -> None:
        """Start watching and scheduling."""
        for reflector in self._reflectors:
            reflector.start()
        self._thread.start()

    def stop(self) -> None:
        """Stop watching and scheduling; requests in flight finish."""
        self._stop.set()
        for reflector in self._reflectors:
            reflector.stop()
        self._thread.join(timeout=10)
        self._pool.shutdown(wait=True)

    def _own_reservation(self, pod: Mapping[str, Any]) -> bool:
        return self._reservations is not None and own_reservation(pod, self._reservations.namespace)

    def listed(self) -> bool:
        """Whether every watched resource has been listed once (the view is complete)."""
        return len(self._listed) == len(self._reflectors)

    def unready_reason(self) -> str:
        """Why the service cannot schedule now, or "": what /readyz reports.

        Not ready until the cluster is listed, while a watch has failed for longer than
        `WATCH_LOSS_SECONDS` (its view goes stale), and after `FAILED_CYCLES` cycles in a row
        failed (a bug or an object it cannot handle; the log has the traceback).
        """
        if not self.listed():
            return "the cluster's pods, nodes and queues are not all listed yet"
        now = time.monotonic()
        lost = sorted(
            r.resource
            for r in self._reflectors
            if r.failing_since is not None and now - r.failing_since > WATCH_LOSS_SECONDS
        )
        if lost:
            return (
                f"the watch of {', '.join(lost)} has failed for over {WATCH_LOSS_SECONDS:g} s: "
                "the API server does not answer this replica"
            )
        if self._failed_cycles >= FAILED_CYCLES:
            return f"the last {self._failed_cycles} scheduling cycles failed: {self._cycle_error}"
        return ""

    def ready(self) -> bool:
        """Whether the service can schedule now (`unready_reason` is empty)."""
        return not self.unready_reason()

    def status(self) -> ClusterStatus:
        """The state after the last cycle (replaced as a whole; safe from any thread)."""
        return self._status

    # -- the API's actions ------------------------------------------------------------------------

    def delete_workload(self, name: str) -> None:
        """Delete every pod of a workload; KeyError if there is no such workload."""
        found = self._status.pods.get(name)
        if found is None:
            raise KeyError(name)
        for pod in found.pods:
            try:
                self._core.delete_namespaced_pod(pod, found.namespace, _preload_content=False)
            except ApiException as error:
                if error.status != 404:
                    raise

    # -- the loop ---------------------------------------------------------------------------------

    def _run(self) -> None:
        last_cycle = 0.0
        while not self._stop.is_set():
            changed = self._drain(timeout=self._settings.cycle_interval_seconds)
            now = self._clock()
            if not self.listed():
                continue
            if not changed and now - last_cycle < self._settings.cycle_interval_seconds:
                continue
            try:
                self._cycle(now)
            except Exception as error:  # a bug must not stop the scheduler: log, retry, report
                _log.exception("scheduling cycle failed")
                self._failed_cycles += 1
                self._cycle_error = f"{type(error).__name__}: {error}"[:300]
            else:
                self._failed_cycles = 0
            last_cycle = now

    def _drain(self, timeout: float) -> bool:
        """Apply the waiting events to the ledger; wait up to `timeout` for the first one."""
        try:
            event = self._events.get(timeout=timeout)
        except queue.Empty:
            return False
        with self._lock:
            self._apply_event(event)
            while True:
                try:
                    self._apply_event(self._events.get_nowait())
                except queue.Empty:
                    return True

    def _apply_event(self, event: Watched | Relisted) -> None:
        known = self._known[event.resource]
        if isinstance(event, Relisted):
            fresh = {_key(obj): obj for obj in event.objects}
            for key, obj in list(known.items()):
                if key not in fresh:
                    self._deleted(event.resource, obj)
            for obj in event.objects:
                self._changed(event.resource, obj)
            self._listed.add(event.resource)
            return
        if event.type == "DELETED":
            self._deleted(event.resource, event.object)
        else:
            self._changed(event.resource, event.object)

    def _changed(self, resource: str, obj: Any) -> None:
        # Only the identity is kept here (to notice deletions missed while a watch was down);
        # the ledger keeps what it needs of the object.
        metadata = obj["metadata"]
        self._known[resource][_key(obj)] = {
            "metadata": {k: metadata[k] for k in ("uid", "name", "namespace") if k in metadata}
        }
        if resource == "pods":
            self._ledger.pod_changed(obj)
            if self._reservations is not None:
                self._reservations.slice_changed(obj)
            if self._accountant is not None:
                self._accountant.pod_changed(obj)
        elif resource == "reservations":
            assert self._reservations is not None
            self._reservations.reservation_changed(obj)
        elif resource == "unmanaged":
            if self._own_reservation(obj):
                self._ledger.unmanaged_pod_deleted(obj)
            else:
                self._ledger.unmanaged_pod_changed(obj)
        elif resource == "nodes":
            self._ledger.node_changed(obj)
        else:
            self._ledger.queue_changed(obj)

    def _deleted(self, resource: str, obj: Any) -> None:
        self._known[resource].pop(_key(obj), None)
        if resource == "pods":
            self._ledger.pod_deleted(obj)
            if self._reservations is not None:
                self._reservations.slice_deleted(obj)
            if self._accountant is not None:
                self._accountant.pod_deleted(obj)
        elif resource == "reservations":
            assert self._reservations is not None
            self._reservations.reservation_deleted(obj)
        elif resource == "unmanaged":
            self._ledger.unmanaged_pod_deleted(obj)
        elif resource == "nodes":
            self._ledger.node_deleted(obj)
        else:
            self._ledger.queue_deleted(obj)

    def _cycle(self, now: float) -> None:
        started = time.perf_counter()
        leader = self._is_leader()
        with self._lock:
            reserving = ReservationIntents()
            if self._reservations is not None:
                self._ledger.idle_reservations_changed(self._reservations.idle())
            if leader:
                intents = self._ledger.cycle(now)
                if self._reservations is not None:
                    reserving = self._reservations.intents(now, self._ledger.hostnames())
            else:
                self._ledger.observe(now)
                intents = Intents()
            status = self._ledger.status(cycle_at=now, leader=leader)
        self._status = status
        self._metrics.cycle_finished(time.perf_counter() - started, len(status.plan.pending))
        if self._accountant is not None:  # a queue's append; the accountant's thread does the rest
            self._accountant.observe(status, intents.evictions)
        if leader:
            self._carry_out(intents)
            self._carry_out_reservations(reserving)

    # -- carrying out a plan ----------------------------------------------------------------------

    def _carry_out(self, intents: Intents) -> None:
        """Stops first (they free room), then releases, then messages and queue statuses."""
        evicted = {
            (e.workload, e.queue, e.cause)
            for e, done in zip(
                intents.evictions, self._all(self._evict, intents.evictions), strict=True
            )
            if done
        }
        for _, queue_name, cause in sorted(evicted):
            self._metrics.evicted(queue_name, cause)
        wanted = sorted({r.namespace for r in intents.releases if r.gang_dns})
        missing = [n for n in wanted if n not in self._gang_services]
        for namespace, there in zip(missing, self._all(self._gang_service, missing), strict=True):
            if there:
                self._gang_services.add(namespace)
        released: dict[tuple[str, str], int] = {}
        for release, done in zip(
            intents.releases, self._all(self._release, intents.releases), strict=True
        ):
            if done:
                key = (release.workload, release.queue)
                released[key] = released.get(key, 0) + 1
        for (_, queue_name), pods in sorted(released.items()):
            self._metrics.admitted(queue_name, pods)
        self._all(self._tell, intents.messages[: self._settings.messages_per_cycle])
        self._all(self._queue_status, intents.queue_statuses)

    def _carry_out_reservations(self, intents: ReservationIntents) -> None:
        """Carry out what `Reservations` decided.

        Deletions first (a refused reservation is made again next cycle), then creations, then
        the slices whose device is known, then the messages of those that wait.
        """
        self._all(self._delete_reservation, intents.delete)
        self._all(self._create_reservation, intents.create)
        self._all(self._finish_slice, intents.finish)
        self._all(
            self._tell,
            [
                PodMessage(namespace, name, why, uid)
                for namespace, name, uid, why in intents.waiting
            ],
        )

    def _create_reservation(self, manifest: Mapping[str, Any]) -> None:
        metadata = manifest["metadata"]
        try:
            self._core.create_namespaced_pod(metadata["namespace"], cast(Any, manifest))
        except ApiException as error:
            if error.status != HTTPStatus.CONFLICT:  # made by a previous leader: fine
                self._metrics.patch_failed("gpu-reservation")
                _log.warning("GPU reservation %s not created: %s", metadata["name"], error.reason)

    def _delete_reservation(self, name: str) -> None:
        assert self._reservations is not None
        try:
            self._core.delete_namespaced_pod(name, self._reservations.namespace)
        except ApiException as error:
            if error.status != HTTPStatus.NOT_FOUND:
                self._metrics.patch_failed("gpu-reservation")

    def _finish_slice(self, finish: SliceFinish) -> None:
        body = {
            "metadata": {
                "resourceVersion": finish.resource_version,
                "annotations": dict(finish.annotations),
            },
            "spec": {"schedulingGates": [{"name": g} for g in finish.remaining_gates]},
        }
        try:
            response: Any = self._core.patch_namespaced_pod(
                finish.name,
                finish.namespace,
                body,
                _content_type=_MERGE,
                _preload_content=False,
            )
        except ApiException as error:
            if error.status not in {HTTPStatus.NOT_FOUND, HTTPStatus.CONFLICT}:
                self._metrics.patch_failed("gpu-reservation")
            return  # a conflict: the next cycle decides on the newer pod
        self._feed(response)

    def _all(self, action: Callable[[Any], _R], items: Iterable[Any]) -> list[_R]:
        return [future.result() for future in [self._pool.submit(action, item) for item in items]]

    def _feed(self, response: Any) -> None:
        """Hand an object the API server returned to the ledger."""
        obj = json.loads(response.data)
        with self._lock:
            self._changed("pods", obj)

    def _release(self, release: PodRelease) -> bool:
        body = {
            "metadata": {
                "resourceVersion": release.resource_version,
                "annotations": dict(release.annotations),
            },
            "spec": {
                "nodeSelector": {"kubernetes.io/hostname": release.hostname},
                "schedulingGates": [{"name": g} for g in release.remaining_gates],
            },
        }
        try:
            response: Any = self._core.patch_namespaced_pod(
                release.name,
                release.namespace,
                body,
                _content_type=_MERGE,
                _preload_content=False,
            )
        except ApiException as error:
            self._metrics.patch_failed("release")
            # 409: the pod changed since the cycle read it; 404: it is gone. The next cycle
            # decides again from what the cluster holds (a gang is finished from its record).
            _log.log(
                logging.INFO if error.status in {404, 409} else logging.WARNING,
                "release of %s/%s failed: %s %s",
                release.namespace,
                release.name,
                error.status,
                error.reason,
            )
            return False
        version = _resource_version(response)
        with self._lock:
            self._ledger.released(release, version)
        return True

    def _evict(self, eviction: PodEviction) -> bool:
        """Stop a pod with `stop_patch`: marked Failed, saying why; True if done.

        Not deleted: Argo reads a Failed pod's status message as the step's (and retries it
        under the step's policy), where a deleted pod is only "pod deleted"; and the kubelet
        stops a pod whose phase is terminal with the pod's own grace period, where deleting a
        Failed pod would kill it at once, before it can checkpoint.
        """
        body = stop_patch(eviction, self._clock())
        try:
            response = self._core.patch_namespaced_pod_status(
                eviction.name,
                eviction.namespace,
                body,
                _content_type=_STRATEGIC,
                _preload_content=False,
            )
        except ApiException as error:
            if error.status == 404:
                return False
            self._metrics.patch_failed("eviction")
            _log.warning(
                "stopping %s/%s failed: %s %s",
                eviction.namespace,
                eviction.name,
                error.status,
                error.reason,
            )
            return False
        self._feed(response)
        pod = {
            "apiVersion": "v1",
            "kind": "Pod",
            "name": eviction.name,
            "namespace": eviction.namespace,
            "uid": eviction.uid,
        }
        for target in (pod, eviction.owner):
            if target is not None:
                self._event(target, eviction.cause, eviction.message)
        return True

    def _gang_service(self, namespace: str) -> bool:
        """Make sure the headless Service that names gang pods exists in `namespace`.

        A pod's `<hostname>.<subdomain>` resolves only through a headless Service of that name
        selecting it, and every gang member looks rank 0 up that way (MASTER_ADDR). Read first
        (after a restart it is usually there), created if missing; True when it exists. A
        failure is logged and counted but never holds a release back: the pods start, and the
        next release in the namespace tries again.
        """
        try:
            self._core.read_namespaced_service(
                keys.GANG_SUBDOMAIN, namespace, _preload_content=False
            )
            return True
        except ApiException as error:
            if error.status != HTTPStatus.NOT_FOUND:
                return self._gang_service_failed(namespace, f"{error.status} {error.reason}")
        except (OSError, urllib3.exceptions.HTTPError) as error:
            return self._gang_service_failed(namespace, str(error))
        try:
            self._core.create_namespaced_service(
                namespace, cast(Any, _gang_service_object(namespace)), _preload_content=False
            )
        except ApiException as error:
            if error.status == HTTPStatus.CONFLICT:  # created meanwhile, by another release
                return True
            return self._gang_service_failed(namespace, f"{error.status} {error.reason}")
        except (OSError, urllib3.exceptions.HTTPError) as error:
            return self._gang_service_failed(namespace, str(error))
        _log.info("created Service %s in namespace %s", keys.GANG_SUBDOMAIN, namespace)
        return True

    def _gang_service_failed(self, namespace: str, why: str) -> bool:
        self._metrics.patch_failed("gang-service")
        _log.warning(
            "Service %s in namespace %s could not be made sure of (%s): gang pods there may "
            "not resolve each other's names",
            keys.GANG_SUBDOMAIN,
            namespace,
            why,
        )
        return False

    def _event(self, target: Mapping[str, str], reason: str, message: str) -> None:
        """Record a Warning event on `target` (shown by kubectl describe and the Argo UI)."""
        stamp = format_time(self._clock())
        body = {
            "metadata": {"generateName": f"{target['name']}.", "namespace": target["namespace"]},
            "involvedObject": dict(target),
            "reason": reason,
            "message": message,
            "type": "Warning",
            "source": {"component": "aistack-scheduler"},
            "firstTimestamp": stamp,
            "lastTimestamp": stamp,
            "count": 1,
        }
        try:
            # The client accepts plain JSON bodies; its stubs name only the model class.
            self._core.create_namespaced_event(
                target["namespace"], cast(Any, body), _preload_content=False
            )
        except ApiException as error:
            self._metrics.patch_failed("event")
            _log.info(
                "event on %s %s not recorded: %s", target["kind"], target["name"], error.reason
            )

    def _tell(self, message: PodMessage) -> None:
        condition = {
            "type": "PodScheduled",
            "status": "False",
            "reason": "Unschedulable",
            "message": message.message,
            "lastTransitionTime": format_time(self._clock()),
        }
        try:
            response: Any = self._core.patch_namespaced_pod_status(
                message.name,
                message.namespace,
                {"status": {"conditions": [condition]}},
                _content_type=_STRATEGIC,
                _preload_content=False,
            )
        except ApiException as error:
            if error.status != 404:
                self._metrics.patch_failed("message")
            return
        version = _resource_version(response)
        with self._lock:
            self._ledger.message_written(message, version)

    def _queue_status(self, update: QueueStatusUpdate) -> None:
        try:
            self._custom.patch_cluster_custom_object_status(
                keys.GROUP,
                keys.QUEUE_VERSION,
                keys.QUEUE_PLURAL,
                update.name,
                {"status": dict(update.status)},
                _content_type=_MERGE,
                _preload_content=False,
            )
        except ApiException as error:
            if error.status != 404:
                self._metrics.patch_failed("queue-status")

    # -- views for the webhooks -------------------------------------------------------------------

    def _queues(self) -> Any:
        with self._lock:
            return self._ledger.queues()

    def _allowed_namespaces(self, queue: str) -> tuple[str, ...] | None:
        with self._lock:
            return self._ledger.allowed_namespaces(queue)

    def _read_queue(self, name: str) -> Queue | None:
        """The Queue `name` as the API server has it now; None if there is none (or it is bad).

        Raises `QueueUnreadableError` when the API server does not answer.
        """
        try:
            obj = self._custom.get_cluster_custom_object(
                keys.GROUP, keys.QUEUE_VERSION, keys.QUEUE_PLURAL, name, _request_timeout=5
            )
        except ApiException as error:
            if error.status == HTTPStatus.NOT_FOUND:
                return None
            raise QueueUnreadableError(f"HTTP {error.status} {error.reason}") from error
        except (OSError, urllib3.exceptions.HTTPError) as error:
            raise QueueUnreadableError(str(error)) from error
        try:
            queue = queue_from_k8s(cast(dict[str, Any], obj))
        except QueueError:
            return None  # the queue webhook and the CRD refuse such queues; as if absent
        with self._lock:  # its namespaces too, before its watch event brings them
            self._ledger.queue_changed(cast(dict[str, Any], obj))
        return queue

    def _workloads_in(self, queue_name: str) -> int:
        with self._lock:
            return self._ledger.workloads_in(queue_name)

    def _gpu_nodes(self) -> tuple[Node, ...]:
        """The GPU nodes the last cycle decided on; none until every node has been listed.

        The webhook refuses a pod no node could ever hold; on a partial list it would refuse
        pods that fit a node not listed yet. A cycle runs only on a complete view, and before
        the first one the snapshot is empty, so this never reports a partial list.
        """
        if not self.listed():
            return ()
        return self._status.snapshot.nodes

    def _read_gpu_nodes(self) -> list[Node]:
        """The GPU nodes as the API server has them now (the webhook confirms a refusal on it).

        Nodes the ledger would skip (no GPUs, or GPUs it cannot use) are skipped here too.
        Empty when the view is incomplete or the API server does not answer: a refusal is
        never made on a list that may lack nodes.
        """
        if not self.listed():
            return []
        try:
            response: Any = self._core.list_node(_request_timeout=5, _preload_content=False)
        except (ApiException, OSError, urllib3.exceptions.HTTPError):
            _log.warning("nodes could not be read to confirm a webhook refusal", exc_info=True)
            return []
        found = []
        for obj in json.loads(response.data).get("items") or ():
            try:
                node = node_from_k8s(obj, pool_label=self._settings.pool_label)
            except NodeError:
                continue
            if node is not None:
                found.append(node)
        return found

    def _default_queues(self) -> dict[str, tuple[str, ...]]:
        """Every Queue that names namespaces in spec.defaultFor, as the API server has it now.

        Read, not cached: the ledger keeps what the core needs, which has no namespaces, and
        a queue webhook checking that a namespace gets one default must see a queue created a
        moment ago. Asked only for a GPU pod without a queue label and for changes of queues
        with a parent or defaults, both rare. Queues the CRD or the webhook would refuse are
        skipped. Raises `QueueUnreadableError` when the API server does not answer.
        """
        try:
            listed = self._custom.list_cluster_custom_object(
                keys.GROUP, keys.QUEUE_VERSION, keys.QUEUE_PLURAL, _request_timeout=5
            )
        except ApiException as error:
            raise QueueUnreadableError(f"HTTP {error.status} {error.reason}") from error
        except (OSError, urllib3.exceptions.HTTPError) as error:
            raise QueueUnreadableError(str(error)) from error
        found: dict[str, tuple[str, ...]] = {}
        for obj in cast(dict[str, Any], listed).get("items") or ():
            try:
                namespaces = default_namespaces(obj)
            except QueueError:
                continue
            if namespaces:
                found[obj["metadata"]["name"]] = namespaces
        return found


def signing_key(path: Path | None) -> bytes | None:
    """The allocation signing key in `path`, None without one.

    Raises:
        SettingsError: The file cannot be read, or holds fewer than 32 bytes.
    """
    if path is None:
        return None
    try:
        key = path.read_bytes().strip()
    except OSError as error:
        raise SettingsError(f"cannot read allocation_key_file {path}: {error.strerror}") from error
    if len(key) < 32:
        raise SettingsError(
            f"allocation_key_file {path} holds {len(key)} bytes; give at least 32 random bytes"
        )
    return key


def own_reservation(pod: Mapping[str, Any], namespace: str) -> bool:
    """Whether `pod` is one of the service's GPU reservation pods: labelled so, in its namespace.

    Their GPUs are the slices' booked GPUs, already counted; a pod labelled so anywhere else is
    an ordinary pod whose GPUs count.
    """
    metadata = pod.get("metadata") or {}
    return metadata.get("namespace") == namespace and keys.RESERVATION_LABEL in (
        metadata.get("labels") or {}
    )


def _gpu_holding(pod: dict[str, Any]) -> dict[str, Any]:
    """What the ledger needs of an unmanaged pod, and no more.

    Its identity, node, phase and its containers' GPU amounts: every pod bound anywhere is
    watched, so little of each is kept.
    """
    metadata = pod.get("metadata") or {}
    spec = pod.get("spec") or {}

    def gpus_only(container: dict[str, Any]) -> dict[str, Any]:
        resources = container.get("resources") or {}
        kept = {
            part: {keys.GPU_RESOURCE: amounts[keys.GPU_RESOURCE]}
            for part in ("limits", "requests")
            if keys.GPU_RESOURCE in (amounts := resources.get(part) or {})
        }
        return {
            "name": container.get("name"),
            "resources": kept,
            **({"restartPolicy": p} if (p := container.get("restartPolicy")) else {}),
        }

    labels = metadata.get("labels") or {}
    kept_labels = {k: labels[k] for k in (keys.RESERVATION_LABEL,) if k in labels}
    return {
        "metadata": {
            **{k: metadata[k] for k in ("uid", "name", "namespace") if k in metadata},
            "labels": kept_labels,
        },
        "spec": {
            "nodeName": spec.get("nodeName"),
            "containers": [gpus_only(c) for c in spec.get("containers") or ()],
            "initContainers": [gpus_only(c) for c in spec.get("initContainers") or ()],
        },
        "status": {"phase": (pod.get("status") or {}).get("phase")},
    }


def _gang_service_object(namespace: str) -> dict[str, Any]:
    """The headless Service `pod_contract.GANG_SUBDOMAIN` of `namespace`.

    It selects the pods labelled `pod_contract.GANG_DNS_LABEL`, ready or not (a gang member
    must find rank 0 while it starts), and has no ports: headless, it only names pods.
    """
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": keys.GANG_SUBDOMAIN,
            "namespace": namespace,
            "labels": {
                "app.kubernetes.io/name": "aistack",
                "app.kubernetes.io/component": "gang-dns",
                "app.kubernetes.io/part-of": "aistack",
                "app.kubernetes.io/managed-by": "aistack-scheduler",
            },
        },
        "spec": {
            "clusterIP": "None",
            "selector": {keys.GANG_DNS_LABEL: "true"},
            "publishNotReadyAddresses": True,
        },
    }


_VERSION = re.compile(rb'"resourceVersion":"(\d+)"')


def _resource_version(response: Any) -> str:
    """The resourceVersion of the object a patch returned, without parsing all of it.

    It is the first one in the body (metadata comes before managedFields, spec and status);
    the ledger needs it to tell the patched pod from older copies still on their way in
    through the watch.
    """
    found = _VERSION.search(response.data, 0, 4096)
    return found.group(1).decode() if found else ""


def _key(obj: Any) -> str:
    metadata = obj["metadata"]
    return metadata.get("uid") or f"{metadata.get('namespace', '')}/{metadata['name']}"
