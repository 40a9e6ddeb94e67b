"""The merged manifest and template availability with real workers."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest
from django.conf import settings
from django.contrib.auth.models import User
from django.test import Client

from apps.capabilities import manifest
from apps.jobs.models import ApiToken
from testkit import random_models
from testkit.services import CeleryWorker

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def as_ada() -> Client:
    _, token = ApiToken.issue(User.objects.create_user("ada"))
    manifest._cache.update(at=0.0, workers=None)
    return Client(headers={"Authorization": f"Bearer {token}"})


def test_a_running_worker_reports_its_queues_services_device_and_memory(
    as_ada: Client, start_worker: Callable[..., CeleryWorker]
) -> None:
    worker = start_worker("cpu", [settings.CELERY_CPU_QUEUE])
    _, staff_token = ApiToken.issue(User.objects.create_user("op", is_staff=True))
    as_staff = Client(headers={"Authorization": f"Bearer {staff_token}"})

    # A user who is not staff sees what the worker runs, not where or how loaded.
    shown = as_ada.get("/api/capabilities").json()["workers"]
    assert [w["hostname"] for w in shown] == ["cpu worker 1"]
    assert not {"host", "pid", "memory", "models"} & set(shown[0])
    assert worker.hostname not in str(shown)
    assert shown[0]["queues"] == [settings.CELERY_CPU_QUEUE]
    assert "debug.sleep" in shown[0]["services"]

    body = as_staff.get("/api/capabilities").json()

    assert [w["hostname"] for w in body["workers"]] == [worker.hostname]
    report = body["workers"][0]
    assert report["queues"] == [settings.CELERY_CPU_QUEUE]
    assert report["device"]["type"] == "cpu"
    assert 0 < report["memory"]["free_bytes"] <= report["memory"]["total_bytes"]
    assert "debug.sleep" in report["services"]
    assert report["backends"] == {"tts": ["espeak", "piper"]}
    assert body["note"] == ""
    available = {s["id"]: s["available"] for s in body["services"]}
    assert available["debug.noop"] is True


def test_templates_become_available_when_a_worker_serves_their_services(
    as_ada: Client, start_worker: Callable[..., CeleryWorker]
) -> None:
    start_worker("cpu", [settings.CELERY_CPU_QUEUE])

    templates = {t["name"]: t for t in as_ada.get("/api/templates").json()["templates"]}

    assert templates["capabilities"]["available"] is True
    assert templates["capabilities"]["unavailableReason"] == ""


def test_the_talking_head_template_is_offered_once_a_gpu_worker_has_musetalk_and_the_upscaler(
    as_ada: Client, start_worker: Callable[..., CeleryWorker], tmp_path: Path
) -> None:
    import torch

    from gpu_tasks import upscale

    def offered() -> tuple[set[str], set[str]]:
        """Services some worker runs, and those the talking_head template still lacks."""
        manifest._cache.update(at=0.0, workers=None)
        services = as_ada.get("/api/capabilities").json()["services"]
        templates = as_ada.get("/api/templates").json()["templates"]
        reason = next(t for t in templates if t["name"] == "talking_head")["unavailableReason"]
        # "no worker runs a, b, c: model m is missing: run ...; ...": the services part.
        services_part = reason.removeprefix("no worker runs ").split(": ", 1)[0]
        lacking = set(services_part.split(", ")) - {""}
        return {s["id"] for s in services if s["available"]}, lacking

    def once_the_workers_answer(wanted: set[str]) -> tuple[set[str], set[str]]:
        # Workers answer the capability broadcast once started; on a busy machine that
        # takes a while.
        deadline = time.monotonic() + 90
        runs, lacking = offered()
        while not wanted <= runs and time.monotonic() < deadline:
            time.sleep(1)
            runs, lacking = offered()
        return runs, lacking

    start_worker("cpu", [settings.CELERY_CPU_QUEUE])
    runs, lacking = once_the_workers_answer({"tts.speak"})
    assert {"lipsync.gpu", "video.upscale"} & runs == set()
    assert {"lipsync.gpu", "video.upscale"} <= lacking

    random_models.save_musetalk(tmp_path, "tiny", seed=0)
    torch.manual_seed(0)
    tiny = upscale.RRDBNet(upscale.RRDBConfig(num_feat=8, num_block=1, num_grow_ch=4))
    upscale.save_upscaler(tiny, upscale.weights_path(tmp_path))
    env = {"MYSPINBOT_MODEL_ROOT": str(tmp_path), "MYSPINBOT_DEVICE": "cpu"}
    start_worker("gpu", [settings.CELERY_GPU_QUEUE], env=env)

    runs, now_lacking = once_the_workers_answer({"tts.speak", "lipsync.gpu", "video.upscale"})
    assert {"lipsync.gpu", "video.upscale"} <= runs
    assert now_lacking == lacking - {"lipsync.gpu", "video.upscale"}
