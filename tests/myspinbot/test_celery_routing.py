"""Queues are real: a task sent to `gpu` is consumed only by a worker listening on `gpu`."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

import pytest
from celery.exceptions import TimeoutError as ResultTimeout
from django.conf import settings

from myspinbot.celery import app, whoami
from testkit.services import CeleryWorker

pytestmark = pytest.mark.django_db(transaction=True)


def test_each_queue_is_consumed_only_by_its_workers(
    start_worker: Callable[..., CeleryWorker],
) -> None:
    cpu = start_worker("cpu", [settings.CELERY_CPU_QUEUE], concurrency=2)
    gpu = start_worker("gpu", [settings.CELERY_GPU_QUEUE])

    gpu_results = [whoami.apply_async(queue=settings.CELERY_GPU_QUEUE) for _ in range(10)]
    cpu_results = [whoami.apply_async(queue=settings.CELERY_CPU_QUEUE) for _ in range(10)]

    gpu_hosts = Counter(result.get(timeout=30)["hostname"] for result in gpu_results)
    cpu_hosts = Counter(result.get(timeout=30)["hostname"] for result in cpu_results)
    assert gpu_hosts == Counter({gpu.hostname: 10})
    assert cpu_hosts == Counter({cpu.hostname: 10})


def test_a_gpu_task_waits_while_only_a_cpu_worker_runs(
    start_worker: Callable[..., CeleryWorker],
) -> None:
    start_worker("cpu", [settings.CELERY_CPU_QUEUE])

    pending = whoami.apply_async(queue=settings.CELERY_GPU_QUEUE)

    with pytest.raises(ResultTimeout):
        pending.get(timeout=3)
    gpu = start_worker("gpu", [settings.CELERY_GPU_QUEUE])
    assert pending.get(timeout=30)["hostname"] == gpu.hostname


def test_the_queues_are_declared_with_explicit_routing_keys() -> None:
    queues = {queue.name: queue.routing_key for queue in app.conf.task_queues}

    assert queues == {settings.CELERY_CPU_QUEUE: "cpu", settings.CELERY_GPU_QUEUE: "gpu"}
    assert app.conf.task_acks_late is True
    assert app.conf.task_reject_on_worker_lost is True
    assert app.conf.worker_prefetch_multiplier == 1
    assert app.conf.accept_content == ["json"]
    assert app.conf.broker_transport_options["visibility_timeout"] > app.conf.task_time_limit
