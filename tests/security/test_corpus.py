"""Replays the malformed-request corpus (``tests/corpus/*.jsonl``) against the real app.

Every request must be answered with exactly the status and error code its entry says,
in the one error shape, and leave no database row and no stored object behind.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from django.apps import apps
from django.contrib.auth.models import User
from django.test import Client

from apps.graphs.models import Graph
from apps.graphs.original import storage_key
from apps.jobs import engine
from apps.jobs.models import ApiToken, Artifact, Job, NodeRun
from myspinbot.storage import S3ArtifactStore, StoredObject, get_artifact_store
from testkit.graphs import chain
from tests.security.corpus import load_corpus, send
from tests.security.routes import api_operations
from tests.support.media import png_bytes

ENTRIES = load_corpus()
# Documents in the original system's form that must be accepted (``"expect": {"status":
# 201, "mapped": [ids]}``): the rest are refused.
ACCEPTED = [entry for entry in ENTRIES if entry["expect"]["status"] == 201]
REFUSED = [entry for entry in ENTRIES if entry not in ACCEPTED]
SAFE_KEY = re.compile(r"[A-Za-z0-9_.:-]{1,64}")


def every_row_count() -> dict[str, int]:
    """Rows of every model of the project and of Django's auth and sessions."""
    return {
        model._meta.label: model.objects.count()
        for model in apps.get_models()
        if model._meta.app_label in {"jobs", "graphs", "auth", "sessions"}
    }


def stored_object_count() -> int:
    store = get_artifact_store()
    assert isinstance(store, S3ArtifactStore)
    pages = store.client.get_paginator("list_objects_v2").paginate(Bucket=store.bucket)
    return sum(page.get("KeyCount", 0) for page in pages)


@pytest.fixture(scope="module")
def stored_pngs() -> Iterator[list[StoredObject]]:
    """Two real objects on the S3 server that the artifacts of every test point to."""
    store = get_artifact_store()
    stored = [
        store.save_bytes(f"corpus/{uuid.uuid4().hex}.png", png_bytes(), "image/png")
        for _ in range(2)
    ]
    yield stored
    for one in stored:
        get_artifact_store().delete(one.key)


def artifact_of(owner: User, stored: StoredObject) -> Artifact:
    return Artifact.objects.create(
        owner=owner,
        name="me.png",
        bucket=stored.bucket,
        key=stored.key,
        size_bytes=stored.size_bytes,
        sha256=stored.sha256,
        content_type=stored.content_type,
    )


def finished_job(owner: User) -> Job:
    job = engine.submit_job(owner, chain("debug.noop"))
    return engine.cancel_job(job.pk)


@pytest.fixture(scope="module")
def world(
    django_db_setup: None, django_db_blocker: Any, stored_pngs: list[StoredObject]
) -> Iterator[dict[str, Any]]:
    """Two users with a finished job and an artifact each, made once for the module
    (each test runs in a transaction that is rolled back) and removed at its end."""
    with django_db_blocker.unblock():
        ada = User.objects.create_user("corpus-ada")
        bob = User.objects.create_user("corpus-bob")
        _, token = ApiToken.issue(ada, "corpus")
        jobs = [finished_job(ada), finished_job(bob)]
        names = {
            "own_job": str(jobs[0].pk),
            "own_artifact": str(artifact_of(ada, stored_pngs[0]).pk),
            "bob_job": str(jobs[1].pk),
            "bob_artifact": str(artifact_of(bob, stored_pngs[1]).pk),
            "random": str(uuid.uuid4()),
        }
    client = Client(headers={"Authorization": f"Bearer {token}"}, raise_request_exception=False)
    yield {"client": client, "names": names}
    with django_db_blocker.unblock():
        graphs = [job.graph_id for job in jobs]
        Artifact.objects.filter(owner__in=[ada, bob]).delete()
        Job.objects.filter(pk__in=[job.pk for job in jobs]).delete()
        Graph.objects.filter(pk__in=graphs).delete()
        User.objects.filter(pk__in=[ada.pk, bob.pk]).delete()


def test_the_corpus_is_big_and_names_are_unique() -> None:
    ids = [entry["id"] for entry in ENTRIES]

    assert len(ids) >= 200
    assert len(set(ids)) == len(ids)


def test_every_route_that_takes_input_is_in_the_corpus() -> None:
    covered = set()
    for method, path in api_operations():
        pattern = re.compile("^" + re.sub(r"\\{[^}]+\\}", "[^/?]+", re.escape(path)) + "(\\?.*)?$")
        if any(e["method"] == method and pattern.match(e["path"]) for e in ENTRIES):
            covered.add((method, path))
    takes_input = {
        (method, path)
        for method, path in api_operations()
        if method in {"POST", "PUT", "PATCH", "DELETE"} or "{" in path or path == "/api/jobs"
    }

    assert takes_input - covered == set()


@pytest.mark.django_db
@pytest.mark.parametrize("entry", REFUSED, ids=[e["id"] for e in REFUSED])
def test_a_malformed_request_is_refused_and_leaves_nothing(
    entry: dict[str, Any], world: dict[str, Any]
) -> None:
    rows, objects = every_row_count(), stored_object_count()

    response = send(world["client"], entry, world["names"])

    expected = entry["expect"]
    body = response.content[:300]
    assert response.status_code == expected["status"], (entry["_where"], body)
    assert response["Content-Type"] == "application/json; charset=utf-8", entry["_where"]
    error = response.json()
    assert set(error) == {"error"}, entry["_where"]
    assert set(error["error"]) == {"code", "message", "details"}, entry["_where"]
    assert error["error"]["code"] == expected["code"], (entry["_where"], error)
    assert error["error"]["message"], entry["_where"]
    assert every_row_count() == rows
    assert stored_object_count() == objects


@pytest.mark.django_db
@pytest.mark.parametrize("entry", ACCEPTED, ids=[e["id"] for e in ACCEPTED])
def test_an_original_document_is_accepted_with_its_ids_mapped_to_safe_keys(
    entry: dict[str, Any], world: dict[str, Any]
) -> None:
    objects = stored_object_count()

    response = send(world["client"], entry, world["names"])

    assert response.status_code == 201, (entry["_where"], response.content[:300])
    graph = response.json()["graph"]
    keys = [node["id"] for node in graph["nodes"]]
    mapped = entry["expect"]["mapped"]
    assert [node["id"] for node in graph["nodes"] if node["name"] in mapped] == [
        storage_key(node_id) for node_id in mapped
    ]
    recorded = graph["metadata"].get("original", {}).get("nodes", {})
    assert {key: record["id"] for key, record in recorded.items() if "id" in record} == {
        storage_key(node_id): node_id for node_id in mapped
    }
    assert all(SAFE_KEY.fullmatch(key) and key.strip(".") for key in keys), keys
    job = Job.objects.get(pk=response.json()["id"])
    assert sorted(NodeRun.objects.filter(job=job).values_list("node_id", flat=True)) == sorted(keys)
    assert stored_object_count() == objects
