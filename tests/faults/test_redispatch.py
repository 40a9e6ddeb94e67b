"""A queued node whose message was lost (a broker restarted without persistence) is sent
again after ``MYSPINBOT_REDISPATCH_AFTER`` by the workers' sweeper, and runs once."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest
from django.conf import settings
from django.contrib.auth.models import User

from apps.jobs import engine
from apps.jobs.models import NodeRun
from apps.jobs.sweeper import sweep
from myspinbot.celery import app
from testkit import broker
from testkit.graphs import chain, event_types, wait_for_job
from testkit.services import CeleryWorker

pytestmark = pytest.mark.django_db(transaction=True)


def test_a_lost_queued_message_is_sent_again_after_redispatch_after(
    start_worker: Callable[..., CeleryWorker],
) -> None:
    user = User.objects.create_user("ada")
    job = engine.submit_job(user, chain("debug.echo", "debug.echo"))
    run = NodeRun.objects.get(job=job, node_id="n0")
    assert broker.queue_length(app, settings.CELERY_CPU_QUEUE) == 1
    broker.purge(app, [settings.CELERY_CPU_QUEUE])  # the broker loses the message
    submitted = time.monotonic()

    with pytest.MonkeyPatch.context() as patch:  # a fresh message is not sent again
        patch.setattr(settings, "MYSPINBOT_REDISPATCH_AFTER", 5.0)
        assert sweep().resent == []
    assert broker.queue_length(app, settings.CELERY_CPU_QUEUE) == 0

    worker = start_worker(
        "cpu",
        [settings.CELERY_CPU_QUEUE],
        env={"MYSPINBOT_REDISPATCH_AFTER": "5", "MYSPINBOT_SWEEP_INTERVAL": "0.5"},
    )
    job = wait_for_job(job, timeout=60)

    assert job.status == "completed"
    assert time.monotonic() - submitted >= 5.0
    resent = NodeRun.objects.get(pk=run.pk)
    assert resent.attempt == 1  # the same attempt, sent again: no retry, no lost attempt
    assert resent.dispatched_at > run.dispatched_at
    assert event_types(job, "n0") == ["node.queued", "node.started", "node.completed"]
    assert event_types(job, "n1") == ["node.queued", "node.started", "node.completed"]
    assert worker.log_path is not None
    assert f"resent=['{run.task_id}']" in worker.log_path.read_text()
