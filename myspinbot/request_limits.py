"""A cap on request bodies, enforced by the ASGI app before Django reads them.

Django's ``DATA_UPLOAD_MAX_MEMORY_SIZE`` only looks at a body it has already spooled to
memory or disk; this counts bytes as they arrive. A request whose ``Content-Length`` is
over the route's limit is answered 413 without a single body chunk being read (so a
client that sent ``Expect: 100-continue`` never sends it); a body without one (chunked)
is counted chunk by chunk and refused as soon as it passes the limit: the client gets
the 413 and the application sees the client disconnect, so it stops reading.

Limits are per route: :data:`UPLOAD_PATHS` take ``MYSPINBOT_MAX_UPLOAD_BYTES`` (an image
and an audio file), every other route ``MYSPINBOT_MAX_JSON_BYTES``. The answer is the
API's one error shape, code ``too_large``, with the limit in ``details.max_bytes``.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from django.conf import settings

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

# The routes that take multipart file uploads (apps/jobs/api.py).
UPLOAD_PATHS = frozenset({"/api/uploads", "/api/infinitetalk"})


def limit_for(path: str) -> int:
    """The most body bytes a request to ``path`` may carry."""
    if path.rstrip("/") in UPLOAD_PATHS:
        return int(settings.MYSPINBOT_MAX_UPLOAD_BYTES)
    return int(settings.MYSPINBOT_MAX_JSON_BYTES)


class RequestSizeLimit:
    """ASGI middleware: refuse HTTP request bodies over :func:`limit_for` (see the module
    docstring); WebSocket and lifespan scopes pass through untouched."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = limit_for(scope["path"])
        lengths = [value for name, value in scope["headers"] if name.lower() == b"content-length"]
        if lengths:
            try:
                declared = max(int(value) for value in lengths)
            except ValueError:
                await _error(send, 400, "bad_request", "Content-Length is not a number", {})
                return
            if declared > limit:
                await _refuse(send, limit)
                return

        received = 0
        started = False
        refused = False

        async def counted_receive() -> Message:
            nonlocal received, refused
            if refused:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    refused = True
                    if not started:
                        await _refuse(send, limit)
                    return {"type": "http.disconnect"}
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if refused:
                return  # the client has its 413; what the app says after it is dropped
            started = True
            await send(message)

        await self.app(scope, counted_receive, guarded_send)


async def _refuse(send: Send, limit: int) -> None:
    await _error(
        send,
        413,
        "too_large",
        f"the request body is larger than {limit} bytes",
        {"max_bytes": limit},
    )


async def _error(send: Send, status: int, code: str, message: str, details: Any) -> None:
    body = json.dumps({"error": {"code": code, "message": message, "details": details}}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json; charset=utf-8"),
                (b"content-length", str(len(body)).encode()),
                # the rest of the body is never read, so the connection cannot be reused
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
