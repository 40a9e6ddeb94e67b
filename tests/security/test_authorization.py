"""The authorization matrix of ``docs/authorization.md``, cell by cell, against the app.

The table is the specification: each row names a route, each column a caller, and
each cell the outcome against A's object and against B's. A route the app serves but
the table does not list fails :func:`test_every_route_is_in_the_matrix`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import pytest
from asgiref.sync import async_to_sync
from asgiref.testing import ApplicationCommunicator
from django.conf import settings
from django.contrib.auth.models import User
from django.test import Client

from apps.graphs.models import Graph, WorkflowTemplate
from apps.jobs import engine, quotas
from apps.jobs.models import ApiToken, Artifact, Job, Profile
from apps.jobs.uploads import accept_upload
from myspinbot.asgi import application
from myspinbot.celery import app as celery_app
from myspinbot.storage import S3ArtifactStore, get_artifact_store
from testkit import broker
from testkit.graphs import chain
from tests.security.corpus import BOUNDARY, multipart
from tests.security.routes import api_operations, http_routes, websocket_routes
from tests.support.media import png_bytes, wav_bytes

DOC = Path(__file__).resolve().parents[2] / "docs" / "authorization.md"
CALLERS = ["anonymous", "A", "B", "staff"]
MULTIPART = f"multipart/form-data; boundary={BOUNDARY}"


WORKFLOW = {"1": {"class_type": "Note", "inputs": {"text": "matrix"}}}


def read_matrix() -> list[dict[str, Any]]:
    """The rows of the table: method, route and, per caller, ``[on A's, on B's]``."""
    rows = []
    for line in DOC.read_text().splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) != 6 or cells[0] not in {"GET", "POST", "DELETE", "PUT", "PATCH", "WS"}:
            continue
        outcomes = {}
        for caller, cell in zip(CALLERS, cells[2:], strict=True):
            parts = [part.strip() for part in cell.split("/")] if " / " in cell else [cell]
            outcomes[caller] = parts * 2 if len(parts) == 1 else parts
        rows.append({"method": cells[0], "route": cells[1], "outcomes": outcomes})
    return rows


MATRIX = read_matrix()


def shape(route: str) -> str:
    return re.sub(r"\{[^}]+\}", "{}", route)


def test_every_route_is_in_the_matrix() -> None:
    listed = {(row["method"], shape(row["route"])) for row in MATRIX}
    served = {(method, shape(path)) for method, path in api_operations()}
    served |= {("GET", route) for route in http_routes()}
    served |= {("WS", route) for route in websocket_routes()}

    assert served - listed == set()
    assert {item for item in listed if not item[1].startswith("/admin/")} - served == set()
    assert len(MATRIX) == len({(row["method"], row["route"]) for row in MATRIX})


# --- The world: three callers, each of A and B with a job, a finished job, an upload ---


def _owned(user: User) -> dict[str, str]:
    job = engine.submit_job(user, chain("debug.noop"))
    done = engine.cancel_job(engine.submit_job(user, chain("debug.noop")).pk)
    upload = accept_upload(user, _bytes_file(png_bytes()), len(png_bytes()), "me.png")
    profile = Profile.objects.create(owner=user, kind=Profile.Kind.VOICE, name="matrix")
    template = WorkflowTemplate.objects.create(owner=user, label="matrix", workflow=WORKFLOW)
    return {
        "template": str(template.pk),
        "job": str(job.pk),
        "done": str(done.pk),
        "artifact": str(upload.pk),
        "profile": str(profile.pk),
    }


def _bytes_file(data: bytes) -> Any:
    import io

    return io.BytesIO(data)


def _purge_queues() -> None:
    # The jobs made here are enqueued on commit; no worker of this module runs them.
    broker.purge(celery_app, [settings.CELERY_CPU_QUEUE, settings.CELERY_GPU_QUEUE])


@pytest.fixture(scope="module")
def world(django_db_setup: None, django_db_blocker: Any) -> Iterator[dict[str, Any]]:
    with django_db_blocker.unblock():
        users = {
            "A": User.objects.create_user("matrix-a", password="pw-matrix-a"),
            "B": User.objects.create_user("matrix-b", password="pw-matrix-b"),
            "staff": User.objects.create_superuser("matrix-staff", password="pw-matrix-s"),
        }
        tokens = {name: ApiToken.issue(user, "matrix")[1] for name, user in users.items()}
        objects = {"A": _owned(users["A"]), "B": _owned(users["B"])}
        engine.submit_job(users["staff"], chain("debug.noop"))  # so staff's list is not empty
        keys = list(Artifact.objects.filter(owner__in=users.values()).values_list("key", flat=True))
    yield {"users": users, "tokens": tokens, "objects": objects}
    with django_db_blocker.unblock():
        for key in keys:
            get_artifact_store().delete(key)
        Artifact.objects.filter(owner__in=users.values()).delete()
        jobs = Job.objects.filter(owner__in=users.values())
        graphs = list(jobs.values_list("graph_id", flat=True))
        jobs.delete()
        Graph.objects.filter(pk__in=graphs).delete()
        User.objects.filter(pk__in=[user.pk for user in users.values()]).delete()
    _purge_queues()


def stored_keys() -> set[str]:
    store = get_artifact_store()
    assert isinstance(store, S3ArtifactStore)
    pages = store.client.get_paginator("list_objects_v2").paginate(Bucket=store.bucket)
    return {item["Key"] for page in pages for item in page.get("Contents", [])}


@pytest.fixture
def no_stray_objects() -> Iterator[None]:
    """Uploads made by a cell are rolled back in the database; remove their objects."""
    before = stored_keys()
    yield
    store = get_artifact_store()
    for key in stored_keys() - before:
        store.delete(key)


# --- One cell ---------------------------------------------------------------------------


def request_body(method: str, route: str, objects: dict[str, str]) -> tuple[bytes, str] | None:
    """The body a request of this row sends; ``objects`` are the object owner's ids."""
    if (method, route) == ("POST", "/api/jobs"):
        photo = {"artifact": objects["artifact"]}
        document = chain("debug.echo")
        document["nodes"][0]["input"] = {"photo": photo}
        return json.dumps({"graph": document}).encode(), "application/json"
    if (method, route) == ("POST", "/api/templates"):
        return json.dumps({"label": "matrix", "workflow": WORKFLOW}).encode(), "application/json"
    if (method, route) == ("POST", "/api/plan"):
        return json.dumps({"request": "what can the workers do"}).encode(), "application/json"
    if (method, route) == ("POST", "/api/train"):
        body = {"topic": "otters", "photos": [{"artifact": objects["artifact"]}]}
        return json.dumps(body).encode(), "application/json"
    if (method, route) == ("POST", "/api/uploads"):
        png = {"name": "me.png", "type": "image/png", "data": {"media": "png"}}
        return multipart({}, [("file", png)]), MULTIPART
    if (method, route) == ("POST", "/api/infinitetalk"):
        files = [
            (
                "image_file",
                {"name": "me.png", "type": "image/png", "data": {"media": "png", "size": [64, 64]}},
            ),
            (
                "audio_file",
                {"name": "me.wav", "type": "audio/wav", "data": {"b64": _b64(wav_bytes(1.5))}},
            ),
        ]
        data = json.dumps({"prompt": "otters", "refText": "hello there"})
        return multipart({"data": data}, files), MULTIPART
    return None


def _b64(data: bytes) -> str:
    import base64

    return base64.b64encode(data).decode()


def client_for(caller: str, world: dict[str, Any], route: str) -> Client:
    if caller == "anonymous":
        return Client(raise_request_exception=False)
    if not route.startswith("/api/"):
        # The admin and the web UI's pages are used with a signed-in session.
        client = Client(raise_request_exception=False)
        client.force_login(world["users"][caller])
        return client
    headers = {"Authorization": f"Bearer {world['tokens'][caller]}"}
    return Client(headers=headers, raise_request_exception=False)


def http_outcome(row: dict[str, Any], caller: str, owner: str, world: dict[str, Any]) -> str:
    objects = world["objects"][owner]
    path = row["route"]
    for name, value in objects.items():
        path = path.replace("{" + name + "}", value)
    path = path.replace("<str:token>", "not-a-signed-link")
    path = path.replace("<uuid:job_id>", objects["job"])
    path = path.replace("<uuid:profile_id>", objects["profile"])
    client = client_for(caller, world, row["route"])
    body = request_body(row["method"], row["route"], objects)
    if body is None:
        response = client.generic(row["method"], path)
    else:
        response = client.generic(row["method"], path, body[0], content_type=body[1])
    outcome = str(response.status_code)
    if row["route"].startswith("/api/") and response.status_code >= 400:
        assert set(response.json()) == {"error"}, response.content[:200]
    if (row["method"], row["route"]) == ("GET", "/api/jobs") and response.status_code == 200:
        listed = {job["id"] for job in response.json()["jobs"]}
        own = set(Job.objects.filter(owner=world["users"][caller]).values_list("pk", flat=True))
        assert own, "every caller of the list owns jobs"
        if listed == {str(pk) for pk in own}:
            outcome += " own"
    if (row["method"], row["route"]) == ("GET", "/api/uploads") and response.status_code == 200:
        listed = {upload["id"] for upload in response.json()["uploads"]}
        mine = quotas.uploads_of(world["users"][caller]).values_list("pk", flat=True)
        if listed == {str(pk) for pk in mine}:
            outcome += " own"
    return outcome


class Socket(ApplicationCommunicator):
    def __init__(self, path: str, headers: list[tuple[bytes, bytes]]) -> None:
        parsed = urlsplit(path)
        scope = {
            "type": "websocket",
            "path": unquote(parsed.path),
            "query_string": parsed.query.encode(),
            "headers": headers,
            "subprotocols": [],
        }
        super().__init__(application, scope)


def ws_outcome(row: dict[str, Any], caller: str, owner: str, world: dict[str, Any]) -> str:
    path = "/ws/jobs/" if row["route"] == "/ws/jobs/" else "/ws"
    headers = []
    if caller != "anonymous":
        headers = [(b"authorization", f"Bearer {world['tokens'][caller]}".encode())]
    job_id = world["objects"][owner]["job"]

    async def talk() -> str:
        socket = Socket(path, headers)
        await socket.send_input({"type": "websocket.connect"})
        assert (await socket.receive_output(2))["type"] == "websocket.accept"
        try:
            await socket.send_input(
                {
                    "type": "websocket.receive",
                    "text": json.dumps({"action": "subscribe", "jobId": job_id}),
                }
            )
            while True:
                output = await socket.receive_output(2)
                if output["type"] == "websocket.close":
                    return str(output["code"])
                message = json.loads(output["text"])
                if message.get("type") == "subscribed" or message.get("message") == "subscribed":
                    return "subscribed"
                if message.get("type") == "error" or message.get("message") == "failed":
                    code = message["error"]["code"] if path == "/ws/jobs/" else message["error"]
                    return "not_found" if code in {"not_found", "not found"} else str(code)
                assert message.get("jobId") == job_id, message  # catch-up events: own job only
        finally:
            if not socket.future.done():
                await socket.send_input({"type": "websocket.disconnect", "code": 1000})
                await socket.wait(1)

    return async_to_sync(talk)()


HTTP_CELLS = [(row, caller) for row in MATRIX if row["method"] != "WS" for caller in CALLERS]
WS_CELLS = [(row, caller) for row in MATRIX if row["method"] == "WS" for caller in CALLERS]


def _ids(cells: list[tuple[dict[str, Any], str]]) -> list[str]:
    return [f"{row['method']} {row['route']} as {caller}" for row, caller in cells]


@pytest.mark.django_db
@pytest.mark.parametrize(("row", "caller"), HTTP_CELLS, ids=_ids(HTTP_CELLS))
def test_the_documented_http_outcome(
    row: dict[str, Any], caller: str, world: dict[str, Any], no_stray_objects: None
) -> None:
    found = [http_outcome(row, caller, owner, world) for owner in ("A", "B")]

    assert found == row["outcomes"][caller]


@pytest.mark.parametrize(("row", "caller"), WS_CELLS, ids=_ids(WS_CELLS))
def test_the_documented_websocket_outcome(
    row: dict[str, Any], caller: str, world: dict[str, Any], django_db_blocker: Any
) -> None:
    # Outside a test transaction: the consumer closes connections that are in one. The
    # sockets only read the module's committed objects.
    with django_db_blocker.unblock():
        found = [ws_outcome(row, caller, owner, world) for owner in ("A", "B")]

    assert found == row["outcomes"][caller]
