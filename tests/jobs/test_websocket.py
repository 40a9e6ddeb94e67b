"""The WebSocket streams, through the real ASGI app, Redis channel layer and PostgreSQL;
the reconnect and wire tests also through a real uvicorn server and a real worker."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any
from urllib.parse import unquote, urlsplit

import pytest
from asgiref.sync import async_to_sync, sync_to_async
from asgiref.testing import ApplicationCommunicator
from django.conf import settings as django_settings
from django.contrib.auth.models import User
from django.db import connection, transaction
from django.test import Client
from django.utils import timezone
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect as ws_connect

from apps.graphs.models import Graph
from apps.jobs import engine, live
from apps.jobs.events import Event, emit
from apps.jobs.models import ApiToken, Job, JobEvent
from myspinbot.asgi import application
from testkit.graphs import chain
from testkit.services import AsgiServer, CeleryWorker
from testkit.spies import Counting

pytestmark = pytest.mark.django_db(transaction=True)

StartWorker = Callable[..., CeleryWorker]


# --- Helpers --------------------------------------------------------------------------


@pytest.fixture
def ada() -> User:
    return User.objects.create_user("ada", password="pw")


@pytest.fixture
def bob() -> User:
    return User.objects.create_user("bob", password="pw")


def token_for(user: User) -> str:
    return ApiToken.issue(user, "test")[1]


def make_job(owner: User) -> Job:
    graph = Graph.objects.create(document={}, node_count=0)
    return Job.objects.create(owner=owner, graph=graph)


def add_events(job: Job, count: int, status: str | None = None, progress: float = 0.0) -> None:
    """Append ``count`` node.progress events (after setting the job's state, if given)."""
    with transaction.atomic():
        if status is not None:
            Job.objects.filter(pk=job.pk).update(status=status, progress=progress)
        emit(job.pk, [Event("node.progress", "n0", {"i": i}) for i in range(count)])


class WebsocketCommunicator(ApplicationCommunicator):
    """A WebSocket client of the ASGI app in this event loop (``channels.testing``'s
    needs daphne, which this project does not install)."""

    def __init__(self, path: str, headers: list[tuple[bytes, bytes]] | None = None) -> None:
        parsed = urlsplit(path)
        super().__init__(
            application,
            {
                "type": "websocket",
                "path": unquote(parsed.path),
                "query_string": parsed.query.encode(),
                "headers": headers or [],
                "subprotocols": [],
            },
        )

    async def connect(self) -> bool:
        await self.send_input({"type": "websocket.connect"})
        return (await self.receive_output(2))["type"] == "websocket.accept"

    async def send_json_to(self, data: Any) -> None:
        await self.send_to(json.dumps(data))

    async def send_to(self, text: str) -> None:
        await self.send_input({"type": "websocket.receive", "text": text})

    async def receive_json_from(self, timeout: float = 1) -> Any:
        output = await self.receive_output(timeout)
        assert output["type"] == "websocket.send", output
        return json.loads(output["text"])

    async def disconnect(self) -> None:
        await self.send_input({"type": "websocket.disconnect", "code": 1000})
        await self.wait(1)


OPEN: list[WebsocketCommunicator] = []


def run(scenario: Callable[[], Awaitable[None]]) -> None:
    """Drive an async scenario from a sync test; its ORM calls run on this thread. The
    sockets it opened are disconnected at the end, as a server would when clients leave."""

    async def scenario_then_disconnect() -> None:
        try:
            await scenario()
        finally:
            while OPEN:
                communicator = OPEN.pop()
                if not communicator.future.done():
                    await communicator.disconnect()

    async_to_sync(scenario_then_disconnect)()


def socket_to(path: str, token: str | None = None, **kwargs: Any) -> WebsocketCommunicator:
    query = f"?token={token}" if token else ""
    communicator = WebsocketCommunicator(f"{path}{query}", **kwargs)
    OPEN.append(communicator)
    return communicator


async def opened(communicator: WebsocketCommunicator) -> WebsocketCommunicator:
    assert await communicator.connect()
    return communicator


async def messages(communicator: WebsocketCommunicator, count: int) -> list[dict[str, Any]]:
    """The next ``count`` messages that are not pings."""
    received: list[dict[str, Any]] = []
    while len(received) < count:
        message = await communicator.receive_json_from(timeout=5)
        if message.get("type") != "ping":
            received.append(message)
    return received


async def events_until(communicator: WebsocketCommunicator, last_seq: int) -> list[int]:
    """Seqs of the event messages received until (and including) ``last_seq``."""
    seqs: list[int] = []
    while not seqs or seqs[-1] < last_seq:
        message = await communicator.receive_json_from(timeout=10)
        if message["type"] == "event":
            seqs.append(message["seq"])
        else:
            assert message["type"] in ("subscribed", "ping"), message
    return seqs


def subscribe(job: Job | str, since: int | None = None) -> dict[str, Any]:
    message: dict[str, Any] = {"action": "subscribe", "jobId": str(getattr(job, "pk", job))}
    if since is not None:
        message["since"] = since
    return message


# --- Authentication -------------------------------------------------------------------


@pytest.mark.parametrize("credentials", ["none", "unknown", "revoked", "inactive"])
def test_a_socket_without_valid_credentials_is_closed_with_4401(
    ada: User, credentials: str
) -> None:
    token = token_for(ada) if credentials in ("revoked", "inactive") else None
    if credentials == "unknown":
        token = "msb_not-a-token"
    if credentials == "revoked":
        ApiToken.objects.update(revoked_at=timezone.now())
    if credentials == "inactive":
        User.objects.filter(pk=ada.pk).update(is_active=False)

    async def scenario() -> None:
        for path in ("/ws/jobs/", "/ws"):
            communicator = await opened(socket_to(path, token))
            assert await communicator.receive_output(timeout=2) == {
                "type": "websocket.close",
                "code": 4401,
            }

    run(scenario)


def test_a_token_in_the_query_or_the_authorization_header_authenticates(ada: User) -> None:
    job, token = make_job(ada), token_for(ada)

    async def scenario() -> None:
        by_query = await opened(socket_to("/ws/jobs/", token))
        header = [(b"authorization", f"Bearer {token}".encode())]
        by_header = await opened(socket_to("/ws/jobs/", headers=header))
        for communicator in (by_query, by_header):
            await communicator.send_json_to(subscribe(job))
            assert await messages(communicator, 1) == [
                {"type": "subscribed", "jobId": str(job.pk), "seq": 0}
            ]
            await communicator.disconnect()

    run(scenario)


def test_a_session_cookie_authenticates(ada: User) -> None:
    job = make_job(ada)
    client = Client()
    client.force_login(ada)
    session = client.cookies[django_settings.SESSION_COOKIE_NAME].value
    cookie = [(b"cookie", f"{django_settings.SESSION_COOKIE_NAME}={session}".encode())]

    async def scenario() -> None:
        communicator = await opened(socket_to("/ws/jobs/", headers=cookie))
        await communicator.send_json_to(subscribe(job))
        assert await messages(communicator, 1) == [
            {"type": "subscribed", "jobId": str(job.pk), "seq": 0}
        ]
        await communicator.disconnect()

    run(scenario)


def test_an_invalid_token_wins_over_a_valid_session(ada: User) -> None:
    client = Client()
    client.force_login(ada)
    session = client.cookies[django_settings.SESSION_COOKIE_NAME].value
    cookie = [(b"cookie", f"{django_settings.SESSION_COOKIE_NAME}={session}".encode())]

    async def scenario() -> None:
        communicator = await opened(socket_to("/ws/jobs/", "msb_wrong", headers=cookie))
        assert (await communicator.receive_output(timeout=2))["code"] == 4401

    run(scenario)


# --- /ws/jobs/ ------------------------------------------------------------------------


def test_subscribing_since_0_sends_the_stored_events_in_order_then_live_ones(ada: User) -> None:
    job, token = make_job(ada), token_for(ada)
    add_events(job, 3, status="running", progress=0.25)

    async def scenario() -> None:
        communicator = await opened(socket_to("/ws/jobs/", token))
        await communicator.send_json_to(subscribe(job, since=0))
        caught_up = await messages(communicator, 4)
        assert [m.get("seq") for m in caught_up] == [1, 2, 3, 3]
        assert caught_up[3] == {"type": "subscribed", "jobId": str(job.pk), "seq": 3}
        stored = await sync_to_async(JobEvent.objects.get)(job=job, seq=1)
        assert caught_up[0] == {
            "type": "event",
            "jobId": str(job.pk),
            "seq": 1,
            "event": "node.progress",
            "nodeId": "n0",
            "status": "running",
            "progress": 0.25,
            "nodeStatus": "running",
            "payload": {"i": 0},
            "timestamp": stored.created_at.isoformat(),
        }

        await sync_to_async(add_events)(job, 2)

        assert [m["seq"] for m in await messages(communicator, 2)] == [4, 5]
        assert await communicator.receive_nothing(timeout=0.3)
        await communicator.disconnect()

    run(scenario)


def test_subscribing_since_n_sends_only_the_later_events(ada: User) -> None:
    job, token = make_job(ada), token_for(ada)
    add_events(job, 5)

    async def scenario() -> None:
        communicator = await opened(socket_to("/ws/jobs/", token))
        await communicator.send_json_to(subscribe(job, since=3))
        assert [m.get("seq") for m in await messages(communicator, 3)] == [4, 5, 5]
        await communicator.disconnect()

    run(scenario)


def test_two_clients_see_identical_sequences(ada: User) -> None:
    job, token = make_job(ada), token_for(ada)
    add_events(job, 2)

    async def scenario() -> None:
        first = await opened(socket_to("/ws/jobs/", token))
        second = await opened(socket_to("/ws/jobs/", token))
        await first.send_json_to(subscribe(job))
        await second.send_json_to(subscribe(job))
        caught_up = [await messages(first, 3), await messages(second, 3)]
        for _ in range(3):
            await sync_to_async(add_events)(job, 2)
        seen_first = caught_up[0] + await messages(first, 6)
        seen_second = caught_up[1] + await messages(second, 6)
        assert seen_first == seen_second
        assert [m.get("seq") for m in seen_first] == [1, 2, 2, 3, 4, 5, 6, 7, 8]
        await first.disconnect()
        await second.disconnect()

    run(scenario)


def test_the_process_hub_encodes_each_event_once_and_reads_a_gap_once_for_all_sockets(
    ada: User, monkeypatch: pytest.MonkeyPatch
) -> None:
    # given five sockets subscribed to one job, all caught up
    job, token = make_job(ada), token_for(ada)
    publish = live.publish

    async def scenario() -> None:
        sockets = [await opened(socket_to("/ws/jobs/", token)) for _ in range(5)]
        for socket in sockets:
            await socket.send_json_to(subscribe(job))
            assert (await messages(socket, 1))[0]["type"] == "subscribed"
        encoded, reads = Counting(live.encode), Counting(live.events_between)
        monkeypatch.setattr(live, "encode", encoded)
        monkeypatch.setattr(live, "events_between", reads)

        # when one event is published
        await sync_to_async(add_events)(job, 1)
        frames = [await socket.receive_output(5) for socket in sockets]

        # then it was encoded once and every socket got the very same frame
        assert {frame["text"] for frame in frames} == {frames[0]["text"]}
        assert json.loads(frames[0]["text"])["seq"] == 1
        assert (encoded.calls, reads.calls) == (1, 0)

        # when three events are lost on the way and the next one arrives
        monkeypatch.setattr(live, "publish", lambda rows: None)
        await sync_to_async(add_events)(job, 3)
        monkeypatch.setattr(live, "publish", publish)
        await sync_to_async(add_events)(job, 1)

        # then the gap was read from the database once for the five sockets
        for socket in sockets:
            assert [m["seq"] for m in await messages(socket, 4)] == [2, 3, 4, 5]
        assert reads.calls == 1
        assert encoded.calls == 1 + 3 + 1

    run(scenario)  # disconnects the sockets


def test_sockets_subscribing_together_share_one_catch_up_read(
    ada: User, monkeypatch: pytest.MonkeyPatch
) -> None:
    job, token = make_job(ada), token_for(ada)
    add_events(job, 3)
    reads = Counting(live.events_between)
    monkeypatch.setattr(live, "events_between", reads)

    async def scenario() -> None:
        sockets = [await opened(socket_to("/ws/jobs/", token)) for _ in range(4)]
        await asyncio.gather(*(socket.send_json_to(subscribe(job)) for socket in sockets))
        for socket in sockets:
            assert [m.get("seq") for m in await messages(socket, 4)] == [1, 2, 3, 3]
        assert reads.calls < len(sockets)

    run(scenario)  # disconnects the sockets


def test_a_socket_whose_credential_fails_gets_no_more_live_events(ada: User) -> None:
    job = make_job(ada)
    record, token = ApiToken.issue(ada, "test")

    async def scenario() -> None:
        kept = await opened(socket_to("/ws/jobs/", await sync_to_async(token_for)(ada)))
        revoked = await opened(socket_to("/ws/jobs/", token))
        for socket in (kept, revoked):
            await socket.send_json_to(subscribe(job))
            await messages(socket, 1)
        await sync_to_async(ApiToken.objects.filter(pk=record.pk).update)(revoked_at=timezone.now())
        # the next subscribe re-checks the credential and closes the socket
        await revoked.send_json_to(subscribe(job))
        assert (await revoked.receive_output(5))["code"] == 4401
        await sync_to_async(add_events)(job, 1)
        assert [m["seq"] for m in await messages(kept, 1)] == [1]
        assert await revoked.receive_nothing(timeout=0.3)
        assert len(live.hub().jobs[str(job.pk)]) == 1  # the hub let the closed socket go

    run(scenario)


def test_another_users_job_is_not_found_and_the_socket_stays_usable(ada: User, bob: User) -> None:
    adas_job, bobs_job, token = make_job(ada), make_job(bob), token_for(bob)
    add_events(adas_job, 2)

    async def scenario() -> None:
        communicator = await opened(socket_to("/ws/jobs/", token))
        missing = "00000000-0000-0000-0000-000000000000"
        for job_id in (str(adas_job.pk), missing, "not-a-uuid"):
            await communicator.send_json_to(subscribe(job_id))
            assert await messages(communicator, 1) == [
                {
                    "type": "error",
                    "jobId": job_id,
                    "error": {"code": "not_found", "message": "no such job"},
                }
            ]
        await communicator.send_json_to(subscribe(bobs_job))
        assert await messages(communicator, 1) == [
            {"type": "subscribed", "jobId": str(bobs_job.pk), "seq": 0}
        ]
        await sync_to_async(add_events)(adas_job, 1)
        assert await communicator.receive_nothing(timeout=0.3)
        await communicator.disconnect()

    run(scenario)


def test_malformed_messages_get_an_error_and_the_socket_stays_open(ada: User) -> None:
    token = token_for(ada)

    async def scenario() -> None:
        communicator = await opened(socket_to("/ws/jobs/", token))
        await communicator.send_to("{not json")
        await communicator.send_to("[1, 2]")
        await communicator.send_json_to({"action": "dance"})
        await communicator.send_json_to({"action": "subscribe", "jobId": "x", "since": -1})
        replies = await messages(communicator, 4)
        assert [(r["type"], r["error"]["code"]) for r in replies] == [("error", "bad_request")] * 4
        assert replies[2]["error"]["message"] == "unknown action 'dance'"
        await communicator.send_json_to({"action": "ping"})
        assert await messages(communicator, 1) == [{"type": "pong"}]
        await communicator.disconnect()

    run(scenario)


def test_unsubscribing_stops_delivery(ada: User) -> None:
    job, token = make_job(ada), token_for(ada)

    async def scenario() -> None:
        communicator = await opened(socket_to("/ws/jobs/", token))
        await communicator.send_json_to(subscribe(job))
        assert [m.get("seq") for m in await messages(communicator, 1)] == [0]
        await sync_to_async(add_events)(job, 1)
        assert [m.get("seq") for m in await messages(communicator, 1)] == [1]

        await communicator.send_json_to({"action": "unsubscribe", "jobId": str(job.pk)})
        assert await messages(communicator, 1) == [{"type": "unsubscribed", "jobId": str(job.pk)}]
        await sync_to_async(add_events)(job, 2)
        assert await communicator.receive_nothing(timeout=0.5)
        await communicator.disconnect()

    run(scenario)


def test_an_idle_socket_outlives_the_channel_layers_blocking_read(ada: User) -> None:
    """channels_redis waits 5 s per BZPOPMIN; a Redis read timeout of 5 s (redis-py 8's
    default) would end every socket idle that long."""
    job, token = make_job(ada), token_for(ada)

    async def scenario() -> None:
        communicator = await opened(socket_to("/ws/jobs/", token))
        await communicator.send_json_to(subscribe(job))
        await messages(communicator, 1)
        await asyncio.sleep(6)
        await sync_to_async(add_events)(job, 1)
        assert [m["seq"] for m in await messages(communicator, 1)] == [1]
        await communicator.disconnect()

    run(scenario)


def test_lost_live_messages_are_filled_from_the_database(
    ada: User, monkeypatch: pytest.MonkeyPatch
) -> None:
    job, token = make_job(ada), token_for(ada)
    publish = live.publish

    async def scenario() -> None:
        communicator = await opened(socket_to("/ws/jobs/", token))
        await communicator.send_json_to(subscribe(job))
        await messages(communicator, 1)
        monkeypatch.setattr(live, "publish", lambda rows: None)
        await sync_to_async(add_events)(job, 3)  # seqs 1-3 never published
        monkeypatch.setattr(live, "publish", publish)
        await sync_to_async(add_events)(job, 1)

        assert [m["seq"] for m in await messages(communicator, 4)] == [1, 2, 3, 4]
        await communicator.disconnect()

    run(scenario)


def test_a_lost_last_live_message_is_sent_at_the_next_ping(
    ada: User, monkeypatch: pytest.MonkeyPatch, settings: Any
) -> None:
    settings.MYSPINBOT_WS_PING_INTERVAL = 0.3
    job, token = make_job(ada), token_for(ada)

    async def scenario() -> None:
        communicator = await opened(socket_to("/ws/jobs/", token))
        await communicator.send_json_to(subscribe(job))
        await messages(communicator, 1)
        monkeypatch.setattr(live, "publish", lambda rows: None)
        await sync_to_async(add_events)(job, 2)

        assert [m["seq"] for m in await messages(communicator, 2)] == [1, 2]
        await communicator.disconnect()

    run(scenario)


def test_catch_up_racing_live_events_has_no_gaps_or_duplicates(ada: User) -> None:
    """Events are committed one by one in a tight loop while clients subscribe."""
    job, token = make_job(ada), token_for(ada)
    total = 300
    started = threading.Event()
    errors: list[BaseException] = []

    def produce() -> None:
        try:
            for index in range(total):
                add_events(job, 1)
                if index == 30:
                    started.set()
        except BaseException as error:  # surfaced by the assertion below
            errors.append(error)
            started.set()
        finally:
            connection.close()

    producer = threading.Thread(target=produce)

    async def scenario() -> None:
        clients = [await opened(socket_to("/ws/jobs/", token)) for _ in range(3)]
        producer.start()
        await sync_to_async(started.wait, thread_sensitive=False)()
        for index, client in enumerate(clients):
            await client.send_json_to(subscribe(job, since=index * 10))
        for index, client in enumerate(clients):
            assert await events_until(client, total) == list(range(index * 10 + 1, total + 1))
            await client.disconnect()

    run(scenario)
    producer.join()
    assert errors == []


def test_the_server_pings_and_drops_a_silent_socket(ada: User, settings: Any) -> None:
    settings.MYSPINBOT_WS_PING_INTERVAL = 0.2
    token = token_for(ada)

    async def scenario() -> None:
        communicator = await opened(socket_to("/ws/jobs/", token))
        for _ in range(4):  # answered pings keep it open well past two intervals
            ping = await communicator.receive_json_from(timeout=1)
            assert ping["type"] == "ping"
            assert abs(ping["ts"] - time.time()) < 1
            await communicator.send_json_to({"action": "pong"})

        output = await communicator.receive_output(timeout=1)
        while output["type"] == "websocket.send":  # pings until it gives up
            output = await communicator.receive_output(timeout=1)
        assert output == {"type": "websocket.close", "code": 4408}

    run(scenario)


# --- /ws, the original protocol -------------------------------------------------------


def test_legacy_protocol_responds_and_pushes_updates(ada: User, bob: User) -> None:
    job, foreign, token = make_job(ada), make_job(bob), token_for(ada)
    add_events(job, 1, status="queued", progress=0.0)

    async def scenario() -> None:
        communicator = await opened(socket_to("/ws", token))
        await communicator.send_json_to({"action": "subscribe", "jobId": str(foreign.pk)})
        await communicator.send_json_to({"action": "subscribe", "jobId": str(job.pk)})
        assert await messages(communicator, 3) == [
            {
                "action": "response",
                "message": "failed",
                "jobId": str(foreign.pk),
                "error": "not found",
            },
            {"action": "response", "message": "subscribed", "jobId": str(job.pk)},
            {"type": "update", "jobId": str(job.pk), "status": "queued", "progress": 0.0},
        ]

        await sync_to_async(add_events)(job, 1, status="running", progress=0.5)
        await sync_to_async(add_events)(job, 1, status="running", progress=0.5)  # no change
        await sync_to_async(add_events)(job, 1, status="completed", progress=1.0)
        assert await messages(communicator, 2) == [
            {"type": "update", "jobId": str(job.pk), "status": "running", "progress": 0.5},
            {"type": "update", "jobId": str(job.pk), "status": "completed", "progress": 1.0},
        ]

        await communicator.send_json_to({"action": "unsubscribe", "jobId": str(job.pk)})
        assert await messages(communicator, 1) == [
            {"action": "response", "message": "unsubscribed", "jobId": str(job.pk)}
        ]
        await sync_to_async(add_events)(job, 1, status="failed", progress=1.0)
        assert await communicator.receive_nothing(timeout=0.3)
        await communicator.disconnect()

    run(scenario)


# --- Through a real server ------------------------------------------------------------


@pytest.fixture
def server(web: AsgiServer) -> str:
    """The real server's ws:// base."""
    return web.ws


def test_over_the_wire_credentials_and_origins_are_checked(ada: User, server: str) -> None:
    token = token_for(ada)

    with ws_connect(f"{server}/ws/jobs/") as anonymous, pytest.raises(ConnectionClosed) as closed:
        anonymous.recv(timeout=5)
    assert closed.value.rcvd is not None
    assert closed.value.rcvd.code == 4401

    with pytest.raises(InvalidStatus) as refused:
        ws_connect(f"{server}/ws/jobs/?token={token}", origin="http://evil.example")
    assert refused.value.response.status_code == 403

    with ws_connect(f"{server}/ws/jobs/?token={token}", origin="http://localhost:3000") as ok:
        ok.send('{"action": "ping"}')
        assert ok.recv(timeout=5) == '{"type": "pong"}'


def test_a_client_that_reconnects_with_since_gets_exactly_the_missed_events(
    ada: User, server: str, start_worker: StartWorker
) -> None:
    start_worker("cpu", [django_settings.CELERY_CPU_QUEUE])
    token = token_for(ada)
    job = engine.submit_job(ada, chain("debug.sleep", "debug.sleep", "debug.sleep"))
    url = f"{server}/ws/jobs/?token={token}"
    received: list[dict[str, Any]] = []

    def read_until(client: Any, stop: Callable[[dict[str, Any]], bool]) -> None:
        while True:
            message = json.loads(client.recv(timeout=30))
            if message["type"] == "event":
                received.append(message)
                if stop(message):
                    return

    with ws_connect(url) as client:
        client.send(json.dumps(subscribe(job, since=0)))
        read_until(client, lambda m: m["event"] == "node.progress" and m["nodeId"] == "n0")
    time.sleep(1.5)  # the job runs on while nobody listens

    reconnected_at = timezone.now()
    seen_before = len(received)
    with ws_connect(url) as client:
        client.send(json.dumps(subscribe(job, since=received[-1]["seq"])))
        read_until(client, lambda m: m["event"] in ("job.completed", "job.failed"))

    stored = list(JobEvent.objects.filter(job=job).order_by("seq"))
    assert [m["seq"] for m in received] == [event.seq for event in stored]
    assert [(m["event"], m["nodeId"]) for m in received] == [(e.type, e.node_id) for e in stored]
    assert received[-1]["event"] == "job.completed"
    # The first event after reconnecting was written while no one was listening.
    assert datetime.fromisoformat(received[seen_before]["timestamp"]) < reconnected_at


# --- Revocation and the per-user cap --------------------------------------------------


async def close_code(communicator: WebsocketCommunicator, timeout: float) -> tuple[int, float]:
    """The code the server closes the socket with (messages before it are skipped), and
    how long that took."""
    started = time.monotonic()
    while True:
        left = timeout - (time.monotonic() - started)
        output = await communicator.receive_output(max(0.01, left))
        if output["type"] == "websocket.close":
            return int(output["code"]), time.monotonic() - started


def session_cookie(user: User) -> tuple[Client, list[tuple[bytes, bytes]]]:
    client = Client()
    client.force_login(user)
    session = client.cookies[django_settings.SESSION_COOKIE_NAME].value
    return client, [(b"cookie", f"{django_settings.SESSION_COOKIE_NAME}={session}".encode())]


@pytest.mark.parametrize("change", ["admin_revoke", "token_deleted", "deactivated", "logout"])
def test_a_revoked_deactivated_or_logged_out_socket_is_closed_within_seconds(
    ada: User, change: str
) -> None:
    """The change is announced to the user's sockets: they close with 4401 long before
    the periodic re-check (5 s) would have, and the subscription stops."""
    job = make_job(ada)
    token = token_for(ada)
    client, cookie = session_cookie(ada)
    staff = User.objects.create_user("op", password="pw", is_staff=True, is_superuser=True)
    admin = Client()
    admin.force_login(staff)

    def make_change() -> None:
        if change == "admin_revoke":
            response = admin.post(
                "/admin/jobs/apitoken/",
                {
                    "action": "revoke",
                    "_selected_action": [str(t.pk) for t in ApiToken.objects.filter(user=ada)],
                },
            )
            assert response.status_code == 302
        elif change == "token_deleted":
            ApiToken.objects.filter(user=ada).delete()
        elif change == "deactivated":
            ada.is_active = False
            ada.save()
        else:
            assert client.post("/logout/").status_code in (200, 302)

    async def scenario() -> None:
        if change == "logout":
            communicator = await opened(socket_to("/ws/jobs/", headers=cookie))
        else:
            communicator = await opened(socket_to("/ws/jobs/", token))
        await communicator.send_json_to(subscribe(job))
        assert (await messages(communicator, 1))[0]["type"] == "subscribed"
        await sync_to_async(make_change)()
        code, took = await close_code(communicator, timeout=4)
        assert code == 4401
        assert took < 3

    run(scenario)


def test_a_change_made_without_the_announcement_closes_the_socket_at_the_next_check(
    ada: User, settings: Any
) -> None:
    """Revoked by SQL (no signal): the periodic re-check finds it; a subscribe finds it at
    once."""
    settings.MYSPINBOT_WS_AUTH_RECHECK = 0.5
    job, token = make_job(ada), token_for(ada)

    async def scenario() -> None:
        communicator = await opened(socket_to("/ws/jobs/", token))
        await sync_to_async(ApiToken.objects.filter(user=ada).update)(revoked_at=timezone.now())
        code, took = await close_code(communicator, timeout=3)
        assert (code, took < 2) == (4401, True)

    run(scenario)

    settings.MYSPINBOT_WS_AUTH_RECHECK = 60
    token = token_for(ada)

    async def subscribe_after_revocation() -> None:
        for path in ("/ws/jobs/", "/ws"):
            communicator = await opened(socket_to(path, token))
            await sync_to_async(ApiToken.objects.filter(user=ada).update)(revoked_at=timezone.now())
            await communicator.send_json_to(subscribe(job))
            assert (await close_code(communicator, timeout=2))[0] == 4401
            await sync_to_async(ApiToken.objects.filter(user=ada).update)(revoked_at=None)

    run(subscribe_after_revocation)


def test_a_user_holds_at_most_the_set_number_of_sockets(
    ada: User, bob: User, settings: Any
) -> None:
    settings.MYSPINBOT_WS_MAX_PER_USER = 3
    ada_token, bob_token = token_for(ada), token_for(bob)

    async def scenario() -> None:
        held = [
            await opened(socket_to(path, ada_token)) for path in ("/ws/jobs/", "/ws", "/ws/jobs/")
        ]
        extra = await opened(socket_to("/ws/jobs/", ada_token))
        assert (await close_code(extra, timeout=2))[0] == 4429
        # Another user is not counted against ada; a socket that leaves frees its slot.
        other = await opened(socket_to("/ws/jobs/", bob_token))
        await other.send_json_to({"action": "ping"})
        assert await messages(other, 1) == [{"type": "pong"}]
        await held.pop().disconnect()
        again = await opened(socket_to("/ws/jobs/", ada_token))
        await again.send_json_to({"action": "ping"})
        assert await messages(again, 1) == [{"type": "pong"}]

    run(scenario)
