"""capabilities.report: the original capabilities workflow, run by a real worker."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest
from django.conf import settings
from django.contrib.auth.models import User

from apps.graphs.planner import plan
from apps.jobs import engine
from apps.jobs.models import Job, NodeRun
from testkit.services import CeleryWorker

pytestmark = pytest.mark.django_db(transaction=True)


def wait_for(job: Job, timeout: float = 60) -> Job:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job.refresh_from_db()
        if job.is_finished:
            return job
        time.sleep(0.2)
    raise AssertionError(f"job {job.pk} still {job.status}")


def test_the_capabilities_template_asks_the_workers_and_merges_their_manifests(
    start_worker: Callable[..., CeleryWorker],
) -> None:
    worker = start_worker("cpu", [settings.CELERY_CPU_QUEUE])
    owner = User.objects.create_user("ada")

    job = wait_for(
        engine.create_job(owner, plan("capabilities", None, {}), template="capabilities")
    )

    assert job.status == Job.Status.COMPLETED
    runs = {run.node_id: run for run in NodeRun.objects.filter(job=job)}
    report: dict[str, Any] = runs["merge_manifest"].output
    # What a user who is not staff may see of a worker, merged with every declaration.
    assert [w["hostname"] for w in report["workers"]] == ["cpu worker 1"]
    assert report["workers"][0]["queues"] == [settings.CELERY_CPU_QUEUE]
    assert worker.hostname not in str(report)
    available = {s["id"] for s in report["services"] if s["available"]}
    assert "capabilities.report" in available
    assert "lora.train" not in available  # no gpu worker is up
    # The original's combined-manifest shape: what the live workers run, by plane.
    listed = {c["id"]: c for c in report["capabilities"]}
    assert set(listed) == available
    assert listed["llm.generate_script"]["plane"] == "node"
    assert listed["capabilities.report"]["aliases"] == [
        "capabilities.getManifest",
        "get_capabilities",
    ]
    assert report["sources"] == {
        "control": {"plane": "node", "number": len(available)},
        "worker": {"plane": "python", "number": 0},
    }
    assert report["generated_at"].endswith("Z")
