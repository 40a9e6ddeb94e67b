from __future__ import annotations

from django.apps import AppConfig


class CapabilitiesConfig(AppConfig):
    """The service registry; it has no models."""

    name = "apps.capabilities"
    label = "capabilities"
    verbose_name = "Capabilities"

    def ready(self) -> None:
        from django.conf import settings
        from PIL import Image

        # Pillow's own decompression-bomb guard, for every Image.open in this process
        # (web and workers): a warning past this many pixels, an error past twice it.
        Image.MAX_IMAGE_PIXELS = settings.MYSPINBOT_MAX_IMAGE_PIXELS
