"""Publishing committed job events to WebSocket subscribers through the channel layer.

Events go to the group ``job.<id>`` as ``{"type": "job.event", "event": <to_json()>}``,
one message per event, in sequence order. Publishing happens after commit and never
fails the caller: the database is the record, and a subscriber that misses a live
message fills the gap from it (see ``consumers``).

Callers are sync code (Celery tasks, Django views run in a thread pool). Calling
``async_to_sync(layer.group_send)`` there would start a new event loop per call, and
channels_redis keeps its connection pools per event loop, so every event would open a
new Redis connection. Instead each process keeps one :class:`Publisher`: a daemon thread
running one event loop for the life of the process, so the layer's pool for that loop
is reused. After a fork (prefork Celery children) the child starts a thread of its own.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import os
import threading
from collections.abc import Sequence
from typing import Any

from channels.layers import get_channel_layer

from apps.jobs.models import JobEvent

logger = logging.getLogger(__name__)


def group_name(job_id: object) -> str:
    return f"job.{job_id}"


def message(event: JobEvent) -> dict[str, Any]:
    """The channel-layer message carrying one event."""
    return {"type": "job.event", "event": event.to_json()}


class Publisher:
    """Sends channel-layer messages from sync code on one long-lived event loop.

    :meth:`send` hands the messages to the loop and returns at once: publishing stays off
    the caller's path (a worker finishing a node does not wait for Redis). Sends run one
    at a time, in the order they were handed over, behind a lock that hands over in FIFO
    order, so events still leave in the order they were committed.
    """

    def __init__(self) -> None:
        self._reset()

    def _reset(self) -> None:
        self._guard = threading.Lock()
        self._pid: int | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._order: asyncio.Lock | None = None

    def _running_loop(self) -> asyncio.AbstractEventLoop:
        with self._guard:
            alive = self._thread is not None and self._thread.is_alive()
            if self._loop is None or self._pid != os.getpid() or not alive:
                loop = asyncio.new_event_loop()
                thread = threading.Thread(
                    target=loop.run_forever, name="myspinbot-live-publisher", daemon=True
                )
                thread.start()
                self._loop, self._thread, self._pid = loop, thread, os.getpid()
                self._order = None
            return self._loop

    async def _send(self, sends: list[tuple[str, dict[str, Any]]]) -> None:
        if self._order is None:  # created on the loop that uses it
            self._order = asyncio.Lock()
        async with self._order:
            layer = get_channel_layer()
            if layer is None:
                return
            for group, body in sends:
                await layer.group_send(group, body)

    def send(self, sends: list[tuple[str, dict[str, Any]]]) -> concurrent.futures.Future[None]:
        """Queue ``(group, message)`` pairs for sending, in order; failures are logged."""
        try:
            loop = self._running_loop()
            future = asyncio.run_coroutine_threadsafe(self._send(sends), loop)
        except Exception as error:
            logger.exception("could not schedule %d live message(s)", len(sends))
            failed: concurrent.futures.Future[None] = concurrent.futures.Future()
            failed.set_exception(error)
            return failed
        future.add_done_callback(lambda done: _log_failure(done, len(sends)))
        return future


def _log_failure(future: concurrent.futures.Future[None], count: int) -> None:
    if not future.cancelled() and future.exception() is not None:
        logger.error("could not publish %d live message(s)", count, exc_info=future.exception())


_publisher = Publisher()
# A lock held by another thread at fork time would never be released in the child.
os.register_at_fork(after_in_child=_publisher._reset)


def publish(events: Sequence[JobEvent]) -> concurrent.futures.Future[None] | None:
    """Queue committed ``events`` for their jobs' groups, in order; never raises.

    Returns the send's future (tests wait on it); callers need not."""
    if not events:
        return None
    return _publisher.send([(group_name(event.job_id), message(event)) for event in events])
