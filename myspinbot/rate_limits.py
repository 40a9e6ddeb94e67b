"""Counting uses per key over a fixed window in the shared Redis, for limits that must
hold across every web process (sign-in failures, planner requests).

When Redis does not answer, the use goes uncounted and is allowed (and the log says so):
a limiter that is down must not lock everyone out.
"""

from __future__ import annotations

import functools
import logging

import redis
from django.conf import settings

logger = logging.getLogger(__name__)


def redis_client() -> redis.Redis:
    """One client (and connection pool) per Redis URL, shared by every caller."""
    return _client_for(str(settings.REDIS_URL), float(settings.REDIS_TIMEOUT_SECONDS))


@functools.lru_cache(maxsize=4)
def _client_for(url: str, timeout: float) -> redis.Redis:
    return redis.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout)


def take(key: str, *, limit: int, window_seconds: int) -> int:
    """Count one use of ``key``; return 0 when it is within ``limit`` uses per window of
    ``window_seconds`` (the window starts at the first use), else the seconds until the
    window ends (at least 1). A refused use is counted too, so hammering does not help."""
    try:
        pipe = redis_client().pipeline()
        pipe.incr(key)
        pipe.expire(key, window_seconds, nx=True)
        pipe.ttl(key)
        count, _, ttl = pipe.execute()
    except redis.RedisError:
        logger.warning("rate limit %s: Redis does not answer; not limiting", key)
        return 0
    if int(count) <= limit:
        return 0
    return max(int(ttl), 1)
