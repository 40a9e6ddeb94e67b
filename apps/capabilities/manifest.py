"""The merged capability manifest: every declared service plus the workers that are up.

Workers are asked by broadcast with a short timeout, so the answer comes quickly
whether or not any worker is running; when none answers, the manifest says so.
"""

from __future__ import annotations

import time
from typing import Any

from apps.capabilities.registry import get_registry
from myspinbot.model_store import default_store
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


# What a user who is not staff sees of a worker: what it runs, not where or how loaded.
PUBLIC_WORKER_FIELDS = ("queues", "services", "backends", "gpu")


def public_workers(workers: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The workers as shown to users who are not staff: no host name, pid, memory or
    loaded models (they map the deployment for an attacker); named "cpu worker 1", …"""
    shown: list[dict[str, Any]] = []
    counts: dict[str, int] = {}
    for worker in workers:
        device = worker.get("device") or {}
        kind = str(device.get("type") or "cpu")
        counts[kind] = counts.get(kind, 0) + 1
        public = {key: worker[key] for key in PUBLIC_WORKER_FIELDS if key in worker}
        if isinstance(public.get("gpu"), dict):
            public["gpu"] = {"state": public["gpu"].get("state")}
        public["hostname"] = f"{kind} worker {counts[kind]}"
        public["device"] = {key: device[key] for key in ("type", "name", "count") if key in device}
        shown.append(public)
    return shown


# When workers disagree, the state shown is the best one some worker has.
_STATE_RANK = {"present": 0, "unverified": 1, "corrupt": 2, "missing": 3}


def model_availability(workers: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every model of the manifest with its size, licence, the services that use it and
    its state: as the gpu workers that are up report it (the best of them), else as this
    process sees the model root (one machine: the same folder), with the command that
    fixes it."""
    reports = [w["model_store"] for w in workers if isinstance(w.get("model_store"), dict)]
    rows = []
    for state in default_store().states():
        row = state.to_json()
        seen = [report[state.entry.name] for report in reports if state.entry.name in report]
        if seen:
            best = min(seen, key=lambda r: _STATE_RANK.get(str(r.get("state")), 9))
            row.update(
                {key: best[key] for key in ("state", "detail", "installed_bytes", "command")}
            )
            row["usable"] = row["state"] in ("present", "unverified")
            row["seen_by"] = "gpu workers"
        else:
            row["seen_by"] = "local model root"
        rows.append(row)
    return rows


def models_for(services: list[str], models: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The manifest models that some of ``services`` use."""
    return [m for m in models if set(m["services"]) & set(services)]


def missing_models_reason(services: list[str], models: list[dict[str, Any]]) -> str:
    """Why ``services`` (which no live worker runs) cannot run, as far as models say:
    each required model that is not usable, with the command that installs it."""
    lacking = [m for m in models_for(services, models) if not m["usable"] and not m["optional"]]
    return "; ".join(f"model {m['name']} is {m['state']}: run {m['command']}" for m in lacking)


def manifest(timeout: float = 1.0, *, staff: bool = True) -> dict[str, Any]:
    """Services with whether a live worker runs them, the workers (all they report for
    ``staff``, else :func:`public_workers`), the broker's queues."""
    registry = get_registry()
    workers = live_workers(timeout)
    runnable = runnable_services(workers)
    services = [
        {**capability.to_json(), "available": capability.id in runnable}
        for capability in registry.all()
    ]
    queues = broker_queues()
    note = "" if workers else f"no worker answered within {timeout:g}s"
    shown = workers if staff else public_workers(workers)
    models = model_availability(workers)
    for service in services:
        if not service["available"]:
            reason = missing_models_reason([service["id"]], models)
            if reason:
                service["unavailableReason"] = reason
    return {
        "services": services,
        "workers": shown,
        "queues": queues,
        "models": models,
        "note": note,
    }
