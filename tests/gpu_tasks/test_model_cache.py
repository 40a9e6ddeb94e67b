"""The per-process model cache: reuse, least-recently-used eviction, load times."""

from __future__ import annotations

import torch
from prometheus_client import REGISTRY

from gpu_tasks.model_cache import ModelCache, module_bytes


def linear(features: int) -> torch.nn.Module:
    return torch.nn.Linear(features, features, bias=False)  # features² float32 weights


def test_a_loaded_model_is_reused_without_loading_again() -> None:
    cache = ModelCache(budget_bytes=1 << 20)
    loads: list[str] = []

    def load() -> torch.nn.Module:
        loads.append("a")
        return linear(16)

    first = cache.get("a", load)
    second = cache.get("a", load)

    assert second is first
    assert loads == ["a"]
    assert (cache.loads, cache.hits) == (1, 1)
    assert list(cache.load_seconds()) == ["a"]
    assert cache.load_seconds()["a"] >= 0.0
    assert cache.stats()["models"] == [
        {"key": "a", "bytes": 1024, "load_seconds": round(cache.load_seconds()["a"], 3), "uses": 2}
    ]


def test_the_least_recently_used_model_goes_when_the_next_would_not_fit() -> None:
    cache = ModelCache(budget_bytes=2 * 4096)  # room for two 32x32 float32 layers
    cache.get("a", lambda: linear(32))
    cache.get("b", lambda: linear(32))
    cache.get("a", lambda: linear(32))  # a is now the most recently used

    cache.get("c", lambda: linear(32), expected_bytes=4096)

    assert cache.loaded() == ["a", "c"]
    assert cache.evictions == 1
    assert cache.used_bytes() == 8192
    assert sorted(cache.load_seconds()) == ["a", "b", "c"]  # b's load time is kept


def test_a_model_larger_than_the_budget_is_kept_alone() -> None:
    cache = ModelCache(budget_bytes=1000)
    cache.get("small", lambda: linear(8))

    cache.get("big", lambda: linear(64))

    assert cache.loaded() == ["big"]


def test_clear_drops_everything() -> None:
    cache = ModelCache(budget_bytes=1 << 20)
    cache.get("a", lambda: linear(8))

    cache.clear()

    assert cache.loaded() == []
    assert cache.used_bytes() == 0


def test_module_bytes_counts_shared_tensors_once() -> None:
    layer = linear(8)
    both = torch.nn.Sequential(layer, layer)

    assert module_bytes(both) == 8 * 8 * 4


def test_loads_and_evictions_are_recorded_in_the_worker_metrics() -> None:
    def load_count(model: str) -> float:
        value = REGISTRY.get_sample_value("myspinbot_model_load_seconds_count", {"model": model})
        return value or 0.0

    cache = ModelCache(budget_bytes=4096)  # room for one 32x32 float32 layer
    before = load_count("metrics-a"), load_count("metrics-b")

    cache.get("metrics-a", lambda: linear(32))
    cache.get("metrics-a", lambda: linear(32))
    assert REGISTRY.get_sample_value("myspinbot_models_loaded") == 1.0
    cache.get("metrics-b", lambda: linear(32), expected_bytes=4096)  # evicts metrics-a

    assert (load_count("metrics-a"), load_count("metrics-b")) == (before[0] + 1, before[1] + 1)
    assert REGISTRY.get_sample_value("myspinbot_models_loaded") == 1.0
    cache.clear()
    assert REGISTRY.get_sample_value("myspinbot_models_loaded") == 0.0
