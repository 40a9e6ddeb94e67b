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
    """Every service declaration, and the live workers (queues, host, device, free memory)."""
    return manifest()
