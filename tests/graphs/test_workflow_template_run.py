"""A job from a user's workflow template runs on a real cpu worker against the stand-in
ComfyUI server: the bound prompt and seed reach the server, the outputs come back."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from django.conf import settings
from django.contrib.auth.models import User

from apps.jobs.models import Job, NodeRun
from testkit.comfyui import FakeComfyUI
from testkit.graphs import wait_for_job
from testkit.services import CeleryWorker
from tests.capabilities.test_comfyui_workflow import BINDINGS, TXT2IMG
from tests.support.clients import api_client

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def comfy(settings: Any) -> Iterator[FakeComfyUI]:
    server = FakeComfyUI()
    server.start()
    settings.MYSPINBOT_COMFYUI_URLS = [server.url]
    yield server
    server.stop()


def test_a_job_from_a_workflow_template_runs_on_the_comfyui_server(
    comfy: FakeComfyUI, start_worker: Callable[..., CeleryWorker]
) -> None:
    start_worker("cpu", [settings.CELERY_CPU_QUEUE], env={"MYSPINBOT_COMFYUI_URLS": comfy.url})
    as_ada = api_client(User.objects.create_user("ada"))
    created = as_ada.post(
        "/api/templates",
        data=json.dumps({"label": "Fox", "workflow": TXT2IMG, "bindings": BINDINGS}),
        content_type="application/json",
    )
    assert created.status_code == 201, created.json()
    template = created.json()
    assert template["nodes"][0]["params"]["prompt"] == "placeholder"  # as exported

    submitted = as_ada.post(
        "/api/jobs",
        data=json.dumps(
            {
                "template": template["name"],
                "params": {"workflow": {"prompt": "a red fox", "seed": 7}},
            }
        ),
        content_type="application/json",
    )

    assert submitted.status_code == 201, submitted.json()
    job = wait_for_job(Job.objects.get(pk=submitted.json()["id"]), timeout=120)
    assert job.status == "completed", job.error
    (sent,) = comfy.prompts
    assert (sent["prompt"]["6"]["inputs"]["text"], sent["prompt"]["3"]["inputs"]["seed"]) == (
        "a red fox",
        7,
    )
    output = NodeRun.objects.get(job=job, node_id="workflow").output
    assert [f["node"] for f in output["files"]] == ["9"]
    assert output["image"]["content_type"] == "image/png"
