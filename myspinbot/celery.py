"""The Celery app: configured from Django settings (``CELERY_*``), tasks found in
the installed apps. Django owns logging in worker processes too."""

from __future__ import annotations

import logging.config
import os
import tempfile
from typing import Any

from celery import Celery, signals

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "myspinbot.settings.local")

# A worker that exports metrics counts in its prefork children: prometheus_client's
# multiprocess mode (see myspinbot.metrics). The celery command has already imported
# prometheus_client (Flower's plug-in), so the mode is switched here, before any of our
# metrics exist.
if os.environ.get("MYSPINBOT_WORKER_METRICS_PORT", "0").strip() not in ("", "0"):
    if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        _metrics_dir = tempfile.mkdtemp(prefix="myspinbot-metrics-")
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = _metrics_dir
        os.environ["MYSPINBOT_METRICS_DIR_CREATED"] = _metrics_dir
    from prometheus_client import values as _prometheus_values

    _prometheus_values.ValueClass = _prometheus_values.get_value_class()

app = Celery("myspinbot")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()

import myspinbot.metrics.worker  # noqa: E402, F401 - connects the worker metrics signals


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
