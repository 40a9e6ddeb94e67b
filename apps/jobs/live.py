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
import json
import logging
import os
import threading
import weakref
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from channels.db import database_sync_to_async
from channels.layers import get_channel_layer
from django.conf import settings

from apps.graphs.walker import NodeState
from apps.jobs.models import Job, JobEvent

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


# --- Receiving: one hub per server process ---------------------------------------------

# Which node state each node event leaves its node in (``walker.NodeState``).
NODE_STATUS: dict[str, NodeState] = {
    "node.queued": "queued",
    "node.started": "running",
    "node.progress": "running",
    "node.retrying": "queued",
    "node.completed": "completed",
    "node.cached": "completed",
    "node.failed": "failed",
    "node.skipped": "skipped",
    "node.cancelled": "cancelled",
}

CATCH_UP_PAGE = 500


def client_event(event: dict[str, Any]) -> dict[str, Any]:
    """A ``JobEvent.to_json()`` dict in the ``/ws/jobs/`` form."""
    return {
        "type": "event",
        "jobId": event["job_id"],
        "seq": event["seq"],
        "event": event["type"],
        "nodeId": event["node_id"],
        "status": event["job_status"],
        "progress": event["job_progress"],
        "nodeStatus": NODE_STATUS.get(event["type"]),
        "payload": event["payload"],
        "timestamp": event["created_at"],
    }


def encode(event: dict[str, Any]) -> Frame:
    """An event's seq and its ``/ws/jobs/`` text frame, encoded once for every socket."""
    return int(event["seq"]), json.dumps(client_event(event))


Frame = tuple[int, str]  # (seq, the text frame sent to every subscriber)


@database_sync_to_async
def events_between(job_id: str, after: int, before: int | None, limit: int) -> list[dict[str, Any]]:
    """Up to ``limit`` events with ``after < seq < before``, in order."""
    rows = JobEvent.objects.filter(job_id=job_id, seq__gt=after)
    if before is not None:
        rows = rows.filter(seq__lt=before)
    return [row.to_json() for row in rows.order_by("seq")[:limit]]


@database_sync_to_async
def last_seqs(job_ids: list[str]) -> dict[str, int]:
    """The last committed event seq of each job."""
    rows = Job.objects.filter(pk__in=job_ids).values_list("pk", "event_seq")
    return {str(pk): int(seq) for pk, seq in rows}


class Subscriber(Protocol):
    """A socket the hub writes frames to (``consumers.JobEventsConsumer``)."""

    async def send(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        """Write one text frame to the socket."""


@dataclass(eq=False)
class Subscription:
    """One socket's subscription to one job: the last seq written to it, and while its
    catch-up from the database runs, the live frames that arrived meanwhile."""

    socket: Subscriber
    job_id: str
    last: int
    ready: bool = False
    pending: list[Frame] = field(default_factory=list)


class Hub:
    """The ``/ws/jobs/`` subscriptions of one server process (one per event loop).

    The hub, not each socket, is the channel layer's member of a job's group: each event
    reaches the process once, is decoded once and encoded once (:func:`encode`), and the
    same text frame is written to every socket subscribed to the job, in seq order. A
    missed range (live messages lost, or the hub's periodic check finds the database
    ahead) is read from the database once for all the job's sockets that lack it, and
    concurrent identical reads (sockets subscribing together from the same seq) share one
    query. Authorization stays with each socket: it checks its credential and the job's
    owner before :meth:`subscribe`, and :meth:`drop` removes it when the credential fails.

    Frames are compressed, or not, per connection by the server (permessage-deflate keeps a
    compression context per socket, so identical frames cannot share one compressed copy);
    the server runs with permessage-deflate off: event frames are a few hundred bytes, and
    compressing each one once per socket cost more than it saved.
    """

    def __init__(self) -> None:
        self.jobs: dict[str, list[Subscription]] = {}
        self.locks: dict[str, asyncio.Lock] = {}
        self.membership = asyncio.Lock()
        self.channel: str | None = None
        self.tasks: list[asyncio.Task[None]] = []
        self.reads: dict[tuple[str, int, int | None, int | None], asyncio.Future[list[Frame]]]
        self.reads = {}

    # -- membership ---------------------------------------------------------------------

    async def subscribe(self, socket: Subscriber, job_id: str, since: int) -> Subscription:
        """Register ``socket`` for ``job_id`` from ``since`` (not yet ready: live frames
        wait in ``pending`` until :meth:`catch_up` has written the stored ones)."""
        layer = get_channel_layer()
        assert layer is not None, "WebSockets need a channel layer"
        subscription = Subscription(socket, job_id, since)
        async with self.membership:
            if self.channel is None:
                self.channel = await layer.new_channel("hub.")
                self.tasks = [
                    asyncio.create_task(self.read_live(layer, self.channel)),
                    asyncio.create_task(self.reconcile_every_ping()),
                ]
            subscriptions = self.jobs.get(job_id)
            if subscriptions is None:
                # Joined before the caller reads the database: an event committed
                # meanwhile is in the read or arrives live (dropped there if in both).
                await layer.group_add(group_name(job_id), self.channel)
                subscriptions = self.jobs[job_id] = []
                self.locks[job_id] = asyncio.Lock()
            subscriptions[:] = [s for s in subscriptions if s.socket is not socket]
            subscriptions.append(subscription)
        return subscription

    async def unsubscribe(self, socket: Subscriber, job_id: str) -> bool:
        """Stop writing ``job_id``'s events to ``socket``; whether it was subscribed."""
        layer = get_channel_layer()
        async with self.membership:
            subscriptions = self.jobs.get(job_id, [])
            kept = [s for s in subscriptions if s.socket is not socket]
            found = len(kept) < len(subscriptions)
            subscriptions[:] = kept
            if job_id in self.jobs and not kept:
                del self.jobs[job_id], self.locks[job_id]
                if layer is not None and self.channel is not None:
                    await layer.group_discard(group_name(job_id), self.channel)
            if not self.jobs and self.channel is not None:
                self.channel = None  # the reader's cancel gives the layer's channel up
                for task in self.tasks:
                    task.cancel()
                self.tasks = []
        return found

    async def drop(self, socket: Subscriber) -> None:
        """Remove every subscription of ``socket`` (closed, or its credential failed)."""
        for job_id in [j for j, subs in self.jobs.items() if any(s.socket is socket for s in subs)]:
            await self.unsubscribe(socket, job_id)

    # -- writing ------------------------------------------------------------------------

    async def catch_up(
        self, subscription: Subscription, caught_up: Callable[[], Awaitable[None]]
    ) -> None:
        """Write the stored events after ``subscription.last``, call ``caught_up`` (the
        socket's "subscribed"), then write what arrived live meanwhile and mark the
        subscription ready for live frames."""
        job_id = subscription.job_id
        while True:
            page = await self.stored(job_id, subscription.last, None, CATCH_UP_PAGE)
            await self.write(subscription, page)
            if len(page) < CATCH_UP_PAGE:
                break
        lock = self.locks.get(job_id)
        if lock is None:  # unsubscribed meanwhile
            return
        async with lock:  # live delivery of this job waits: nothing overtakes the pending
            await caught_up()
            pending, subscription.pending = subscription.pending, []
            await self.deliver(job_id, [subscription], pending)
            subscription.ready = True

    async def live(self, event: dict[str, Any]) -> None:
        """One event from the channel layer: to every socket subscribed to its job."""
        job_id = str(event["job_id"])
        lock = self.locks.get(job_id)
        if lock is None:
            return
        frame = encode(event)
        async with lock:
            ready: list[Subscription] = []
            for subscription in self.jobs.get(job_id, []):
                if subscription.ready:
                    ready.append(subscription)
                else:
                    subscription.pending.append(frame)
            await self.deliver(job_id, ready, [frame])

    async def deliver(
        self, job_id: str, subscriptions: list[Subscription], frames: list[Frame]
    ) -> None:
        """Write ``frames`` (ascending seqs) to each subscription, each from its last seq
        on; the range some of them lack before the first frame is read once for all."""
        if not subscriptions or not frames:
            return
        after = min(subscription.last for subscription in subscriptions)
        if after < frames[0][0] - 1:
            frames = [*await self.stored(job_id, after, frames[0][0], None), *frames]
        for subscription in subscriptions:
            await self.write(subscription, frames)

    async def write(self, subscription: Subscription, frames: list[Frame]) -> None:
        for seq, text in frames:
            if seq <= subscription.last:
                continue
            if seq > subscription.last + 1 and subscription.ready:
                return  # a gap this call cannot fill: the next reconcile does
            try:
                await subscription.socket.send(text_data=text)
            except Exception:  # the socket went away; its disconnect drops it
                logger.debug("could not write to a closed socket", exc_info=True)
                return
            subscription.last = seq

    async def stored(
        self, job_id: str, after: int, before: int | None, limit: int | None
    ) -> list[Frame]:
        """Encoded stored events with ``after < seq < before`` (all of them, or a page);
        identical reads in flight at the same time share one query."""
        key = (job_id, after, before, limit)
        shared = self.reads.get(key)
        if shared is not None:
            return await asyncio.shield(shared)
        future: asyncio.Future[list[Frame]] = asyncio.get_running_loop().create_future()
        self.reads[key] = future
        try:
            frames: list[Frame] = []
            while True:
                page = await events_between(
                    job_id, frames[-1][0] if frames else after, before, limit or CATCH_UP_PAGE
                )
                frames.extend(encode(event) for event in page)
                if limit is not None or len(page) < CATCH_UP_PAGE:
                    break
            future.set_result(frames)
            return frames
        except BaseException as error:
            future.set_exception(error)
            future.exception()  # retrieved: no "never retrieved" warning when nobody waits
            raise
        finally:
            del self.reads[key]

    # -- background ---------------------------------------------------------------------

    async def read_live(self, layer: Any, channel: str) -> None:
        while True:
            try:
                message = await layer.receive(channel)
                if message.get("type") == "job.event":
                    await self.live(message["event"])
            except Exception:  # one bad event or a broken read must not end delivery
                logger.exception("could not receive or deliver a live event")
                await asyncio.sleep(0.5)

    async def reconcile_every_ping(self) -> None:
        """Every ping interval, write what the database holds beyond the last seq each
        ready socket got: a lost live message (e.g. a job's last) arrives within one
        interval. One query for all the process's jobs, one read per job behind."""
        while True:
            await asyncio.sleep(float(getattr(settings, "MYSPINBOT_WS_PING_INTERVAL", 20)))
            try:
                await self.reconcile()
            except Exception:
                logger.exception("could not reconcile the subscribed jobs")

    async def reconcile(self) -> None:
        if not self.jobs:
            return
        for job_id, seq in (await last_seqs(list(self.jobs))).items():
            lock = self.locks.get(job_id)
            if lock is None:
                continue
            async with lock:
                behind = [s for s in self.jobs.get(job_id, []) if s.ready and s.last < seq]
                if behind:
                    after = min(s.last for s in behind)
                    await self.deliver(job_id, behind, await self.stored(job_id, after, None, None))


_hubs: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Hub] = weakref.WeakKeyDictionary()


def hub() -> Hub:
    """This process's hub (of the running event loop: a server has one)."""
    loop = asyncio.get_running_loop()
    found = _hubs.get(loop)
    if found is None:
        found = _hubs[loop] = Hub()
    return found
