"""The broker's redelivery deadline (Redis: visibility timeout; RabbitMQ: consumer
timeout) covers the longest task any service may run."""

from __future__ import annotations

from typing import Any

from django.core.checks import run_checks

from apps.capabilities.registry import get_registry
from apps.jobs.checks import (
    consumer_timeout_covers_every_task,
    longest_task_seconds,
    visibility_timeout_covers_every_task,
)
from myspinbot.celery import app


def test_the_configured_visibility_timeout_outlasts_lora_training() -> None:
    lora = get_registry().get("lora.train")
    visibility = app.conf.broker_transport_options["visibility_timeout"]

    assert lora.timeout_seconds == 14_400
    assert longest_task_seconds() == 14_400 + 30
    assert visibility == 21_600
    assert app.conf.result_backend_transport_options["visibility_timeout"] == 21_600
    assert visibility_timeout_covers_every_task() == []
    assert [check.id for check in run_checks(tags=["celery"])] == []


def test_a_visibility_timeout_shorter_than_a_task_fails_the_check(settings: Any) -> None:
    settings.CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": 7200}

    errors = visibility_timeout_covers_every_task()

    assert [error.id for error in errors] == ["jobs.E001"]
    assert errors[0].msg == (
        "CELERY_VISIBILITY_TIMEOUT (7200s) must exceed the longest task (14430s: a "
        "service's timeoutSeconds plus MYSPINBOT_HARD_TIMEOUT_GRACE)"
    )
    assert [check.id for check in run_checks(tags=["celery"])] == ["jobs.E001"]


def test_on_rabbitmq_a_consumer_timeout_shorter_than_a_task_fails_the_check(
    settings: Any,
) -> None:
    settings.CELERY_BROKER_URL = "amqp://guest:guest@127.0.0.1:5672/myspinbot"
    settings.CELERY_CONSUMER_TIMEOUT = 14_430  # RabbitMQ's timeout must exceed, not equal

    errors = consumer_timeout_covers_every_task()

    assert [error.id for error in errors] == ["jobs.E002"]
    assert errors[0].msg == (
        "CELERY_CONSUMER_TIMEOUT (14430s) must exceed the longest task (14430s: a "
        "service's timeoutSeconds plus MYSPINBOT_HARD_TIMEOUT_GRACE)"
    )
    # The Redis check does not apply to RabbitMQ, whatever its transport options say.
    assert [check.id for check in run_checks(tags=["celery"])] == ["jobs.E002"]
    settings.CELERY_CONSUMER_TIMEOUT = 21_600
    assert consumer_timeout_covers_every_task() == []
    assert [check.id for check in run_checks(tags=["celery"])] == []


def test_on_redis_the_consumer_timeout_is_not_checked(settings: Any) -> None:
    settings.CELERY_CONSUMER_TIMEOUT = 60

    assert consumer_timeout_covers_every_task() == []
