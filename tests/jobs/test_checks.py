"""The broker's visibility timeout covers the longest task any service may run."""

from __future__ import annotations

from typing import Any

from django.core.checks import run_checks

from apps.capabilities.registry import get_registry
from apps.jobs.checks import longest_task_seconds, visibility_timeout_covers_every_task
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
