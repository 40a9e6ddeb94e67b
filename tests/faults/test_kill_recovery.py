"""SIGKILL a worker in the middle of a node, with a second worker idle beside it: the node
runs again on the second worker, on each broker, and the test prints how long that took.

On Redis the killed worker's message stays unacknowledged until the visibility timeout
(hours), so the second worker's sweeper takes the node over once its heartbeat is
``MYSPINBOT_HEARTBEAT_TIMEOUT`` old. On RabbitMQ the message returns the moment the
killed worker's connection drops; the second worker receives it again and takes the node
over itself, with no sweeper involved (the node.retrying event says which path ran)."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable

import pytest
from django.conf import settings
from django.contrib.auth.models import User

from apps.jobs.models import Job, JobEvent, NodeRun
from testkit.graphs import graph, node, wait_for_start
from tests.faults.conftest import BROKERS
from tests.faults.stack import Api, Stack

pytestmark = pytest.mark.django_db(transaction=True)

HEARTBEAT_TIMEOUT = 5.0  # FAST_RECOVERY's


@pytest.mark.slow
@pytest.mark.parametrize("broker_kind", BROKERS, indirect=True)
def test_a_node_runs_again_seconds_after_its_worker_is_killed(
    stack: Stack, api_for: Callable[[User], Api], broker_kind: str
) -> None:
    assert stack.env["MYSPINBOT_HEARTBEAT_TIMEOUT"] == str(int(HEARTBEAT_TIMEOUT))
    stack.start_web()
    api = api_for(User.objects.create_user("ada"))
    cpu = [settings.CELERY_CPU_QUEUE]
    victim = stack.start_worker("victim", cpu)
    job_id = api.submit(graph([node("a", "testing.artifacts", params={"seconds": 6})], []))
    first = wait_for_start(job_id, "a", 1)
    assert first.payload["worker"] == victim.hostname
    rescuer = stack.start_worker("rescuer", cpu)
    time.sleep(1.0)  # the node is well into its sleep, the rescuer idle and consuming

    victim.kill()
    killed_at = time.time()
    second = wait_for_start(job_id, "a", 2, timeout=60)
    took = second.created_at.timestamp() - killed_at
    statuses = api.wait_finished([job_id], timeout=60)

    print(f"\n{broker_kind}: SIGKILL to the node running again: {took:.2f} s")
    assert statuses == {job_id: "completed"}
    assert second.payload["worker"] == rescuer.hostname
    run = NodeRun.objects.get(job_id=job_id, node_id="a")
    assert (run.attempt, run.lost_attempts, run.worker) == (2, 1, rescuer.hostname)
    retrying = JobEvent.objects.get(job_id=job_id, type="node.retrying")
    assert retrying.payload["reason"] == "worker_lost"
    completed = JobEvent.objects.filter(job_id=job_id, type="node.completed")
    assert Counter(completed.values_list("node_id", flat=True)) == {"a": 1}
    assert Job.objects.get(pk=job_id).status == "completed"
    if broker_kind == "rabbitmq":
        # Redelivered at once and taken over by the worker that received it.
        assert retrying.payload["detectedBy"] == "redelivery"
        assert took < HEARTBEAT_TIMEOUT, f"{took:.2f}s: no faster than the sweeper"
    else:
        # Only the sweeper can see it: the heartbeat must go stale first.
        assert retrying.payload["detectedBy"] == "heartbeat"
        assert HEARTBEAT_TIMEOUT - 2.0 < took < HEARTBEAT_TIMEOUT + 10.0
