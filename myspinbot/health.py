"""Liveness and readiness.

``/healthz`` answers while the process runs. ``/readyz`` checks the database, Redis,
the artifact store and, when it is not that Redis, the broker (RabbitMQ), each with a
short timeout, and answers 200 when all are up or 503 naming what is down. Each check's
error text and latency go only to staff and to the metrics network
(``METRICS_ALLOWED_NETWORKS`` or the ``METRICS_TOKEN``); anyone else gets the status and
the names of what is down, from a result at most ``PUBLIC_CACHE_SECONDS`` old, so a
flood of anonymous calls opens no more connections than one caller every few seconds.
"""

from __future__ import annotations

import threading
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

from myspinbot.metrics.access import allowed
from myspinbot.queues import broker_is_rabbitmq
from myspinbot.storage import get_artifact_store

CHECK_TIMEOUT_SECONDS = 3.0
PUBLIC_CACHE_SECONDS = 2.0


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


def check_broker() -> None:
    """Open (and close) an AMQP connection to the RabbitMQ broker."""
    from kombu import Connection

    with Connection(
        str(settings.CELERY_BROKER_URL),
        connect_timeout=settings.BROKER_CONNECT_TIMEOUT_SECONDS,
        heartbeat=0,
    ) as broker:
        broker.connect()


CHECKS: dict[str, Callable[[], None]] = {
    "database": check_database,
    "redis": check_redis,
    "storage": check_storage,
}


def current_checks() -> dict[str, Callable[[], None]]:
    """The checks of this configuration: on RabbitMQ the broker is a service of its own."""
    if broker_is_rabbitmq():
        return {**CHECKS, "broker": check_broker}
    return CHECKS


def run_checks() -> dict[str, dict[str, object]]:
    """Run every check at once; each reports ``ok``, its latency and any error."""
    results: dict[str, dict[str, object]] = {}
    checks = current_checks()
    pool = ThreadPoolExecutor(max_workers=len(checks), thread_name_prefix="readyz")
    started = {name: time.monotonic() for name in checks}
    futures = {name: pool.submit(check) for name, check in checks.items()}
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


_public_lock = threading.Lock()
_public: tuple[float, dict[str, dict[str, object]]] | None = None


def public_checks() -> dict[str, dict[str, object]]:
    """The checks' results, run again only when the last run is older than
    ``PUBLIC_CACHE_SECONDS`` (one caller runs them; the others wait for its answer)."""
    global _public
    with _public_lock:
        if _public is None or time.monotonic() - _public[0] > PUBLIC_CACHE_SECONDS:
            _public = (time.monotonic(), run_checks())
        return _public[1]


def privileged(request: HttpRequest) -> bool:
    """Staff, or the metrics network: those who may read why a check failed."""
    user = getattr(request, "user", None)
    if user is not None and user.is_authenticated and user.is_staff:
        return True
    return allowed(request.META.get("REMOTE_ADDR"), request.headers.get("Authorization"))


@never_cache
@require_GET
def readyz(request: HttpRequest) -> JsonResponse:
    detailed = privileged(request)
    checks = run_checks() if detailed else public_checks()
    down = sorted(name for name, result in checks.items() if not result["ok"])
    body: dict[str, object] = {"status": "unavailable" if down else "ok"}
    if down:
        body["down"] = down
    if detailed:
        body["checks"] = checks
    return JsonResponse(body, status=503 if down else 200)
