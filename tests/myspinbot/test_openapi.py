"""The OpenAPI document: served, committed without drift, and fuzzed for 5xx."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from django.contrib.auth.models import User
from django.core import signals
from django.db import close_old_connections
from django.test import Client
from hypothesis import HealthCheck, settings
from ninja.responses import NinjaJSONEncoder

from apps.jobs.models import ApiToken
from myspinbot.api import api
from myspinbot.wsgi import application
from testkit.services import REPO

COMMITTED = REPO / "schemas" / "openapi.json"


def test_the_committed_document_matches_the_api() -> None:
    live = json.loads(json.dumps(api.get_openapi_schema(), cls=NinjaJSONEncoder))

    assert live == json.loads(COMMITTED.read_text()), "the API changed: run `make openapi`"


def test_the_document_and_the_docs_are_served(client: Client) -> None:
    document = client.get("/api/openapi.json")
    docs = client.get("/api/docs")

    assert document.status_code == 200
    assert "/api/jobs" in document.json()["paths"]
    assert docs.status_code == 200


schema = schemathesis.openapi.from_wsgi("/api/openapi.json", application)


@pytest.fixture
def token(db: Any) -> Iterator[str]:
    """A token, with the WSGI handler kept from closing the test's database connection
    at the end of each request (as Django's test client does)."""
    user = User.objects.create_user("fuzz")
    signals.request_started.disconnect(close_old_connections)
    signals.request_finished.disconnect(close_old_connections)
    yield ApiToken.issue(user, "fuzz")[1]
    signals.request_started.connect(close_old_connections)
    signals.request_finished.connect(close_old_connections)


@pytest.mark.django_db
@schema.parametrize()
@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
def test_no_request_makes_the_server_fail(case: schemathesis.Case, token: str) -> None:
    from schemathesis.checks import not_a_server_error

    response = case.call(headers={"Authorization": f"Bearer {token}"})
    case.validate_response(response, checks=[not_a_server_error])
