"""``manage.py models`` against a stand-in of the hub's file API: fetch → verify, resume
after an interrupted download, a corrupted file found and fetched again, a full disk,
offline mode, and the licence that must be accepted first."""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from myspinbot.model_store import ModelStore, default_store, get_manifest, load_manifest
from testkit.hub_server import HubServer

MIB = 1024 * 1024
# 12 MiB: the hub's client writes what it receives in 10 MiB chunks, so a download cut
# after 11 MiB leaves 10 MiB on disk to resume from.
WEIGHTS = np.random.default_rng(0).integers(0, 256, 12 * MIB, dtype=np.uint8).tobytes()
CONFIG = b'{"hidden_size": 8}\n'
REPO = "test-org/tiny-model"


def manifest(path: Path, *, sha256: str | None = None, size: int | None = None) -> Path:
    path.write_text(
        json.dumps(
            {
                "models": [
                    {
                        "name": "tiny-model",
                        "title": "A tiny model",
                        "repo_id": REPO,
                        "revision": None,
                        "folder": REPO,
                        "licence": {"id": "mit", "name": "MIT", "url": "https://example.org/mit"},
                        "services": ["image.keyframe"],
                        "files": [
                            {"path": "config.json", "sha256": None, "size": None},
                            {"path": "unet/weights.safetensors", "sha256": sha256, "size": size},
                        ],
                    }
                ]
            }
        )
    )
    return path


@pytest.fixture
def hub() -> Iterator[HubServer]:
    server = HubServer()
    server.add_repo(REPO, {"config.json": CONFIG, "unet/weights.safetensors": WEIGHTS})
    server.start()
    yield server
    server.stop()


@pytest.fixture
def root(settings: Any, hub: HubServer, tmp_path: Path) -> Path:
    settings.MYSPINBOT_MODEL_ROOT = tmp_path / "models"
    settings.MYSPINBOT_MODEL_MANIFEST = str(manifest(tmp_path / "manifest.json"))
    settings.HF_ENDPOINT = hub.url
    settings.HF_HUB_OFFLINE = False
    return tmp_path / "models"


def models(*args: str) -> str:
    out = io.StringIO()
    call_command("models", *args, stdout=out)
    return out.getvalue()


def state() -> str:
    store = default_store()
    return store.state(store.entry("tiny-model")).state


def test_fetch_shows_the_licence_installs_verified_files_and_verify_says_not_pinned(
    root: Path, hub: HubServer
) -> None:
    out = models("fetch", "tiny-model", "--accept-licence", "--no-progress")

    assert "licence: MIT (https://example.org/mit)" in out
    assert "unet/weights.safetensors: 12582912 bytes, not pinned: the hub's sha256 matches" in out
    assert "config.json: 19 bytes, not pinned: the hub's git sha1 matches" in out
    assert (root / REPO / "unet/weights.safetensors").read_bytes() == WEIGHTS
    assert not list(root.rglob("*.partial"))
    assert state() == "present"
    record = json.loads((root / ".registry/tiny-model.json").read_text())
    assert record["revision"] == hub.repos[REPO].commit
    assert (
        record["files"]["unet/weights.safetensors"]["sha256"] == hashlib.sha256(WEIGHTS).hexdigest()
    )

    verified = models("verify", "tiny-model")
    assert f"tiny-model: revision not pinned ({hub.repos[REPO].commit})" in verified
    assert (
        "not pinned: the sha256 recorded at fetch, when the file matched the hub's sha256"
        in verified
    )
    assert "verified 1 models" in verified
    listed = json.loads(models("list", "--json"))
    assert [(m["name"], m["state"], m["installed_bytes"], m["command"]) for m in listed] == [
        ("tiny-model", "present", len(WEIGHTS) + len(CONFIG), "")
    ]


def test_fetch_without_accepting_the_licence_downloads_nothing(root: Path, hub: HubServer) -> None:
    with pytest.raises(CommandError, match="rerun with --accept-licence"):
        models("fetch", "tiny-model")

    assert [m for m, _, _ in hub.requests if m == "GET"] == []
    assert state() == "missing"


def test_an_interrupted_download_resumes_where_it_stopped(root: Path, hub: HubServer) -> None:
    # given: the connection drops after 11 MiB and the hub then stops answering
    hub.cut_after(REPO, "unet/weights.safetensors", 11 * MIB, then_down=True)
    with pytest.raises(CommandError, match="503"):
        models("fetch", "tiny-model", "--accept-licence", "--no-progress")
    partial = root / REPO / "unet/weights.safetensors.partial"
    assert partial.stat().st_size == 10 * MIB
    assert state() == "missing"

    # when: the hub is back and the fetch runs again
    hub.down = False
    hub.requests.clear()
    out = models("fetch", "tiny-model", "--accept-licence", "--no-progress")

    # then: it asked only for the rest, and the file is whole and registered
    assert "resuming at 10485760 of 12582912 bytes" in out
    assert hub.file_requests("unet/weights.safetensors") == [
        ("HEAD", ""),
        ("GET", "bytes=10485760-"),
    ]
    assert (root / REPO / "unet/weights.safetensors").read_bytes() == WEIGHTS
    assert state() == "present"


def test_a_dropped_connection_mid_file_is_resumed_in_the_same_run(
    root: Path, hub: HubServer
) -> None:
    hub.cut_after(REPO, "unet/weights.safetensors", 11 * MIB)

    models("fetch", "tiny-model", "--accept-licence", "--no-progress")

    gets = [r for m, r in hub.file_requests("unet/weights.safetensors") if m == "GET"]
    assert gets == ["", "bytes=10485760-"]
    assert (root / REPO / "unet/weights.safetensors").read_bytes() == WEIGHTS


def test_a_corrupted_file_is_found_and_fetched_again(root: Path, hub: HubServer) -> None:
    models("fetch", "tiny-model", "--accept-licence", "--no-progress")
    weights = root / REPO / "unet/weights.safetensors"
    with weights.open("r+b") as handle:  # one flipped byte, same size
        handle.seek(1000)
        handle.write(bytes([WEIGHTS[1000] ^ 0xFF]))

    assert state() == "corrupt"
    with pytest.raises(CommandError, match="tiny-model/unet/weights.safetensors corrupt"):
        models("verify")
    listed = json.loads(models("list", "--json"))[0]
    assert (listed["state"], listed["command"]) == (
        "corrupt",
        "python manage.py models fetch tiny-model",
    )

    hub.requests.clear()
    models("fetch", "tiny-model", "--accept-licence", "--no-progress")

    assert hub.file_requests("unet/weights.safetensors") == [("HEAD", ""), ("GET", "")]
    assert [m for m, _ in hub.file_requests("config.json")] == []
    assert weights.read_bytes() == WEIGHTS
    assert state() == "present"
    assert "verified 1 models" in models("verify")


def test_a_download_that_does_not_match_the_pinned_sha256_is_discarded(
    settings: Any, root: Path, tmp_path: Path
) -> None:
    settings.MYSPINBOT_MODEL_MANIFEST = str(
        manifest(tmp_path / "pinned.json", sha256="0" * 64, size=len(WEIGHTS))
    )

    with pytest.raises(CommandError, match="sha256 [0-9a-f]{64} but expected 0{64}"):
        models("fetch", "tiny-model", "--accept-licence", "--no-progress")

    assert not (root / REPO / "unet/weights.safetensors").exists()
    assert not (root / REPO / "unet/weights.safetensors.partial").exists()
    assert state() == "missing"


def test_offline_mode_refuses_with_the_reason(settings: Any, root: Path, hub: HubServer) -> None:
    settings.HF_HUB_OFFLINE = True

    with pytest.raises(
        CommandError, match="HF_HUB_OFFLINE is set: this machine downloads no models"
    ):
        models("fetch", "tiny-model", "--accept-licence")

    assert hub.requests == []


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A real 1 MiB file system (tmpfs; mounting one needs root, as the test machine's
    processes are)."""
    mount = tmp_path / "small"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)], check=True)
    yield mount
    subprocess.run(["umount", str(mount)], check=True)


def test_a_full_disk_gives_a_clear_error_and_registers_nothing(
    settings: Any, root: Path, small_disk: Path
) -> None:
    settings.MYSPINBOT_MODEL_ROOT = small_disk

    with pytest.raises(CommandError) as raised:
        models("fetch", "tiny-model", "--accept-licence", "--no-progress")

    message = str(raised.value)
    assert message.startswith(
        "tiny-model: disk full: unet/weights.safetensors needs 12582912 more bytes"
    )
    assert "Nothing was registered" in message
    assert "(running it again will not help as is)" in message
    store = ModelStore(small_disk)
    assert store.state(store.entry("tiny-model")).state == "missing"
    assert json.loads((small_disk / ".registry/tiny-model.json").read_text())["files"].keys() == {
        "config.json"
    }


def test_a_hub_that_does_not_answer_is_a_clear_error(settings: Any, root: Path) -> None:
    hub = HubServer()
    hub.start()
    settings.HF_ENDPOINT = hub.url
    hub.stop()  # nothing listens on its port any more

    answer = f"tiny-model: the hub at {settings.HF_ENDPOINT} did not answer for {REPO}/config"
    with pytest.raises(CommandError, match=answer):
        models("fetch", "tiny-model", "--accept-licence", "--no-progress")

    assert state() == "missing"


def test_a_file_the_hub_does_not_have_is_named(root: Path, hub: HubServer) -> None:
    del hub.repos[REPO].files["config.json"]

    with pytest.raises(CommandError, match=f"tiny-model: {REPO}/config.json at main: 404"):
        models("fetch", "tiny-model", "--accept-licence", "--no-progress")


def test_the_command_line_shows_progress_and_exits_non_zero_on_refusal(
    root: Path, hub: HubServer, tmp_path: Path, settings: Any
) -> None:
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "myspinbot.settings.test",
        "MYSPINBOT_MODEL_ROOT": str(root),
        "MYSPINBOT_MODEL_MANIFEST": settings.MYSPINBOT_MODEL_MANIFEST,
        "HF_ENDPOINT": hub.url,
        "HF_HUB_OFFLINE": "false",
    }
    command = [sys.executable, "manage.py", "models", "fetch", "tiny-model"]

    fetched = subprocess.run(
        [*command, "--accept-licence"], env=env, capture_output=True, text=True
    )
    refused = subprocess.run(
        command, env={**env, "HF_HUB_OFFLINE": "true"}, capture_output=True, text=True
    )

    assert fetched.returncode == 0, fetched.stderr
    assert "tiny-model: present" in fetched.stdout
    assert "unet/weights.safetensors: 100%" in fetched.stderr  # the progress bar
    assert refused.returncode == 1
    assert "HF_HUB_OFFLINE is set" in refused.stderr


def test_a_disk_that_fills_up_mid_download_gives_the_same_clear_error(
    settings: Any, root: Path, hub: HubServer, small_disk: Path
) -> None:
    # given: the hub states no size, so the space cannot be checked beforehand
    hub.hide_sizes = True
    settings.MYSPINBOT_MODEL_ROOT = small_disk

    with pytest.raises(CommandError) as raised:
        models("fetch", "tiny-model", "--accept-licence", "--no-progress")

    message = str(raised.value)
    assert message.startswith("tiny-model: disk full: unet/weights.safetensors needs more space")
    assert "Nothing was registered" in message
    store = ModelStore(small_disk)
    assert store.state(store.entry("tiny-model")).state == "missing"
    assert not (small_disk / REPO / "unet/weights.safetensors").exists()


def test_remove_deletes_the_files_and_the_registration(root: Path) -> None:
    models("fetch", "tiny-model", "--accept-licence", "--no-progress")

    out = models("remove", "tiny-model")

    assert out == "tiny-model: removed, 12.0 MiB freed\n"
    assert not (root / REPO).exists()
    assert state() == "missing"


def test_an_unknown_model_name_is_refused(root: Path) -> None:
    with pytest.raises(CommandError, match="no model 'nope' in the manifest"):
        models("fetch", "nope")


def test_the_repository_manifest_names_every_pipeline_model_with_a_licence() -> None:
    from apps.capabilities.registry import get_registry
    from myspinbot.model_store import MANIFEST_PATH
    from myspinbot.schemas import schema_validator

    document = json.loads(MANIFEST_PATH.read_text())
    errors = [e.message for e in schema_validator("model-manifest").iter_errors(document)]
    entries = load_manifest(MANIFEST_PATH)
    registry = get_registry()

    assert errors == []
    assert sorted(entries) == [
        "animatediff-motion-v1-5-2",
        "f5-tts-v1",
        "musetalk-v1.5",
        "realesrgan-x4plus",
        "sd-1.5",
        "sd-vae-ft-mse",
        "vocos-mel-24khz",
        "whisper-tiny",
    ]
    assert entries["sd-1.5"].repo_id == "stable-diffusion-v1-5/stable-diffusion-v1-5"
    for entry in entries.values():
        assert entry.licence["url"].startswith("https://"), entry.name
        assert all(service in registry for service in entry.services), entry.name
        # nothing is pinned yet: said so, never invented
        assert (entry.revision, entry.pinned, entry.size_bytes) == (None, False, None), entry.name


def test_the_default_base_model_is_the_manifest_sd15_folder(settings: Any) -> None:
    settings.MYSPINBOT_MODEL_MANIFEST = ""
    store = ModelStore(Path("/nonexistent"), get_manifest())
    entry = store.entry_for_ref(settings.MYSPINBOT_BASE_MODEL)

    assert entry is not None
    assert entry.name == "sd-1.5"
