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
    note: str


@router.get("/capabilities", response=ManifestOut)
def capabilities(request: HttpRequest) -> dict[str, Any]:
    """Every service declaration, and the live workers: what they run (queues, services,
    device kind) for everyone; host, pid, memory and loaded models for staff only."""
    user = getattr(request, "user", None)
    return manifest(staff=bool(user is not None and user.is_staff))
