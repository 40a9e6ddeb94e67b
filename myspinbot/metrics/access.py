"""Who may read metrics, and the web process's ``GET /metrics``."""

from __future__ import annotations

import hmac
import ipaddress
import os

from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    generate_latest,
    multiprocess,
)

# --- Who may read metrics -----------------------------------------------------------------


def allowed(remote_addr: str | None, authorization: str | None) -> bool:
    """True for a client in ``METRICS_ALLOWED_NETWORKS`` or one presenting the token."""
    token = settings.METRICS_TOKEN
    if token and authorization:
        scheme, _, presented = authorization.partition(" ")
        # Bytes: compare_digest refuses a str with characters outside ASCII.
        presented_bytes = presented.strip().encode("utf-8", "surrogateescape")
        if scheme.lower() == "bearer" and hmac.compare_digest(
            presented_bytes, token.encode("utf-8")
        ):
            return True
    try:
        address = ipaddress.ip_address((remote_addr or "").strip())
    except ValueError:
        return False
    return any(
        address in ipaddress.ip_network(network, strict=False)
        for network in settings.METRICS_ALLOWED_NETWORKS
    )


FORBIDDEN = {
    "error": {
        "code": "forbidden",
        "message": "metrics are served to METRICS_ALLOWED_NETWORKS or with the METRICS_TOKEN",
        "details": {},
    }
}


def process_registry() -> CollectorRegistry:
    """What this process exports: all processes' files in multiprocess mode, else its own."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return registry
    return REGISTRY


def metrics_view(request: HttpRequest) -> HttpResponse:
    """``GET /metrics`` of the web process, in Prometheus text format."""
    if not allowed(request.META.get("REMOTE_ADDR"), request.headers.get("Authorization")):
        return JsonResponse(FORBIDDEN, status=403)
    return HttpResponse(generate_latest(process_registry()), content_type=CONTENT_TYPE_LATEST)
