"""What each worker reports about itself when the manifest asks (a Celery remote-control
command, so it is answered by the worker's main process even while a task runs).

The cpu worker never imports torch.
"""

from __future__ import annotations

import json
import os
import socket
import tempfile
from pathlib import Path
from typing import Any

import psutil
from celery import signals
from celery.worker.control import inspect_command

from apps.capabilities.media.tts_engines import available_engines
from apps.capabilities.registry import get_registry
from myspinbot.queues import broker_queue, logical_queue


def worker_report(queues: list[str]) -> dict[str, Any]:
    memory = psutil.virtual_memory()

    served = sorted({queue for name in queues if (queue := logical_queue(name))})
    report: dict[str, Any] = {
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "queues": queues,
        "services": [c.id for c in get_registry().all() if c.queue in served],
        "device": {"type": "cpu", "name": "cpu", "count": os.cpu_count()},
        "memory": {"total_bytes": memory.total, "free_bytes": memory.available},
        "backends": {"tts": available_engines()},
    }
    if "gpu" in served:
        report.update(gpu_report(report["services"]))
    return report


def gpu_report_path(main_pid: int) -> Path:
    """Where the pool child of the worker whose main process is ``main_pid`` writes its
    GPU report (``gpu_tasks.worker.write_report``, which finds the path in the
    ``MYSPINBOT_GPU_REPORT`` environment variable set here before the children fork)."""
    return Path(tempfile.gettempdir()) / f"myspinbot-gpu-report-{main_pid}.json"


def gpu_report(services: list[str]) -> dict[str, Any]:
    """What the pool child reported: device, memory, loaded models, GPU backends; the GPU
    services none of whose backends is available are left out. Read from a file, because
    this (main) process must not touch the GPU or import torch."""
    path = gpu_report_path(os.getpid())
    try:
        child = json.loads(path.read_text())
    except (OSError, ValueError):
        return {"gpu": {"state": "starting"}, "services": services}
    needs: dict[str, str] = child.get("service_needs", {})
    backends: dict[str, list[str]] = child.get("backends", {})
    return {
        "device": child["device"],
        "memory": child["memory"],
        "models": child["models"],
        "model_store": child.get("model_store", {}),
        "backends": {"tts": available_engines(), **backends},
        "services": [s for s in services if s not in needs or backends.get(needs[s])],
        "gpu": {"state": "ready", "written_at": child.get("written_at")},
    }


@signals.celeryd_after_setup.connect
def _note_gpu_queue(sender: Any, instance: Any, conf: Any, **_: Any) -> None:
    """Tell the pool children (forked after this) whether they serve the gpu queue, and
    where to write their report: the path is empty on a worker without the gpu queue."""

    queues = {queue.name for queue in instance.app.amqp.queues.consume_from.values()}
    gpu = broker_queue("gpu") in queues
    os.environ["MYSPINBOT_GPU_REPORT"] = str(gpu_report_path(os.getpid())) if gpu else ""


@signals.worker_process_init.connect
def _gpu_child_start(**_: Any) -> None:
    """A pool child of a gpu worker picks its device and writes its first report."""
    if os.environ.get("MYSPINBOT_GPU_REPORT"):
        from gpu_tasks.worker import write_report

        write_report()


@inspect_command()
def myspinbot_report(state: Any, **_: Any) -> dict[str, Any]:
    """The worker's queues, services, device and free memory."""
    queues = sorted(queue.name for queue in state.consumer.task_consumer.queues)
    return worker_report(queues)
