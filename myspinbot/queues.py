"""The two logical queues, ``cpu`` and ``gpu``, and the broker queues they are.

A service declares its logical queue (``capability.json``); the broker queue names come
from the settings ``CELERY_CPU_QUEUE`` and ``CELERY_GPU_QUEUE``. This is the one place that
maps one to the other.
"""

from __future__ import annotations

from typing import Literal, cast

from django.conf import settings

from myspinbot.settings.broker import is_rabbitmq

Queue = Literal["cpu", "gpu"]
QUEUES: tuple[Queue, ...] = ("cpu", "gpu")


def broker_queues() -> dict[Queue, str]:
    """Each logical queue's broker queue name, ``cpu`` first."""
    return {"cpu": settings.CELERY_CPU_QUEUE, "gpu": settings.CELERY_GPU_QUEUE}


def broker_queue(queue: str) -> str:
    """The broker queue of logical queue ``queue`` (KeyError for another name)."""
    return broker_queues()[cast(Queue, queue)]


def broker_is_rabbitmq() -> bool:
    return is_rabbitmq(str(settings.CELERY_BROKER_URL))


def logical_queue(broker_name: str) -> Queue | None:
    """The logical queue a broker queue serves, or None for a queue that is not ours."""
    for queue, name in broker_queues().items():
        if name == broker_name:
            return queue
    return None
