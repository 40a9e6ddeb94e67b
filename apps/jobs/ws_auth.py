"""Who opened a WebSocket: an API token, else the Django session.

A token is read from the handshake's ``Authorization: Bearer <token>`` header or its
``?token=`` query parameter (browsers cannot set headers on a WebSocket). A token that
is present but unknown, revoked or of an inactive user authenticates no one, even if a
session cookie came along: the client asked to be that token's user.

An open socket keeps the credential it opened with (:class:`Credential`) and checks it
again on every subscribe, whenever :func:`credentials_changed` announces a change for
its user (a token revoked, the user deactivated, a logout), and every
``MYSPINBOT_WS_AUTH_RECHECK`` seconds in case a change was made without the announcement
(an SQL update): a socket whose credential no longer holds is closed with 4401. A user
holds at most ``MYSPINBOT_WS_MAX_PER_USER`` sockets at once, counted across every web
process in Redis (:class:`SocketSlots`); one more is closed with 4429.

Channels' ``AllowedHostsOriginValidator`` also refuses handshakes without an ``Origin``
header, i.e. every non-browser client; :func:`BrowserOriginValidator` checks the Origin
only when there is one (see its docstring).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from importlib import import_module
from typing import Any
from urllib.parse import parse_qs

import redis.asyncio as aioredis
from asgiref.sync import async_to_sync
from channels.auth import AuthMiddlewareStack
from channels.db import database_sync_to_async
from channels.layers import get_channel_layer
from channels.middleware import BaseMiddleware
from channels.security.websocket import OriginValidator
from django.conf import settings
from django.contrib.auth import SESSION_KEY
from django.contrib.auth.models import AnonymousUser, User

from apps.jobs.auth import user_for_token
from apps.jobs.models import ApiToken


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
            scope = {**scope, "user": user or AnonymousUser(), "token_hash": ApiToken.hash(token)}
        return await super().__call__(scope, receive, send)


# --- The credential an open socket holds ------------------------------------------------


def user_group(user_id: int) -> str:
    """The channel-layer group of every socket of one user."""
    return f"user.{user_id}"


@dataclass(frozen=True)
class Credential:
    """What a socket authenticated with: a token (its hash) or a session (its key)."""

    user_id: int
    token_hash: str | None
    session_key: str | None

    @classmethod
    def of(cls, scope: dict[str, Any]) -> Credential:
        session = scope.get("session")
        key = getattr(session, "session_key", None) if scope.get("token_hash") is None else None
        return cls(scope["user"].pk, scope.get("token_hash"), key)

    def holds(self) -> bool:
        """Whether the credential still authenticates its user (sync: database)."""
        if self.token_hash is not None:
            return ApiToken.objects.filter(
                token_hash=self.token_hash,
                revoked_at=None,
                user_id=self.user_id,
                user__is_active=True,
            ).exists()
        if self.session_key is None:
            return False
        store = import_module(settings.SESSION_ENGINE).SessionStore(self.session_key)
        if str(store.get(SESSION_KEY)) != str(self.user_id):
            return False  # logged out, expired or flushed
        return User.objects.filter(pk=self.user_id, is_active=True).exists()


def credentials_changed(*user_ids: int) -> None:
    """Tell every open socket of these users to check its credential now (sync code:
    the admin's revoke action, the signals in ``apps.jobs.apps``)."""
    layer = get_channel_layer()
    if layer is None:
        return
    for user_id in user_ids:
        async_to_sync(layer.group_send)(user_group(user_id), {"type": "auth.changed"})


class SocketSlots:
    """Open sockets per user across processes: a Redis sorted set per user of socket
    names scored by when they lapse (a socket renews its slot while it is open, so a
    process that died without closing its sockets frees their slots in time)."""

    def __init__(self) -> None:
        self.client = aioredis.Redis.from_url(
            str(settings.REDIS_URL), socket_timeout=settings.REDIS_TIMEOUT_SECONDS
        )

    @staticmethod
    def key(user_id: int) -> str:
        return f"myspinbot:ws:sockets:{user_id}"

    async def claim(self, user_id: int, name: str, lapse: float, limit: int) -> bool:
        now = time.time()
        key = self.key(user_id)
        async with self.client.pipeline(transaction=True) as pipe:
            pipe.zremrangebyscore(key, "-inf", now)
            pipe.zadd(key, {name: now + lapse})
            pipe.zcard(key)
            pipe.expire(key, int(lapse) + 60)
            _, _, count, _ = await pipe.execute()
        if int(count) > limit:
            await self.client.zrem(key, name)
            return False
        return True

    async def renew(self, user_id: int, name: str, lapse: float) -> None:
        await self.client.zadd(self.key(user_id), {name: time.time() + lapse}, xx=True)

    async def release(self, user_id: int, name: str) -> None:
        await self.client.zrem(self.key(user_id), name)
        await self.client.aclose()


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
