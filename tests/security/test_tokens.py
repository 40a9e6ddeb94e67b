"""API tokens: refused when revoked or malformed, never written to a log, and looked up
in a way whose timing says nothing about the token (see ``bench/token_timing.py`` for
the measured side)."""

from __future__ import annotations

import logging
import os
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.core import signing
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect as ws_connect

from apps.jobs.auth import user_for_token
from apps.jobs.models import ApiToken
from myspinbot import log_filters
from testkit.services import AsgiServer

pytestmark = pytest.mark.django_db


@pytest.fixture
def ada() -> User:
    return User.objects.create_user("ada", password="pw-ada-123")


def bearer(token: str) -> Client:
    return Client(headers={"Authorization": f"Bearer {token}"})


# --- Refused tokens ---------------------------------------------------------------------


def malformed(token: str) -> list[str]:
    """Tokens that must authenticate no one, built around a real one."""
    return [
        "",
        " ",
        "msb_",
        ApiToken.PREFIX + "x" * 43,
        token[:-1],
        token + "A",
        token[:-1] + ("B" if token[-1] != "B" else "C"),
        token.upper(),
        token.lower(),
        token[4:],
        " " + token + " x",
        token + "\t",
        token.replace("_", "-", 1),
        token + "é",
        "é" * 10,
        "x" * 201,
        token * 5,
        "null",
        "undefined",
        "' OR '1'='1",
        "%" + token,
    ]


def test_malformed_and_near_miss_tokens_are_refused(ada: User) -> None:
    _, token = ApiToken.issue(ada)
    assert bearer(token).get("/api/jobs").status_code == 200

    for candidate in malformed(token):
        response = bearer(candidate).get("/api/jobs")
        assert response.status_code == 401, repr(candidate)
        assert response.json()["error"]["code"] == "unauthenticated"
        assert user_for_token(candidate) is None


def test_other_schemes_and_header_shapes_are_refused(ada: User) -> None:
    _, token = ApiToken.issue(ada)

    for header in [
        f"Token {token}",
        f"Basic {token}",
        token,
        f"Bearer{token}",
        "Bearer",
        "Bearer ",
    ]:
        response = Client(headers={"Authorization": header}).get("/api/jobs")
        assert response.status_code == 401, header


def test_revoked_token_and_inactive_user_are_refused(ada: User) -> None:
    record, token = ApiToken.issue(ada)
    _, other = ApiToken.issue(User.objects.create_user("bob"))
    ApiToken.objects.filter(pk=record.pk).update(revoked_at=timezone.now())
    User.objects.filter(username="bob").update(is_active=False)

    assert bearer(token).get("/api/jobs").status_code == 401
    assert bearer(other).get("/api/jobs").status_code == 401
    assert user_for_token(token) is None
    assert user_for_token(other) is None


def test_a_refused_token_is_not_rescued_by_a_session(ada: User) -> None:
    record, token = ApiToken.issue(ada)
    ApiToken.objects.filter(pk=record.pk).update(revoked_at=timezone.now())
    browser = Client(headers={"Authorization": f"Bearer {token}"})
    browser.force_login(ada)

    response = browser.get("/api/jobs")

    assert response.status_code == 401
    assert Client().get("/api/jobs").status_code == 401
    signed_in = Client()
    signed_in.force_login(ada)
    assert signed_in.get("/api/jobs").status_code == 200


@pytest.mark.django_db(transaction=True)
def test_malformed_tokens_are_refused_on_the_websocket(ada: User) -> None:
    from urllib.parse import quote

    from asgiref.sync import async_to_sync
    from asgiref.testing import ApplicationCommunicator

    from myspinbot.asgi import application

    _, token = ApiToken.issue(ada)

    async def close_code(query: str, headers: list[tuple[bytes, bytes]]) -> Any:
        scope = {
            "type": "websocket",
            "path": "/ws/jobs/",
            "query_string": query.encode(),
            "headers": headers,
            "subprotocols": [],
        }
        socket = ApplicationCommunicator(application, scope)
        await socket.send_input({"type": "websocket.connect"})
        assert (await socket.receive_output(2))["type"] == "websocket.accept"
        await socket.send_input({"type": "websocket.receive", "text": '{"action": "ping"}'})
        output = await socket.receive_output(2)
        if output["type"] == "websocket.close":
            return output["code"]
        assert output["text"] == '{"type": "pong"}'
        await socket.send_input({"type": "websocket.disconnect", "code": 1000})
        await socket.wait(1)
        return "open"

    assert async_to_sync(close_code)(f"token={token}", []) == "open"
    for candidate in malformed(token):
        if not candidate:
            continue  # no token at all: the session decides (none here, so 4401 too)
        by_query = async_to_sync(close_code)(f"token={quote(candidate)}", [])
        assert by_query == 4401, repr(candidate)
        if candidate.strip() == token:
            continue  # whitespace around a header value is not part of it (RFC 9110 5.5)
        header = [(b"authorization", f"Bearer {candidate}".encode())]
        assert async_to_sync(close_code)("", header) == 4401, repr(candidate)


# --- Constant-time lookup -----------------------------------------------------------------


def test_the_database_compares_digests_never_the_token(ada: User) -> None:
    # A comparison that stops at the first differing character leaks how much of a
    # guess is right. Only sha256 digests reach the database's comparison, and a guess
    # that shares all but one character with a token shares no prefix with its digest.
    _, token = ApiToken.issue(ada)
    near_miss = token[:-1] + ("B" if token[-1] != "B" else "C")

    for candidate, expected in [(token, ada), (near_miss, None)]:
        with CaptureQueriesContext(connection) as queries:
            assert user_for_token(candidate) == expected
        lookup = queries.captured_queries[0]["sql"]
        assert ApiToken.hash(candidate) in lookup
        assert all(candidate not in query["sql"] for query in queries.captured_queries)

    digest, near_digest = ApiToken.hash(token), ApiToken.hash(near_miss)
    assert digest[:4] != near_digest[:4]


def test_the_digest_found_is_compared_in_constant_time(
    ada: User, monkeypatch: pytest.MonkeyPatch
) -> None:
    import hmac

    compared: list[tuple[str, str]] = []
    real = hmac.compare_digest

    def recording(a: Any, b: Any) -> bool:
        compared.append((a, b))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", recording)
    _, token = ApiToken.issue(ada)

    assert user_for_token(token) == ada
    assert compared == [(ApiToken.hash(token), ApiToken.hash(token))]


# --- Nothing secret in the logs ----------------------------------------------------------


def test_redact_covers_every_way_a_credential_is_written() -> None:
    token = "msb_" + "Q" * 43
    lines = {
        f'127.0.0.1:5 - "WebSocket /ws/jobs/?token={token}" [accepted]': token,
        f'127.0.0.1:5 - "GET /api/jobs?since=3&token={token}&x=1 HTTP/1.1" 401': token,
        "Not Found: /storage/eyJiIjoiYSJ9:1sXyZ:abcdEFGH": "eyJiIjoiYSJ9:1sXyZ:abcdEFGH",
        f"Unexpected auth - 'Token {token}'": token,
        "Unexpected auth - 'Basic dXNlcjpwYXNz'": "dXNlcjpwYXNz",
        "Authorization: Bearer abc.def.ghi": "abc.def.ghi",
        f"Unprocessable Entity: /api/jobs/{token}": token,
    }
    for line, secret in lines.items():
        redacted = log_filters.redact(line)
        assert secret not in redacted, line
        assert log_filters.REDACTED in redacted, line
    assert log_filters.redact("GET /api/jobs?limit=5 HTTP/1.1") == "GET /api/jobs?limit=5 HTTP/1.1"


def test_the_filter_keeps_uvicorns_argument_tuple() -> None:
    token = "msb_" + "Z" * 43
    record = logging.LogRecord(
        "uvicorn.access",
        logging.INFO,
        __file__,
        1,
        '%s - "%s %s HTTP/%s" %d',
        ("127.0.0.1:5", "GET", f"/ws/jobs/?token={token}", "1.1", 101),
        None,
    )

    assert log_filters.RedactSecrets().filter(record) is True

    assert record.args == ("127.0.0.1:5", "GET", "/ws/jobs/?token=[redacted]", "1.1", 101)
    assert token not in record.getMessage()


def free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def server_with_access_log(
    worker_env: dict[str, str], tmp_path: Path
) -> Iterator[tuple[str, Path]]:
    """uvicorn as the container runs it (access log on) at INFO; yields its base URL
    and the file its output goes to."""
    path = tmp_path / "uvicorn.log"
    env = {**worker_env, "DJANGO_SETTINGS_MODULE": os.environ["DJANGO_SETTINGS_MODULE"]}
    web = AsgiServer(env=env, log_path=path, log_level="info")
    web.start(timeout=30)
    try:
        deadline = time.monotonic() + 10
        while b"Uvicorn running" not in path.read_bytes():
            assert time.monotonic() < deadline, path.read_text()
            time.sleep(0.1)
        yield f"127.0.0.1:{web.port}", path
    finally:
        web.stop()


def _get(url: str, headers: dict[str, str] | None = None) -> int:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {})) as r:
            return int(r.status)
    except urllib.error.HTTPError as error:
        return int(error.code)


@pytest.mark.django_db(transaction=True)
def test_tokens_and_signed_links_never_reach_the_server_log(
    server_with_access_log: tuple[str, Path],
) -> None:
    address, log_path = server_with_access_log
    user = User.objects.create_user("ada")
    _, token = ApiToken.issue(user)
    link = signing.dumps({"b": "artifacts", "k": "x/y.png", "ttl": 60}, salt="a link")
    signature = link.rsplit(":", 1)[-1]

    with ws_connect(f"ws://{address}/ws/jobs/?token={token}") as socket:
        socket.send('{"action": "ping"}')
        assert socket.recv(timeout=5) == '{"type": "pong"}'
    wrong = f"ws://{address}/ws/jobs/?token=msb_wrong{token[9:]}"
    with ws_connect(wrong) as refused, pytest.raises(ConnectionClosed):
        refused.recv(timeout=5)
    assert _get(f"http://{address}/api/jobs?token={token}") == 401
    assert _get(f"http://{address}/api/jobs", {"Authorization": f"Bearer {token}"}) == 200
    assert _get(f"http://{address}/api/jobs/{token}", {"Authorization": "Bearer x"}) == 401
    assert _get(f"http://{address}/api/jobs/{token}", {"Authorization": f"Bearer {token}"}) == 422
    assert _get(f"http://{address}/storage/{link}") == 404
    time.sleep(0.5)  # let the server flush its last lines

    output = log_path.read_text()
    assert "WebSocket /ws/jobs/?token=[redacted]" in output
    assert "GET /api/jobs?token=[redacted] HTTP/1.1" in output
    assert "/storage/[redacted]" in output
    assert token not in output
    assert token[9:] not in output
    assert signature not in output
