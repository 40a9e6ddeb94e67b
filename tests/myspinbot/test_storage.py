"""One contract, two backends: the local folder and a real S3-compatible server."""

from __future__ import annotations

import hashlib
import io
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.test import Client, override_settings

from myspinbot.storage import (
    ArtifactNotFound,
    ArtifactStore,
    InvalidKey,
    LocalArtifactStore,
    StorageUnavailable,
    get_artifact_store,
)
from testkit.services import S3Server
from tests.conftest import make_s3_store


@pytest.fixture(params=["local", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ArtifactStore]:
    if request.param == "local":
        with override_settings(S3_BUCKET="", S3_ENDPOINT_URL=None, ARTIFACT_ROOT=tmp_path):
            get_artifact_store.cache_clear()
            yield get_artifact_store()
    else:
        yield get_artifact_store()  # the session's S3 server (tests/conftest.py)
    get_artifact_store.cache_clear()


def unique_key(name: str) -> str:
    return f"tests/{uuid.uuid4().hex}/{name}"


def test_the_configured_backend_is_the_one_asked_for(store: ArtifactStore) -> None:
    assert type(store).__name__ in {"LocalArtifactStore", "S3ArtifactStore"}


def test_save_bytes_round_trips_with_size_sha256_and_type(store: ArtifactStore) -> None:
    data = b"\x00\x01frame-data" * 1000
    key = unique_key("frame.bin")

    stored = store.save_bytes(key, data, "application/x-frame")

    assert stored.size_bytes == len(data)
    assert stored.sha256 == hashlib.sha256(data).hexdigest()
    assert stored.content_type == "application/x-frame"
    assert store.read_bytes(key) == data
    stat = store.stat(key)
    assert (stat.size_bytes, stat.sha256, stat.content_type) == (
        len(data),
        hashlib.sha256(data).hexdigest(),
        "application/x-frame",
    )


def test_save_file_streams_a_large_file_from_a_path(store: ArtifactStore, tmp_path: Path) -> None:
    data = bytes(range(256)) * 40_000  # 10 MiB: more than one chunk and one spool
    source = tmp_path / "clip.wav"
    source.write_bytes(data)
    key = unique_key("clip.wav")

    stored = store.save_file(key, source)

    assert stored.sha256 == hashlib.sha256(data).hexdigest()
    assert stored.size_bytes == 10_240_000
    assert stored.content_type == "audio/x-wav"
    with store.open(key) as handle:
        assert hashlib.sha256(handle.read()).hexdigest() == stored.sha256


def test_save_file_reads_a_file_object_from_its_position(store: ArtifactStore) -> None:
    buffer = io.BytesIO(b"HEADERpayload")
    buffer.seek(6)
    key = unique_key("payload.txt")

    stored = store.save_file(key, buffer)

    assert store.read_bytes(key) == b"payload"
    assert stored.content_type == "text/plain"


def test_saving_again_replaces_the_object(store: ArtifactStore) -> None:
    key = unique_key("script.json")
    store.save_bytes(key, b"{}")

    stored = store.save_bytes(key, b'{"v": 2}')

    assert store.read_bytes(key) == b'{"v": 2}'
    assert store.stat(key).sha256 == stored.sha256 == hashlib.sha256(b'{"v": 2}').hexdigest()


def test_delete_removes_and_tolerates_missing(store: ArtifactStore) -> None:
    key = unique_key("gone.bin")
    store.save_bytes(key, b"x")

    store.delete(key)
    store.delete(key)

    assert store.exists(key) is False
    with pytest.raises(ArtifactNotFound):
        store.stat(key)
    with pytest.raises(ArtifactNotFound):
        store.read_bytes(key)


@pytest.mark.parametrize(
    "key", ["../etc/passwd", "/abs/path", "a/../../b", "a//b", "", "a/./b", "ü.png"]
)
def test_unsafe_keys_are_refused(store: ArtifactStore, key: str) -> None:
    with pytest.raises(InvalidKey):
        store.save_bytes(key, b"x")


@pytest.mark.django_db
def test_download_url_serves_the_bytes(store: ArtifactStore, client: Client) -> None:
    key = unique_key("video.mp4")
    store.save_bytes(key, b"mp4-bytes", "video/mp4")

    url = store.download_url(key, expires_in=60)

    if isinstance(store, LocalArtifactStore):
        response = client.get(url)
        assert response.status_code == 200
        assert response["Content-Type"] == "video/mp4"
        assert b"".join(response.streaming_content) == b"mp4-bytes"  # type: ignore[attr-defined]
    else:
        with urllib.request.urlopen(url, timeout=10) as response:
            assert response.read() == b"mp4-bytes"


def test_download_url_for_a_missing_object_fails(store: ArtifactStore) -> None:
    with pytest.raises(ArtifactNotFound):
        store.download_url(unique_key("nothing.bin"), expires_in=60)


@pytest.mark.django_db
def test_a_tampered_local_link_is_not_served(tmp_path: Path, client: Client) -> None:
    with override_settings(S3_BUCKET="", ARTIFACT_ROOT=tmp_path):
        get_artifact_store.cache_clear()
        store = get_artifact_store()
        store.save_bytes("a/secret.txt", b"secret")
        url = store.download_url("a/secret.txt", expires_in=60)

        response = client.get(url[:-3] + "AAA")

    assert response.status_code == 404


def test_check_passes_when_up_and_raises_unavailable_when_s3_is_down(tmp_path: Path) -> None:
    server = S3Server(data_dir=tmp_path)
    server.start()
    store = make_s3_store(server, "check-bucket")
    store.check()
    store.save_bytes("k.txt", b"before")

    server.stop()

    with pytest.raises(StorageUnavailable):
        store.check()
    with pytest.raises(StorageUnavailable):
        store.save_bytes("k2.txt", b"during")
