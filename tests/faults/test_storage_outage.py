"""Stopping the S3 server: an upload is answered 503 in the project's error shape and
records nothing; a node whose artifact write hits the stopped server retries and
completes once the server is back, and only the final attempt's artifacts remain."""

from __future__ import annotations

import io
import time
import wave
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.contrib.auth.models import User

from apps.capabilities.registry import get_registry
from apps.jobs import engine
from apps.jobs.models import Artifact, JobEvent, NodeRun
from myspinbot.storage import S3ArtifactStore
from testkit.graphs import graph, node, wait_for_job, wait_for_node
from testkit.services import CeleryWorker, S3Server
from tests.conftest import make_s3_store, s3_settings
from tests.faults.conftest import FAST_RECOVERY
from tests.faults.stack import Api, Stack
from tests.support.media import png_bytes, wav_bytes

pytestmark = pytest.mark.django_db(transaction=True)

BUCKET = "faults"


@pytest.fixture
def private_s3(tmp_path: Path) -> Iterator[tuple[S3Server, S3ArtifactStore]]:
    folder = tmp_path / "s3"
    folder.mkdir()
    server = S3Server(data_dir=folder)
    server.start()
    yield server, make_s3_store(server, BUCKET)
    server.stop()


def eventually_keys(store: S3ArtifactStore, prefix: str, wanted: list[str]) -> list[str]:
    """The keys under ``prefix`` once they are ``wanted`` (or after 10 s): superseded
    objects are deleted just after the node's completion commits."""
    deadline = time.monotonic() + 10
    while (keys := store.keys(prefix)) != wanted and time.monotonic() < deadline:
        time.sleep(0.1)
    return keys


def restart(server: S3Server, store: S3ArtifactStore) -> None:
    server.start()
    make_s3_store(server, BUCKET)  # waits until the server answers S3 requests again


def test_an_upload_while_storage_is_down_is_a_503_and_records_nothing(
    stack: Stack, api_for: Callable[[User], Api], private_s3: tuple[S3Server, S3ArtifactStore]
) -> None:
    server, store = private_s3
    stack.env.update({k: str(v) for k, v in s3_settings(server, BUCKET).items()})
    stack.start_web()
    user = User.objects.create_user("ada")
    api = api_for(user)
    image = png_bytes()

    server.stop()
    refused = api.upload("portrait.png", image, "image/png")
    restart(server, store)
    accepted = api.upload("portrait.png", image, "image/png")

    assert refused.status == 503
    assert refused.body == {
        "error": {
            "code": "storage_unavailable",
            "message": "artifact storage is not answering; try again",
            "details": {},
        }
    }
    assert refused.headers["retry-after"] == "5"
    assert accepted.status == 201, accepted.body
    artifact = Artifact.objects.get(owner=user)
    assert str(artifact.pk) == accepted.body["id"]
    assert store.keys(f"uploads/{user.pk}/") == [artifact.key]


@pytest.fixture
def test_services(settings: Any) -> Iterator[None]:
    settings.MYSPINBOT_CAPABILITY_DIRS = [FAST_RECOVERY["MYSPINBOT_CAPABILITY_DIRS"]]
    get_registry.cache_clear()
    yield
    get_registry.cache_clear()


@pytest.mark.slow
def test_a_node_whose_artifact_write_hits_a_stopped_server_retries_and_completes(
    start_worker: Callable[..., CeleryWorker],
    private_s3: tuple[S3Server, S3ArtifactStore],
    test_services: None,
) -> None:
    server, store = private_s3
    env = {**FAST_RECOVERY, **{k: str(v) for k, v in s3_settings(server, BUCKET).items()}}
    env["S3_TIMEOUT_SECONDS"] = "2"
    start_worker("cpu", [settings.CELERY_CPU_QUEUE], env=env)
    user = User.objects.create_user("ada")
    size = 8 * 1024 * 1024
    job = engine.submit_job(
        user,
        graph([node("w", "testing.artifacts", params={"seconds": 2, "size_bytes": size})], []),
    )
    wait_for_node(job, "w", "running")
    deadline = time.monotonic() + 30
    while not Artifact.objects.filter(job=job).exists():  # first.txt of attempt 1
        assert time.monotonic() < deadline
        time.sleep(0.05)

    server.stop()  # the node is between its two writes: the second one hits a dead server
    deadline = time.monotonic() + 60
    while not JobEvent.objects.filter(job=job, type="node.retrying").exists():
        assert time.monotonic() < deadline, "the node did not retry"
        time.sleep(0.1)
    time.sleep(3.0)
    restart(server, store)
    job = wait_for_job(job, timeout=120)

    assert job.status == "completed"
    run = NodeRun.objects.get(job=job)
    assert run.attempt >= 2
    retries = JobEvent.objects.filter(job=job, type="node.retrying")
    codes = {event.payload["error"]["code"] for event in retries}
    assert codes == {"storage_unavailable"}
    assert retries.count() == run.attempt - 1
    final = f"jobs/{job.pk}/w/{run.attempt}/"
    keys = sorted(Artifact.objects.filter(job=job).values_list("key", flat=True))
    assert keys == [final + "first.txt", final + "second.bin"]
    assert eventually_keys(store, f"jobs/{job.pk}/", keys) == keys
    second = Artifact.objects.get(job=job, name="second.bin")
    assert (second.size_bytes, second.sha256) == (size, run.output["sha256"])
    assert store.stat(second.key).sha256 == run.output["sha256"]


def long_wav(seconds: int) -> bytes:
    """One second of tone, repeated: a valid WAV of ``seconds`` seconds, made quickly."""
    second = wav_bytes(seconds=1.0)
    frames = second[44:]  # the canonical 44-byte header of a PCM WAV
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(16000)
        out.writeframes(frames * seconds)
    return buffer.getvalue()


@pytest.mark.slow
def test_an_upload_to_a_server_that_stops_answering_mid_transfer_is_a_503(
    stack: Stack, api_for: Callable[[User], Api], private_s3: tuple[S3Server, S3ArtifactStore]
) -> None:
    server, store = private_s3
    stack.env.update({k: str(v) for k, v in s3_settings(server, BUCKET).items()})
    stack.env["S3_TIMEOUT_SECONDS"] = "3"
    stack.start_web()
    user = User.objects.create_user("ada")
    api = api_for(user)
    clip = long_wav(400)  # 12.8 MB: a multipart upload to the store

    server.freeze()  # the server's sockets accept, then nothing is ever answered
    try:
        started = time.monotonic()
        refused = api.upload("voice.wav", clip, "audio/wav")
        waited = time.monotonic() - started
    finally:
        server.thaw()
    make_s3_store(server, BUCKET)
    accepted = api.upload("voice.wav", clip, "audio/wav")

    assert refused.status == 503
    assert refused.body["error"]["code"] == "storage_unavailable"
    assert waited < 30
    assert accepted.status == 201, accepted.body
    artifact = Artifact.objects.get(owner=user)
    assert (artifact.size_bytes, str(artifact.pk)) == (len(clip), accepted.body["id"])
    assert store.keys(f"uploads/{user.pk}/") == [artifact.key]
