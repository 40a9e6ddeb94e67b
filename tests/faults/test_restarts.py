"""Restarting Redis or the ASGI server while jobs run: workers and the web process
reconnect, every job completes, and WebSocket clients that resubscribe with the last
seq they saw end up with every event of their jobs, in order, none twice."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest
from django.conf import settings
from django.contrib.auth.models import User

from apps.jobs.models import Job, JobEvent
from testkit.graphs import edge, graph, node
from tests.faults.stack import Api, Stack, Subscriber

pytestmark = pytest.mark.django_db(transaction=True)


def sleepy_chain(index: int, length: int = 4, seconds: float = 0.5) -> dict[str, Any]:
    nodes = [node(f"s{step}", "debug.sleep", params={"seconds": seconds}) for step in range(length)]
    document = graph(nodes, [edge(f"s{step}", f"s{step + 1}") for step in range(length - 1)])
    document["workflowId"] = f"fault-{index}"
    return document


def assert_every_event_once_in_order(subscribers: list[Subscriber]) -> None:
    for subscriber in subscribers:
        assert subscriber.errors == []
        for job_id, received in subscriber.events.items():
            stored = list(
                JobEvent.objects.filter(job_id=job_id)
                .order_by("seq")
                .values_list("seq", "type", "node_id")
            )
            assert [(m["seq"], m["event"], m["nodeId"]) for m in received] == stored
            assert [m["seq"] for m in received] == list(range(1, len(stored) + 1))


def wait_for_events(job_ids: list[str], count: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while JobEvent.objects.filter(job_id__in=job_ids).count() < count:
        assert time.monotonic() < deadline, f"fewer than {count} events after {timeout}s"
        time.sleep(0.1)


def start_subscribers(api: Api, stack: Stack, job_ids: list[str], clients: int) -> list[Subscriber]:
    assert stack.web is not None
    subscribers = [Subscriber(stack.web.ws, api.token, job_ids[i::clients]) for i in range(clients)]
    for subscriber in subscribers:
        subscriber.start()
    for subscriber in subscribers:
        assert subscriber.subscribed.wait(30), "a client did not get subscribed"
    return subscribers


def finish(subscribers: list[Subscriber], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    for subscriber in subscribers:
        subscriber.join(max(0.1, deadline - time.monotonic()))
        subscriber.stop()


def test_clients_reconnect_to_a_restarted_web_server_with_since_and_miss_nothing(
    stack: Stack, api_for: Callable[[User], Api]
) -> None:
    web = stack.start_web()
    api = api_for(User.objects.create_user("ada"))
    stack.start_worker("cpu", [settings.CELERY_CPU_QUEUE], concurrency=2)
    job_ids = [api.submit(sleepy_chain(index)) for index in range(4)]
    subscribers = start_subscribers(api, stack, job_ids, clients=3)
    wait_for_events(job_ids, 12)

    web.stop()  # SIGTERM: uvicorn closes every socket
    time.sleep(1.0)  # the jobs run on while nobody serves the clients
    web.start()
    statuses = api.wait_finished(job_ids, timeout=120)
    finish(subscribers)

    assert Counter(statuses.values()) == {"completed": 4}
    assert [subscriber.connections >= 2 for subscriber in subscribers] == [True] * 3
    assert [len(subscriber.finished) for subscriber in subscribers] == [2, 1, 1]
    assert_every_event_once_in_order(subscribers)


@pytest.mark.slow
def test_a_redis_restart_mid_run_loses_no_job_and_no_event(
    stack: Stack, api_for: Callable[[User], Api]
) -> None:
    web = stack.start_web()
    api = api_for(User.objects.create_user("ada"))
    cpu = [settings.CELERY_CPU_QUEUE]
    stack.start_worker("cpu-a", cpu, concurrency=2)
    stack.start_worker("cpu-b", cpu, concurrency=2)
    job_ids = [api.submit(sleepy_chain(index)) for index in range(10)]
    subscribers = start_subscribers(api, stack, job_ids, clients=4)
    wait_for_events(job_ids, 40)
    running = Job.objects.filter(pk__in=job_ids).exclude(status__in=Job.FINISHED).count()

    stack.redis.stop()  # keeps nothing on disk: queued messages and unacked ones are gone
    down = api.request("GET", "/readyz", auth=False)
    time.sleep(3.0)
    stack.redis.start()
    later = [api.submit(sleepy_chain(index)) for index in range(10, 12)]
    statuses = api.wait_finished(job_ids + later, timeout=240)
    finish(subscribers, timeout=90)

    assert running == 10  # the restart hit every job mid-run
    assert down.status == 503
    assert down.body["down"] == ["redis"]
    assert Counter(statuses.values()) == {"completed": 12}
    assert [len(subscriber.finished) for subscriber in subscribers] == [3, 3, 2, 2]
    assert_every_event_once_in_order(subscribers)
    for job in Job.objects.filter(pk__in=job_ids + later):
        completed = JobEvent.objects.filter(job=job, type="node.completed")
        assert sorted(completed.values_list("node_id", flat=True)) == ["s0", "s1", "s2", "s3"]
    assert web.process is not None
    assert web.process.poll() is None  # the same web process throughout
