"""Errors under ``/api/`` in the API's one shape, including the ones Django answers
before a view runs (no such route, a method the route does not take)."""

from __future__ import annotations

from collections.abc import Callable

from django.http import HttpRequest, HttpResponse
from django.http.response import HttpResponseBase

_MESSAGES = {
    400: "the request is malformed",
    404: "no such route",
    405: "this route does not take that method",
    413: "request body is too large",
    416: "the range asked for is not in the object (see Content-Range for its size)",
    500: "internal error; it has been logged",
}


class ApiErrorShapeMiddleware:
    """Rewrites a non-JSON error response under ``/api/`` as ``{"error": {...}}``,
    keeping its status and headers such as ``Allow`` (and a 416's ``Content-Range``)."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponseBase]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponseBase:
        response = self.get_response(request)
        if (
            not request.path.startswith("/api/")
            or response.status_code < 400
            or response.get("Content-Type", "").startswith("application/json")
        ):
            return response
        from myspinbot.api import _HTTP_CODES, error_response

        status = response.status_code
        message = _MESSAGES.get(status, "the request was refused")
        if status == 405:
            message = f"{message}; allowed: {response.get('Allow', '')}"
        shaped: HttpResponse = error_response(
            request,
            status,
            _HTTP_CODES.get(status, "internal_error" if status >= 500 else "error"),
            message,
        )
        for header in ("Allow", "Content-Range", "Accept-Ranges"):
            if header in response:
                shaped[header] = response[header]
        return shaped


# Pages the project writes itself: only its own scripts run there. The admin and the API
# docs page (Swagger UI) are Django's and ninja's, with inline scripts of their own.
CSP_EXEMPT_PREFIXES = ("/admin/", "/api/docs")


def content_security_policy() -> str:
    """The policy of the web UI's pages: scripts, styles, fonts and frames from this site
    only; pictures, audio and video also from the artifact store (presigned links);
    WebSockets to this site."""
    from django.conf import settings

    media = "'self' data: blob:"
    endpoint = getattr(settings, "S3_PUBLIC_ENDPOINT_URL", None) or getattr(
        settings, "S3_ENDPOINT_URL", None
    )
    if endpoint:
        from urllib.parse import urlsplit

        parts = urlsplit(str(endpoint))
        media += f" {parts.scheme}://{parts.netloc}"
    return "; ".join(
        [
            "default-src 'self'",
            "script-src 'self'",
            # htmx and the pages set element styles; no inline <style> of a user's text
            "style-src 'self' 'unsafe-inline'",
            f"img-src {media}",
            f"media-src {media}",
            "connect-src 'self' ws: wss:",
            "object-src 'none'",
            "base-uri 'self'",
            "form-action 'self'",
            "frame-ancestors 'none'",
        ]
    )


class ContentSecurityPolicyMiddleware:
    """Adds ``Content-Security-Policy`` to the HTML pages of the web UI, so that text a
    user wrote (a job's name, a file name, a node id) can never run as a script even if a
    page forgot to escape it."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponseBase]) -> None:
        self.get_response = get_response
        self.policy = content_security_policy()

    def __call__(self, request: HttpRequest) -> HttpResponseBase:
        response = self.get_response(request)
        if response.get("Content-Type", "").startswith("text/html") and not request.path.startswith(
            CSP_EXEMPT_PREFIXES
        ):
            response.setdefault("Content-Security-Policy", self.policy)
        return response
