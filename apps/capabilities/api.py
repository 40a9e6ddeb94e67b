"""``GET /api/capabilities``: every service declaration and the live workers.

The original system answered the same route with its combined manifest
(``{generatedAt, capabilities, sources}``, whose schema allows no other key). Ours is
richer and stays the default; ``?shape=original`` answers in the original's shape
(``apps.capabilities.manifest.original_manifest``), for the original's clients.
"""

from __future__ import annotations

from typing import Any, Literal

from django.http import HttpRequest
from ninja import Router, Schema

from apps.capabilities.manifest import manifest, original_manifest

router = Router(tags=["capabilities"])


class ManifestOut(Schema):
    services: list[dict[str, Any]]
    workers: list[dict[str, Any]]
    queues: dict[str, str]
    models: list[dict[str, Any]]
    note: str


class PlaneSource(Schema):
    plane: str
    number: int


class OriginalSources(Schema):
    control: PlaneSource
    worker: PlaneSource


class OriginalManifestOut(Schema):
    generatedAt: str
    capabilities: list[dict[str, Any]]
    sources: OriginalSources


@router.get("/capabilities", response=ManifestOut | OriginalManifestOut)
def capabilities(
    request: HttpRequest, shape: Literal["ours", "original"] = "ours"
) -> dict[str, Any]:
    """Every service declaration, and the live workers: what they run (queues, services,
    device kind) for everyone; host, pid, memory and loaded models for staff only. Each
    model of the manifest: present, unverified, missing or corrupt, with its size,
    licence, the services that use it and the command that installs it.
    ``?shape=original``: the original system's combined manifest instead."""
    user = getattr(request, "user", None)
    report = manifest(staff=bool(user is not None and user.is_staff))
    return original_manifest(report) if shape == "original" else report
