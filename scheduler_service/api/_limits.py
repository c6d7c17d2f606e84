"""A cap on request bodies, for every route of the app: the one that accepts none included.

An AdmissionReview carries the object and, on updates, its old version: a pod is at most about
1.5 MiB in etcd, so a review is under 4 MiB. Nothing else the app serves takes a body larger
than a form. A body over its route's cap is refused with 413 before it is read into memory:
from its Content-Length when it has one, else while it streams in. So a few large requests can
no longer push the service past its memory limit.
"""

from __future__ import annotations

import json
from typing import Final

from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["BODY_LIMITS", "BodyLimit"]

BODY_LIMITS: Final = (("/webhooks/", 4 * 1024 * 1024), ("", 64 * 1024))
"""(path prefix, most bytes) in order: the first prefix that matches a request's path wins."""


class _TooLarge(Exception):  # noqa: N818 - raised inside the stream only
    pass


class BodyLimit:
    """ASGI middleware that refuses bodies over `BODY_LIMITS` with 413 and a JSON reason."""

    def __init__(self, app: ASGIApp) -> None:
        """Wrap `app`."""
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Pass the request on, or refuse it as soon as its body is known to be too large."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope.get("path", "")
        most = next(limit for prefix, limit in BODY_LIMITS if path.startswith(prefix))
        declared = dict(scope.get("headers") or ()).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > most):
            await _refuse(send, path, most)
            return
        seen = 0
        started = False

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > most:
                    raise _TooLarge
            return message

        async def tracked(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted, tracked)
        except _TooLarge:
            if not started:
                await _refuse(send, path, most)


async def _refuse(send: Send, path: str, most: int) -> None:
    body = json.dumps(
        {
            "detail": f"the request body is larger than {most} bytes, the most {path} takes; "
            "send a smaller one (an AdmissionReview of one object is far below it)"
        }
    ).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
