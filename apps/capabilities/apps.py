from __future__ import annotations

from django.apps import AppConfig


class CapabilitiesConfig(AppConfig):
    """The service registry; it has no models."""

    name = "apps.capabilities"
    label = "capabilities"
    verbose_name = "Capabilities"
