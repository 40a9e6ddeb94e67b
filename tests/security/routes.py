"""Every route the app serves, read from the real URL configuration, the API's routers
and the WebSocket routing, so a new route shows up in the security tests by itself."""

from __future__ import annotations

from typing import Any

from django.urls import URLPattern, URLResolver, get_resolver

from myspinbot.api import api
from myspinbot.routing import websocket_urlpatterns


def api_operations() -> list[tuple[str, str]]:
    """``(METHOD, "/api/jobs/{job_id}")`` for every operation of the REST API."""
    operations = []
    for prefix, router in api._routers:
        for path, path_view in router.path_operations.items():
            for operation in path_view.operations:
                for method in operation.methods:
                    full = "/api" + (prefix.rstrip("/") + "/" + path.lstrip("/")).rstrip("/")
                    operations.append((method, full))
    return sorted(operations)


def _patterns(resolver: Any, prefix: str) -> list[str]:
    found = []
    for item in resolver.url_patterns:
        if isinstance(item, URLResolver):
            found.extend(_patterns(item, prefix + str(item.pattern)))
        elif isinstance(item, URLPattern):
            found.append(prefix + str(item.pattern))
    return found


def http_routes() -> list[str]:
    """Every HTTP route outside the API's operations: ``/healthz``, the API's own
    documentation pages, ``/storage/<str:token>``, and ``/admin/`` as one entry (the
    admin site's pages are Django's; the matrix checks a sample of them)."""
    routes = set()
    for pattern in _patterns(get_resolver(), "/"):
        if pattern.startswith("/admin/"):
            routes.add("/admin/")
        elif pattern.startswith("/api/"):
            if "<" not in pattern and pattern.rstrip("/") not in {p for _, p in api_operations()}:
                routes.add(pattern)
        else:
            routes.add(pattern)
    return sorted(routes)


def websocket_routes() -> list[str]:
    return sorted("/" + str(item.pattern).lstrip("^").rstrip("$") for item in websocket_urlpatterns)
