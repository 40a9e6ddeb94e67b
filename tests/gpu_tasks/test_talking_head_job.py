"""The ``talking_head`` template end to end through the API: a real cpu worker (script
from the stand-in LLM, voice profile, speech) and a real gpu worker on the CPU with tiny
random MuseTalk and Real-ESRGAN models under its model root (lip-sync, upscale)."""

from __future__ import annotations

import io
import json
import time
from collections.abc import Callable
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from django.conf import settings
from django.contrib.auth.models import User
from django.test import Client
from PIL import Image

from apps.capabilities import manifest
from apps.jobs.models import Job, NodeRun
from apps.jobs.samples import make_sample
from gpu_tasks import upscale
from myspinbot.storage import get_artifact_store
from testkit import random_models
from testkit.graphs import wait_for_job
from testkit.services import CeleryWorker
from tests.support.clients import api_client
from tests.support.ollama import FakeOllama, chat_reply

pytestmark = pytest.mark.django_db(transaction=True)

SCRIPT = {
    "title": "Otters",
    "stage_prompt": "A presenter by a river.",
    "narration": "Otters hold hands while they sleep.",
}
PORTRAIT_SIDE = 256
FPS = 10


def upload(client: Client, path: Path) -> str:
    with path.open("rb") as handle:
        response = client.post("/api/uploads", {"file": handle})
    assert response.status_code == 201, response.json()
    return str(response.json()["id"])


def wait_for_services(client: Client, wanted: set[str], timeout: float = 120.0) -> None:
    """Until every service of ``wanted`` is offered (workers answer the broadcast once
    they are up, which takes a while on a busy machine)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        manifest._cache.update(at=0.0, workers=None)
        offered = {
            s["id"] for s in client.get("/api/capabilities").json()["services"] if s["available"]
        }
        if wanted <= offered:
            return
        time.sleep(1)
    raise AssertionError(f"still not offered after {timeout}s: {sorted(wanted - offered)}")


def test_the_talking_head_template_makes_an_upscaled_talking_mp4_with_the_narration(
    ollama: FakeOllama, start_worker: Callable[..., CeleryWorker], tmp_path: Path
) -> None:
    models = tmp_path / "models"
    random_models.save_musetalk(models, "tiny", seed=0)
    torch.manual_seed(0)
    tiny = upscale.RRDBNet(upscale.RRDBConfig(num_feat=8, num_block=1, num_grow_ch=4, scale=4))
    upscale.save_upscaler(tiny, upscale.weights_path(models))
    portrait, voice, transcript = make_sample(tmp_path / "inputs")
    small = tmp_path / "portrait.png"
    # The sample's face, cropped at full scale (a 512² portrait would upscale to 2048²).
    Image.open(portrait).crop((80, 0, 80 + PORTRAIT_SIDE, PORTRAIT_SIDE)).save(small)
    llm = {"MYSPINBOT_LLM_URL": ollama.url, "MYSPINBOT_LLM_MODEL": "llama3.1:8b"}
    start_worker("cpu", [settings.CELERY_CPU_QUEUE], concurrency=2, env=llm)
    gpu_env = {"MYSPINBOT_MODEL_ROOT": str(models), "MYSPINBOT_DEVICE": "cpu"}
    start_worker("gpu", [settings.CELERY_GPU_QUEUE], env=gpu_env)
    ollama.reply(chat_reply(SCRIPT))
    as_ada = api_client(User.objects.create_user("ada"))
    wait_for_services(as_ada, {"llm.generate_script", "tts.speak", "lipsync.gpu", "video.upscale"})
    inputs = {
        "photos": [{"artifact": upload(as_ada, small)}],
        "voice_sample": {"artifact": upload(as_ada, voice)},
        "transcript": transcript,
    }
    params = {"script": {"topic": "otters"}, "talking_head": {"fps": FPS}}

    created = as_ada.post(
        "/api/jobs",
        json.dumps({"template": "talking_head", "params": params, "inputs": inputs}),
        content_type="application/json",
    )

    assert created.status_code == 201, created.json()
    job = wait_for_job(Job.objects.get(pk=created.json()["id"]), timeout=600)
    runs = {run.node_id: run for run in NodeRun.objects.filter(job=job)}
    assert job.status == "completed", {n: (r.status, r.error) for n, r in runs.items()}
    assert {n: r.status for n, r in runs.items()} == dict.fromkeys(
        ["script", "voice_profile", "speech", "talking_head", "upscale"], "completed"
    )
    assert runs["script"].output["narration"] == SCRIPT["narration"]
    head, upscaled = runs["talking_head"].output, runs["upscale"].output
    assert head["backend"] == "musetalk"
    assert (head["width"], head["height"], head["fps"]) == (PORTRAIT_SIDE, PORTRAIT_SIDE, FPS)
    assert (upscaled["scale"], upscaled["width"], upscaled["height"]) == (
        4,
        4 * PORTRAIT_SIDE,
        4 * PORTRAIT_SIDE,
    )
    clip = get_artifact_store().read_bytes(upscaled["video"]["key"])
    with av.open(io.BytesIO(clip)) as container:
        kinds = sorted((s.type, s.codec_context.name) for s in container.streams)
        audio_seconds = float(
            container.streams.audio[0].duration * container.streams.audio[0].time_base
        )
        frames = [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]
    assert kinds == [("audio", "aac"), ("video", "h264")]
    speech_seconds = runs["speech"].output["duration_seconds"]
    assert abs(audio_seconds - speech_seconds) <= 0.1
    assert len(frames) == head["frames"] == upscaled["frame_count"]
    assert abs(len(frames) - round(speech_seconds * FPS)) <= 1
    assert {frame.shape for frame in frames} == {(4 * PORTRAIT_SIDE, 4 * PORTRAIT_SIDE, 3)}
    # The random upscaler draws nothing useful; the talking clip it read is the portrait.
    with av.open(io.BytesIO(get_artifact_store().read_bytes(head["video"]["key"]))) as talking:
        spoken = [frame.to_ndarray(format="rgb24") for frame in talking.decode(video=0)]
    assert len(spoken) == len(frames)
    assert min(float(np.mean(frame)) for frame in spoken) > 10  # no black frames
