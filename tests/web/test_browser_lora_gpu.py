"""The lora_video flow in Debian's Chromium under real workers: a cpu worker and a gpu
worker running the GPU services on the CPU with tiny models built from the real diffusers
classes (as tests/gpu_tasks does). Sign in → pick lora_video → 5 photos (the count and
each file checked, previews shown) and a voice sample → tiny training settings under
Advanced → LoRA samples arrive live as previews → the video and the animated clip play.
Then "New video with this profile" on the LoRA the job made: the second job trains
nothing. Marked slow (minutes on two shared cores): `make test-faults` runs it.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from django.conf import settings
from django.contrib.auth.models import User
from PIL import Image

from apps.jobs.models import Job, NodeRun, Profile
from apps.jobs.samples import make_sample
from myspinbot.celery import app
from testkit.services import CeleryWorker
from tests.web.conftest import LAPTOP, PHONE, Tab, sign_in

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

BUILD_MODELS = (
    "import sys, torch; torch.set_num_threads(1);"
    "from pathlib import Path; from testkit import random_models;"
    "root = Path(sys.argv[1]);"
    "random_models.save_sd_model(root / 'sd-tiny', 'tiny', seed=0);"
    "random_models.save_motion_adapter(root / 'motion-tiny', 'tiny', seed=0)"
)
TINY = {
    "script-max_words": "12",
    "keyframe-steps": "2",
    "keyframe-width": "128",
    "keyframe-height": "128",
    "animate-frames": "3",
    "animate-steps": "2",
    "animate-strength": "0.5",
    "animate-fps": "4",
    "video_motion-width": "128",
    "video_motion-height": "128",
    "video_motion-fps": "10",
}
TRAIN = {
    "train_lora-resolution": "32",
    "train_lora-rank": "4",
    "train_lora-alpha": "4",
    "train_lora-learning_rate": "0.01",
    "train_lora-steps": "4",
    "train_lora-sample_every": "2",
    "train_lora-sample_steps": "2",
    "train_lora-checkpoint_every": "0",
}
LONG = 300_000  # ms: a job on tiny models, two shared cores


def wait_until_gpu_ready(worker: CeleryWorker, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    report: Any = {}
    while time.monotonic() < deadline:
        replies = app.control.broadcast(
            "myspinbot_report", reply=True, timeout=5, destination=[worker.hostname]
        )
        report = replies[0][worker.hostname] if replies else {}
        if report.get("gpu", {}).get("state") == "ready":
            return
        time.sleep(0.5)
    raise AssertionError(f"the gpu worker never became ready: {report}")


def wait_until_answering(worker: CeleryWorker, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        replies = app.control.broadcast(
            "myspinbot_report", reply=True, timeout=2, destination=[worker.hostname]
        )
        if replies and replies[0].get(worker.hostname, {}).get("services"):
            return
        time.sleep(0.5)
    raise AssertionError(f"the {worker.hostname} worker never answered its report")


def photos(folder: Path, count: int) -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for number in range(count):
        pixels = np.random.default_rng(number).integers(0, 256, (48, 40, 3), dtype=np.uint8)
        path = folder / f"photo-{number}.png"
        Image.fromarray(pixels).save(path)
        paths.append(str(path))
    return paths


def fill_advanced(tab: Tab, values: dict[str, str]) -> None:
    tab.page.locator("#advanced summary").click()
    for key, value in values.items():
        tab.page.fill(f"#param-{key}", value)


def wait_completed(tab: Tab) -> Job:
    tab.page.wait_for_url(f"{tab.base}/jobs/*/")
    job_id = tab.page.locator("#job").get_attribute("data-job-id")
    tab.page.wait_for_function(
        "['completed', 'failed', 'cancelled'].includes("
        "document.getElementById('job-status').textContent)",
        timeout=LONG,
    )
    job = Job.objects.get(pk=job_id)
    runs = NodeRun.objects.filter(job=job).values("node_id", "status", "error")
    assert job.status == "completed", list(runs)
    return job


def test_lora_video_from_photos_then_again_with_its_lora(
    open_tab: Callable[..., Tab], start_worker: Callable[..., CeleryWorker], tmp_path: Path
) -> None:
    root = tmp_path / "models"
    subprocess.run([sys.executable, "-c", BUILD_MODELS, str(root)], check=True, timeout=300)
    env = {
        "MYSPINBOT_MODEL_ROOT": str(root),
        "MYSPINBOT_BASE_MODEL": "sd-tiny",
        "MYSPINBOT_MOTION_ADAPTER": "motion-tiny",
        "HF_HUB_OFFLINE": "true",
        "MYSPINBOT_DEVICE": "cpu",
        "OMP_NUM_THREADS": "1",
    }
    cpu = start_worker("cpu", [settings.CELERY_CPU_QUEUE], concurrency=2, env=env)
    wait_until_gpu_ready(start_worker("gpu", [settings.CELERY_GPU_QUEUE], env=env))
    # The page lists a pipeline as runnable only once every worker answers its report.
    wait_until_answering(cpu)
    ada = User.objects.create_user("ada", password="ada-secret-pw")
    _, voice, transcript = make_sample(tmp_path / "sample")
    tab = open_tab()
    sign_in(tab, "ada", "ada-secret-pw")

    # New video: lora_video asks for photos instead of a portrait, and checks the count.
    tab.go("/new/")
    tab.page.locator("#pipeline-lora_video:enabled").check()
    assert tab.page.locator("#photos").is_visible()
    assert tab.page.locator("#portrait").is_hidden()
    chosen = photos(tmp_path / "photos", 5)
    tab.page.set_input_files("#photos", chosen[:3])
    assert tab.page.locator("#photos-status").text_content() == (
        "3 photos chosen; 5 to 60 are needed."
    )
    assert tab.page.locator("#photos").get_attribute("aria-invalid") == "true"
    tab.page.set_input_files("#photos", chosen)
    tab.page.wait_for_function(
        "[...document.querySelectorAll('#photos-previews img')]"
        ".filter(i => i.naturalWidth === 40).length === 5"
    )
    assert tab.page.locator("#photos").get_attribute("aria-invalid") == "false"
    kilobytes = round(sum(Path(p).stat().st_size for p in chosen) / 1024)
    assert tab.page.locator("#photos-status").text_content() == (
        f"5 photos · {kilobytes} kB, ready to upload"
    )
    tab.page.set_input_files("#voice", str(voice))
    tab.page.fill("#transcript", transcript)
    tab.page.fill("#topic", "otters")
    for size in (LAPTOP, PHONE):
        tab.page.set_viewport_size(size)
        tab.screenshot("new-lora-photos")
    tab.page.set_viewport_size(LAPTOP)
    fill_advanced(tab, {**TINY, **TRAIN})
    tab.page.get_by_role("button", name="Start the video").click()

    # The job page: the LoRA's samples arrive while it runs, then the video and the clip.
    tab.page.wait_for_function(
        "document.querySelectorAll(\"#previews [data-node-id='train_lora'] img\").length === 2",
        timeout=LONG,
    )
    # They came while the job ran (the steps after training take seconds more).
    assert tab.page.locator("#job-status").text_content() == "running"
    first = wait_completed(tab)
    tab.page.wait_for_function(
        "[...document.querySelectorAll('#players video')].every(v => v.duration > 0)"
        " && document.querySelectorAll('#players video').length === 2"
    )
    captions = tab.page.locator("#players figcaption").all_inner_texts()
    assert captions[:2] == [
        "video.mp4 · Compose the animated clip",
        "clip.mp4 · Animate the keyframe (no face to lip-sync)",
    ]
    assert sorted(captions[2:]) == [
        "reference.wav · Build the voice profile",
        "speech.wav · Speak the narration · spoken by piper",
    ]
    assert tab.page.locator("#previews [data-node-id='keyframe'] img").count() == 1
    assert tab.page.locator("#previews [data-node-id='animate']").count() == 0
    for size in (LAPTOP, PHONE):
        tab.page.set_viewport_size(size)
        tab.screenshot("job-lora-done")
    tab.page.set_viewport_size(LAPTOP)
    lora = Profile.objects.get(owner=ada, kind="lora")
    assert lora.job_id == first.pk

    # Again with that LoRA and the voice profile the first job built: nothing is trained.
    voice_profile = Profile.objects.get(owner=ada, kind="voice")
    tab.go("/profiles/")
    tab.page.locator(f"li[data-profile-id='{lora.pk}']").get_by_role(
        "link", name="New video with this profile"
    ).click()
    tab.page.wait_for_url(f"{tab.base}/new/?profile={lora.pk}")
    tab.page.wait_for_function("document.getElementById('pipeline-lora_video')?.checked")
    assert tab.page.locator("#lora-profile").input_value() == str(lora.pk)
    assert tab.page.locator("#photos").is_hidden()
    tab.page.select_option("#voice-profile", str(voice_profile.pk))
    tab.page.fill("#topic", "herons")
    fill_advanced(tab, TINY)
    tab.page.get_by_role("button", name="Start the video").click()
    second = wait_completed(tab)
    runs = {run.node_id: run for run in NodeRun.objects.filter(job=second)}
    assert "voice_profile" not in runs
    assert runs["train_lora"].output["reused"] is True
    assert runs["train_lora"].output["lora"] == lora.data["lora"]
    assert Profile.objects.filter(owner=ada, kind="lora").count() == 1
    assert tab.errors == []
