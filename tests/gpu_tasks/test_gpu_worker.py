"""Out-of-memory handling, the upscaler backend, and torch staying out of the web process."""

from __future__ import annotations

import io
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest
import torch
from PIL import Image

from apps.capabilities.media.video import Mp4Writer, VideoSettings, read_audio
from apps.capabilities.services.video_upscale import handler as upscale_handler
from apps.jobs.execution import _gpu_oom, _is_device_out_of_memory
from gpu_tasks import backends, upscale, worker
from gpu_tasks.model_cache import ModelCache
from myspinbot.errors import PermanentError
from testkit.contexts import make_service_run
from tests.support.media import flac_silence, png_bytes, wav_bytes

REPO = Path(__file__).resolve().parent.parent.parent


def test_running_out_of_gpu_memory_is_a_permanent_gpu_oom_that_clears_the_cache(
    fresh_cache: ModelCache, gpu_settings: Any
) -> None:
    fresh_cache.get("sd:x", lambda: torch.nn.Linear(4, 4))

    with pytest.raises(PermanentError) as caught, worker.guarded({"resolution": 768}):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    error = caught.value
    assert (error.code, error.retryable) == ("gpu_oom", False)
    assert error.details["resolution"] == 768
    assert error.details["error"] == "CUDA out of memory. Tried to allocate 2.00 GiB"
    assert error.details["device"] == "cpu"
    assert set(error.details) == {"resolution", "device", "total_bytes", "free_bytes", "error"}
    assert fresh_cache.loaded() == []


def test_other_errors_pass_through_the_guard(fresh_cache: ModelCache, gpu_settings: Any) -> None:
    fresh_cache.get("sd:x", lambda: torch.nn.Linear(4, 4))

    with pytest.raises(ValueError, match="bad"), worker.guarded({}):
        raise ValueError("bad")

    assert fresh_cache.loaded() == ["sd:x"]


def test_the_worker_turns_a_stray_out_of_memory_into_gpu_oom(fresh_cache: ModelCache) -> None:
    fresh_cache.get("sd:x", lambda: torch.nn.Linear(4, 4))
    error = torch.cuda.OutOfMemoryError("CUDA out of memory.")

    assert _is_device_out_of_memory(error)
    assert not _is_device_out_of_memory(MemoryError("host"))
    failure = _gpu_oom(error)
    assert (failure.code, failure.retryable) == ("gpu_oom", False)
    assert fresh_cache.loaded() == []


def tiny_upscaler(root: Path) -> upscale.RRDBNet:
    torch.manual_seed(0)
    model = upscale.RRDBNet(upscale.RRDBConfig(num_feat=8, num_block=1, num_grow_ch=4, scale=4))
    upscale.save_upscaler(model, upscale.weights_path(root))
    return model


def test_the_upscaler_loads_published_format_weights_and_makes_frames_four_times_larger(
    tmp_path: Path,
) -> None:
    model = tiny_upscaler(tmp_path)
    loaded = upscale.load_upscaler(
        upscale.weights_path(tmp_path), torch.device("cpu"), torch.float32
    )
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (12, 10, 3), np.uint8))

    larger = upscale.upscale(loaded, image)

    assert larger.size == (40, 48)
    assert sorted(loaded.state_dict()) == sorted(model.state_dict())
    assert "body.0.rdb1.conv1.weight" in loaded.state_dict()


def test_the_upscale_backend_is_available_only_with_its_weights(
    gpu_settings: Any, tmp_path: Path
) -> None:
    gpu_settings.MYSPINBOT_MODEL_ROOT = tmp_path
    assert backends.upscale_backends() == []
    assert backends.runnable(["video.upscale", "tts.speak"], backends.available()) == ["tts.speak"]

    tiny_upscaler(tmp_path)

    assert backends.upscale_backends() == ["realesrgan"]
    assert backends.available()["lipsync"] == []


@pytest.mark.django_db
def test_video_upscale_upscales_a_predecessors_frames(
    gpu_settings: Any, tmp_path: Path, fresh_cache: ModelCache
) -> None:
    gpu_settings.MYSPINBOT_MODEL_ROOT = tmp_path
    tiny_upscaler(tmp_path)
    run = make_service_run("video.upscale")
    buffer = io.BytesIO()
    Image.new("RGB", (8, 6), (10, 200, 30)).save(buffer, format="PNG")
    frames = [run.upload(f"f{i}.png", buffer.getvalue(), "image/png") for i in range(2)]
    run.context.inputs = {"animate": {"frames": frames}}

    output = upscale_handler.run(run.context)

    assert (output["scale"], output["width"], output["height"]) == (4, 32, 24)
    assert len(output["frames"]) == 2
    assert Image.open(io.BytesIO(run.read(output["frames"][1]))).size == (32, 24)


def talking_clip(tmp_path: Path, frames: int = 5) -> bytes:
    """A 16x12 H.264 + AAC MP4 of ``frames`` frames at 25 fps with a tone for audio."""
    wav = tmp_path / "tone.wav"
    wav.write_bytes(wav_bytes(seconds=frames / 25))
    path = tmp_path / "clip.mp4"
    settings = VideoSettings(width=16, height=12, fps=25)
    with Mp4Writer(path, settings, read_audio(wav)) as writer:
        for number in range(frames):
            pixels = np.full((12, 16, 3), 40 * number, np.uint8)
            writer.write(av.VideoFrame.from_ndarray(pixels, format="rgb24"))
    return path.read_bytes()


@pytest.mark.django_db
def test_video_upscale_upscales_a_talking_clip_into_a_larger_clip_with_its_audio(
    gpu_settings: Any, tmp_path: Path, fresh_cache: ModelCache
) -> None:
    gpu_settings.MYSPINBOT_MODEL_ROOT = tmp_path
    tiny_upscaler(tmp_path)
    run = make_service_run("video.upscale")
    clip = run.upload("talking.mp4", talking_clip(tmp_path), "video/mp4")
    face = {"box": [2.0, 1.0, 14.0, 11.0], "mouth": [6.0, 7.0, 10.0, 9.0], "chin_y": 11.0}
    run.context.inputs = {"lipsync": {"video": clip, "face": face}}

    output = upscale_handler.run(run.context)

    assert (output["scale"], output["width"], output["height"]) == (4, 64, 48)
    assert (output["fps"], output["frame_count"]) == (25, 5)
    assert output["face"] == {
        "box": [8.0, 4.0, 56.0, 44.0],
        "mouth": [24.0, 28.0, 40.0, 36.0],
        "chin_y": 44.0,
    }
    assert "frames" not in output
    with av.open(io.BytesIO(run.read(output["video"]))) as container:
        assert container.streams.audio[0].codec_context.name == "aac"
        sizes = [(f.width, f.height) for f in container.decode(video=0)]
    assert sizes == [(64, 48)] * 5


@pytest.mark.parametrize(
    ("params", "body", "expected"),
    [
        ({"max_frames": 3}, "clip", ("too_many_frames", "5 frames; at most 3")),
        ({}, "png", ("bad_video", None)),
    ],
)
@pytest.mark.django_db
def test_video_upscale_refuses_a_clip_it_cannot_take(
    gpu_settings: Any,
    tmp_path: Path,
    fresh_cache: ModelCache,
    params: dict[str, Any],
    body: str,
    expected: tuple[str, str | None],
) -> None:
    gpu_settings.MYSPINBOT_MODEL_ROOT = tmp_path
    tiny_upscaler(tmp_path)
    run = make_service_run("video.upscale", params=params)
    data = talking_clip(tmp_path) if body == "clip" else png_bytes(8, 8)
    run.context.inputs = {"lipsync": {"video": run.upload("talking.mp4", data, "video/mp4")}}

    with pytest.raises(PermanentError) as caught:
        upscale_handler.run(run.context)

    code, message = expected
    assert caught.value.code == code
    if message is not None:
        assert caught.value.message == message


@pytest.mark.django_db
def test_lipsync_without_a_backend_fails_clearly() -> None:
    from apps.capabilities.services.lipsync_gpu import handler as lipsync_handler

    run = make_service_run("lipsync.gpu")
    run.context.inputs = {"a": {"video": {"artifact": "v"}}, "b": {"audio": {"artifact": "a"}}}

    with pytest.raises(PermanentError) as caught:
        lipsync_handler.run(run.context)

    assert (caught.value.code, caught.value.message) == (
        "backend_unavailable",
        "lip-sync backend (any) is not available here; available: none",
    )


@pytest.mark.django_db
def test_a_lipsync_backend_never_sees_audio_past_the_bounds(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from apps.capabilities.services.lipsync_gpu import handler as lipsync_handler
    from gpu_tasks import lipsync

    class Backend:
        calls = 0

        def available(self) -> bool:
            return True

        def frames(self, job: Any, progress: Any) -> Iterator[np.ndarray]:
            Backend.calls += 1
            return iter([])

    monkeypatch.setitem(lipsync.BACKENDS, "fake", Backend())
    run = make_service_run("lipsync.gpu")
    face = run.upload("face.png", png_bytes(64, 64), "image/png")
    audio = run.upload("long.flac", flac_silence(3 * 3600), "audio/x-flac")
    run.context.inputs = {"a": {"image": face}, "b": {"audio": audio}}

    with pytest.raises(PermanentError) as caught:
        lipsync_handler.run(run.context)

    assert caught.value.code == "audio_too_long"
    assert Backend.calls == 0


def test_the_web_process_and_the_cpu_worker_code_never_import_torch() -> None:
    script = (
        "import sys, django; django.setup();"
        "import myspinbot.urls, myspinbot.asgi, myspinbot.celery, apps.jobs.tasks,"
        " apps.capabilities.worker_report, apps.capabilities.manifest;"
        "from apps.capabilities.registry import get_registry;"
        "from apps.graphs.planner import plan, load_templates;"
        "assert 'lora.train' in get_registry(); load_templates();"
        "from apps.capabilities.worker_report import worker_report; worker_report(['cpu']);"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in"
        " ('torch', 'diffusers', 'transformers', 'peft', 'gpu_tasks'));"
        "print(bad); sys.exit(1 if bad else 0)"
    )
    env = {"DJANGO_SETTINGS_MODULE": "myspinbot.settings.test", "PATH": "/usr/bin:/bin"}

    done = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO, env=env, capture_output=True, text=True
    )

    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.strip() == "[]"
