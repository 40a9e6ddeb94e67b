"""Liveness and readiness.

``/healthz`` answers while the process runs. ``/readyz`` checks the database,
Redis and the artifact store, each with a short timeout, and answers 200 when
all are up or 503 naming what is down.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout

import redis
from django.conf import settings
from django.db import connection
from django.http import HttpRequest, JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from myspinbot.storage import get_artifact_store

CHECK_TIMEOUT_SECONDS = 3.0


def check_database() -> None:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchone()
    finally:
        connection.close()  # this runs in a pool thread: do not leave its connection open


def check_redis() -> None:
    client = redis.Redis.from_url(
        str(settings.REDIS_URL),
        socket_timeout=settings.REDIS_TIMEOUT_SECONDS,
        socket_connect_timeout=settings.REDIS_TIMEOUT_SECONDS,
    )
    try:
        client.ping()
    finally:
        client.close()


def check_storage() -> None:
    get_artifact_store().check()


CHECKS: dict[str, Callable[[], None]] = {
    "database": check_database,
    "redis": check_redis,
    "storage": check_storage,
}


def run_checks() -> dict[str, dict[str, object]]:
    """Run every check at once; each reports ``ok``, its latency and any error."""
    results: dict[str, dict[str, object]] = {}
    pool = ThreadPoolExecutor(max_workers=len(CHECKS), thread_name_prefix="readyz")
    started = {name: time.monotonic() for name in CHECKS}
    futures = {name: pool.submit(check) for name, check in CHECKS.items()}
    deadline = time.monotonic() + CHECK_TIMEOUT_SECONDS
    for name, future in futures.items():
        try:
            future.result(timeout=max(0.0, deadline - time.monotonic()))
            results[name] = {"ok": True}
        except FutureTimeout:
            results[name] = {"ok": False, "error": f"no answer within {CHECK_TIMEOUT_SECONDS:g}s"}
        except Exception as error:  # any failure of a dependency means "not ready"
            results[name] = {"ok": False, "error": f"{type(error).__name__}: {error}"[:500]}
        results[name]["ms"] = round((time.monotonic() - started[name]) * 1000, 1)
    pool.shutdown(wait=False, cancel_futures=True)
    return results


@never_cache
@require_GET
def healthz(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"status": "ok"})


@never_cache
@require_GET
def readyz(request: HttpRequest) -> JsonResponse:
    checks = run_checks()
    down = sorted(name for name, result in checks.items() if not result["ok"])
    if down:
        return JsonResponse({"status": "unavailable", "down": down, "checks": checks}, status=503)
    return JsonResponse({"status": "ok", "checks": checks})
