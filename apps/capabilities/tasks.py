"""What each worker reports about itself when the manifest asks (a Celery remote-control
command, so it is answered by the worker's main process even while a task runs).

The cpu worker never imports torch.
"""

from __future__ import annotations

import os
import socket
from typing import Any

import psutil
from celery.worker.control import inspect_command

from apps.capabilities.media.tts_engines import available_engines
from apps.capabilities.registry import get_registry


def worker_report(queues: list[str]) -> dict[str, Any]:
    memory = psutil.virtual_memory()
    from django.conf import settings

    logical = {settings.CELERY_CPU_QUEUE: "cpu", settings.CELERY_GPU_QUEUE: "gpu"}
    served = sorted({logical[q] for q in queues if q in logical})
    report: dict[str, Any] = {
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "queues": queues,
        "services": [c.id for c in get_registry().all() if c.queue in served],
        "device": {"type": "cpu", "name": "cpu", "count": os.cpu_count()},
        "memory": {"total_bytes": memory.total, "free_bytes": memory.available},
        "backends": {"tts": available_engines()},
    }
    return report


@inspect_command()
def myspinbot_report(state: Any, **_: Any) -> dict[str, Any]:
    """The worker's queues, services, device and free memory."""
    queues = sorted(queue.name for queue in state.consumer.task_consumer.queues)
    return worker_report(queues)
