"""List-and-watch of one resource, as raw JSON, into the driver's event queue.

The kubernetes package has an informer, but it turns every object into generated model classes;
with ten thousand pods that costs more than the scheduling. This reflector keeps the objects as
the API server sends them (dicts) and does only what the driver needs: an initial list (delivered
as one `Relisted` event so that deletions missed while disconnected show), then a watch from its
resourceVersion, resumed after a dropped connection and re-listed after "410 Gone".
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from kubernetes.client.exceptions import ApiException
from kubernetes.watch.watch import iter_resp_lines

__all__ = ["Reflector", "Relisted", "Watched"]

_log = logging.getLogger(__name__)

JsonObject = Mapping[str, Any]
ListCall = Callable[..., Any]
"""A generated list method (e.g. CoreV1Api.list_pod_for_all_namespaces), fixed args bound."""


@dataclass(frozen=True, slots=True)
class Watched:
    """One watch event: ADDED, MODIFIED or DELETED, for an object of `resource`."""

    resource: str
    type: str
    object: JsonObject


@dataclass(frozen=True, slots=True)
class Relisted:
    """A full list of `resource`: the receiver replaces what it knows of it."""

    resource: str
    objects: tuple[JsonObject, ...]


class _GoneError(Exception):
    """The watch's resourceVersion is too old: list again."""


class Reflector:
    """Keeps `sink` fed with the events of one resource until `stop` is called."""

    def __init__(
        self,
        resource: str,
        list_call: ListCall,
        sink: queue.Queue[Watched | Relisted],
        *,
        label_selector: str | None = None,
        field_selector: str | None = None,
        transform: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
        watch_timeout_seconds: int = 300,
    ) -> None:
        """Watch `resource` through `list_call`, narrowed by the selectors.

        `transform` keeps only what the receiver needs of each object (the watch of every
        bound pod, for one, keeps a few fields of each, not its whole JSON).
        """
        self.resource = resource
        self._fields = field_selector
        self._transform = transform
        self._list = list_call
        self._sink = sink
        self._selector = label_selector
        self._timeout = watch_timeout_seconds
        self._stop = threading.Event()
        self._response: Any = None
        self.failing_since: float | None = None
        """When listing or watching began to fail (monotonic seconds); None while it works."""
        self._thread = threading.Thread(target=self._run, name=f"watch-{resource}", daemon=True)

    def start(self) -> None:
        """Start listing and watching in a daemon thread."""
        self._thread.start()

    def stop(self) -> None:
        """Stop watching (the current watch connection is closed)."""
        self._stop.set()
        response = self._response
        if response is not None:
            response.close()

    def _run(self) -> None:
        version: str | None = None
        backoff = 0.5
        while not self._stop.is_set():
            try:
                if version is None:
                    version = self._relist()
                version = self._watch(version)
                backoff = 0.5
            except _GoneError:
                version = None
            except Exception as error:  # the API server went away, a proxy cut us off, ...
                if self._stop.is_set():
                    return
                if self.failing_since is None:
                    self.failing_since = time.monotonic()
                _log.warning(
                    "watch of %s failed (%s); retrying in %.1fs", self.resource, error, backoff
                )
                self._stop.wait(backoff)
                backoff = min(backoff * 2, 10.0)

    def _kwargs(self) -> dict[str, Any]:
        kwargs = {"label_selector": self._selector} if self._selector else {}
        if self._fields:
            kwargs["field_selector"] = self._fields
        return kwargs

    def _kept(self, obj: dict[str, Any]) -> dict[str, Any]:
        return obj if self._transform is None else self._transform(obj)

    def _relist(self) -> str:
        response = self._list(_preload_content=False, **self._kwargs())
        self.failing_since = None
        body = json.loads(response.data)
        items = tuple(self._kept(item) for item in body.get("items") or ())
        for item in items:
            item.get("metadata", {}).pop("managedFields", None)
        self._sink.put(Relisted(self.resource, items))
        version: str = body["metadata"]["resourceVersion"]
        return version

    def _watch(self, version: str) -> str:
        try:
            response = self._list(
                watch=True,
                resource_version=version,
                allow_watch_bookmarks=True,
                timeout_seconds=self._timeout,
                _preload_content=False,
                **self._kwargs(),
            )
        except ApiException as error:
            if error.status == 410:
                raise _GoneError from error
            raise
        self._response = response
        self.failing_since = None
        try:
            for line in iter_resp_lines(response):  # type: ignore[no-untyped-call]
                if self._stop.is_set():
                    break
                if not line:
                    continue
                event = json.loads(line)
                kind = event.get("type")
                obj = event.get("object") or {}
                if kind == "ERROR":
                    if obj.get("code") == 410:
                        raise _GoneError
                    raise RuntimeError(obj.get("message", "watch error"))
                metadata = obj.get("metadata", {})
                version = metadata.get("resourceVersion", version)
                # Field ownership is half of a pod's JSON and nothing downstream reads it.
                metadata.pop("managedFields", None)
                if kind != "BOOKMARK":
                    self._sink.put(Watched(self.resource, kind, self._kept(obj)))
        finally:
            self._response = None
            response.release_conn()
        return version
