"""MuseTalk at tiny random size in its published layout, loaded through the production
loader, on a real photograph (scikit-image's astronaut) with the real face mesh: the clip
changes the mouth region and nothing else."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest
import torch
from PIL import Image
from skimage import data

from apps.capabilities.media import face as facemesh
from apps.capabilities.media import mouth_region, video
from apps.capabilities.services.lipsync_gpu import handler
from gpu_tasks import backends, loader, musetalk
from gpu_tasks.model_cache import ModelCache
from myspinbot.errors import PermanentError
from testkit import random_models
from testkit.contexts import make_service_run
from tests.support.media import wav_bytes


@pytest.fixture(scope="module")
def musetalk_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("musetalk-models")
    random_models.save_musetalk(root, "tiny", seed=0)
    return root


@pytest.fixture
def with_musetalk(settings: Any, musetalk_root: Path) -> Any:
    settings.MYSPINBOT_MODEL_ROOT = musetalk_root
    settings.HF_HUB_OFFLINE = True
    return settings


def astronaut() -> np.ndarray:
    return np.ascontiguousarray(data.astronaut())


def png(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


def inside(box: tuple[int, int, int, int], shape: tuple[int, ...]) -> np.ndarray:
    where = np.zeros(shape[:2], bool)
    where[box[1] : box[3], box[0] : box[2]] = True
    return where


def test_the_backend_is_offered_only_with_every_file_present(tmp_path: Path, settings: Any) -> None:
    settings.MYSPINBOT_MODEL_ROOT = tmp_path
    assert backends.available()["lipsync"] == []

    folder = random_models.save_musetalk(tmp_path, "tiny", seed=0)
    assert backends.available()["lipsync"] == ["musetalk"]
    assert backends.runnable(["lipsync.gpu"], backends.available()) == ["lipsync.gpu"]

    (folder / musetalk.UNET_WEIGHTS).write_bytes(b"")  # a partial download
    assert backends.available()["lipsync"] == []
    (folder / musetalk.UNET_WEIGHTS).unlink()
    assert not musetalk.weights_present(tmp_path)
    with pytest.raises(loader.ModelUnavailable, match="model 'musetalk' is not installed"):
        loader.load_musetalk()


def test_the_loader_builds_the_real_classes_once_per_process(
    with_musetalk: Any, fresh_cache: ModelCache
) -> None:
    first = loader.load_musetalk()
    second = loader.load_musetalk()

    assert second is first
    assert (fresh_cache.loads, fresh_cache.hits) == (1, 1)
    assert type(first.unet).__name__ == "UNet2DConditionModel"
    assert type(first.vae).__name__ == "AutoencoderKL"
    assert type(first.whisper).__name__ == "WhisperEncoder"
    assert first.unet.config.in_channels == 8  # masked latents + reference latents
    assert first.unet.config.cross_attention_dim == first.whisper.config.d_model


def test_each_frame_gets_the_whisper_states_of_its_own_audio_and_two_frames_either_side() -> None:
    states = torch.arange(20 * 3 * 2, dtype=torch.float32).reshape(20, 3, 2)  # 0.4 s at 50/s

    tokens = musetalk.frame_tokens(states, frames=10, fps=25)

    assert tokens.shape == (10, 10 * 3, 2)
    # Frame 4 at 25 fps is Whisper step 8: steps 4..13 (two frames = four steps before).
    assert torch.equal(tokens[4], states[4:14].reshape(30, 2))
    # Frame 0 starts with four steps of zeros (before the audio).
    assert torch.equal(tokens[0][:12], torch.zeros(12, 2))
    assert torch.equal(tokens[0][12:], states[0:6].reshape(18, 2))


def test_rendered_frames_differ_from_the_portrait_inside_the_mouth_box_only(
    with_musetalk: Any, fresh_cache: ModelCache
) -> None:
    image = astronaut()
    found = facemesh.find_face(image)
    crop = mouth_region.crop_box(found.landmarks, image.shape)
    mouth = mouth_region.mouth_box(found.landmarks, image.shape)
    samples = np.sin(np.arange(musetalk.AUDIO_RATE // 2) * 0.07).astype(np.float32) * 0.3
    steps: list[float] = []

    frames = list(
        musetalk.render(
            loader.load_musetalk(),
            image,
            crop,
            mouth,
            mouth_region.feathered_mask(mouth),
            samples,
            25,
            lambda fraction, _: steps.append(fraction),
            batch=8,
        )
    )

    assert len(frames) == 12  # 0.5 s at 25 fps
    assert steps == [8 / 12, 1.0]
    where = inside(mouth, image.shape)
    for frame in frames:
        difference = np.abs(frame.astype(np.int16) - image).max(axis=2)
        assert frame.shape == image.shape
        assert int(difference[~where].max()) == 0
        assert float(difference[where].mean()) > 10.0
    # The box holds the lips and reaches below the chin.
    lips = found.region(facemesh.LIPS_OUTER)
    assert (mouth[0] < lips[0], lips[2] < mouth[2], mouth[1] < lips[1]) == (True, True, True)
    assert mouth[3] > found.landmarks[facemesh.CHIN, 1]


def portrait_through_the_encoder(image: np.ndarray, wav: Path) -> np.ndarray:
    """The portrait as one lossless frame of the service's writer: what an unchanged
    pixel of the clip decodes to (H.264 stores YUV 4:2:0, not RGB)."""
    settings = video.VideoSettings(width=image.shape[1], height=image.shape[0], fps=25, crf=0)
    path = wav.with_suffix(".mp4")
    with video.Mp4Writer(path, settings, video.read_audio(wav)) as writer:
        writer.write(av.VideoFrame.from_ndarray(image, format="rgb24"))
    with av.open(str(path)) as container:
        return next(container.decode(video=0)).to_ndarray(format="rgb24")


@pytest.mark.django_db
def test_lipsync_gpu_makes_a_clip_that_differs_from_the_portrait_at_the_mouth_only(
    with_musetalk: Any, fresh_cache: ModelCache, tmp_path: Path
) -> None:
    run = make_service_run("lipsync.gpu", params={"crf": 0})
    image = astronaut()
    wav = tmp_path / "speech.wav"
    wav.write_bytes(wav_bytes(seconds=0.8))
    portrait = run.upload("portrait.png", png(image), "image/png")
    audio = run.upload("speech.wav", wav.read_bytes(), "audio/wav")
    run.context.inputs = {"portrait": portrait, "speech": {"audio": audio, "cues": []}}

    output = handler.run(run.context)

    assert output["backend"] == "musetalk"
    assert (output["width"], output["height"], output["fps"]) == (512, 512, 25)
    assert (output["frames"], output["duration_seconds"]) == (20, 0.8)
    found = facemesh.find_face(image)
    assert output["face"] == found.summary()
    with av.open(io.BytesIO(run.read(output["video"]))) as container:
        assert container.streams.audio[0].codec_context.name == "aac"
        frames = [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]
    assert len(frames) == 20
    mouth = mouth_region.mouth_box(found.landmarks, image.shape)
    # Chroma is stored per 2x2 pixels: the box's edge may touch a pixel beyond it.
    near = inside((mouth[0] - 2, mouth[1] - 2, mouth[2] + 2, mouth[3] + 2), image.shape)
    unchanged = portrait_through_the_encoder(image, wav).astype(np.int16)
    for frame in frames:
        difference = np.abs(frame.astype(np.int16) - unchanged).max(axis=2)
        assert int(difference[~near].max()) == 0
        assert float(difference[inside(mouth, image.shape)].mean()) > 10.0
    assert run.progress.reports[-1] == (1.0, "lip-sync ready")


@pytest.mark.django_db
def test_a_portrait_without_a_face_fails_with_no_face_before_any_model_loads(
    with_musetalk: Any, fresh_cache: ModelCache
) -> None:
    run = make_service_run("lipsync.gpu")
    suit = np.ascontiguousarray(astronaut()[300:, 300:])  # the suit and the flag
    portrait = run.upload("portrait.png", png(suit), "image/png")
    audio = run.upload("speech.wav", wav_bytes(seconds=0.4), "audio/wav")
    run.context.inputs = {"portrait": portrait, "speech": {"audio": audio, "cues": []}}

    with pytest.raises(PermanentError) as caught:
        handler.run(run.context)

    assert caught.value.code == "no_face"
    assert fresh_cache.loads == 0
