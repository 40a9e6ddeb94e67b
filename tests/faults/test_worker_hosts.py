"""Workers on several hosts share one broker: each node runs on a host that serves its
queue, and when one host's worker dies mid-node the node finishes on another host.

The hosts are told apart the way Celery tells them apart, by node name (``name@host``,
the ``-n`` a worker on another machine gets from ``deploy/compose.worker.yml``)."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest
from django.conf import settings
from django.contrib.auth.models import User

from apps.jobs.models import JobEvent, NodeRun
from testkit.graphs import edge, graph, node, wait_for_start
from tests.faults.conftest import BROKERS
from tests.faults.stack import Api, Stack

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.mark.slow
@pytest.mark.parametrize("broker_kind", BROKERS, indirect=True)
def test_nodes_run_on_the_hosts_of_their_queue_and_survive_a_dead_host(
    stack: Stack, api_for: Callable[[User], Api], broker_kind: str
) -> None:
    stack.start_web()
    api = api_for(User.objects.create_user("ada"))
    gpu_box = stack.start_worker("gpu0", [settings.CELERY_GPU_QUEUE], host="gpu-box")
    cpu_boxes = {
        worker.hostname: worker
        for worker in (
            stack.start_worker("cpu", [settings.CELERY_CPU_QUEUE], host="cpu-box-1"),
            stack.start_worker("cpu", [settings.CELERY_CPU_QUEUE], host="cpu-box-2"),
        )
    }
    routed = api.submit(
        graph(
            [node("c", "testing.artifacts", params={"seconds": 0}), node("g", "testing.gpu_echo")],
            [edge("c", "g")],
        )
    )
    assert api.wait_finished([routed], timeout=60) == {routed: "completed"}
    workers = dict(NodeRun.objects.filter(job_id=routed).values_list("node_id", "worker"))
    assert workers["g"] == gpu_box.hostname
    assert workers["c"] in cpu_boxes

    doomed = api.submit(
        graph(
            [node("c", "testing.artifacts", params={"seconds": 5}), node("g", "testing.gpu_echo")],
            [edge("c", "g")],
        )
    )
    first = str(wait_for_start(doomed, "c", 1).payload["worker"])
    time.sleep(1.0)
    cpu_boxes.pop(first).kill()
    (survivor,) = cpu_boxes
    statuses = api.wait_finished([doomed], timeout=90)

    assert statuses == {doomed: "completed"}
    runs = {run.node_id: run for run in NodeRun.objects.filter(job_id=doomed)}
    assert (runs["c"].attempt, runs["c"].lost_attempts, runs["c"].worker) == (2, 1, survivor)
    assert first.endswith("@cpu-box-1") or first.endswith("@cpu-box-2")
    assert (runs["g"].attempt, runs["g"].worker) == (1, gpu_box.hostname)
    retrying = JobEvent.objects.get(job_id=doomed, type="node.retrying")
    expected = "redelivery" if broker_kind == "rabbitmq" else "heartbeat"
    assert retrying.payload["detectedBy"] == expected
