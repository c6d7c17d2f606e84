"""The reflector resumes a dropped watch where it left off and lists again after 410 Gone."""

from __future__ import annotations

import json
import queue
import threading
from collections.abc import Iterator
from typing import Any

from kubernetes.client.exceptions import ApiException

from scheduler_service.kube._reflector import Reflector, Relisted, Watched


class FakeResponse:
    """The parts of urllib3's response the reflector uses."""

    def __init__(self, body: bytes = b"", lines: list[dict[str, Any]] | None = None) -> None:
        self.data = body
        self._lines = lines or []
        self.blocked = threading.Event()

    def stream(self, amt: int | None = None, decode_content: bool = False) -> Iterator[bytes]:
        for line in self._lines:
            yield json.dumps(line).encode() + b"\n"

    def close(self) -> None:
        """Nothing to close."""

    def release_conn(self) -> None:
        """Nothing to release."""


def pod(name: str, version: str) -> dict[str, Any]:
    return {"metadata": {"name": name, "uid": name, "resourceVersion": version}}


class FakeApi:
    """Answers list and watch calls from a script; records the resourceVersions asked for."""

    def __init__(self) -> None:
        self.watched_from: list[str] = []
        self.done = threading.Event()
        self._lists = [
            {"metadata": {"resourceVersion": "10"}, "items": [pod("a", "10")]},
            {"metadata": {"resourceVersion": "20"}, "items": [pod("b", "20")]},
        ]
        self._watches: list[Any] = [
            [{"type": "MODIFIED", "object": pod("a", "11")}],  # then the connection drops
            ApiException(status=410, reason="Gone"),
            [
                {
                    "type": "ADDED",
                    "object": pod("c", "21")
                    | {"metadata": {**pod("c", "21")["metadata"], "managedFields": [{}]}},
                }
            ],
        ]

    def __call__(self, **kwargs: Any) -> FakeResponse:
        if not kwargs.get("watch"):
            return FakeResponse(json.dumps(self._lists.pop(0)).encode())
        self.watched_from.append(kwargs["resource_version"])
        if not self._watches:
            self.done.set()
            return FakeResponse()
        step = self._watches.pop(0)
        if isinstance(step, Exception):
            raise step
        return FakeResponse(lines=step)


def test_a_dropped_watch_resumes_and_410_gone_lists_again() -> None:
    api = FakeApi()
    sink: queue.Queue[Watched | Relisted] = queue.Queue()
    reflector = Reflector("pods", api, sink)
    reflector.start()
    assert api.done.wait(5)
    reflector.stop()
    events = []
    while not sink.empty():
        events.append(sink.get())
    assert api.watched_from[:3] == ["10", "11", "20"]
    assert events[0] == Relisted("pods", (pod("a", "10"),))
    assert events[1] == Watched("pods", "MODIFIED", pod("a", "11"))
    assert events[2] == Relisted("pods", (pod("b", "20"),))
    assert events[3] == Watched("pods", "ADDED", pod("c", "21"))  # managedFields dropped
