"""comfyui.workflow against the stand-in ComfyUI server (testkit.comfyui): the protocol,
its progress and previews, outputs, cache, errors, cancel and a server that goes away."""

from __future__ import annotations

import io
import threading
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from django.contrib.auth.models import User
from PIL import Image

from apps.capabilities.services.comfyui_workflow import handler
from apps.capabilities.services.comfyui_workflow.client import Server
from apps.jobs import engine
from myspinbot.errors import Cancelled, PermanentError, Rejected, TransientError
from testkit.comfyui import FakeComfyUI
from testkit.contexts import ServiceRun, make_service_run
from testkit.graphs import graph, node
from testkit.wav import pcm16_wav

SERVICE = "comfyui.workflow"
TXT2IMG: dict[str, Any] = {
    "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "tiny-sd.safetensors"}},
    "5": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 48, "batch_size": 1}},
    "6": {"class_type": "CLIPTextEncode", "inputs": {"text": "placeholder", "clip": ["4", 1]}},
    "7": {"class_type": "CLIPTextEncode", "inputs": {"text": "", "clip": ["4", 1]}},
    "3": {
        "class_type": "KSampler",
        "inputs": {
            "seed": 0,
            "steps": 4,
            "model": ["4", 0],
            "positive": ["6", 0],
            "negative": ["7", 0],
            "latent_image": ["5", 0],
        },
    },
    "8": {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0], "vae": ["4", 2]}},
    "9": {"class_type": "SaveImage", "inputs": {"images": ["8", 0], "filename_prefix": "msb"}},
}
BINDINGS = {
    "prompt": {"node": "6", "field": "text"},
    "negative_prompt": {"node": "7", "field": "text"},
    "seed": {"node": "3", "field": "seed"},
}


@pytest.fixture
def comfy(settings: Any) -> Iterator[FakeComfyUI]:
    server = FakeComfyUI()
    server.start()
    settings.MYSPINBOT_COMFYUI_URLS = [server.url]
    settings.MYSPINBOT_COMFYUI_TIMEOUT = 5.0
    settings.MYSPINBOT_COMFYUI_SILENCE = 5.0
    yield server
    server.stop()


def txt2img(**params: Any) -> dict[str, Any]:
    return {"workflow": TXT2IMG, "bindings": BINDINGS, "prompt": "a red fox", "seed": 7, **params}


def run_service(
    params: dict[str, Any], inputs: dict[str, Any] | None = None
) -> tuple[dict[str, Any], ServiceRun]:
    run = make_service_run(SERVICE, params, inputs)
    return handler.run(run.context), run


def png_size_and_colour(data: bytes) -> tuple[tuple[int, int], Any]:
    with Image.open(io.BytesIO(data)) as image:
        return image.size, image.convert("RGB").getpixel((0, 0))


@pytest.mark.django_db
def test_workflow_runs_with_bound_values_previews_progress_and_outputs(comfy: FakeComfyUI) -> None:
    output, run = run_service(txt2img(negative_prompt="blurry"))

    sent = comfy.prompts[0]["prompt"]
    assert (
        sent["6"]["inputs"]["text"],
        sent["7"]["inputs"]["text"],
        sent["3"]["inputs"]["seed"],
    ) == ("a red fox", "blurry", 7)
    assert sent["3"]["inputs"]["model"] == ["4", 0]
    assert [f["node"] for f in output["files"]] == ["9"]
    assert output["image"] == output["images"][0] == output["files"][0]["ref"]
    assert (output["audio"], output["video"], output["cached_nodes"]) == (None, None, [])
    assert output["image"]["content_type"] == "image/png"
    size, _ = png_size_and_colour(run.read(output["image"]))
    assert size == (64, 48)
    # One preview per sampler step, each a PNG.
    assert len(output["previews"]) == 4
    assert [png_size_and_colour(run.read(p))[0] for p in output["previews"]] == [(16, 16)] * 4
    assert output["server"]["url"] == comfy.url
    steps = [m for _, m in run.progress.reports if m and "step" in m]
    assert steps == [f"node #3 (KSampler): step {i}/4" for i in range(1, 5)]
    fractions = [f for f, _ in run.progress.reports]
    assert fractions == sorted(fractions)
    assert run.progress.reports[-1] == (1.0, "1 output file(s) from ComfyUI")


@pytest.mark.django_db
def test_previews_are_capped(comfy: FakeComfyUI) -> None:
    output, _ = run_service(txt2img(max_previews=2))
    assert len(output["previews"]) == 2


@pytest.mark.django_db
def test_unchanged_nodes_are_cached_on_the_server(comfy: FakeComfyUI) -> None:
    first, _ = run_service(txt2img())
    again, _ = run_service(txt2img())
    other_seed, _ = run_service(txt2img(seed=8))

    assert first["cached_nodes"] == []
    assert again["cached_nodes"] == ["3", "4", "5", "6", "7", "8", "9"]
    assert again["previews"] == []
    # A cached output node still names its file, which is downloaded again.
    assert again["image"]["sha256"] == first["image"]["sha256"]
    assert other_seed["cached_nodes"] == ["4", "5", "6", "7"]
    assert len(other_seed["previews"]) == 4
    assert other_seed["image"]["sha256"] != first["image"]["sha256"]


@pytest.mark.django_db
def test_image_and_audio_inputs_are_uploaded_and_bound(comfy: FakeComfyUI) -> None:
    workflow = {
        "1": {"class_type": "LoadImage", "inputs": {"image": "none.png"}},
        "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "copy"}},
        "3": {"class_type": "LoadAudio", "inputs": {"audio": "none.wav"}},
        "4": {"class_type": "SaveAudio", "inputs": {"audio": ["3", 0], "filename_prefix": "voice"}},
    }
    bindings = {"image": {"node": "1", "field": "image"}, "audio": {"node": "3", "field": "audio"}}
    run = make_service_run(SERVICE, {"workflow": workflow, "bindings": bindings})
    buffer = io.BytesIO()
    Image.new("RGB", (20, 10), (10, 200, 30)).save(buffer, format="PNG")
    voice = pcm16_wav(np.zeros(1600), 16000)
    run.context.inputs = {
        "portrait": run.upload("face.png", buffer.getvalue(), "image/png"),
        "tts": {"audio": run.upload("speech.wav", voice, "audio/wav")},
    }

    output = handler.run(run.context)

    sent = comfy.prompts[0]["prompt"]
    assert sent["1"]["inputs"]["image"] == f"{run.job.pk}-face.png"
    assert sent["3"]["inputs"]["audio"] == f"{run.job.pk}-speech.wav"
    assert png_size_and_colour(run.read(output["image"])) == ((20, 10), (10, 200, 30))
    assert run.read(output["audio"]) == voice
    assert output["audio"]["content_type"] == "audio/x-wav"
    assert [f["node"] for f in output["files"]] == ["2", "4"]


@pytest.mark.django_db
def test_a_bound_image_without_an_image_input_is_missing_input(comfy: FakeComfyUI) -> None:
    workflow = {"1": {"class_type": "LoadImage", "inputs": {"image": "x.png"}}}
    with pytest.raises(PermanentError) as caught:
        run_service({"workflow": workflow, "bindings": {"image": {"node": "1", "field": "image"}}})
    assert caught.value.code == "missing_input"
    assert comfy.prompts == []


@pytest.mark.django_db
def test_a_binding_to_an_unknown_input_is_bad_input(comfy: FakeComfyUI) -> None:
    with pytest.raises(PermanentError) as caught:
        run_service(txt2img(bindings={"seed": {"node": "3", "field": "noise_seed"}}))
    assert caught.value.code == "bad_input"
    assert caught.value.message == "binding 'seed': node '3' has no input 'noise_seed'"


@pytest.mark.django_db
def test_out_of_memory_keeps_the_servers_message(comfy: FakeComfyUI) -> None:
    comfy.fail(
        "KSampler", "torch.OutOfMemoryError", "Allocation on device 0 would exceed allowed memory."
    )
    with pytest.raises(PermanentError) as caught:
        run_service(txt2img())
    assert caught.value.code == "out_of_memory"
    assert caught.value.message == (
        "ComfyUI node #3 (KSampler) ran out of memory: "
        "Allocation on device 0 would exceed allowed memory."
    )
    assert caught.value.details["exception_type"] == "torch.OutOfMemoryError"


@pytest.mark.django_db
def test_other_execution_errors_name_the_node(comfy: FakeComfyUI) -> None:
    comfy.fail("VAEDecode", "RuntimeError", "mat1 and mat2 shapes cannot be multiplied")
    with pytest.raises(PermanentError) as caught:
        run_service(txt2img())
    assert caught.value.code == "comfyui_execution_error"
    assert caught.value.message == (
        "ComfyUI node #8 (VAEDecode) failed: "
        "RuntimeError: mat1 and mat2 shapes cannot be multiplied"
    )


@pytest.mark.django_db
def test_a_model_file_the_server_lacks_is_missing_model(comfy: FakeComfyUI) -> None:
    workflow = {
        **TXT2IMG,
        "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "sdxl.safetensors"}},
    }
    with pytest.raises(PermanentError) as caught:
        run_service(txt2img(workflow=workflow))
    assert caught.value.code == "comfyui_missing_model"
    assert caught.value.message == (
        "ComfyUI node #4 (CheckpointLoaderSimple): "
        "ckpt_name: 'sdxl.safetensors' not in ['tiny-sd.safetensors']"
    )


@pytest.mark.django_db
def test_a_missing_model_file_at_run_time_is_missing_model(comfy: FakeComfyUI) -> None:
    comfy.fail(
        "CheckpointLoaderSimple",
        "FileNotFoundError",
        "[Errno 2] No such file: 'models/checkpoints/tiny-sd.safetensors'",
    )
    with pytest.raises(PermanentError) as caught:
        run_service(txt2img())
    assert caught.value.code == "comfyui_missing_model"


@pytest.mark.django_db
def test_a_node_class_the_server_lacks_fails_the_run(comfy: FakeComfyUI) -> None:
    # Submitted while the server had it (the preflight passed); gone when the node runs.
    run = make_service_run(SERVICE, txt2img())
    comfy.remove_class("VAEDecode")
    with pytest.raises(PermanentError) as caught:
        handler.run(run.context)
    assert caught.value.code == "comfyui_missing_node"
    assert (
        caught.value.message
        == "ComfyUI: Node 'VAEDecode' not found. The custom node may not be installed."
    )
    assert caught.value.details["class_type"] == "VAEDecode"


@pytest.mark.django_db
def test_cancel_interrupts_the_prompt_and_deletes_it_from_the_queue(comfy: FakeComfyUI) -> None:
    comfy.step_seconds = 0.2
    run = make_service_run(
        SERVICE,
        txt2img(
            workflow={
                **TXT2IMG,
                "3": {**TXT2IMG["3"], "inputs": {**TXT2IMG["3"]["inputs"], "steps": 50}},
            }
        ),
    )
    timer = threading.Timer(0.7, lambda: setattr(run.progress, "cancel", True))
    timer.start()

    with pytest.raises(Cancelled):
        handler.run(run.context)

    assert comfy.interrupts == 1
    assert ("POST", "/queue") in comfy.requests
    prompt_id = comfy.prompts[0]["prompt_id"]
    deadline = time.monotonic() + 5
    while comfy.history(prompt_id) is None and time.monotonic() < deadline:
        time.sleep(0.05)
    entry = comfy.history(prompt_id)
    assert entry is not None
    assert entry["status"]["status_str"] == "error"
    assert entry["status"]["messages"][-1][0] == "execution_interrupted"
    assert Server(comfy.url, 5).queue_length() == 0


@pytest.mark.django_db
def test_a_server_restart_mid_run_is_retryable_and_the_retry_succeeds(comfy: FakeComfyUI) -> None:
    comfy.crash_after_steps = 2
    with pytest.raises(TransientError) as caught:
        run_service(txt2img())
    assert caught.value.code == "comfyui_unavailable"
    assert "closed mid-run" in caught.value.message

    comfy.stop()
    comfy.crash_after_steps = None
    comfy.start()
    output, _ = run_service(txt2img())
    assert output["cached_nodes"] == []  # the restarted server remembers nothing
    assert len(output["previews"]) == 4


@pytest.mark.django_db
def test_a_server_that_is_down_is_retryable(comfy: FakeComfyUI) -> None:
    comfy.stop()
    with pytest.raises(TransientError) as caught:
        run_service(txt2img())
    assert caught.value.code == "comfyui_unavailable"


@pytest.mark.django_db
def test_no_server_configured_is_permanent(settings: Any) -> None:
    settings.MYSPINBOT_COMFYUI_URLS = []
    with pytest.raises(PermanentError) as caught:
        run_service(txt2img())
    assert caught.value.code == "comfyui_not_configured"


def test_the_server_with_the_shortest_queue_is_picked(comfy: FakeComfyUI) -> None:
    busy, idle, down = comfy, FakeComfyUI(), FakeComfyUI()
    idle.start()
    try:
        busy.step_seconds = 0.5
        slow = {**TXT2IMG, "3": {**TXT2IMG["3"], "inputs": {**TXT2IMG["3"]["inputs"], "steps": 20}}}
        for number in range(2):
            Server(busy.url, 5).queue_prompt(slow, "someone-else", f"p{number}")
        servers = [Server(s.url, 5) for s in (down, busy, idle)]
        assert handler.pick_server(servers).url == idle.url
        assert handler.pick_server(servers[:2]).url == busy.url
        with pytest.raises(TransientError) as caught:
            handler.pick_server(servers[:1])
        assert caught.value.code == "comfyui_unavailable"
    finally:
        idle.stop()


# --- refusal at submission ----------------------------------------------------------


@pytest.mark.django_db
def test_submission_is_refused_when_the_server_lacks_a_node_class(comfy: FakeComfyUI) -> None:
    owner = User.objects.create_user("comfy-user")
    workflow = {**TXT2IMG, "10": {"class_type": "IPAdapterApply", "inputs": {}}}
    document = graph(
        [node("render", SERVICE, params={"workflow": workflow, "bindings": BINDINGS})], []
    )

    with pytest.raises(Rejected) as caught:
        engine.submit_job(owner, document)

    assert (caught.value.status, caught.value.code) == (422, "comfyui_missing_node")
    assert caught.value.details == {"node": "render", "missing": ["IPAdapterApply"]}
    assert owner.jobs.count() == 0


@pytest.mark.django_db
def test_submission_is_accepted_when_the_server_has_every_class_or_is_down(
    comfy: FakeComfyUI,
) -> None:
    owner = User.objects.create_user("comfy-user")
    document = graph(
        [node("render", SERVICE, params={"workflow": TXT2IMG, "bindings": BINDINGS})], []
    )
    assert engine.submit_job(owner, document).pk is not None
    comfy.stop()
    assert engine.submit_job(owner, document).pk is not None
