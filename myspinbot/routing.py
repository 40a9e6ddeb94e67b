"""WebSocket routes. The live job stream is added by the jobs app."""

from __future__ import annotations

from typing import Any

websocket_urlpatterns: list[Any] = []
