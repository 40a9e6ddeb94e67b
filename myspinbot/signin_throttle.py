"""Sign-in throttling for the web and admin login forms.

Failed sign-ins are counted in Redis per client address and per user name, over a
window of ``MYSPINBOT_SIGNIN_WINDOW_SECONDS``; once either count reaches
``MYSPINBOT_SIGNIN_MAX_FAILURES``, further sign-in posts from that address or for that
name are answered 429 with ``Retry-After`` until the window ends, without checking the
password (so guessing costs the attacker the window, not a password hash each time). A
successful sign-in clears the name's count. Counting across every web process needs the
shared Redis; when Redis does not answer, sign-in goes on unthrottled (and says so in
the log) rather than locking everyone out.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
from collections.abc import Callable
from typing import Any

import redis
from django.conf import settings
from django.contrib.auth.signals import user_logged_in, user_login_failed
from django.http import HttpRequest, HttpResponse
from django.http.response import HttpResponseBase

from myspinbot.rate_limits import redis_client as _client

logger = logging.getLogger(__name__)

SIGN_IN_PATHS = ("/login/", "/admin/login/")


def _keys(address: str | None, username: str | None) -> list[str]:
    keys = [f"myspinbot:signin:addr:{address or '-'}"]
    if username:
        name = hashlib.sha256(username.strip().lower().encode()).hexdigest()[:32]
        keys.append(f"myspinbot:signin:name:{name}")
    return keys


def retry_after(address: str | None, username: str | None) -> int:
    """Seconds until this address or name may try again (0: it may now)."""
    limit = settings.MYSPINBOT_SIGNIN_MAX_FAILURES
    client = _client()
    try:
        wait = 0
        for key in _keys(address, username):
            count = client.get(key)
            if count is not None and int(count) >= limit:
                wait = max(wait, int(client.ttl(key)), 1)
        return wait
    except redis.RedisError:
        logger.warning("sign-in throttle: Redis does not answer; not throttling")
        return 0


def _failed(
    sender: Any, credentials: dict[str, Any], request: HttpRequest | None = None, **kwargs: Any
) -> None:
    if request is None:
        return
    client = _client()
    try:
        window = int(settings.MYSPINBOT_SIGNIN_WINDOW_SECONDS)
        pipe = client.pipeline()
        for key in _keys(request.META.get("REMOTE_ADDR"), credentials.get("username")):
            pipe.incr(key)
            pipe.expire(key, window, nx=True)
        pipe.execute()
    except redis.RedisError:
        logger.warning("sign-in throttle: Redis does not answer; a failure went uncounted")


def _succeeded(sender: Any, request: HttpRequest | None, user: Any, **kwargs: Any) -> None:
    with contextlib.suppress(redis.RedisError):
        _client().delete(*_keys(None, user.get_username())[1:])


user_login_failed.connect(_failed, weak=False, dispatch_uid="myspinbot-signin-failed")
user_logged_in.connect(_succeeded, weak=False, dispatch_uid="myspinbot-signin-ok")


class SignInThrottleMiddleware:
    """Refuses a sign-in post (429) while its address or user name is throttled."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponseBase]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponseBase:
        if request.method == "POST" and request.path in SIGN_IN_PATHS:
            wait = retry_after(request.META.get("REMOTE_ADDR"), request.POST.get("username"))
            if wait:
                response = HttpResponse(
                    f"Too many failed sign-ins: try again in {wait} s.",
                    status=429,
                    content_type="text/plain; charset=utf-8",
                )
                response["Retry-After"] = str(wait)
                return response
        return self.get_response(request)
