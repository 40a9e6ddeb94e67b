"""System checks of the engine's configuration against the services it runs."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.checks import Error, Tags, Warning, register

from apps.capabilities.registry import get_registry
from myspinbot.queues import is_rabbitmq


def longest_task_seconds() -> int:
    """The most seconds any service's task may run: its limit plus the hard-limit grace."""
    limits = [capability.timeout_seconds for capability in get_registry().all()]
    return max(limits, default=0) + settings.MYSPINBOT_HARD_TIMEOUT_GRACE


@register("celery")
def visibility_timeout_covers_every_task(**_: Any) -> list[Error]:
    """Redis hands an unacknowledged message to another worker after the visibility
    timeout; shorter than a task's limit, a task still running would start twice."""
    if not str(settings.CELERY_BROKER_URL).startswith(("redis://", "rediss://")):
        return []
    visibility = int(settings.CELERY_BROKER_TRANSPORT_OPTIONS["visibility_timeout"])
    longest = longest_task_seconds()
    if visibility > longest:
        return []
    return [
        Error(
            f"CELERY_VISIBILITY_TIMEOUT ({visibility}s) must exceed the longest task "
            f"({longest}s: a service's timeoutSeconds plus MYSPINBOT_HARD_TIMEOUT_GRACE)",
            hint="raise CELERY_VISIBILITY_TIMEOUT",
            id="jobs.E001",
        )
    ]


@register("celery")
def consumer_timeout_covers_every_task(**_: Any) -> list[Error]:
    """RabbitMQ closes the channel of a consumer holding an unacknowledged delivery for
    longer than its ``consumer_timeout`` and redelivers the message, which the next worker
    takes for a lost attempt: shorter than a task's limit, a task still running would be
    taken over."""
    if not is_rabbitmq(str(settings.CELERY_BROKER_URL)):
        return []
    timeout = int(settings.CELERY_CONSUMER_TIMEOUT)
    longest = longest_task_seconds()
    if timeout > longest:
        return []
    return [
        Error(
            f"CELERY_CONSUMER_TIMEOUT ({timeout}s) must exceed the longest task "
            f"({longest}s: a service's timeoutSeconds plus MYSPINBOT_HARD_TIMEOUT_GRACE)",
            hint="raise consumer_timeout on the RabbitMQ server (rabbitmq.conf, in ms) "
            "and CELERY_CONSUMER_TIMEOUT with it",
            id="jobs.E002",
        )
    ]


@register(Tags.security, deploy=True)
def download_links_are_signed_read_only(**_: Any) -> list[Warning]:
    """A presigned link carries the access key id that signed it and lets its holder do
    what that identity may do with the object; signed by the root identity, every link
    shown to a user names the key that can write and delete the whole bucket."""
    if not settings.S3_BUCKET or settings.S3_SIGNING_ACCESS_KEY_ID not in {
        "",
        settings.S3_ACCESS_KEY_ID,
    }:
        return []
    return [
        Warning(
            "download links are signed with the storage's own identity "
            "(S3_SIGNING_ACCESS_KEY_ID is unset or the same as S3_ACCESS_KEY_ID)",
            hint="create a read-only identity on the bucket and set "
            "S3_SIGNING_ACCESS_KEY_ID / S3_SIGNING_SECRET_ACCESS_KEY (deploy/provision.py does)",
            id="jobs.W010",
        )
    ]
