"""Links to the operators' tools (Flower, metrics) for the admin index page."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.http import HttpRequest
from django.urls import reverse


def links(request: HttpRequest) -> dict[str, Any]:
    """Template context processor: ``operations.flower_url`` and ``operations.metrics_url``."""
    return {"operations": {"flower_url": settings.FLOWER_URL, "metrics_url": reverse("metrics")}}
