"""The GPU worker's metrics, recorded the way the model cache and LoRA training will
record them: in a separate process in multiprocess mode, summed by the worker's registry."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from myspinbot import metrics
from myspinbot.metrics import gpu, worker
from testkit.services import REPO
from tests.ops.scrape import free_port, parse, scrape

CHILD = """
from myspinbot import metrics
metrics.observe_model_load("tiny-sd", 1.5)
metrics.observe_model_load("tiny-sd", 0.5)
metrics.set_models_loaded(2)
metrics.observe_lora_steps(12, 3.0)
print("recorded", flush=True)
input()
"""


def test_gpu_worker_metrics_of_a_child_add_up_and_its_gauges_go_when_it_dies(
    tmp_path: Path,
) -> None:
    env = {
        **os.environ,
        "PROMETHEUS_MULTIPROC_DIR": str(tmp_path),
        "DJANGO_SETTINGS_MODULE": "myspinbot.settings.test",
    }
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD],
        cwd=REPO,
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "recorded"
        alive = parse(
            generate_latest(worker.worker_registry(gpu=False, path=str(tmp_path))).decode()
        )
    finally:
        child.kill()
        child.wait(10)
    gone = parse(generate_latest(worker.worker_registry(gpu=False, path=str(tmp_path))).decode())

    assert alive.value("myspinbot_model_load_seconds_count", model="tiny-sd") == 2
    assert alive.value("myspinbot_model_load_seconds_sum", model="tiny-sd") == 2.0
    assert alive.value("myspinbot_model_load_seconds_bucket", model="tiny-sd", le="0.5") == 1
    assert alive.value("myspinbot_models_loaded") == 2
    assert alive.value("myspinbot_lora_training_steps_total") == 12
    assert alive.value("myspinbot_lora_training_seconds_total") == 3
    assert alive.value("myspinbot_lora_training_steps_per_second") == 4
    # counters stay (work that was done); live gauges of the dead process are dropped
    assert gone.value("myspinbot_model_load_seconds_count", model="tiny-sd") == 2
    assert gone.value("myspinbot_lora_training_steps_total") == 12
    assert ("myspinbot_models_loaded", ()) not in gone.values
    assert ("myspinbot_lora_training_steps_per_second", ()) not in gone.values


def test_a_bad_lora_report_is_refused() -> None:
    with pytest.raises(ValueError, match="bad LoRA progress report: 5 steps in 0 s"):
        metrics.observe_lora_steps(5, 0)


@pytest.mark.parametrize(
    ("value", "count", "expected"),
    [
        (None, 2, ["0", "1"]),
        ("1,0", 2, ["1", "0"]),
        ("", 2, []),
        ("0,7,1", 2, ["0"]),  # CUDA stops at the first device that does not exist
        (
            "GPU-8d5a1f2e-aaaa-bbbb-cccc-0123456789ab",
            1,
            ["GPU-8d5a1f2e-aaaa-bbbb-cccc-0123456789ab"],
        ),
    ],
)
def test_visible_devices_follows_cuda_visible_devices(
    value: str | None, count: int, expected: list[str]
) -> None:
    assert gpu.visible_devices(value, count) == expected


def test_gpu_families_are_exported_with_one_sample_per_visible_device() -> None:
    collector = gpu.GpuCollector()
    registry = CollectorRegistry()
    registry.register(collector)

    scraped = parse(generate_latest(registry).decode())
    readings = collector.readings()  # none on a machine without an NVIDIA driver

    assert set(scraped.families) == set(gpu.GPU_FAMILIES)
    for device, uuid, used, total, _ in readings:
        labels = {"device": device, "uuid": uuid}
        assert scraped.value("myspinbot_gpu_memory_total_bytes", **labels) == total
        assert 0 <= used <= total
    used_samples = [key for key in scraped.values if key[0] == "myspinbot_gpu_memory_used_bytes"]
    assert len(used_samples) == len(readings)


def test_reaping_leaves_the_files_of_live_processes(tmp_path: Path) -> None:
    (tmp_path / f"gauge_livesum_{os.getpid()}.db").write_bytes(b"")
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (tmp_path / f"gauge_livesum_{dead.pid}.db").write_bytes(b"")

    assert worker.reap_dead_processes(str(tmp_path)) == [dead.pid]
    assert sorted(path.name for path in tmp_path.iterdir()) == [f"gauge_livesum_{os.getpid()}.db"]


def test_the_exporter_serves_the_worker_registry_and_refuses_a_taken_port(
    tmp_path: Path, settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    settings.MYSPINBOT_WORKER_METRICS_ADDR = "127.0.0.1"
    settings.MYSPINBOT_WORKER_METRICS_PORT = free_port()
    exporter = worker.start_worker_exporter([settings.CELERY_GPU_QUEUE])
    assert exporter is not None
    try:
        served = parse(scrape(f"http://127.0.0.1:{exporter.port}/metrics"))
        with pytest.raises(SystemExit, match="MYSPINBOT_WORKER_METRICS_PORT"):
            worker.start_worker_exporter([settings.CELERY_CPU_QUEUE])
    finally:
        exporter.stop()
    settings.MYSPINBOT_WORKER_METRICS_PORT = 0

    assert set(gpu.GPU_FAMILIES) <= set(served.families)
    assert worker.start_worker_exporter([settings.CELERY_CPU_QUEUE]) is None
