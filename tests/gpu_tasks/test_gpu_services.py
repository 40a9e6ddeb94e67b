"""The GPU services' handlers with a real stored job, the S3 store and the database, on
the tiny model (the worker loop is left out; see test_lora_video for that)."""

from __future__ import annotations

import io
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image
from prometheus_client import REGISTRY

from apps.capabilities.context import NodeContext
from apps.capabilities.services.image_keyframe import handler as keyframe_handler
from apps.capabilities.services.lora_train import handler as lora_handler
from apps.capabilities.services.video_animate import handler as animate_handler
from apps.jobs.artifacts import NodeArtifacts
from apps.jobs.execution import claim
from apps.jobs.models import Artifact, NodeRun, Profile
from apps.jobs.profiles import NodeProfiles
from gpu_tasks.model_cache import ModelCache
from myspinbot.errors import Cancelled, PermanentError
from myspinbot.storage import get_artifact_store
from testkit.contexts import Progress, ServiceRun, make_service_run

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("gpu_settings")]

TRAIN = {
    "resolution": 32,
    "rank": 4,
    "alpha": 4,
    "learning_rate": 0.01,
    "steps": 4,
    "sample_every": 0,
    "checkpoint_every": 2,
}


def png(seed: int, size: tuple[int, int] = (40, 48)) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def with_photos(run: ServiceRun, count: int = 5) -> ServiceRun:
    photos = [run.upload(f"photo-{i}.png", png(i), "image/png") for i in range(count)]
    run.context.inputs = {"photos": photos}
    return run


@dataclass
class CancelAt(Progress):
    """Cancels the job once a progress message starts with ``at``."""

    at: str = ""

    def report(self, fraction: float, message: str | None) -> None:
        super().report(fraction, message)
        if message and message.startswith(self.at):
            self.cancel = True


def next_attempt(run: ServiceRun, progress: Progress) -> NodeContext:
    """The context a restarted attempt of the same node gets, claimed as a worker would
    claim the re-dispatched node (only the running attempt may record artifacts)."""
    store = get_artifact_store()
    attempt = run.context.attempt + 1
    NodeRun.objects.filter(job=run.job, node_id="n").update(status="queued", attempt=attempt)
    assert claim(str(run.job.pk), "n", attempt, "service-test") is not None
    return replace(
        run.context,
        attempt=run.context.attempt + 1,
        progress_callback=progress.report,
        cancelled_callback=progress.cancelled,
        artifacts=NodeArtifacts(
            store,
            job_id=str(run.job.pk),
            node_id="n",
            attempt=run.context.attempt + 1,
            owner_id=run.owner.pk,
        ),
        profiles=NodeProfiles(
            job_id=str(run.job.pk), node_id="n", attempt=attempt, owner_id=run.owner.pk
        ),
        workdir=Path(tempfile.mkdtemp(prefix="service-test-")),
    )


def steps_reported(progress: Progress) -> list[str]:
    return [m.split(" loss")[0] for _, m in progress.reports if m and m.startswith("step ")]


def test_cancel_stops_training_within_one_step(fresh_cache: ModelCache) -> None:
    run = with_photos(make_service_run("lora.train", {**TRAIN, "steps": 50}))
    progress = CancelAt(at="step 2/")
    run.context.progress_callback, run.context.cancelled_callback = (
        progress.report,
        progress.cancelled,
    )

    with pytest.raises(Cancelled):
        lora_handler.run(run.context)

    assert steps_reported(progress) == ["step 1/50", "step 2/50"]
    unet = fresh_cache.peek(fresh_cache.loaded()[0]).unet
    assert not any("lora_" in name for name, _ in unet.named_parameters())


@pytest.mark.django_db(transaction=True)
def test_only_the_last_two_checkpoints_are_kept(fresh_cache: ModelCache) -> None:
    run = with_photos(make_service_run("lora.train", {**TRAIN, "steps": 6, "checkpoint_every": 1}))

    lora_handler.run(run.context)

    checkpoints = Artifact.objects.filter(job=run.job, name__startswith="checkpoint-")
    assert sorted(a.name for a in checkpoints) == ["checkpoint-000004.pt", "checkpoint-000005.pt"]
    stored = get_artifact_store().keys(f"jobs/{run.job.pk}/n/")
    assert sorted(k.rsplit("/", 1)[-1] for k in stored if "checkpoint-" in k) == [
        "checkpoint-000004.pt",
        "checkpoint-000005.pt",
    ]


def test_a_restarted_attempt_resumes_from_the_last_checkpoint(fresh_cache: ModelCache) -> None:
    run = with_photos(make_service_run("lora.train", {**TRAIN, "steps": 5}))
    first = CancelAt(at="step 3/")  # stopped after the checkpoint of step 2
    run.context.progress_callback, run.context.cancelled_callback = first.report, first.cancelled
    with pytest.raises(Cancelled):
        lora_handler.run(run.context)
    checkpoints = Artifact.objects.filter(job=run.job, name__startswith="checkpoint-")
    assert [a.name for a in checkpoints] == ["checkpoint-000002.pt"]

    second = Progress()
    steps_before = REGISTRY.get_sample_value("myspinbot_lora_training_steps_total") or 0.0
    output = lora_handler.run(next_attempt(run, second))

    assert REGISTRY.get_sample_value("myspinbot_lora_training_steps_total") == steps_before + 3
    assert output["resumed_from_step"] == 2
    assert output["steps"] == 5
    assert steps_reported(second) == ["step 3/5", "step 4/5", "step 5/5"]
    assert "resuming from the checkpoint at step 2" in [m for _, m in second.reports]
    assert fresh_cache.loads == 1  # the second attempt found the model loaded
    profile = Profile.objects.get(pk=output["profile_id"])
    assert (profile.kind, profile.owner_id, profile.data["resumed_from_step"]) == (
        "lora",
        run.owner.pk,
        2,
    )
    assert len(profile.data["loss_curve"]) == 5
    assert output["lora"]["key"].endswith("/2/pytorch_lora_weights.safetensors")
    from safetensors.torch import load

    tensors = load(run.read(output["lora"]))
    assert len(tensors) == 64  # lora_A and lora_B of 4 projections x 8 attention modules
    assert all(key.startswith("unet.") for key in tensors)
    assert output["base_model"]["id"] == "sd-tiny"
    assert len(output["base_model"]["sha256"]) == 64


def test_a_trained_lora_changes_the_keyframe_and_a_named_profile_is_reused(
    fresh_cache: ModelCache,
) -> None:
    training = with_photos(
        make_service_run(
            "lora.train", {**TRAIN, "learning_rate": 0.05, "steps": 6, "sample_every": 3}
        )
    )
    trained = lora_handler.run(training.context)
    assert [s["key"].rsplit("/", 1)[1] for s in trained["samples"]] == [
        "sample-000003.png",
        "sample-000006.png",
    ]
    keyframe_params = {"prompt": "on a beach", "steps": 3, "width": 32, "height": 32}

    plain = make_service_run("image.keyframe", keyframe_params)
    base = keyframe_handler.run(plain.context)
    with_lora = make_service_run("image.keyframe", keyframe_params, inputs={"train": trained})
    styled = keyframe_handler.run(with_lora.context)

    assert base["prompt"] == "on a beach"
    assert styled["prompt"] == "photo of sks person, on a beach"
    assert styled["lora"] == trained["lora"]
    assert plain.read(base["image"]) != with_lora.read(styled["image"])
    assert fresh_cache.loads == 1  # one base model for training and both keyframes

    reuse = make_service_run("lora.train", {"profile_id": trained["profile_id"]})
    loads_before = fresh_cache.loads
    reused = lora_handler.run(reuse.context)

    assert reused["reused"] is True
    assert reused["profile_id"] == trained["profile_id"]
    assert reused["lora"] == trained["lora"]
    assert fresh_cache.loads == loads_before


def test_another_users_profile_cannot_be_named() -> None:
    other = make_service_run("debug.noop", username="mallory")
    profile = Profile.objects.create(owner=other.owner, kind="lora", data={"lora": {}})
    run = make_service_run("lora.train", {"profile_id": str(profile.pk)})

    with pytest.raises(PermanentError) as caught:
        lora_handler.run(run.context)

    assert (caught.value.code, caught.value.message) == (
        "bad_input",
        f"no LoRA profile {profile.pk} of this user",
    )


def test_too_few_photos_are_refused_before_any_model_loads(fresh_cache: ModelCache) -> None:
    run = with_photos(make_service_run("lora.train", TRAIN), count=3)

    with pytest.raises(PermanentError) as caught:
        lora_handler.run(run.context)

    assert caught.value.code == "bad_input"
    assert caught.value.details == {"photos": 3, "min": 5, "max": 60}
    assert fresh_cache.loads == 0


def test_a_keyframe_cancelled_mid_render_stops_at_that_step(fresh_cache: ModelCache) -> None:
    run = make_service_run(
        "image.keyframe", {"prompt": "a hill", "steps": 5, "width": 32, "height": 32}
    )
    progress = CancelAt(at="denoising step 2/")
    run.context.progress_callback, run.context.cancelled_callback = (
        progress.report,
        progress.cancelled,
    )

    with pytest.raises(Cancelled):
        keyframe_handler.run(run.context)

    denoising = [m for _, m in progress.reports if m and m.startswith("denoising")]
    assert denoising == ["denoising step 1/5", "denoising step 2/5"]


def test_animate_turns_a_keyframe_into_frames_and_a_clip(fresh_cache: ModelCache) -> None:
    frame_run = make_service_run(
        "image.keyframe", {"prompt": "a hill", "steps": 2, "width": 32, "height": 32}
    )
    keyframe = keyframe_handler.run(frame_run.context)
    run = make_service_run(
        "video.animate",
        {"frames": 4, "steps": 4, "strength": 0.5, "fps": 4},
        inputs={"keyframe": keyframe},
    )

    output = animate_handler.run(run.context)

    assert len(output["frames"]) == 4
    assert output["keyframes"] == output["frames"]
    assert (output["backend"], output["fps"], output["width"], output["height"]) == (
        "animatediff",
        4,
        32,
        32,
    )
    import av

    with av.open(io.BytesIO(run.read(output["clip"]))) as container:
        stream = container.streams.video[0]
        decoded = sum(1 for _ in container.decode(stream))
        assert (stream.codec_context.name, decoded) == ("h264", 4)
    denoising = [m for _, m in run.progress.reports if m and m.startswith("denoising")]
    assert denoising == ["denoising step 1/2", "denoising step 2/2"]


def test_svd_without_configured_weights_is_unavailable(gpu_settings: Any) -> None:
    gpu_settings.MYSPINBOT_SVD_MODEL = ""
    run = make_service_run("video.animate", {"backend": "svd"})
    image = run.upload("k.png", png(1), "image/png")
    run.context.inputs = {"keyframe": {"image": image, "prompt": "a hill"}}

    with pytest.raises(PermanentError) as caught:
        animate_handler.run(run.context)

    assert caught.value.code == "backend_unavailable"
    assert caught.value.message == "svd cannot run here: MYSPINBOT_SVD_MODEL is not set"
