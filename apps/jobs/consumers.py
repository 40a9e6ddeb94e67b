"""WebSocket streams of job events: ``/ws/jobs/`` and the original system's ``/ws``.

Both need an authenticated user (session cookie, or an API token in the
``Authorization: Bearer`` header or the ``?token=`` query parameter, see ``ws_auth``);
otherwise the socket is accepted and closed at once with code 4401. A user sees only
their own jobs. The credential is checked again on every subscribe, when its user's
tokens, account or session change, and every ``MYSPINBOT_WS_AUTH_RECHECK`` seconds: once
it no longer holds, the socket is closed with 4401. A user's sockets beyond
``MYSPINBOT_WS_MAX_PER_USER`` are closed at once with 4429.

``/ws/jobs/`` — the event stream
--------------------------------
Client to server::

    {"action": "subscribe", "jobId": "<uuid>", "since": 0}   # since: last seq seen, default 0
    {"action": "unsubscribe", "jobId": "<uuid>"}
    {"action": "pong"}                                          # answer to a ping
    {"action": "ping"}                                          # answered with {"type": "pong"}

Server to client::

    {"type": "event", "jobId": "<uuid>", "seq": 7, "event": "node.progress",
     "nodeId": "train" | null, "status": "running", "progress": 0.42,
     "nodeStatus": "running" | null, "payload": {...}, "timestamp": "<ISO 8601>"}
    {"type": "subscribed", "jobId": "<uuid>", "seq": 7}    # after the catch-up, last seq sent
    {"type": "unsubscribed", "jobId": "<uuid>"}
    {"type": "error", "jobId": "<uuid>" | null, "error": {"code": "...", "message": "..."}}
    {"type": "ping", "ts": 1718000000.123}                 # unix seconds
    {"type": "pong"}

``status``/``progress`` are the job's as of that event. ``nodeStatus`` is the node's
state the event leads to (``node.*`` events only; ``node.retrying`` → ``queued``,
``node.cached`` → ``completed``). Error codes: ``not_found`` (no such job, not yours, or
not a job id: the socket stays usable), ``bad_request`` (not JSON, not an object, unknown
action), ``too_many_subscriptions``.

On subscribe the process's hub (``live.Hub``) joins the job's channel-layer group if no
socket of the process is subscribed to it yet, then the socket gets every event after
``since`` from the database, then ``subscribed``, then live events; live events that
arrive during the catch-up wait in the hub and follow ``subscribed``. Per socket and job
the hub remembers the last seq written: a live event at or below it is a duplicate and
dropped; a live event further ahead means live messages were lost, and the missing range
is read from the database first, once for all the sockets that lack it (seqs are taken
under the job's row lock, so if seq N+1 is committed, N is too). Every ping interval the
hub also checks the database for events it has not written (a live message can be lost,
e.g. the last one of a job) and writes them.

The server pings every ``MYSPINBOT_WS_PING_INTERVAL`` seconds (default 20) and closes
the socket with code 4408 when nothing (pong or any other message) arrived from the
client for two intervals.

``/ws`` — the original protocol
-------------------------------
``{"action": "subscribe" | "unsubscribe", "jobId"}`` is answered with
``{"action": "response", "message": "subscribed" | "unsubscribed", "jobId"}``, or, as
the original answered a request it could not serve, ``"message": "failed"`` with the
reason in ``"error"`` (``"not found"`` for a job that is not the caller's, an unknown
action, too many subscriptions). After
``subscribed`` the job's current state is pushed, then a new one on every change of the
job's status or progress: ``{"type": "update", "jobId", "status", "progress"}``. These
sockets are not pinged by the application (the original protocol has no pong); the
server's WebSocket-level pings drop dead ones.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from typing import Any

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer
from django.conf import settings

from apps.jobs import live
from apps.jobs.live import NODE_STATUS, client_event, group_name
from apps.jobs.models import Job
from apps.jobs.ws_auth import Credential, SocketSlots, user_group

UNAUTHENTICATED = 4401
TOO_MANY_SOCKETS = 4429
PING_TIMEOUT = 4408
MAX_SUBSCRIPTIONS = 100

__all__ = ["NODE_STATUS", "JobEventsConsumer", "LegacyJobConsumer", "client_event"]


def parse_job_id(value: object) -> str | None:
    """The canonical form of a job id, or None if ``value`` is not a UUID."""
    if not isinstance(value, str):
        return None
    try:
        return str(uuid.UUID(value))
    except ValueError:
        return None


# --- Database (sync, run through database_sync_to_async) -----------------------------


@database_sync_to_async
def owned_job_state(user_id: int, job_id: str) -> tuple[str, float, int] | None:
    """The job's status, progress and last event seq if it exists and is the user's."""
    rows = Job.objects.filter(pk=job_id, owner_id=user_id)
    found = rows.values_list("status", "progress", "event_seq").first()
    return (str(found[0]), float(found[1]), int(found[2])) if found else None


# --- Consumers ------------------------------------------------------------------------


class JobSocket(AsyncJsonWebsocketConsumer):
    """Authentication, message parsing and group membership shared by both protocols."""

    user_id: int | None = None
    last_heard: float = 0.0
    credential: Credential | None = None
    slots: SocketSlots | None = None
    guard: asyncio.Task[None] | None = None

    async def connect(self) -> None:
        self.user_id = None
        self.last_heard = time.monotonic()
        await self.accept()
        user = self.scope.get("user")
        if user is None or not user.is_authenticated or not user.is_active:
            await self.close(code=UNAUTHENTICATED)
            return
        slots = SocketSlots()
        if not await slots.claim(
            user.pk, self.channel_name, self.slot_lapse(), settings.MYSPINBOT_WS_MAX_PER_USER
        ):
            await slots.release(user.pk, self.channel_name)
            await self.close(code=TOO_MANY_SOCKETS)
            return
        self.slots = slots
        self.user_id = user.pk
        self.credential = Credential.of(self.scope)
        await self.channel_layer.group_add(user_group(user.pk), self.channel_name)
        self.guard = asyncio.create_task(self.watch_credential())
        await self.opened()

    @staticmethod
    def recheck_interval() -> float:
        return float(settings.MYSPINBOT_WS_AUTH_RECHECK)

    def slot_lapse(self) -> float:
        return 3 * self.recheck_interval() + 5

    async def credential_holds(self) -> bool:
        """Whether the socket's token or session still authenticates its user; if not,
        the socket is closed with 4401 and False returned."""
        if self.credential is None:
            return False
        if await database_sync_to_async(self.credential.holds)():
            return True
        await self.shut(UNAUTHENTICATED)
        return False

    async def watch_credential(self) -> None:
        while True:
            await asyncio.sleep(self.recheck_interval())
            if not await self.credential_holds():
                return
            if self.slots is not None and self.user_id is not None:
                await self.slots.renew(self.user_id, self.channel_name, self.slot_lapse())

    async def auth_changed(self, message: dict[str, Any]) -> None:
        """A revocation, deactivation or logout of this socket's user was announced."""
        await self.credential_holds()

    async def shut(self, code: int) -> None:
        """Close the socket and give up its slot and its user's group."""
        await self.release()
        await self.close(code=code)

    async def release(self) -> None:
        if self.guard is not None and self.guard is not asyncio.current_task():
            self.guard.cancel()
        self.guard = None
        if self.user_id is not None:
            await self.channel_layer.group_discard(user_group(self.user_id), self.channel_name)
        if self.slots is not None and self.user_id is not None:
            slots, self.slots = self.slots, None
            await slots.release(self.user_id, self.channel_name)
        self.credential = None
        self.user_id = None  # what the client sends from now on is ignored

    async def websocket_disconnect(self, message: dict[str, Any]) -> None:
        await self.release()
        await super().websocket_disconnect(message)

    @property
    def owner(self) -> int:
        assert self.user_id is not None, "only called on authenticated sockets"
        return self.user_id

    async def opened(self) -> None:
        """Called once the socket is accepted and authenticated."""

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        self.last_heard = time.monotonic()
        if self.user_id is None:
            return
        try:
            content = json.loads(text_data) if text_data is not None else None
        except ValueError:
            content = None
        if not isinstance(content, dict):
            await self.bad_request(None, "messages must be JSON objects")
            return
        await self.receive_json(content)

    async def bad_request(self, job_id: str | None, message: str) -> None:
        """Answer a malformed message; each protocol has its own error shape, so both
        consumers below define it (this base class is never routed to)."""
        raise NotImplementedError(f"{type(self).__name__} must answer malformed messages")

    async def join(self, job_id: str) -> None:
        await self.channel_layer.group_add(group_name(job_id), self.channel_name)

    async def leave(self, job_id: str) -> None:
        await self.channel_layer.group_discard(group_name(job_id), self.channel_name)


class JobEventsConsumer(JobSocket):
    """``/ws/jobs/``: every event of the subscribed jobs, in order, from any seq.

    The process's :class:`live.Hub` holds the subscriptions and writes the frames; this
    consumer checks the credential and the job's owner on every subscribe, and leaves
    the hub when the socket closes or its credential no longer holds."""

    # job id -> the hub's subscription of this socket
    subscriptions: dict[str, live.Subscription]
    heartbeat: asyncio.Task[None] | None = None

    async def opened(self) -> None:
        self.subscriptions = {}
        self.heartbeat = asyncio.create_task(self.beat(self.ping_interval()))

    @staticmethod
    def ping_interval() -> float:
        return float(getattr(settings, "MYSPINBOT_WS_PING_INTERVAL", 20))

    async def release(self) -> None:
        await self.leave_hub()
        await super().release()

    async def leave_hub(self) -> None:
        subscriptions = getattr(self, "subscriptions", {})
        if subscriptions:
            self.subscriptions = {}
            await live.hub().drop(self)

    async def disconnect(self, code: int) -> None:
        if self.heartbeat is not None:
            self.heartbeat.cancel()
        await self.leave_hub()

    async def receive_json(self, content: Any, **kwargs: Any) -> None:
        action = content.get("action")
        if action == "subscribe":
            await self.subscribe(content.get("jobId"), content.get("since", 0))
        elif action == "unsubscribe":
            await self.unsubscribe(content.get("jobId"))
        elif action == "ping":
            await self.send_json({"type": "pong"})
        elif action != "pong":
            await self.bad_request(None, f"unknown action {action!r}")

    async def error(self, job_id: object, code: str, message: str) -> None:
        job = job_id if isinstance(job_id, str) else None
        await self.send_json(
            {"type": "error", "jobId": job, "error": {"code": code, "message": message}}
        )

    async def bad_request(self, job_id: str | None, message: str) -> None:
        await self.error(job_id, "bad_request", message)

    async def subscribe(self, raw_job_id: object, since: object) -> None:
        if not await self.credential_holds():
            return
        job_id = parse_job_id(raw_job_id)
        if not isinstance(since, int) or isinstance(since, bool) or since < 0:
            await self.bad_request(job_id, "since must be a non-negative integer")
            return
        if job_id is None or await owned_job_state(self.owner, job_id) is None:
            await self.error(raw_job_id, "not_found", "no such job")
            return
        if job_id not in self.subscriptions and len(self.subscriptions) >= MAX_SUBSCRIPTIONS:
            await self.error(job_id, "too_many_subscriptions", "unsubscribe from a job first")
            return
        hub = live.hub()
        subscription = await hub.subscribe(self, job_id, since)
        self.subscriptions[job_id] = subscription

        async def subscribed() -> None:
            if self.user_id is not None:  # else the credential failed meanwhile: closed
                await self.send_json(
                    {"type": "subscribed", "jobId": job_id, "seq": subscription.last}
                )

        await hub.catch_up(subscription, subscribed)

    async def unsubscribe(self, raw_job_id: object) -> None:
        job_id = parse_job_id(raw_job_id)
        if job_id is None:
            await self.error(raw_job_id, "not_found", "no such job")
            return
        if self.subscriptions.pop(job_id, None) is not None:
            await live.hub().unsubscribe(self, job_id)
        await self.send_json({"type": "unsubscribed", "jobId": job_id})

    async def beat(self, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            if time.monotonic() - self.last_heard > 2 * interval:
                await self.close(code=PING_TIMEOUT)
                return
            await self.send_json({"type": "ping", "ts": time.time()})


class LegacyJobConsumer(JobSocket):
    """``/ws``: the original system's protocol (job status and progress updates)."""

    # job id -> (last seq seen, last status and progress pushed)
    seen: dict[str, tuple[int, tuple[str, float]]]

    async def opened(self) -> None:
        self.seen = {}

    async def disconnect(self, code: int) -> None:
        for job_id in list(getattr(self, "seen", {})):
            await self.leave(job_id)

    async def respond(self, message: str, job_id: object, **extra: Any) -> None:
        await self.send_json({"action": "response", "message": message, "jobId": job_id, **extra})

    async def bad_request(self, job_id: str | None, message: str) -> None:
        await self.respond("failed", job_id, error=message)

    async def receive_json(self, content: Any, **kwargs: Any) -> None:
        action, raw_job_id = content.get("action"), content.get("jobId")
        if action not in ("subscribe", "unsubscribe"):
            await self.bad_request(raw_job_id, f"unknown action {action!r}")
            return
        job_id = parse_job_id(raw_job_id)
        if action == "unsubscribe":
            if job_id is not None and self.seen.pop(job_id, None) is not None:
                await self.leave(job_id)
            await self.respond("unsubscribed", raw_job_id)
            return
        if not await self.credential_holds():
            return
        if job_id is None or await owned_job_state(self.owner, job_id) is None:
            await self.bad_request(raw_job_id, "not found")
            return
        if job_id not in self.seen and len(self.seen) >= MAX_SUBSCRIPTIONS:
            await self.bad_request(raw_job_id, "too many subscriptions")
            return
        # Join, then read the state: a change committed meanwhile is in the read or
        # arrives live afterwards (and is dropped there if its seq is not newer).
        await self.join(job_id)
        state = await owned_job_state(self.owner, job_id)
        if state is None:  # deleted in between
            await self.leave(job_id)
            await self.bad_request(raw_job_id, "not found")
            return
        status, progress, seq = state
        self.seen[job_id] = (seq, (status, progress))
        await self.respond("subscribed", raw_job_id)
        await self.update(job_id, status, progress)

    async def update(self, job_id: str, status: str, progress: float) -> None:
        await self.send_json(
            {"type": "update", "jobId": job_id, "status": status, "progress": round(progress, 4)}
        )

    async def job_event(self, message: dict[str, Any]) -> None:
        event = message["event"]
        job_id = event["job_id"]
        if job_id not in self.seen:
            return
        last_seq, pushed = self.seen[job_id]
        if event["seq"] <= last_seq:
            return
        state = (event["job_status"], float(event["job_progress"]))
        self.seen[job_id] = (event["seq"], state)
        if state != pushed:
            await self.update(job_id, *state)
