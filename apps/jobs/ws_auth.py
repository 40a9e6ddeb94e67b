"""Who opened a WebSocket: an API token, else the Django session.

A token is read from the handshake's ``Authorization: Bearer <token>`` header or its
``?token=`` query parameter (browsers cannot set headers on a WebSocket). A token that
is present but unknown, revoked or of an inactive user authenticates no one, even if a
session cookie came along: the client asked to be that token's user.

Channels' ``AllowedHostsOriginValidator`` also refuses handshakes without an ``Origin``
header, i.e. every non-browser client; :func:`BrowserOriginValidator` checks the Origin
only when there is one (see its docstring).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs

from channels.auth import AuthMiddlewareStack
from channels.db import database_sync_to_async
from channels.middleware import BaseMiddleware
from channels.security.websocket import OriginValidator
from django.conf import settings
from django.contrib.auth.models import AnonymousUser

from apps.jobs.auth import user_for_token


def token_from_scope(scope: dict[str, Any]) -> str | None:
    """The bearer token of a handshake (header first, then query), or None."""
    for name, value in scope.get("headers", []):
        if name == b"authorization":
            scheme, _, token = value.decode("latin-1").partition(" ")
            if scheme.lower() == "bearer":
                return token.strip()
    query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
    tokens = query.get("token")
    return tokens[0] if tokens else None


class TokenAuthMiddleware(BaseMiddleware):
    """Sets ``scope["user"]`` from a bearer token when the handshake carries one."""

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> Any:
        token = token_from_scope(scope)
        if token is not None:
            user = await database_sync_to_async(user_for_token)(token)
            scope = {**scope, "user": user or AnonymousUser()}
        return await super().__call__(scope, receive, send)


def JobsAuthMiddlewareStack(inner: Any) -> Any:
    """Session and cookie auth (``AuthMiddlewareStack``), then API tokens."""
    return AuthMiddlewareStack(TokenAuthMiddleware(inner))


class _OriginIfPresentValidator(OriginValidator):
    def valid_origin(self, parsed_origin: Any) -> bool:
        return parsed_origin is None or bool(super().valid_origin(parsed_origin))


def BrowserOriginValidator(application: Any) -> Any:
    """Refuse a handshake whose ``Origin`` is not one of ``ALLOWED_HOSTS``.

    Browsers always send ``Origin``, and a page on another site must not open a socket
    that rides on the user's session cookie. A client that sends no ``Origin`` is not a
    browser (API clients, scripts) and holds its own credentials, so it passes.
    """
    allowed = list(settings.ALLOWED_HOSTS)
    if settings.DEBUG and not allowed:
        allowed = ["localhost", "127.0.0.1", "[::1]"]
    return _OriginIfPresentValidator(application, allowed)
