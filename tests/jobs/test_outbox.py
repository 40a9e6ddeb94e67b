"""The dispatch outbox: a node is queued with its message unsent in the same transaction,
the relay marks it sent once the broker has it, and the sweeper sends what the broker
refused within seconds instead of after ``MYSPINBOT_REDISPATCH_AFTER``."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from django.conf import settings
from django.contrib.auth.models import User
from kombu.exceptions import OperationalError
from kombu.messaging import Producer

from apps.jobs import engine
from apps.jobs.execution import claim, fail
from apps.jobs.models import NodeRun
from apps.jobs.sweeper import sweep
from myspinbot.celery import app
from myspinbot.errors import TransientError
from testkit import broker
from testkit.graphs import chain, event_types, wait_for_job
from testkit.services import CeleryWorker

pytestmark = pytest.mark.django_db(transaction=True)


def _queued_messages() -> int:
    return broker.queue_length(app, settings.CELERY_CPU_QUEUE)


@pytest.fixture
def empty_queue() -> Iterator[None]:
    broker.purge(app, [settings.CELERY_CPU_QUEUE])
    yield
    broker.purge(app, [settings.CELERY_CPU_QUEUE])


@pytest.fixture
def broker_refuses(monkeypatch: pytest.MonkeyPatch) -> Callable[[], None]:
    """Every publish from this process fails as an unreachable broker does (after kombu's
    own retries); call the returned function to let the broker work again."""

    monkeypatch.setattr(Producer, "publish", _refused)
    return lambda: monkeypatch.undo()


@pytest.fixture
def user() -> User:
    return User.objects.create_user("ada")


def test_a_sent_dispatch_is_marked_sent(user: User, empty_queue: None) -> None:
    job = engine.submit_job(user, chain("debug.noop", "debug.noop"))

    run = NodeRun.objects.get(job=job, node_id="n0")
    assert run.sent_at is not None
    assert run.sent_at >= run.dispatched_at
    assert NodeRun.objects.get(job=job, node_id="n1").sent_at is None  # still pending
    assert _queued_messages() == 1
    assert sweep().unsent == []


def test_a_dispatch_the_broker_refused_is_sent_by_the_sweeper_once(
    user: User, empty_queue: None, broker_refuses: Callable[[], None], settings: Any
) -> None:
    settings.MYSPINBOT_UNSENT_RESEND_AFTER = 0.5

    job = engine.submit_job(user, chain("debug.noop", "debug.noop"))  # does not raise

    run = NodeRun.objects.get(job=job, node_id="n0")
    assert (run.status, run.attempt, run.sent_at) == ("queued", 1, None)
    assert sweep().unsent == []  # too fresh: the relay may still be sending it
    broker_refuses()  # the broker is back
    assert _queued_messages() == 0
    time.sleep(0.6)

    assert sweep().unsent == [run.task_id]
    assert sweep().unsent == []  # sent once, not again
    assert _queued_messages() == 1
    sent = NodeRun.objects.get(pk=run.pk)
    assert (sent.status, sent.attempt, sent.task_id) == ("queued", 1, run.task_id)
    assert sent.sent_at is not None
    assert event_types(job, "n0") == ["node.queued"]  # a resend is no new attempt


def test_a_refused_resend_stays_unsent_and_is_tried_again(
    user: User, empty_queue: None, broker_refuses: Callable[[], None], settings: Any
) -> None:
    settings.MYSPINBOT_UNSENT_RESEND_AFTER = 0.5
    job = engine.submit_job(user, chain("debug.noop"))
    run = NodeRun.objects.get(job=job)
    time.sleep(0.6)

    assert sweep().unsent == []  # still refused
    assert NodeRun.objects.get(pk=run.pk).sent_at is None
    broker_refuses()
    assert sweep().unsent == []  # the failed try counts as a fresh dispatch
    time.sleep(0.6)
    assert sweep().unsent == [run.task_id]
    assert _queued_messages() == 1


def test_a_retry_is_a_new_outbox_entry_that_a_late_mark_cannot_clear(
    user: User, empty_queue: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    job = engine.submit_job(user, chain("debug.fail"))
    first = NodeRun.objects.get(job=job)
    claimed = claim(str(job.pk), "n0", 1, "inline")
    assert claimed is not None
    monkeypatch.setattr(Producer, "publish", _refused)

    fail(claimed.run, 1, TransientError("flaky", "try again"))

    retried = NodeRun.objects.get(pk=first.pk)
    assert (retried.status, retried.attempt, retried.sent_at) == ("queued", 2, None)
    monkeypatch.undo()
    assert engine.relay([first])  # a late relay of attempt 1 marks nothing of attempt 2
    assert NodeRun.objects.get(pk=first.pk).sent_at is None


def _refused(*_: Any, **__: Any) -> None:
    raise OperationalError("Error 111 connecting to 127.0.0.1:6379. Connection refused.")


def test_a_node_whose_publish_failed_runs_within_seconds(
    user: User, start_worker: Callable[..., CeleryWorker], monkeypatch: pytest.MonkeyPatch
) -> None:
    worker = start_worker(
        "cpu",
        [settings.CELERY_CPU_QUEUE],
        env={"MYSPINBOT_UNSENT_RESEND_AFTER": "1", "MYSPINBOT_SWEEP_INTERVAL": "0.5"},
    )
    monkeypatch.setattr(Producer, "publish", _refused)
    job = engine.submit_job(user, chain("debug.echo", "debug.echo"))
    monkeypatch.undo()  # the broker is back
    refused_at = time.monotonic()

    job = wait_for_job(job, timeout=30)

    took = time.monotonic() - refused_at
    assert job.status == "completed"
    assert took < 5.0, f"took {took:.1f}s"
    assert settings.MYSPINBOT_REDISPATCH_AFTER == 600.0  # not the old 600 s path
    assert event_types(job, "n0") == ["node.queued", "node.started", "node.completed"]
    assert worker.log_path is not None
    assert f"unsent=['{job.pk}:n0:1']" in worker.log_path.read_text()
