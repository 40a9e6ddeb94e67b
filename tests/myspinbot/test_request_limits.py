"""Request bodies over the route's limit are refused by the real ASGI app before Django
reads them: called directly with a client that counts the body chunks pulled from it,
and through uvicorn over a socket."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import time
from collections.abc import Iterator
from typing import Any

import pytest

from myspinbot.asgi import application
from testkit.services import AsgiServer

CHUNK = 64 * 1024
MiB = 1024 * 1024


class Client:
    """One HTTP request as an ASGI server would deliver it, counting what is pulled."""

    def __init__(self, chunks: list[bytes]) -> None:
        self.chunks = chunks
        self.pulled = 0
        self.sent: list[dict[str, Any]] = []

    async def receive(self) -> dict[str, Any]:
        if self.pulled < len(self.chunks):
            self.pulled += 1
            more = self.pulled < len(self.chunks)
            return {"type": "http.request", "body": self.chunks[self.pulled - 1], "more_body": more}
        await asyncio.sleep(3600)  # still connected, waiting for the answer
        raise AssertionError("unreachable")

    async def send(self, message: dict[str, Any]) -> None:
        self.sent.append(message)

    def call(self, path: str, headers: list[tuple[bytes, bytes]]) -> None:
        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "POST",
            "scheme": "http",
            "path": path,
            "raw_path": path.encode(),
            "query_string": b"",
            "root_path": "",
            "headers": [(b"host", b"testserver"), *headers],
            "client": ("127.0.0.1", 50000),
            "server": ("testserver", 80),
        }
        asyncio.run(asyncio.wait_for(application(scope, self.receive, self.send), 30))

    @property
    def status(self) -> int:
        return int(self.sent[0]["status"])

    def json(self) -> Any:
        return json.loads(b"".join(m.get("body", b"") for m in self.sent[1:]))


def test_a_declared_length_over_the_json_limit_is_413_before_any_chunk_is_read() -> None:
    client = Client([b"x" * CHUNK] * 32)

    client.call(
        "/api/jobs", [(b"content-type", b"application/json"), (b"content-length", b"2097152")]
    )

    assert client.pulled == 0
    assert client.status == 413
    assert dict(client.sent[0]["headers"])[b"content-type"] == b"application/json; charset=utf-8"
    assert client.json() == {
        "error": {
            "code": "too_large",
            "message": f"the request body is larger than {MiB} bytes",
            "details": {"max_bytes": MiB},
        }
    }
    assert len(client.sent) == 2


def test_a_chunked_body_without_a_length_is_cut_off_at_the_limit() -> None:
    # 100 chunks of 64 KiB (6.25 MiB) against a 1 MiB limit: the 17th passes it.
    client = Client([b"x" * CHUNK] * 100)

    client.call("/api/jobs", [(b"content-type", b"application/json")])

    assert client.pulled == 17
    assert client.status == 413
    assert client.json()["error"]["code"] == "too_large"
    # Django saw the client go and answered nothing of its own.
    assert len(client.sent) == 2


def test_the_upload_routes_take_more_and_the_limits_are_settings(settings: Any) -> None:
    settings.MYSPINBOT_MAX_UPLOAD_BYTES = 3 * MiB
    headers = [(b"content-type", b"multipart/form-data; boundary=x")]

    over = Client([b"x" * CHUNK] * 64)  # 4 MiB
    over.call("/api/uploads", headers)
    under_json_limit_but_over = Client([b"x" * CHUNK] * 64)
    under_json_limit_but_over.call("/api/infinitetalk", [*headers, (b"content-length", b"4194304")])

    assert (over.pulled, over.status) == (49, 413)
    assert over.json()["error"]["details"] == {"max_bytes": 3 * MiB}
    assert (under_json_limit_but_over.pulled, under_json_limit_but_over.status) == (0, 413)


@pytest.mark.django_db(transaction=True)
def test_a_body_within_the_limit_reaches_django() -> None:
    # 2 MiB is over the JSON limit but within the upload limit: Django reads all of it
    # and answers (an unknown token: 401).
    client = Client([b"x" * CHUNK] * 32)

    client.call(
        "/api/uploads",
        [
            (b"content-type", b"multipart/form-data; boundary=x"),
            (b"authorization", b"Bearer not-a-token"),
        ],
    )

    assert client.pulled == 32
    assert client.status == 401
    assert client.json()["error"]["code"] == "unauthenticated"


@pytest.fixture
def server(worker_env: dict[str, str], tmp_path: Any) -> Iterator[AsgiServer]:
    env = {**worker_env, "DJANGO_SETTINGS_MODULE": os.environ["DJANGO_SETTINGS_MODULE"]}
    web = AsgiServer(env=env, log_path=tmp_path / "uvicorn.log")
    web.start(timeout=30)
    try:
        yield web
    finally:
        web.stop()


def read_response(sock: socket.socket) -> bytes:
    data = b""
    while True:
        try:
            part = sock.recv(65536)
        except ConnectionResetError:
            break
        if not part:
            break
        data += part
    return data


def test_over_the_wire_a_chunked_body_is_refused_mid_stream(server: AsgiServer) -> None:
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    sock.sendall(
        b"POST /api/jobs HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n"
    )
    chunk = f"{CHUNK:x}\r\n".encode() + b"x" * CHUNK + b"\r\n"
    sent = 0
    started = time.monotonic()
    try:
        # An endless body: the server must answer and hang up on its own.
        while time.monotonic() - started < 10:
            sock.sendall(chunk)
            sent += CHUNK
    except (BrokenPipeError, ConnectionResetError):
        pass
    response = read_response(sock)
    sock.close()

    head, _, body = response.partition(b"\r\n\r\n")
    assert head.split(b"\r\n")[0] == b"HTTP/1.1 413 Request Entity Too Large"
    assert json.loads(body)["error"]["code"] == "too_large"
    assert sent < 64 * MiB  # (socket buffers hold a few MiB; the body never ended)


def test_over_the_wire_a_declared_length_is_refused_before_the_body_is_sent(
    server: AsgiServer,
) -> None:
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    sock.sendall(
        b"POST /api/uploads HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; "
        b"boundary=x\r\nContent-Length: 999999999999\r\nExpect: 100-continue\r\n\r\n"
    )

    response = read_response(sock)
    sock.close()

    head, _, body = response.partition(b"\r\n\r\n")
    assert head.split(b"\r\n")[0] == b"HTTP/1.1 413 Request Entity Too Large"
    assert b"100 Continue" not in response
    assert json.loads(body)["error"]["details"] == {"max_bytes": 71 * MiB}
