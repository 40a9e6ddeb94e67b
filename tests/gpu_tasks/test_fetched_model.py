"""A model fetched from (a stand-in of) the hub is what the GPU services run on: fetch →
verify → a keyframe job on the fetched files; until then, and once a file is damaged,
the worker offers no diffusion service and the loader names the command that fixes it."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.core.management import call_command
from PIL import Image

from apps.capabilities.services.image_keyframe import handler as keyframe_handler
from gpu_tasks import backends, loader, worker
from gpu_tasks.model_cache import ModelCache
from myspinbot.errors import PermanentError
from testkit.contexts import make_service_run
from testkit.hub_server import HubServer

pytestmark = pytest.mark.django_db
REPO = "test-org/tiny-sd"


@pytest.fixture
def hub(model_root: Path) -> Iterator[HubServer]:
    """The session's tiny random SD model (real diffusers classes), served as a hub repo."""
    server = HubServer()
    server.add_folder(REPO, model_root / "sd-tiny")
    server.start()
    yield server
    server.stop()


@pytest.fixture
def fetch_settings(gpu_settings: Any, hub: HubServer, tmp_path: Path) -> Path:
    files = sorted(hub.repos[REPO].files)
    manifest = tmp_path / "manifest.json"
    manifest.write_text(
        json.dumps(
            {
                "models": [
                    {
                        "name": "tiny-sd",
                        "repo_id": REPO,
                        "revision": None,
                        "folder": REPO,
                        "licence": {"id": "mit", "name": "MIT", "url": "https://example.org/mit"},
                        "services": ["lora.train", "image.keyframe"],
                        "files": [{"path": f, "sha256": None, "size": None} for f in files],
                    }
                ]
            }
        )
    )
    root = tmp_path / "models"
    gpu_settings.MYSPINBOT_MODEL_MANIFEST = str(manifest)
    gpu_settings.MYSPINBOT_MODEL_ROOT = root
    gpu_settings.MYSPINBOT_BASE_MODEL = REPO
    gpu_settings.HF_ENDPOINT = hub.url
    return root


def models(*args: str) -> str:
    out = io.StringIO()
    call_command("models", *args, stdout=out)
    return out.getvalue()


def test_a_keyframe_job_runs_on_the_model_fetched_and_verified_from_the_hub(
    gpu_settings: Any, fetch_settings: Path, fresh_cache: ModelCache
) -> None:
    # given: nothing installed, the worker offers no diffusion and says how to fix it
    assert backends.available()["diffusion"] == []
    with pytest.raises(loader.ModelUnavailable) as refused:
        loader.resolve(REPO)
    assert str(refused.value) == (
        "model 'tiny-sd' is missing on this worker: run python manage.py models fetch tiny-sd"
    )

    # when: fetched (this machine has network) and verified, then run offline as workers do
    gpu_settings.HF_HUB_OFFLINE = False
    models("fetch", "tiny-sd", "--accept-licence", "--no-progress")
    assert "verified 1 models" in models("verify", "tiny-sd")
    gpu_settings.HF_HUB_OFFLINE = True
    report = worker.report()
    run = make_service_run(
        "image.keyframe", {"prompt": "a hill", "steps": 2, "width": 32, "height": 32}
    )
    result = keyframe_handler.run(run.context)

    # then: the worker offers diffusion, and the job rendered with the fetched files
    assert report["backends"]["diffusion"] == ["stable-diffusion"]
    assert report["model_store"]["tiny-sd"]["state"] == "present"
    assert [m["key"] for m in fresh_cache.stats()["models"]] == [
        f"sd:{(fetch_settings / REPO).resolve()}:torch.float32"
    ]
    image = Image.open(io.BytesIO(run.read(result["image"])))
    assert image.size == (32, 32)


def test_a_damaged_weight_file_takes_the_model_away_until_fetched_again(
    gpu_settings: Any, fetch_settings: Path, fresh_cache: ModelCache
) -> None:
    gpu_settings.HF_HUB_OFFLINE = False
    models("fetch", "tiny-sd", "--accept-licence", "--no-progress")
    unet = fetch_settings / REPO / "unet/diffusion_pytorch_model.safetensors"
    unet.write_bytes(unet.read_bytes()[:-16])

    assert backends.available()["diffusion"] == []
    run = make_service_run(
        "image.keyframe", {"prompt": "a hill", "steps": 1, "width": 32, "height": 32}
    )
    with pytest.raises(PermanentError) as failed:
        keyframe_handler.run(run.context)
    assert (
        "model 'tiny-sd' is corrupt on this worker: run python manage.py models fetch tiny-sd"
        in str(failed.value)
    )

    models("fetch", "tiny-sd", "--accept-licence", "--no-progress")
    assert backends.available()["diffusion"] == ["stable-diffusion"]
