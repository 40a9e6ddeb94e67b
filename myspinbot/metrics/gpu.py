"""GPU memory and utilization per device, read when Prometheus scrapes."""

from __future__ import annotations

import logging
import os
import sys
import threading
from collections.abc import Iterator
from typing import Any

from prometheus_client.core import GaugeMetricFamily, Metric

logger = logging.getLogger(__name__)


GPU_FAMILIES = {
    "myspinbot_gpu_memory_used_bytes": "GPU memory in use on the device (all processes).",
    "myspinbot_gpu_memory_total_bytes": "GPU memory of the device.",
    "myspinbot_gpu_utilization_ratio": "Fraction of time the device was busy (NVML only).",
}


def visible_devices(value: str | None, count: int) -> list[str]:
    """NVML device selectors (index or UUID) a process may use, from
    ``CUDA_VISIBLE_DEVICES`` (``None``: all ``count`` devices; CUDA stops at the first
    invalid entry, and so does this)."""
    if value is None:
        return [str(index) for index in range(count)]
    chosen: list[str] = []
    for item in (part.strip() for part in value.split(",")):
        if item.isdigit() and int(item) < count:
            chosen.append(str(int(item)))
        elif item.startswith(("GPU-", "MIG-")):
            chosen.append(item)
        else:
            break
    return chosen


class GpuCollector:
    """GPU memory used/total (and utilization) per device, read when Prometheus scrapes.

    NVML (``nvidia-ml-py``) first: it reads the driver without creating a CUDA context,
    so the prefork main process can call it safely. Else torch, only if this process has
    already imported it and initialized CUDA (a solo-pool GPU worker). Else no samples:
    the families are still exported, empty, so dashboards and checks see the names.
    """

    def __init__(self) -> None:
        self._nvml: Any = None
        self._nvml_tried = False
        self._lock = threading.Lock()

    def _load_nvml(self) -> Any:
        with self._lock:
            if not self._nvml_tried:
                self._nvml_tried = True
                try:
                    import pynvml

                    pynvml.nvmlInit()
                    self._nvml = pynvml
                except Exception as error:  # no driver, no library, no device
                    logger.info("NVML unavailable, GPU metrics from torch or none: %s", error)
            return self._nvml

    def readings(self) -> list[tuple[str, str, float, float, float | None]]:
        """``(device, uuid, used bytes, total bytes, utilization or None)`` per device."""
        nvml = self._load_nvml()
        if nvml is not None:
            found = []
            selectors = visible_devices(
                os.environ.get("CUDA_VISIBLE_DEVICES"), nvml.nvmlDeviceGetCount()
            )
            for selector in selectors:
                if selector.isdigit():
                    handle = nvml.nvmlDeviceGetHandleByIndex(int(selector))
                else:
                    handle = nvml.nvmlDeviceGetHandleByUUID(selector)
                memory = nvml.nvmlDeviceGetMemoryInfo(handle)
                uuid = nvml.nvmlDeviceGetUUID(handle)
                busy = nvml.nvmlDeviceGetUtilizationRates(handle).gpu / 100.0
                index = str(nvml.nvmlDeviceGetIndex(handle))
                found.append((index, str(uuid), float(memory.used), float(memory.total), busy))
            return found
        torch = sys.modules.get("torch")
        if torch is not None and torch.cuda.is_available() and torch.cuda.is_initialized():
            found = []
            for ordinal in range(torch.cuda.device_count()):
                free, total = torch.cuda.mem_get_info(ordinal)
                uuid = str(getattr(torch.cuda.get_device_properties(ordinal), "uuid", ""))
                found.append((str(ordinal), uuid, float(total - free), float(total), None))
            return found
        return []

    def collect(self) -> Iterator[Metric]:
        families = {
            name: GaugeMetricFamily(name, text, labels=["device", "uuid"])
            for name, text in GPU_FAMILIES.items()
        }
        for device, uuid, used, total, busy in self.readings():
            families["myspinbot_gpu_memory_used_bytes"].add_metric([device, uuid], used)
            families["myspinbot_gpu_memory_total_bytes"].add_metric([device, uuid], total)
            if busy is not None:
                families["myspinbot_gpu_utilization_ratio"].add_metric([device, uuid], busy)
        yield from families.values()
