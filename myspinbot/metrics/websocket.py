"""WebSocket clients and messages, counted by an ASGI wrapper around the WebSocket app."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from myspinbot.metrics.recording import WEBSOCKET_CLIENTS, WEBSOCKET_MESSAGES

# --- WebSockets: an ASGI wrapper counts clients and messages -----------------------------

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


def websocket_protocol(path: str) -> str:
    """The label of a WebSocket route: ``jobs`` (/ws/jobs/), ``legacy`` (/ws) or ``other``."""
    if path.startswith("/ws/jobs"):
        return "jobs"
    return "legacy" if path.rstrip("/") == "/ws" else "other"


class WebSocketMetrics:
    """Wraps the WebSocket ASGI app: a client counts from its accept until it closes or
    disconnects; every ``websocket.send`` counts one message."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "websocket":
            await self.app(scope, receive, send)
            return
        protocol = websocket_protocol(str(scope.get("path", "")))
        clients, messages = WEBSOCKET_CLIENTS.labels(protocol), WEBSOCKET_MESSAGES.labels(protocol)
        open_ = False

        async def counting_send(message: Message) -> None:
            nonlocal open_
            kind = message.get("type")
            if kind == "websocket.send":
                messages.inc()
            elif kind == "websocket.accept" and not open_:
                open_ = True
                clients.inc()
            elif kind == "websocket.close" and open_:
                open_ = False
                clients.dec()
            await send(message)

        try:
            await self.app(scope, receive, counting_send)
        finally:
            if open_:
                clients.dec()
