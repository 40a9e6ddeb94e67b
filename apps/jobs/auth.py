"""Who is asking: API tokens (``Authorization: Bearer``) and Django sessions.

Tokens are looked up by their sha256, never stored in clear. A revoked token or an
inactive user authenticates no one.

The lookup compares digests, not tokens: the database index sees only the sha256 of
what the client sent, so how long a comparison takes says nothing about how much of a
real token a guess got right; the digest found is compared once more with
``hmac.compare_digest`` (``bench/token_timing.py`` measures both paths). When a token
was last used is recorded to the minute.
"""

from __future__ import annotations

import hmac
from datetime import timedelta
from typing import Any

from django.contrib.auth.models import AnonymousUser, User
from django.http import HttpRequest
from django.utils import timezone
from ninja.errors import AuthenticationError
from ninja.security import HttpBearer, SessionAuth

from apps.jobs.models import ApiToken

MAX_TOKEN_LENGTH = 200
# ``last_used_at`` is written at most this often per token: a write (and its commit) on
# every request would cost more than the request itself.
LAST_USED_RESOLUTION = timedelta(minutes=1)


def user_for_token(token: str) -> User | None:
    """The active user owning this unrevoked token, or None."""
    if not token or len(token) > MAX_TOKEN_LENGTH or not token.isascii():
        return None
    digest = ApiToken.hash(token)
    record = (
        ApiToken.objects.select_related("user")
        .filter(token_hash=digest, revoked_at=None, user__is_active=True)
        .first()
    )
    if record is None or not hmac.compare_digest(record.token_hash, digest):
        return None
    now = timezone.now()
    if record.last_used_at is None or now - record.last_used_at >= LAST_USED_RESOLUTION:
        # Conditional, so that of the requests crossing the minute at once only one
        # writes; the others' UPDATE matches no row.
        ApiToken.objects.filter(pk=record.pk, last_used_at=record.last_used_at).update(
            last_used_at=now
        )
    return record.user


class TokenAuth(HttpBearer):
    """``Authorization: Bearer <token>``. A bearer token that authenticates no one is a
    401 at once, even if a session cookie came along (as on the WebSocket): the client
    asked to be that token's user."""

    def authenticate(self, request: HttpRequest, token: str) -> User | None:
        user = user_for_token(token)
        if user is None:
            raise AuthenticationError()
        request.user = user
        return user


class SessionUserAuth(SessionAuth):
    """Django session (CSRF checked on unsafe methods), active users only. A request with
    no signed-in session is not checked for CSRF: it authenticates no one, so it is a
    401 (``docs/authorization.md``), not a 403 about a cookie it never had."""

    def __call__(self, request: HttpRequest) -> Any:
        user = getattr(request, "user", None)
        if user is None or isinstance(user, AnonymousUser) or not user.is_active:
            return None
        return super().__call__(request)

    def authenticate(self, request: HttpRequest, key: str | None) -> Any:
        user = request.user
        if isinstance(user, AnonymousUser) or not user.is_active:
            return None
        return user


API_AUTH = [TokenAuth(), SessionUserAuth()]
