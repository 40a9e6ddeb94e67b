"""A job submitted while Redis is down: the web process stores it and answers 201, the
dispatch stays in the outbox, and once Redis is back a worker's sweeper sends it within
seconds, with ``MYSPINBOT_REDISPATCH_AFTER`` at its production 600 s."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest
from django.conf import settings
from django.contrib.auth.models import User

from apps.jobs.models import NodeRun
from testkit.graphs import chain
from tests.faults.stack import Api, Stack

# Both tests stop the Redis broker (it keeps nothing on disk): they run on Redis whatever
# BROKER says; RabbitMQ keeps its quorum queues across a restart.
pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.parametrize("broker_kind", ["redis"], indirect=True),
]


@pytest.mark.slow
def test_a_job_submitted_while_the_broker_is_down_runs_seconds_after_it_returns(
    stack: Stack, api_for: Callable[[User], Api]
) -> None:
    stack.env["MYSPINBOT_REDISPATCH_AFTER"] = "600"
    stack.env["MYSPINBOT_UNSENT_RESEND_AFTER"] = "1"
    stack.start_web()
    api = api_for(User.objects.create_user("ada"))
    stack.start_worker("cpu", [settings.CELERY_CPU_QUEUE])

    stack.redis.stop()
    job_id = api.submit(chain("debug.echo", "debug.echo"))  # 201: stored, not yet sent
    unsent = NodeRun.objects.get(job_id=job_id, node_id="n0")
    stack.redis.start()
    back = time.monotonic()
    statuses = api.wait_finished([job_id], timeout=60)
    took = time.monotonic() - back

    assert (unsent.status, unsent.attempt, unsent.sent_at) == ("queued", 1, None)
    assert statuses == {job_id: "completed"}
    assert took < 15.0, f"ran {took:.1f}s after Redis came back"
    assert NodeRun.objects.get(pk=unsent.pk).attempt == 1  # sent late, not retried
    print(f"lost dispatch: job completed {took:.1f}s after Redis came back")


@pytest.mark.slow
def test_a_message_lost_in_a_redis_restart_is_sent_again_within_seconds(
    stack: Stack, api_for: Callable[[User], Api]
) -> None:
    stack.env["MYSPINBOT_REDISPATCH_AFTER"] = "600"
    stack.start_web()
    api = api_for(User.objects.create_user("ada"))
    job_id = api.submit(chain("debug.echo", "debug.echo"))  # sent; no worker takes it yet
    sent = NodeRun.objects.get(job_id=job_id, node_id="n0")

    stack.redis.stop()  # keeps nothing on disk: the queued message is gone
    stack.redis.start()
    stack.start_worker("cpu", [settings.CELERY_CPU_QUEUE])
    ready = time.monotonic()
    statuses = api.wait_finished([job_id], timeout=60)
    took = time.monotonic() - ready

    assert sent.sent_at is not None
    assert statuses == {job_id: "completed"}
    assert took < 15.0, f"ran {took:.1f}s after the worker was ready"
    assert NodeRun.objects.get(pk=sent.pk).attempt == 1  # the same attempt, sent again
    log = stack.workers[0].log_path
    assert log is not None
    assert f"forgotten=['{sent.task_id}']" in log.read_text()
    print(f"redis restart: job completed {took:.1f}s after the worker was ready")
