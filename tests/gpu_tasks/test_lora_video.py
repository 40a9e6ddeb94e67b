"""The lora_video template end to end under real worker processes (a cpu worker and a gpu
worker running on the CPU with the tiny models), and the gpu worker's model cache and
capability report across jobs; then, on the same workers, the original system's
train_and_render template, whose MP4 plays the animated clip as motion (the tiny models'
keyframe has no face to lip-sync, so both jobs take their failure edge), and the template
list saying which pipelines these workers can run."""

from __future__ import annotations

import io
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest
from django.conf import settings
from django.contrib.auth.models import User
from django.test import Client
from PIL import Image

from apps.capabilities.media import video as composing
from apps.capabilities.media.tts_engines import sample_voice
from apps.jobs import engine, submission
from apps.jobs.models import ApiToken, NodeRun, Profile
from myspinbot.celery import app
from myspinbot.storage import get_artifact_store
from testkit.contexts import store_upload
from testkit.graphs import graph, node, states, wait_for_job
from testkit.services import CeleryWorker
from tests.gpu_tasks.test_gpu_services import TRAIN, png

pytestmark = pytest.mark.django_db(transaction=True)

StartWorker = Callable[..., CeleryWorker]


def upload(owner: User, name: str, data: bytes, content_type: str) -> dict[str, str]:
    return {"artifact": store_upload(owner, name, data, content_type)["artifact"]}


def gpu_report(worker: CeleryWorker) -> dict[str, Any]:
    replies = app.control.broadcast(
        "myspinbot_report", reply=True, timeout=5, destination=[worker.hostname]
    )
    report: dict[str, Any] = replies[0][worker.hostname]
    return report


def wait_for_gpu_report(worker: CeleryWorker, timeout: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        report = gpu_report(worker)
        if report.get("gpu", {}).get("state") == "ready":
            return report
        time.sleep(0.5)
    raise AssertionError(f"the gpu worker never wrote its report: {report}")


def test_a_lora_video_job_makes_an_mp4_and_the_next_keyframe_loads_no_model(
    start_worker: StartWorker, model_root: Path, tmp_path: Path
) -> None:
    env = {
        "MYSPINBOT_MODEL_ROOT": str(model_root),
        "MYSPINBOT_BASE_MODEL": "sd-tiny",
        "MYSPINBOT_MOTION_ADAPTER": "motion-tiny",
        "HF_HUB_OFFLINE": "true",
        "MYSPINBOT_DEVICE": "cpu",
        "OMP_NUM_THREADS": "1",
    }
    start_worker("cpu", [settings.CELERY_CPU_QUEUE], concurrency=2, env=env)
    gpu = start_worker("gpu", [settings.CELERY_GPU_QUEUE], concurrency=1, env=env)
    owner = User.objects.create_user("ada")
    voice = sample_voice(
        "Hello, I am Ada, and this is how I sound when I read a sentence aloud.", tmp_path / "v.wav"
    )
    inputs = {
        "photos": [upload(owner, f"p{i}.png", png(i), "image/png") for i in range(5)],
        "voice_sample": upload(owner, "voice.wav", voice.read_bytes(), "audio/x-wav"),
        "transcript": "Hello, I am Ada and this is how I sound.",
    }
    params = {
        "script": {"topic": "otters", "max_words": 12},
        "train_lora": {**TRAIN, "checkpoint_every": 0},
        # 128 px: the least lip-sync takes (a smaller keyframe is refused at submission).
        "keyframe": {"steps": 2, "width": 128, "height": 128},
        "animate": {"frames": 3, "steps": 2, "strength": 0.5, "fps": 4},
        "video_motion": {"width": 128, "height": 128, "fps": 10},
    }

    job = wait_for_job(
        submission.submit(owner, template="lora_video", params=params, inputs=inputs),
        timeout=240,
    )

    assert job.status == "completed", NodeRun.objects.filter(job=job).values("node_id", "error")
    # The tiny random models draw no face: lip-sync says so by its code, and the job goes
    # on along the failure edge, animating the keyframe instead of the talking clip.
    assert states(job) == {
        **dict.fromkeys(
            ["script", "train_lora", "voice_profile", "keyframe", "speech"], "completed"
        ),
        "lipsync": "failed",
        "video": "skipped",
        "animate": "completed",
        "video_motion": "completed",
    }
    runs = {run.node_id: run for run in NodeRun.objects.filter(job=job)}
    assert runs["lipsync"].error["code"] == "no_face"
    assert "no face" in runs["lipsync"].error["message"]
    assert {runs[n].worker for n in ("train_lora", "keyframe", "animate")} == {gpu.hostname}
    assert runs["keyframe"].output["trigger"] == "sks"
    assert runs["keyframe"].output["prompt"].startswith("photo of sks person, ")
    assert len(runs["animate"].output["frames"]) == 3
    assert Profile.objects.filter(owner=owner, kind="lora").count() == 1
    with get_artifact_store().open(runs["video_motion"].output["video"]["key"]) as handle:
        mp4 = handle.read()
    with av.open(io.BytesIO(mp4)) as container:
        kinds = sorted(stream.type for stream in container.streams)
        video = container.streams.video[0]
        assert (video.codec_context.name, video.width, video.height) == ("h264", 128, 128)
        frames = sum(1 for _ in container.decode(video=0))
    assert kinds == ["audio", "video"]
    assert frames == runs["video_motion"].output["frames"]

    before = wait_for_gpu_report(gpu)
    keys = [model["key"] for model in before["models"]["models"]]
    assert any(key.startswith("sd:") for key in keys)
    assert before["device"]["type"] == "cpu"
    assert before["backends"]["animate"] == ["animatediff"]
    assert before["backends"]["upscale"] == []
    assert sorted(s for s in before["services"] if not s.startswith(("debug.", "testing."))) == [
        "image.keyframe",
        "lora.train",
        "video.animate",
    ]

    second = engine.submit_job(
        owner,
        graph(
            [
                node(
                    "k",
                    "image.keyframe",
                    params={"prompt": "a lake", "seed": 9, "steps": 2, "width": 32, "height": 32},
                )
            ],
            [],
        ),
    )
    assert wait_for_job(second, timeout=60).status == "completed"

    after = gpu_report(gpu)
    assert after["models"]["loads"] == before["models"]["loads"]
    assert after["models"]["hits"] == before["models"]["hits"] + 1

    check_train_and_render(owner, inputs, params)


def read(ref: dict[str, Any]) -> bytes:
    with get_artifact_store().open(ref["key"]) as handle:
        data: bytes = handle.read()
    return data


def luma(png_data: bytes, size: int) -> np.ndarray:
    """A clip frame as the composer frames a square one: scaled to the output, BT.709 luma."""
    image = Image.open(io.BytesIO(png_data)).convert("RGB").resize((size, size))
    rgb = np.asarray(image).astype(np.float32)
    return 16 + (0.2126 * rgb[..., 0] + 0.7152 * rgb[..., 1] + 0.0722 * rgb[..., 2]) * 219 / 255


def check_train_and_render(
    owner: User, inputs: dict[str, Any], lora_video_params: dict[str, Any]
) -> None:
    """``train_and_render`` (what ``POST /api/train`` submits) on the running workers, with
    the lora_video job's photos and settings, so its script, LoRA, keyframe and clip come
    from the result cache and only its speech (default voice) and video are new work."""
    size = 128
    params = {
        **{key: lora_video_params[key] for key in ("script", "train_lora", "keyframe", "animate")},
        "render_motion": {"width": size, "height": size, "fps": 10, "captions": False},
    }

    job = wait_for_job(
        submission.submit(
            owner, template="train_and_render", params=params, inputs={"photos": inputs["photos"]}
        ),
        timeout=120,
    )

    assert job.status == "completed", NodeRun.objects.filter(job=job).values("node_id", "error")
    runs = {run.node_id: run for run in NodeRun.objects.filter(job=job)}
    reused = sorted(node for node, run in runs.items() if run.cached_from_id is not None)
    assert reused == ["animate", "keyframe", "script", "train_lora"]
    assert (runs["speech"].output["engine"], runs["speech"].output["profile_id"]) == (
        "piper",
        None,
    )
    assert runs["lipsync"].error["code"] == "no_face"
    composed = runs["render_motion"].output
    assert composed["clip_frames"] == 3
    clip = [luma(read(ref), size) for ref in runs["animate"].output["frames"]]
    with av.open(io.BytesIO(read(composed["video"]))) as container:
        frames = [f.to_ndarray()[:size].astype(np.float32) for f in container.decode(video=0)]
    assert len(frames) == composed["frames"] > 12
    # Each video frame shows the clip frame due at its time (4 clip frames a second in a
    # 10 fps video, looped): of the clip's frames, that one is the nearest.
    distances = [[float(np.abs(frame - c).mean()) for c in clip] for frame in frames]
    nearest = [int(np.argmin(row)) for row in distances]
    assert nearest == [composing.clip_frame(i, 10, 3, 4) for i in range(len(frames))]
    assert nearest[:12] == [0, 0, 0, 1, 1, 2, 2, 2, 0, 0, 1, 1]
    # ... and it is a clear match: the clip's frames differ far more than a frame from its
    # source after scaling and encoding.
    assert max(min(row) for row in distances) * 3 < min(
        float(np.abs(clip[a] - clip[b]).mean()) for a, b in ((0, 1), (1, 2), (0, 2))
    )

    # These workers run every step of train_and_render, and the CPU lip-sync.
    token = ApiToken.issue(owner)[1]
    listed = Client(headers={"Authorization": f"Bearer {token}"}).get("/api/templates").json()
    templates = {t["name"]: (t["available"], t["unavailableReason"]) for t in listed["templates"]}
    assert templates["train_and_render"] == (True, "")
    assert templates["narrated_video"] == (True, "")
