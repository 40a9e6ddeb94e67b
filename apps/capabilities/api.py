"""``GET /api/capabilities``: every service declaration and the live workers."""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest
from ninja import Router, Schema

from apps.capabilities.manifest import manifest

router = Router(tags=["capabilities"])


class ManifestOut(Schema):
    services: list[dict[str, Any]]
    workers: list[dict[str, Any]]
    queues: dict[str, str]
    models: list[dict[str, Any]]
    note: str


@router.get("/capabilities", response=ManifestOut)
def capabilities(request: HttpRequest) -> dict[str, Any]:
    """Every service declaration, and the live workers: what they run (queues, services,
    device kind) for everyone; host, pid, memory and loaded models for staff only. Each
    model of the manifest: present, unverified, missing or corrupt, with its size,
    licence, the services that use it and the command that installs it."""
    user = getattr(request, "user", None)
    return manifest(staff=bool(user is not None and user.is_staff))
