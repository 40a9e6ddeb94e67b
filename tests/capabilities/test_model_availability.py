"""Availability people can see: /api/capabilities, /api/templates and the System page
show each model of the manifest as present, missing or corrupt with size and licence,
and a pipeline whose models are missing names the command that fixes it."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.core.management import call_command
from django.test import Client

from apps.capabilities import manifest
from apps.jobs.models import ApiToken
from testkit.hub_server import HubServer

pytestmark = pytest.mark.django_db

REPO = "test-org/tiny-sd"
WEIGHTS = bytes(range(256)) * 64


@pytest.fixture
def hub() -> Iterator[HubServer]:
    server = HubServer()
    server.add_repo(REPO, {"model_index.json": b"{}", "unet/w.safetensors": WEIGHTS})
    server.start()
    yield server
    server.stop()


@pytest.fixture
def models_setup(settings: Any, hub: HubServer, tmp_path: Path) -> Path:
    path = tmp_path / "manifest.json"
    path.write_text(
        json.dumps(
            {
                "models": [
                    {
                        "name": "tiny-sd",
                        "title": "Tiny SD",
                        "repo_id": REPO,
                        "revision": None,
                        "folder": REPO,
                        "licence": {
                            "id": "creativeml-openrail-m",
                            "name": "CreativeML Open RAIL-M",
                            "url": "https://example.org/openrail",
                        },
                        "services": ["lora.train", "image.keyframe"],
                        "files": [
                            {"path": "model_index.json", "sha256": None, "size": None},
                            {"path": "unet/w.safetensors", "sha256": None, "size": None},
                        ],
                    }
                ]
            }
        )
    )
    settings.MYSPINBOT_MODEL_MANIFEST = str(path)
    settings.MYSPINBOT_MODEL_ROOT = tmp_path / "models"
    settings.HF_ENDPOINT = hub.url
    settings.HF_HUB_OFFLINE = False
    return tmp_path / "models"


@pytest.fixture
def as_ada() -> Client:
    _, token = ApiToken.issue(User.objects.create_user("ada"))
    manifest._cache.update(at=0.0, workers=None)
    return Client(headers={"Authorization": f"Bearer {token}"})


def fetch() -> None:
    call_command(
        "models", "fetch", "tiny-sd", "--accept-licence", "--no-progress", stdout=io.StringIO()
    )


def test_a_missing_model_is_shown_with_its_licence_and_the_command_and_disables_its_pipelines(
    models_setup: Path, as_ada: Client
) -> None:
    body = as_ada.get("/api/capabilities").json()

    assert [
        (m["name"], m["state"], m["installed_bytes"], m["command"]) for m in body["models"]
    ] == [("tiny-sd", "missing", 0, "python manage.py models fetch tiny-sd")]
    assert body["models"][0]["licence"]["name"] == "CreativeML Open RAIL-M"
    assert body["models"][0]["seen_by"] == "local model root"
    keyframe = next(s for s in body["services"] if s["id"] == "image.keyframe")
    assert keyframe["available"] is False
    assert keyframe["unavailableReason"] == (
        "model tiny-sd is missing: run python manage.py models fetch tiny-sd"
    )

    templates = {t["name"]: t for t in as_ada.get("/api/templates").json()["templates"]}
    render = templates["train_and_render"]
    assert render["available"] is False
    assert render["unavailableReason"].endswith(
        ": model tiny-sd is missing: run python manage.py models fetch tiny-sd"
    )
    assert [m["name"] for m in render["models"]] == ["tiny-sd"]
    assert templates["quick"]["models"] == []


def test_a_fetched_model_is_present_and_a_damaged_one_corrupt(
    models_setup: Path, as_ada: Client
) -> None:
    fetch()

    shown = as_ada.get("/api/capabilities").json()["models"][0]
    assert (shown["state"], shown["installed_bytes"], shown["command"]) == (
        "present",
        len(WEIGHTS) + 2,
        "",
    )

    (models_setup / REPO / "unet/w.safetensors").write_bytes(WEIGHTS[:-1] + b"x")
    manifest._cache.update(at=0.0, workers=None)
    shown = as_ada.get("/api/capabilities").json()["models"][0]
    assert (shown["state"], shown["command"]) == (
        "corrupt",
        "python manage.py models fetch tiny-sd",
    )
    assert shown["detail"] == "unet/w.safetensors: changed since it was verified"


def test_the_system_page_lists_each_model_with_state_size_licence_and_fix(
    models_setup: Path, client: Client
) -> None:
    client.force_login(User.objects.create_user("ops"))

    page = client.get("/system/").content.decode()

    assert '<tr data-model="tiny-sd" data-state="missing">' in page
    assert '<code class="fix">python manage.py models fetch tiny-sd</code>' in page
    assert (
        '<a href="https://example.org/openrail" rel="noopener noreferrer">'
        "CreativeML Open RAIL-M</a>" in page
    )
    assert "lora.train, image.keyframe" in page

    fetch()
    page = client.get("/system/").content.decode()
    assert '<tr data-model="tiny-sd" data-state="present">' in page
    assert "16.0\xa0KB" in page  # 16386 bytes
