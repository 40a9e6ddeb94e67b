"""The merged capability manifest: every declared service plus the workers that are up.

Workers are asked by broadcast with a short timeout, so the answer comes quickly
whether or not any worker is running; when none answers, the manifest says so.
"""

from __future__ import annotations

import time
from typing import Any

from apps.capabilities.registry import get_registry
from myspinbot.queues import broker_queues

_cache: dict[str, Any] = {"at": 0.0, "workers": None}
CACHE_SECONDS = 2.0


def live_workers(timeout: float = 1.0) -> list[dict[str, Any]]:
    """Reports of the workers that answered within ``timeout`` seconds (cached briefly)."""
    now = time.monotonic()
    if _cache["workers"] is not None and now - _cache["at"] < CACHE_SECONDS:
        return list(_cache["workers"])
    from myspinbot.celery import app

    try:
        replies = app.control.broadcast("myspinbot_report", reply=True, timeout=timeout) or []
    except Exception:  # broker down: no worker can be reached either
        replies = []
    workers = [
        {"hostname": hostname, **report}
        for reply in replies
        for hostname, report in reply.items()
        if isinstance(report, dict) and "queues" in report
    ]
    workers.sort(key=lambda worker: worker["hostname"])
    _cache.update(at=now, workers=workers)
    return workers


def runnable_services(workers: list[dict[str, Any]]) -> set[str]:
    return {service for worker in workers for service in worker.get("services", [])}


def manifest(timeout: float = 1.0) -> dict[str, Any]:
    registry = get_registry()
    workers = live_workers(timeout)
    runnable = runnable_services(workers)
    services = [
        {**capability.to_json(), "available": capability.id in runnable}
        for capability in registry.all()
    ]
    queues = broker_queues()
    note = "" if workers else f"no worker answered within {timeout:g}s"
    return {"services": services, "workers": workers, "queues": queues, "note": note}
