"""RabbitMQ restarted under the platform: a message waiting in a quorum queue survives the
restart (nothing to send again), and a job submitted while the broker is down is stored,
answered 201 and sent by the outbox within seconds of the broker's return.

Restarts the RabbitMQ application of this machine's server (``rabbitmqctl stop_app`` /
``start_app``): every vhost on it sees the restart."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable, Iterator

import pytest
from django.conf import settings
from django.contrib.auth.models import User

from apps.jobs.models import NodeRun
from testkit.graphs import chain
from tests.faults.stack import Api, Stack

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.parametrize("broker_kind", ["rabbitmq"], indirect=True),
]


def _rabbitmqctl(*args: str) -> None:
    subprocess.run(["rabbitmqctl", "-q", *args], check=True, capture_output=True, timeout=120)


@pytest.fixture
def broker_back() -> Iterator[None]:
    """Whatever the test does, the broker runs again afterwards."""
    yield
    _rabbitmqctl("start_app")
    _rabbitmqctl("await_startup", "--timeout", "60")


@pytest.mark.slow
def test_queued_work_survives_a_rabbitmq_restart_and_work_sent_meanwhile_follows(
    stack: Stack, api_for: Callable[[User], Api], broker_back: None
) -> None:
    stack.env["MYSPINBOT_REDISPATCH_AFTER"] = "600"
    stack.env["MYSPINBOT_UNSENT_RESEND_AFTER"] = "1"
    stack.start_web()
    api = api_for(User.objects.create_user("ada"))
    kept = api.submit(chain("debug.echo", "debug.echo"))  # sent; no worker takes it yet
    sent = NodeRun.objects.get(job_id=kept, node_id="n0")

    _rabbitmqctl("stop_app")
    unsent_job = api.submit(chain("debug.echo"))  # 201: stored, the send refused
    unsent = NodeRun.objects.get(job_id=unsent_job, node_id="n0")
    _rabbitmqctl("start_app")
    _rabbitmqctl("await_startup", "--timeout", "60")
    worker = stack.start_worker("cpu", [settings.CELERY_CPU_QUEUE])
    ready = time.monotonic()
    statuses = api.wait_finished([kept, unsent_job], timeout=60)
    took = time.monotonic() - ready

    assert sent.sent_at is not None
    assert (unsent.status, unsent.sent_at) == ("queued", None)
    assert statuses == {kept: "completed", unsent_job: "completed"}
    assert took < 15.0, f"ran {took:.1f}s after the worker was ready"
    # The same attempts; the kept message was delivered as it was, never sent again.
    assert NodeRun.objects.get(pk=sent.pk).attempt == 1
    assert NodeRun.objects.get(pk=unsent.pk).attempt == 1
    assert worker.log_path is not None
    log = worker.log_path.read_text()
    assert f"unsent=['{unsent.task_id}']" in log
    assert f"resent=['{sent.task_id}']" not in log
    print(f"rabbitmq restart: both jobs completed {took:.1f}s after the worker was ready")
