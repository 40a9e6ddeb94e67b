"""Stateful property-based testing of the REST API with schemathesis: zero 5xx.

The API's own OpenAPI document, with links added (a created job's id feeds its read,
events, cancel, retry, delete and status routes; an upload's id its artifact routes),
drives a state machine against the real app (in-process WSGI, real PostgreSQL and S3).
The body of ``POST /api/jobs`` is widened to "the documented body, or a small valid-ish
graph of debug services", so that created jobs, and so the links, come up often.

Runs ``SCHEMATHESIS_SECONDS`` (default 600) in ``make test-faults`` (marked slow).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from typing import Any

import hypothesis
import pytest
import schemathesis
from django.contrib.auth.models import User
from django.core.signals import request_finished, request_started
from django.db import close_old_connections
from django.test import override_settings
from ninja.responses import NinjaJSONEncoder
from schemathesis.checks import not_a_server_error

from apps.jobs.models import ApiToken
from myspinbot.api import api
from myspinbot.storage import S3ArtifactStore, get_artifact_store

pytestmark = [pytest.mark.slow, pytest.mark.django_db]

SECONDS = float(os.environ.get("SCHEMATHESIS_SECONDS", "600"))

JOB_LINKS = {
    ("get", "/api/jobs/{job_id}"): "job_id",
    ("get", "/api/jobs/{job_id}/events"): "job_id",
    ("post", "/api/jobs/{job_id}/cancel"): "job_id",
    ("post", "/api/jobs/{job_id}/retry"): "job_id",
    ("delete", "/api/jobs/{job_id}"): "job_id",
    ("get", "/api/status/{job_id}"): "job_id",
}
ARTIFACT_LINKS = {
    ("get", "/api/artifacts/{artifact_id}"): "artifact_id",
    ("get", "/api/artifacts/{artifact_id}/download"): "artifact_id",
}
SOURCES = [
    (("post", "/api/jobs"), "201", "$response.body#/id", JOB_LINKS),
    (("post", "/api/train"), "201", "$response.body#/jobId", JOB_LINKS),
    (("post", "/api/infinitetalk"), "201", "$response.body#/jobId", JOB_LINKS),
    (("post", "/api/jobs/{job_id}/cancel"), "202", "$response.body#/id", JOB_LINKS),
    (("post", "/api/jobs/{job_id}/retry"), "202", "$response.body#/id", JOB_LINKS),
    (("post", "/api/uploads"), "201", "$response.body#/id", ARTIFACT_LINKS),
]

SERVICES = ["debug.noop", "debug.echo", "debug.fail", "debug.sleep"]
NODE_IDS = ["a", "b", "c"]
SMALL_GRAPH = {
    "type": "object",
    "required": ["graph"],
    "additionalProperties": False,
    "properties": {
        "graph": {
            "type": "object",
            "required": ["schema", "nodes", "edges"],
            "additionalProperties": False,
            "properties": {
                "schema": {"const": "langgraph.v1"},
                "nodes": {
                    "type": "array",
                    "minItems": 0,
                    "maxItems": 3,
                    "items": {
                        "type": "object",
                        "required": ["id", "service"],
                        "additionalProperties": False,
                        "properties": {
                            "id": {"enum": NODE_IDS},
                            "service": {"enum": SERVICES},
                            "params": {"type": "object"},
                        },
                    },
                },
                "edges": {
                    "type": "array",
                    "maxItems": 3,
                    "items": {
                        "type": "object",
                        "required": ["from", "to"],
                        "additionalProperties": False,
                        "properties": {
                            "from": {"enum": NODE_IDS},
                            "to": {"enum": NODE_IDS},
                            "kind": {"enum": ["normal", "on_success", "on_failure"]},
                        },
                    },
                },
            },
        }
    },
}


def linked_document() -> dict[str, Any]:
    """The API's OpenAPI document with links and the widened job body."""
    document = json.loads(json.dumps(api.get_openapi_schema(), cls=NinjaJSONEncoder))
    paths = document["paths"]
    for (method, path), status, expression, targets in SOURCES:
        links = paths[path][method]["responses"][status].setdefault("links", {})
        for (target_method, target_path), parameter in targets.items():
            operation_id = paths[target_path][target_method]["operationId"]
            links[operation_id] = {
                "operationId": operation_id,
                "parameters": {parameter: expression},
            }
    body = paths["/api/jobs"]["post"]["requestBody"]["content"]["application/json"]
    body["schema"] = {"anyOf": [body["schema"], SMALL_GRAPH]}
    return document


def stored_keys() -> set[str]:
    store = get_artifact_store()
    assert isinstance(store, S3ArtifactStore)
    pages = store.client.get_paginator("list_objects_v2").paginate(Bucket=store.bucket)
    return {item["Key"] for page in pages for item in page.get("Contents", [])}


@pytest.fixture
def connections_kept() -> Iterator[None]:
    """The WSGI handler closes the database connection after each request, which would
    end the test's transaction; Django's test client turns that off the same way."""
    for signal in (request_started, request_finished):
        signal.disconnect(close_old_connections)
    yield
    for signal in (request_started, request_finished):
        signal.connect(close_old_connections)


@pytest.fixture
def no_stray_objects() -> Iterator[None]:
    """Uploads are rolled back with the test's transaction; remove their objects."""
    before = stored_keys()
    yield
    store = get_artifact_store()
    for key in stored_keys() - before:
        store.delete(key)


@pytest.mark.timeout(SECONDS + 600)
def test_no_server_errors_under_stateful_fuzzing(
    no_stray_objects: None, connections_kept: None
) -> None:
    from myspinbot.wsgi import application

    _, token = ApiToken.issue(User.objects.create_user("fuzz"))
    schema = schemathesis.openapi.from_dict(linked_document())
    schema.app = application
    schema.location = "/api/openapi.json"
    headers = {"Authorization": f"Bearer {token}"}
    statuses: dict[int, int] = {}

    class Machine(schema.as_state_machine()):  # type: ignore[misc]
        def get_call_kwargs(self, case: Any) -> dict[str, Any]:
            return {"headers": headers}

        def after_call(self, response: Any, case: Any) -> None:
            statuses[response.status_code] = statuses.get(response.status_code, 0) + 1

        def validate_response(self, response: Any, case: Any, **kwargs: Any) -> None:
            case.validate_response(response, checks=[not_a_server_error], headers=headers)

    settings = hypothesis.settings(
        max_examples=100,
        stateful_step_count=10,
        deadline=None,
        database=None,
        suppress_health_check=list(hypothesis.HealthCheck),
    )
    deadline = time.monotonic() + SECONDS
    rounds = 0
    # Limits off: the fuzzer would otherwise spend its time on 429s after 20 jobs.
    with override_settings(
        MYSPINBOT_MAX_JOBS_IN_FLIGHT=10**6, MYSPINBOT_SUBMISSIONS_PER_MINUTE=10**6
    ):
        while rounds == 0 or time.monotonic() < deadline:
            Machine.run(settings=settings)
            rounds += 1
    print(f"schemathesis: {rounds} rounds, {sum(statuses.values())} calls, {statuses}")

    assert not [status for status in statuses if status >= 500]
    assert statuses.get(201, 0) > 0
