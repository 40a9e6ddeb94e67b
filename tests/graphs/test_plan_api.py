"""``POST /api/plan`` with real workers and the stand-in Ollama server: the plan comes
back for review, nothing runs until ``POST /api/jobs`` runs it unchanged; plans are
limited per user."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from django.conf import settings
from django.contrib.auth.models import User
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client

from apps.capabilities import manifest
from apps.jobs.models import Job
from myspinbot.rate_limits import redis_client
from testkit.graphs import wait_for_job
from testkit.services import CeleryWorker
from tests.graphs.test_llm_planner import PLAN
from tests.support.clients import api_client
from tests.support.media import png_bytes
from tests.support.ollama import FakeOllama, chat_reply

pytestmark = pytest.mark.django_db(transaction=True)


def post_json(client: Client, path: str, body: Any) -> Any:
    return client.post(path, data=json.dumps(body), content_type="application/json")


@pytest.fixture(autouse=True)
def _fresh_counts() -> Iterator[None]:
    def clear() -> None:
        client = redis_client()
        for key in client.scan_iter("myspinbot:plan:*"):
            client.delete(key)

    clear()
    manifest._cache.update(at=0.0, workers=None)
    yield
    clear()


def test_a_plan_runs_unchanged_when_posted_as_a_job(
    ollama: FakeOllama, start_worker: Callable[..., CeleryWorker]
) -> None:
    start_worker("cpu", [settings.CELERY_CPU_QUEUE])
    ada = User.objects.create_user("ada")
    as_ada = api_client(ada)
    ollama.reply(chat_reply(PLAN))
    # The planner offers what the workers answer within 1 s: on a loaded machine a worker
    # that just started can miss the first broadcast.
    deadline = time.monotonic() + 30
    while not manifest.live_workers() and time.monotonic() < deadline:
        manifest._cache.update(at=0.0, workers=None)
        time.sleep(0.5)
    assert manifest.live_workers() != []

    planned = post_json(
        as_ada, "/api/plan", {"request": "echo my words", "inputs": {"transcript": "hi"}}
    )

    assert planned.status_code == 200, planned.json()
    body = planned.json()
    assert (body["source"], body["reason"], body["attempts"]) == ("llm", None, 1)
    assert Job.objects.count() == 0  # nothing runs on /api/plan
    created = post_json(as_ada, "/api/jobs", {"graph": body["graph"]})
    assert created.status_code == 201, created.json()
    job = wait_for_job(Job.objects.get(pk=created.json()["id"]))
    assert job.status == "completed"
    stored = job.graph.document
    assert [(n["id"], n["service"], n["params"]) for n in stored["nodes"]] == [
        (n["id"], n["service"], n["params"]) for n in body["graph"]["nodes"]
    ]
    assert stored["nodes"][0]["input"] == {"transcript": "hi"}
    assert stored["metadata"] == {"planner": "llm", "model": settings.MYSPINBOT_LLM_MODEL}


def test_with_no_worker_up_the_llm_is_not_asked(ollama: FakeOllama) -> None:
    as_ada = api_client(User.objects.create_user("ada"))
    ollama.reply(chat_reply(PLAN))

    response = post_json(as_ada, "/api/plan", {"request": "what can you run", "inputs": {}})

    assert response.status_code == 200, response.json()
    body = response.json()
    assert (body["source"], body["template"], body["attempts"]) == ("template", "capabilities", 0)
    assert body["reason"].startswith("no worker is up, so the LLM has nothing to plan; ")
    assert ollama.requests == []


def test_without_an_llm_a_template_answers_and_says_so(settings: Any) -> None:
    settings.MYSPINBOT_LLM_URL = None
    as_ada = api_client(User.objects.create_user("ada"))

    response = post_json(
        as_ada,
        "/api/plan",
        {"request": "Show me what the workers can do", "inputs": {}},
    )

    assert response.status_code == 200, response.json()
    body = response.json()
    assert (body["source"], body["template"], body["model"]) == ("template", "capabilities", None)
    assert body["reason"] == (
        "no LLM is configured (MYSPINBOT_LLM_URL); using the template 'Capabilities' "
        "(capabilities), though no worker that is up runs capabilities.report"
    )
    assert [n["id"] for n in body["graph"]["nodes"]] == ["get_capabilities", "merge_manifest"]


def test_plans_are_limited_per_user(settings: Any) -> None:
    settings.MYSPINBOT_LLM_URL = None
    settings.MYSPINBOT_PLANS_PER_WINDOW = 2
    settings.MYSPINBOT_PLAN_WINDOW_SECONDS = 60
    as_ada = api_client(User.objects.create_user("ada"))
    as_bob = api_client(User.objects.create_user("bob"))
    ask = {"request": "Show me what the workers can do", "inputs": {}}

    codes = [post_json(as_ada, "/api/plan", ask).status_code for _ in range(3)]

    assert codes == [200, 200, 429]
    refused = post_json(as_ada, "/api/plan", ask)
    assert refused.json()["error"]["code"] == "too_many_plans"
    assert refused.json()["error"]["message"].startswith("at most 2 plans per 60 s; try again in ")
    assert 1 <= int(refused["Retry-After"]) <= 60
    assert post_json(as_bob, "/api/plan", ask).status_code == 200


@pytest.mark.parametrize(
    "body",
    [{}, {"request": ""}, {"request": "   "}, {"request": "x" * 2001}, {"request": "a\u0000b"}],
)
def test_a_bad_plan_request_is_a_422(body: dict[str, Any], settings: Any) -> None:
    settings.MYSPINBOT_LLM_URL = None
    as_ada = api_client(User.objects.create_user("ada"))

    response = post_json(as_ada, "/api/plan", body)

    assert response.status_code == 422
    assert response.json()["error"]["code"] in {"invalid_request", "invalid_text"}


def test_an_artifact_that_is_not_the_callers_is_refused_at_plan_time(
    ollama: FakeOllama, settings: Any
) -> None:
    settings.MYSPINBOT_LLM_URL = None
    ada, bob = User.objects.create_user("ada"), User.objects.create_user("bob")
    as_ada, as_bob = api_client(ada), api_client(bob)
    photo = SimpleUploadedFile("face.png", png_bytes(), content_type="image/png")
    bobs = as_bob.post("/api/uploads", {"file": photo}).json()["id"]
    ask = {"request": "a talking portrait", "inputs": {"photos": [{"artifact": bobs}]}}

    refused = post_json(as_ada, "/api/plan", ask)
    not_an_id = post_json(
        as_ada, "/api/plan", {"request": "a portrait", "inputs": {"photo": {"artifact": "x"}}}
    )
    owned = post_json(as_bob, "/api/plan", ask)

    assert refused.status_code == 422
    assert refused.json()["error"]["code"] == "unknown_artifact"
    assert refused.json()["error"]["message"] == f"inputs.photos[0]: no artifact {bobs}"
    assert (not_an_id.status_code, not_an_id.json()["error"]["code"]) == (422, "unknown_artifact")
    assert not_an_id.json()["error"]["message"] == "inputs.photo: not an artifact id"
    assert owned.status_code == 200, owned.json()
    assert ollama.requests == []
