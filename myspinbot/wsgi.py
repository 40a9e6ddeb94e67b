"""WSGI entry point (plain HTTP; the ASGI app also serves WebSockets)."""

from __future__ import annotations

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "myspinbot.settings.local")

application = get_wsgi_application()

from myspinbot import log_filters  # noqa: E402

log_filters.install()
