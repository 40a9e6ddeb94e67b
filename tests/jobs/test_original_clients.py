"""The original system's documents and client messages, replayed against the real
server (uvicorn with the ASGI app) and a real cpu worker: its example pipeline in its
``task`` form with its service ids and nulls, a node id it allowed and we could not
store as it is, its capabilities graph, ``GET /health``, ``GET /api/capabilities`` in
its shape and its ``/ws`` protocol."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from django.conf import settings
from django.contrib.auth.models import User
from websockets.sync.client import connect as ws_connect

from apps.graphs.original import storage_key
from apps.jobs.models import ApiToken, Job, NodeRun
from testkit.services import AsgiServer, CeleryWorker
from tests.graphs.test_original import CAPABILITIES, SADTALKER

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def token() -> str:
    _, secret = ApiToken.issue(User.objects.create_user("ada"), "original client")
    return secret


def call(
    web: AsgiServer, method: str, path: str, token: str | None = None, body: Any = None
) -> tuple[int, Any]:
    request = urllib.request.Request(
        web.http + path,
        method=method,
        data=None if body is None else json.dumps(body).encode(),
        headers={
            "Content-Type": "application/json",
            **({"Authorization": f"Bearer {token}"} if token else {}),
        },
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def follow(web: AsgiServer, token: str, job_id: str) -> list[dict[str, Any]]:
    """The original client's loop: subscribe on /ws and read until the job is done."""
    received = []
    with ws_connect(f"{web.ws}/ws?token={token}") as socket:
        socket.send(json.dumps({"action": "subscribe", "jobId": job_id}))
        while True:
            message = json.loads(socket.recv(timeout=90))
            received.append(message)
            if message.get("type") == "update" and message["status"] in Job.FINISHED:
                return received


def test_the_originals_pipeline_runs_unchanged_and_its_socket_client_follows_it(
    web: AsgiServer, token: str, start_worker: Callable[..., CeleryWorker]
) -> None:
    start_worker("cpu", [settings.CELERY_CPU_QUEUE])
    document = json.loads(json.dumps(SADTALKER))
    # An id the original allowed: it must run, under a key that is safe to store.
    document["nodes"][2]["id"] = "../generate video"
    document["edges"][1]["to"] = "../generate video"

    status, created = call(web, "POST", "/api/jobs", token, {"graph": document})
    assert status == 201, created
    messages = follow(web, token, created["id"])

    assert messages[0] == {"action": "response", "message": "subscribed", "jobId": created["id"]}
    assert messages[-1]["status"] == "completed"
    assert messages[-1]["progress"] == 1.0
    assert {m["type"] for m in messages[1:]} == {"update"}
    status, detail = call(web, "GET", f"/api/jobs/{created['id']}", token)
    key = storage_key("../generate video")
    assert [(n["id"], n["name"], n["service"]) for n in detail["graph"]["nodes"]] == [
        ("script", "Generate script", "llm.generate_script"),
        ("train_voice", "Train voice", "debug.noop"),
        (key, "Generate video", "debug.noop"),
    ]
    recorded = detail["graph"]["metadata"]["original"]["nodes"]
    assert recorded[key] == {
        "id": "../generate video",
        "service": "dummy.dummy_task",
        "serviceField": "task",
    }
    assert recorded["script"]["service"] == "script.generateScript"
    runs = NodeRun.objects.filter(job_id=created["id"]).order_by("id")
    assert [(r.node_id, r.status) for r in runs] == [
        ("script", "completed"),
        ("train_voice", "completed"),
        (key, "completed"),
    ]
    assert "otters" in runs[0].output["narration"].lower()
    status, legacy = call(web, "GET", f"/api/status/{created['id']}", token)
    assert (status, legacy) == (
        200,
        {"jobId": created["id"], "status": "completed", "progress": 1.0},
    )


def test_the_originals_capabilities_graph_health_and_manifest(
    web: AsgiServer, token: str, start_worker: Callable[..., CeleryWorker]
) -> None:
    start_worker("cpu", [settings.CELERY_CPU_QUEUE])

    assert call(web, "GET", "/health") == (200, {"status": "ok"})
    status, created = call(web, "POST", "/api/jobs", token, {"graph": CAPABILITIES})
    assert status == 201, created
    assert follow(web, token, created["id"])[-1]["status"] == "completed"
    result = NodeRun.objects.get(job_id=created["id"], node_id="control.info").output
    assert result["note"] == "", result
    status, manifest = call(web, "GET", "/api/capabilities?shape=original", token)

    assert status == 200
    assert set(manifest) == {"generatedAt", "capabilities", "sources"}
    ids = [c["id"] for c in manifest["capabilities"]]
    assert "capabilities.report" in ids
    assert "lora.train" not in ids  # no gpu worker is up
    assert manifest["sources"]["control"] == {"plane": "node", "number": len(ids)}
    assert [c["id"] for c in result["capabilities"]] == ids
    assert result["sources"] == manifest["sources"]


def test_the_originals_socket_messages_that_cannot_be_served_are_failed(
    web: AsgiServer, token: str
) -> None:
    unknown = str(uuid.uuid4())
    with ws_connect(f"{web.ws}/ws?token={token}") as socket:
        socket.send(json.dumps({"action": "subscribe", "jobId": unknown}))
        socket.send(json.dumps({"action": "dance", "jobId": unknown}))
        socket.send("not json")
        replies = [json.loads(socket.recv(timeout=10)) for _ in range(3)]

    assert [(r["action"], r["message"]) for r in replies] == [("response", "failed")] * 3
    assert replies[0] == {
        "action": "response",
        "message": "failed",
        "jobId": unknown,
        "error": "not found",
    }
