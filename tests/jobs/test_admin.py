"""Django admin: every model's list and detail pages render, and the job actions work."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import User
from django.test import Client

from apps.jobs import engine
from apps.jobs.models import Job, NodeRun
from testkit.graphs import chain

pytestmark = pytest.mark.django_db


@pytest.fixture
def staff() -> Client:
    client = Client()
    client.force_login(User.objects.create_superuser("root", password="pw-root-123"))
    return client


@pytest.mark.parametrize(
    "path",
    [
        "jobs/job",
        "jobs/jobevent",
        "jobs/artifact",
        "jobs/apitoken",
        "jobs/profile",
        "graphs/graph",
        "jobs/noderun",
    ],
)
def test_every_changelist_renders(staff: Client, path: str) -> None:
    engine.submit_job(User.objects.create_user("ada"), chain("debug.noop", "debug.noop"))

    assert staff.get(f"/admin/{path}/").status_code == 200


def test_a_job_page_shows_its_node_runs(staff: Client) -> None:
    job = engine.submit_job(User.objects.create_user("ada"), chain("debug.noop"))

    response = staff.get(f"/admin/jobs/job/{job.pk}/change/")

    assert response.status_code == 200
    assert b"debug.noop" in response.content


def test_the_cancel_and_retry_actions(staff: Client) -> None:
    job = engine.submit_job(User.objects.create_user("ada"), chain("debug.noop"))

    staff.post("/admin/jobs/job/", {"action": "cancel_jobs", "_selected_action": [job.pk]})
    job.refresh_from_db()
    assert job.status == "cancelled"
    staff.post("/admin/jobs/job/", {"action": "retry_jobs", "_selected_action": [job.pk]})

    job.refresh_from_db()
    assert job.status == "queued"
    assert NodeRun.objects.get(job=job).attempt == 2
    assert Job.objects.count() == 1
