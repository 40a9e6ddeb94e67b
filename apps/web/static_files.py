"""Static files in every process, uvicorn included: WhiteNoise."""

from __future__ import annotations

import os
from typing import Any

from django.conf import settings
from whitenoise.middleware import WhiteNoiseMiddleware


class StaticFilesMiddleware(WhiteNoiseMiddleware):
    """WhiteNoise, quiet about a ``STATIC_ROOT`` that does not exist yet.

    Production images run ``collectstatic`` into ``STATIC_ROOT``; ``make run`` and the
    tests serve the app and package folders through the finders
    (``WHITENOISE_USE_FINDERS``) and have no collected folder to warn about.
    """

    def add_files(self, root: Any, prefix: str | None = None) -> None:
        if str(root) == str(settings.STATIC_ROOT) and not os.path.isdir(root):
            return
        super().add_files(root, prefix)
