"""ASGI entry point: HTTP through Django, WebSockets through Channels."""

from __future__ import annotations

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "myspinbot.settings.local")
# Django runs each HTTP request on a fresh thread under ASGI; a persistent connection
# would stay open after its thread is gone, one per request, until PostgreSQL refuses
# new clients. Each request's connection is closed at its end instead, which hands it
# back to a pool of the process (PostgreSQL only), so the next request needs no new one.
os.environ["DATABASE_CONN_MAX_AGE"] = "0"
os.environ.setdefault("DATABASE_POOL_MAX_SIZE", "10")
django_asgi_app = get_asgi_application()

from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402

from apps.jobs.ws_auth import (  # noqa: E402 - needs Django set up
    BrowserOriginValidator,
    JobsAuthMiddlewareStack,
)
from myspinbot import log_filters  # noqa: E402
from myspinbot.metrics.websocket import WebSocketMetrics  # noqa: E402
from myspinbot.request_limits import RequestSizeLimit  # noqa: E402
from myspinbot.routing import websocket_urlpatterns  # noqa: E402

# Tokens in WebSocket query strings and signed links must not reach the server's logs.
log_filters.install()

# Request bodies are capped before Django reads them (myspinbot/request_limits.py).
application = RequestSizeLimit(
    ProtocolTypeRouter(
        {
            "http": django_asgi_app,
            "websocket": WebSocketMetrics(
                BrowserOriginValidator(JobsAuthMiddlewareStack(URLRouter(websocket_urlpatterns)))
            ),
        }
    )
)
