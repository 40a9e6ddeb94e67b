"""The per-process model cache: pipelines stay loaded between tasks.

A GPU worker runs one task at a time, so a second job that uses the same base model finds
it here and loads nothing. When loading the next model would take the cache past its
memory budget, the least recently used models are dropped first. Each load is timed:
:meth:`ModelCache.load_seconds` and :meth:`ModelCache.stats` are what the worker reports
(and what metrics read).
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import torch

from gpu_tasks.device import release_memory
from myspinbot import metrics

T = TypeVar("T")


@dataclass
class Entry:
    value: Any
    size_bytes: int
    load_seconds: float
    loaded_at: float
    uses: int = 0


def module_bytes(value: Any) -> int:
    """Bytes of the parameters and buffers of a module, or of every module a pipeline holds."""
    modules: list[torch.nn.Module] = []
    if isinstance(value, torch.nn.Module):
        modules = [value]
    elif hasattr(value, "components"):
        modules = [c for c in value.components.values() if isinstance(c, torch.nn.Module)]
    seen: set[int] = set()
    total = 0
    for module in modules:
        for tensor in [*module.parameters(), *module.buffers()]:
            if id(tensor) not in seen:
                seen.add(id(tensor))
                total += tensor.numel() * tensor.element_size()
    return total


class ModelCache:
    """Loaded models by key, least recently used first out; thread-safe."""

    def __init__(self, budget_bytes: int) -> None:
        self.budget_bytes = budget_bytes
        self._entries: OrderedDict[str, Entry] = OrderedDict()
        self._lock = threading.RLock()
        self._load_seconds: dict[str, float] = {}
        self.loads = 0
        self.hits = 0
        self.evictions = 0

    def get(
        self,
        key: str,
        load: Callable[[], T],
        *,
        expected_bytes: int = 0,
        size_of: Callable[[T], int] = module_bytes,
    ) -> T:
        """The model ``key``, calling ``load()`` only when it is not loaded.

        ``expected_bytes`` (e.g. the size of its weight files) lets the cache make room
        before loading; the measured size is what counts afterwards.
        """
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None:
                self._entries.move_to_end(key)
                entry.uses += 1
                self.hits += 1
                return entry.value
            self._make_room(expected_bytes)
            started = time.perf_counter()
            value = load()
            seconds = time.perf_counter() - started
            size = size_of(value)
            self._entries[key] = Entry(value, size, seconds, time.time(), uses=1)
            self._load_seconds[key] = seconds
            self.loads += 1
            self._make_room(0, keep=key)
            metrics.observe_model_load(key, seconds)
            metrics.set_models_loaded(len(self._entries))
            return value

    def _make_room(self, incoming: int, keep: str | None = None) -> None:
        dropped = False
        while self._entries:
            used = sum(entry.size_bytes for entry in self._entries.values())
            if used + incoming <= self.budget_bytes:
                break
            oldest = next(iter(self._entries))
            if oldest == keep:
                break  # alone over budget: keep the model just loaded
            del self._entries[oldest]
            self.evictions += 1
            dropped = True
        if dropped:
            metrics.set_models_loaded(len(self._entries))
            release_memory()

    def peek(self, key: str) -> Any | None:
        """The loaded model ``key`` without counting a use, or None."""
        with self._lock:
            entry = self._entries.get(key)
            return entry.value if entry else None

    def __contains__(self, key: object) -> bool:
        return key in self._entries

    def evict(self, key: str) -> bool:
        with self._lock:
            found = self._entries.pop(key, None) is not None
            metrics.set_models_loaded(len(self._entries))
        if found:
            release_memory()
        return found

    def clear(self) -> None:
        """Drop every model (after running out of device memory, for one)."""
        with self._lock:
            self._entries.clear()
            metrics.set_models_loaded(0)
        release_memory()

    def loaded(self) -> list[str]:
        """Keys of the loaded models, least recently used first."""
        with self._lock:
            return list(self._entries)

    def load_seconds(self) -> dict[str, float]:
        """Seconds the last load of each model took (models since evicted included)."""
        with self._lock:
            return dict(self._load_seconds)

    def used_bytes(self) -> int:
        with self._lock:
            return sum(entry.size_bytes for entry in self._entries.values())

    def stats(self) -> dict[str, Any]:
        """What the worker reports: budget, use, counters and each loaded model."""
        with self._lock:
            return {
                "budget_bytes": self.budget_bytes,
                "used_bytes": self.used_bytes(),
                "loads": self.loads,
                "hits": self.hits,
                "evictions": self.evictions,
                "load_seconds": dict(self._load_seconds),
                "models": [
                    {
                        "key": key,
                        "bytes": entry.size_bytes,
                        "load_seconds": round(entry.load_seconds, 3),
                        "uses": entry.uses,
                    }
                    for key, entry in self._entries.items()
                ],
            }


_cache: ModelCache | None = None
_cache_lock = threading.Lock()


def default_budget_bytes() -> int:
    """``MYSPINBOT_MODEL_CACHE_BYTES`` when set (> 0), else 80 % of the device's memory."""
    from django.conf import settings

    from gpu_tasks.device import get_device

    configured = int(getattr(settings, "MYSPINBOT_MODEL_CACHE_BYTES", 0) or 0)
    if configured > 0:
        return configured
    return int(get_device().memory()["total_bytes"] * 0.8)


def get_cache() -> ModelCache:
    """This process's model cache, created on first use."""
    global _cache
    with _cache_lock:
        if _cache is None:
            _cache = ModelCache(default_budget_bytes())
        return _cache
