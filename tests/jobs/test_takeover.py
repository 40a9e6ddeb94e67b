"""A message RabbitMQ delivers again while its node is still running from it: the
receiving worker records the running attempt as lost and runs the next one at once;
every other case (a first delivery, a duplicate, another attempt's message, Redis) is
left to the claim and the sweeper as before. The handler runs in this process."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from django.conf import settings
from django.contrib.auth.models import User

from apps.jobs import engine
from apps.jobs.execution import claim, execute
from apps.jobs.models import Job, JobEvent, NodeRun
from myspinbot.celery import app
from testkit import broker
from testkit.graphs import chain, event_types

pytestmark = pytest.mark.django_db(transaction=True)

RABBITMQ = "amqp://guest:guest@127.0.0.1:5672/myspinbot-test"


@pytest.fixture
def running() -> Iterator[tuple[Job, NodeRun]]:
    """A one-node job whose attempt 1 a worker (now dead) claimed."""
    user = User.objects.create_user("ada")
    job = engine.submit_job(user, chain("debug.echo"))
    assert claim(str(job.pk), "n0", 1, "dead@host-a") is not None
    yield job, NodeRun.objects.get(job=job)
    broker.purge(app, [settings.CELERY_CPU_QUEUE])


@pytest.fixture
def on_rabbitmq(settings: Any) -> None:
    # Only the broker's kind is read on this path; nothing is sent.
    settings.CELERY_BROKER_URL = RABBITMQ


def test_a_redelivered_message_takes_its_running_node_over_and_runs_the_next_attempt(
    running: tuple[Job, NodeRun], on_rabbitmq: None
) -> None:
    job, run = running

    execute(str(job.pk), "n0", 1, "rescuer@host-b", task_id=run.task_id, redelivered=True)

    run.refresh_from_db()
    job.refresh_from_db()
    assert job.status == "completed"
    assert (run.status, run.attempt, run.lost_attempts, run.worker) == (
        "completed",
        2,
        1,
        "rescuer@host-b",
    )
    assert run.task_id == f"{job.pk}:n0:1"  # the message that runs it, so a cancel finds it
    assert run.sent_at is not None  # nothing left in the outbox for the sweeper to send
    assert event_types(job, "n0") == [
        "node.queued",
        "node.started",
        "node.retrying",
        "node.started",
        "node.completed",
    ]
    retrying = JobEvent.objects.get(job=job, type="node.retrying")
    assert retrying.payload == {
        "attempt": 2,
        "reason": "worker_lost",
        "detectedBy": "redelivery",
        "error": {
            "message": "worker dead@host-a stopped answering",
            "code": "worker_lost",
            "details": {"attempt": 1, "worker": "dead@host-a", "detectedBy": "redelivery"},
        },
    }


@pytest.mark.parametrize(
    ("redelivered", "broker_url"),
    [(False, RABBITMQ), (True, "redis://127.0.0.1:6379/0")],
    ids=["first-delivery-on-rabbitmq", "redelivered-on-redis"],
)
def test_a_running_node_is_left_alone_by_a_duplicate_or_on_redis(
    running: tuple[Job, NodeRun], settings: Any, redelivered: bool, broker_url: str
) -> None:
    job, run = running
    settings.CELERY_BROKER_URL = broker_url

    execute(str(job.pk), "n0", 1, "other@host-b", task_id=run.task_id, redelivered=redelivered)

    run.refresh_from_db()
    assert (run.status, run.attempt, run.lost_attempts, run.worker) == (
        "running",
        1,
        0,
        "dead@host-a",
    )
    assert event_types(job, "n0") == ["node.queued", "node.started"]


def test_a_redelivered_message_of_an_attempt_already_replaced_does_nothing(
    running: tuple[Job, NodeRun], on_rabbitmq: None
) -> None:
    job, run = running
    # The sweeper got there first: attempt 2 runs from a message of its own.
    NodeRun.objects.filter(pk=run.pk).update(attempt=2, task_id=f"{job.pk}:n0:2")

    execute(str(job.pk), "n0", 1, "other@host-b", task_id=run.task_id, redelivered=True)

    run.refresh_from_db()
    assert (run.status, run.attempt, run.lost_attempts, run.worker) == (
        "running",
        2,
        0,
        "dead@host-a",
    )


def test_a_node_that_has_lost_too_many_attempts_fails_instead(
    running: tuple[Job, NodeRun], on_rabbitmq: None, settings: Any
) -> None:
    job, run = running
    settings.MYSPINBOT_MAX_LOST_ATTEMPTS = 0

    execute(str(job.pk), "n0", 1, "rescuer@host-b", task_id=run.task_id, redelivered=True)

    run.refresh_from_db()
    job.refresh_from_db()
    assert (run.status, run.attempt, run.error["code"]) == ("failed", 1, "worker_lost")
    assert job.status == "failed"
    assert event_types(job, "n0") == ["node.queued", "node.started", "node.failed"]
