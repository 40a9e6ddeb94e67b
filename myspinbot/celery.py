"""The Celery app: configured from Django settings (``CELERY_*``), tasks found in
the installed apps. Django owns logging in worker processes too."""

from __future__ import annotations

import logging.config
import os
from typing import Any

from celery import Celery, signals

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "myspinbot.settings.local")

app = Celery("myspinbot")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@signals.setup_logging.connect
def _use_django_logging(**_: Any) -> None:
    """Connecting this signal stops Celery from configuring logging itself."""
    from django.conf import settings

    logging.config.dictConfig(settings.LOGGING)


@app.task(name="myspinbot.whoami", ignore_result=False, acks_late=True)
def whoami() -> dict[str, str]:
    """Name the worker and queue that ran this task: used to check routing."""
    request = whoami.request
    delivery = request.delivery_info or {}
    return {"hostname": str(request.hostname), "queue": str(delivery.get("routing_key", ""))}
