"""WebSocket routes: the job event stream and the original system's protocol."""

from __future__ import annotations

from typing import Any

from django.urls import path, re_path

from apps.jobs.consumers import JobEventsConsumer, LegacyJobConsumer

websocket_urlpatterns: list[Any] = [
    path("ws/jobs/", JobEventsConsumer.as_asgi()),
    re_path(r"^ws/?$", LegacyJobConsumer.as_asgi()),
]
