"""The merged capability manifest: every declared service plus the workers that are up.

Workers are asked by broadcast with a short timeout, so the answer comes quickly
whether or not any worker is running; when none answers, the manifest says so.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

from apps.capabilities.aliases import ALIASES
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
    return {"services": services, "workers": shown, "queues": queues, "note": note}


# The original system's planes: ``node`` ran its control-plane (CPU) work, ``python``
# its data-plane (GPU) work. Here the queue decides; the plane is only a label.
ORIGINAL_PLANES = {"cpu": "node", "gpu": "python"}


def original_manifest(report: dict[str, Any]) -> dict[str, Any]:
    """A :func:`manifest` in the original system's combined-manifest shape:
    ``{generatedAt, capabilities: [{id, label, description, version, plane, runtime, io,
    parameters, contracts, aliases}], sources: {control, worker}}``; each service a live
    worker runs is one capability, with the original ids that run as it (``aliases``)."""
    capabilities = []
    # The original listed what its planes could run: here, what a live worker runs.
    for service in (s for s in report["services"] if s["available"]):
        plane = ORIGINAL_PLANES[service["queue"]]
        properties = service["params"].get("properties", {})
        required = set(service["params"].get("required", []))
        capabilities.append(
            {
                "id": service["id"],
                "label": service["label"],
                "description": service.get("description", ""),
                "version": service["version"],
                "plane": plane,
                "runtime": {
                    "kind": service["queue"],
                    "timeoutSeconds": service["timeoutSeconds"],
                    "concurrency": 1,
                },
                "io": {
                    "input": _ports_schema(service.get("inputs", [])),
                    "output": _ports_schema(service.get("outputs", [])),
                },
                "parameters": [
                    {
                        "name": name,
                        "type": spec.get("type", "any") if isinstance(spec, dict) else "any",
                        "description": spec.get("description", "")
                        if isinstance(spec, dict)
                        else "",
                        "required": name in required,
                        **(
                            {"default": spec["default"]}
                            if isinstance(spec, dict) and "default" in spec
                            else {}
                        ),
                    }
                    for name, spec in properties.items()
                ],
                "contracts": {"idempotent": service["idempotent"]},
                "aliases": sorted(
                    a.original for a in ALIASES.values() if a.service == service["id"]
                ),
            }
        )
    counts = {
        plane: sum(1 for c in capabilities if c["plane"] == plane) for plane in ("node", "python")
    }
    return {
        "generatedAt": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
        "capabilities": capabilities,
        "sources": {
            "control": {"plane": "node", "number": counts["node"]},
            "worker": {"plane": "python", "number": counts["python"]},
        },
    }


def _ports_schema(ports: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {
            port["name"]: {"kind": port["kind"], "description": port.get("description", "")}
            for port in ports
        },
    }
