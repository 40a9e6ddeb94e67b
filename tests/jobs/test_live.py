"""The per-process publisher of live job events, against the real Redis channel layer."""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
import uuid
from typing import Any

import pytest
from channels.layers import get_channel_layer
from django.utils import timezone

from apps.jobs import live
from apps.jobs.models import JobEvent


def event(job_id: uuid.UUID, seq: int) -> JobEvent:
    """An unsaved event: publishing needs no database."""
    return JobEvent(
        job_id=job_id,
        seq=seq,
        type="node.progress",
        node_id="n0",
        payload={"seq": seq},
        job_status="running",
        job_progress=0.5,
        created_at=timezone.now(),
    )


class Listener:
    """A subscriber to a job's group on an event loop of its own (as a server process
    has): the pub/sub layer keeps its subscriptions per loop."""

    def __init__(self, job_id: uuid.UUID) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.layer = get_channel_layer()
        self.channel = self._run(self.layer.new_channel())
        self._run(self.layer.group_add(live.group_name(job_id), self.channel))

    def _run(self, coroutine: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(10)

    def seqs(self, count: int) -> list[int]:
        async def receive() -> list[int]:
            seqs = []
            for _ in range(count):
                message = await asyncio.wait_for(self.layer.receive(self.channel), 5)
                assert message["type"] == "job.event"
                seqs.append(message["event"]["seq"])
            return seqs

        seqs: list[int] = self._run(receive())
        self.loop.call_soon_threadsafe(self.loop.stop)
        return seqs


def test_events_are_published_in_order_on_one_long_lived_loop() -> None:
    job_id = uuid.uuid4()
    listener = Listener(job_id)

    live.publish([event(job_id, 1), event(job_id, 2)])
    loop, thread = live._publisher._loop, live._publisher._thread
    for seq in range(3, 51):
        live.publish([event(job_id, seq)])

    assert listener.seqs(50) == list(range(1, 51))
    assert (live._publisher._loop, live._publisher._thread) == (loop, thread)
    assert thread is not None
    assert thread.is_alive()


def test_a_forked_child_publishes_on_a_thread_of_its_own() -> None:
    job_id = uuid.uuid4()
    listener = Listener(job_id)
    live.publish([event(job_id, 1)])
    parent_thread = live._publisher._thread

    pid = os.fork()
    if pid == 0:  # the child: publish, then leave without running pytest's teardown
        try:
            sent = live.publish([event(job_id, 2)])
            assert sent is not None
            sent.result(5)
            os._exit(0 if live._publisher._thread is not parent_thread else 1)
        finally:
            os._exit(2)
    _, status = os.waitpid(pid, 0)

    assert os.waitstatus_to_exitcode(status) == 0
    assert listener.seqs(2) == [1, 2]


def test_publishing_from_a_running_event_loop_does_not_block_it() -> None:
    job_id = uuid.uuid4()
    listener = Listener(job_id)

    async def from_a_loop() -> None:
        live.publish([event(job_id, 1)])

    asyncio.run(from_a_loop())

    assert listener.seqs(1) == [1]


def test_a_failing_channel_layer_is_logged_not_raised(
    settings: Any, caplog: pytest.LogCaptureFixture
) -> None:
    settings.CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.pubsub.RedisPubSubChannelLayer",
            "CONFIG": {"hosts": ["redis://127.0.0.1:1/0"]},  # nothing listens there
        }
    }

    with caplog.at_level(logging.ERROR, logger="apps.jobs.live"):
        future = live.publish([event(uuid.uuid4(), 1)])
        assert future is not None
        with pytest.raises(Exception, match="127.0.0.1:1"):
            future.result(10)
        deadline = time.monotonic() + 5
        while not caplog.records and time.monotonic() < deadline:
            time.sleep(0.01)

    assert [record.message for record in caplog.records] == ["could not publish 1 live message(s)"]


def test_concurrent_publishers_in_threads_lose_nothing() -> None:
    job_id = uuid.uuid4()
    listener = Listener(job_id)

    def publish_range(start: int) -> None:
        for seq in range(start, start + 25):
            live.publish([event(job_id, seq)])

    threads = [threading.Thread(target=publish_range, args=(start,)) for start in (1, 26)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert sorted(listener.seqs(50)) == list(range(1, 51))
