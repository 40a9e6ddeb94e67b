"""A gpu worker killed in the middle of lora.train: the next attempt, on another worker,
resumes from the last checkpoint the killed one stored (slow: two worker start-ups)."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest
from django.conf import settings
from django.contrib.auth.models import User

from apps.jobs import submission
from apps.jobs.models import Artifact, NodeRun
from testkit.graphs import graph, node, wait_for_job, wait_for_node
from testkit.services import CeleryWorker
from tests.gpu_tasks.test_gpu_services import TRAIN, png
from tests.gpu_tasks.test_lora_video import upload

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


def test_a_killed_training_resumes_from_its_last_checkpoint(
    start_worker: Callable[..., CeleryWorker], model_root: Path
) -> None:
    env = {
        "MYSPINBOT_MODEL_ROOT": str(model_root),
        "MYSPINBOT_BASE_MODEL": "sd-tiny",
        "HF_HUB_OFFLINE": "true",
        "MYSPINBOT_DEVICE": "cpu",
        "OMP_NUM_THREADS": "1",
        "MYSPINBOT_HEARTBEAT_TIMEOUT": "3",
        "MYSPINBOT_SWEEP_INTERVAL": "0.5",
    }
    doomed = start_worker("doomed", [settings.CELERY_GPU_QUEUE], env=env)
    owner = User.objects.create_user("ada")
    photos = [upload(owner, f"p{i}.png", png(i), "image/png") for i in range(5)]
    params = {**TRAIN, "steps": 60, "checkpoint_every": 3}
    document = graph([node("t", "lora.train", params=params, input={"photos": photos})], [])
    job = submission.submit(owner, graph=document)
    wait_for_node(job, "t", "running", timeout=120)
    deadline = time.monotonic() + 120
    while not Artifact.objects.filter(job=job, name__startswith="checkpoint-").exists():
        assert time.monotonic() < deadline, "no checkpoint was stored"
        time.sleep(0.1)

    doomed.kill()
    last = Artifact.objects.filter(job=job, name__startswith="checkpoint-").order_by("-name")[0]
    start_worker("rescuer", [settings.CELERY_GPU_QUEUE], env=env)
    job = wait_for_job(job, timeout=240)

    assert job.status == "completed"
    run = NodeRun.objects.get(job=job, node_id="t")
    assert run.attempt == 2
    assert run.output["resumed_from_step"] == int(last.name[len("checkpoint-") : -len(".pt")])
    assert run.output["steps"] == 60
