"""A job answered from the output cache, run through real workers: it gets the results a
fresh run would, and deleting either job leaves the other whole."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.test import Client

from apps.capabilities.registry import get_registry
from apps.jobs import engine
from apps.jobs.models import Artifact, Job, JobEvent
from myspinbot.storage import get_artifact_store
from testkit.graphs import edge, event_types, graph, node, wait_for_job
from testkit.services import CeleryWorker

pytestmark = pytest.mark.django_db(transaction=True)

TEST_CAPABILITIES = Path(__file__).resolve().parent.parent / "support" / "capabilities"
DOCUMENT = graph(
    [
        node("write", "testing.stored", params={"text": "first words"}),
        node("extend", "testing.stored", params={"text": "more words"}),
    ],
    [edge("write", "extend")],
)


@pytest.fixture
def worker(start_worker: Callable[..., CeleryWorker], settings: Any) -> Iterator[CeleryWorker]:
    settings.MYSPINBOT_CAPABILITY_DIRS = [str(TEST_CAPABILITIES)]
    get_registry.cache_clear()
    yield start_worker(
        "cpu",
        [settings.CELERY_CPU_QUEUE],
        env={"MYSPINBOT_CAPABILITY_DIRS": str(TEST_CAPABILITIES)},
    )
    get_registry.cache_clear()


def _listed(client: Client, job: Job) -> list[dict[str, Any]]:
    response = client.get(f"/api/jobs/{job.pk}")
    assert response.status_code == 200
    return list(response.json()["artifacts"])


def _results(client: Client, job: Job) -> list[tuple[str, str, str, str, int]]:
    """What a user sees of a job's artifacts, less the job id (which must be the job's)."""
    listed = _listed(client, job)
    assert {artifact["job_id"] for artifact in listed} == {str(job.pk)}
    return [
        (a["id"], a["node_id"], a["name"], a["sha256"], a["size_bytes"])
        for a in sorted(listed, key=lambda a: a["node_id"])
    ]


def _downloads(client: Client, job: Job) -> dict[str, bytes]:
    found = {}
    for artifact in _listed(client, job):
        response = client.get(f"/api/artifacts/{artifact['id']}/download")
        assert response.status_code == 200, artifact
        found[artifact["node_id"]] = b"".join(response.streaming_content)  # type: ignore[attr-defined]
    return found


def _stored_events(job: Job) -> list[tuple[str, str, str]]:
    return [
        (event.node_id or "", event.payload["name"], event.payload["artifact"])
        for event in JobEvent.objects.filter(job=job, type="artifact.stored").order_by("seq")
    ]


def test_a_job_answered_from_the_cache_has_the_results_of_a_fresh_run(
    worker: CeleryWorker,
) -> None:
    ada = User.objects.create_user("ada")
    client = Client()
    client.force_login(ada)
    expected = {"write": b"first words", "extend": b"first words\nmore words"}

    fresh = wait_for_job(engine.submit_job(ada, DOCUMENT))
    cached = wait_for_job(engine.submit_job(ada, DOCUMENT))

    assert (fresh.status, cached.status) == ("completed", "completed")
    assert event_types(cached) == [
        "job.queued",
        "node.cached",
        "artifact.stored",
        "node.cached",
        "artifact.stored",
        "job.completed",
    ]
    assert _results(client, cached) == _results(client, fresh)
    assert _stored_events(cached) == _stored_events(fresh)
    assert _downloads(client, fresh) == expected
    assert _downloads(client, cached) == expected
    assert Artifact.objects.count() == 2  # listed for both jobs, stored once

    # Deleting the job that reused leaves the one that made the artifacts whole ...
    assert client.delete(f"/api/jobs/{cached.pk}").status_code == 204
    assert _downloads(client, fresh) == expected

    # ... and deleting the one that made them leaves a job that reused them whole.
    again = wait_for_job(engine.submit_job(ada, DOCUMENT))
    assert _results(client, again) == _results(client, fresh)
    keys = list(Artifact.objects.values_list("key", flat=True))
    assert client.delete(f"/api/jobs/{fresh.pk}").status_code == 204
    assert _downloads(client, again) == expected
    store = get_artifact_store()
    assert [store.exists(key) for key in keys] == [True, True]

    # The last job that holds them takes them with it.
    assert client.delete(f"/api/jobs/{again.pk}").status_code == 204
    assert Artifact.objects.count() == 0
    assert [store.exists(key) for key in keys] == [False, False]
