"""What a GPU worker process does around every task: turn running out of device memory
into a permanent ``gpu_oom`` node error (clearing the model cache), and keep the report
that the worker's main process answers capability queries with.

The main process of a Celery worker never touches CUDA (its pool children could not use
the device after a fork), so the child that runs the tasks writes its device, memory,
loaded models and backends to a small JSON file named after the main process's pid; the
main process puts that file's path in ``MYSPINBOT_GPU_REPORT`` before its children fork
(``apps.capabilities.worker_report``).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from gpu_tasks import backends
from gpu_tasks.device import get_device, is_out_of_memory
from gpu_tasks.model_cache import get_cache
from myspinbot.errors import PermanentError

logger = logging.getLogger(__name__)


def report() -> dict[str, Any]:
    """Device, memory, model cache and backends of this process."""
    device = get_device()
    return {
        "device": device.to_json(),
        "memory": device.memory(),
        "models": get_cache().stats(),
        "backends": backends.available(),
        "model_store": backends.model_store_report(),
        "service_needs": backends.SERVICE_NEEDS,
        "written_at": time.time(),
    }


def write_report() -> None:
    """Write :func:`report` where the worker's main process reads it (atomically); a
    process outside a gpu worker (no ``MYSPINBOT_GPU_REPORT``) writes nothing."""
    where = os.environ.get("MYSPINBOT_GPU_REPORT", "")
    if not where:
        return
    path = Path(where)
    temporary = path.with_suffix(f".{os.getpid()}.tmp")
    try:
        temporary.write_text(json.dumps(report()))
        temporary.replace(path)
    except OSError:
        logger.exception("cannot write the GPU worker report to %s", path)


@contextlib.contextmanager
def guarded(sizes: dict[str, Any]) -> Iterator[None]:
    """Run a GPU task: device out-of-memory becomes ``PermanentError("gpu_oom")`` naming
    ``sizes`` (the task's resolution, batch, frames...) and the device's memory, after the
    model cache is cleared. The report is rewritten afterwards either way."""
    device = get_device()
    try:
        yield
    except Exception as error:
        if not is_out_of_memory(error):
            raise
        get_cache().clear()
        details = {**sizes, "device": device.name, **device.memory(), "error": str(error)[:500]}
        raise PermanentError(
            "gpu_oom",
            f"out of GPU memory on {device.name} at {sizes}; lower the sizes and run again",
            details=details,
        ) from None
    finally:
        write_report()
