"""Download links are signed for the host browsers reach and by an identity that can only
read: a link shown to a user carries neither the storage's own key nor an internal host."""

from __future__ import annotations

import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
from django.test import override_settings

from apps.jobs.checks import download_links_are_signed_read_only
from myspinbot.storage import get_artifact_store
from testkit.services import S3Server
from tests.conftest import make_s3_store, s3_settings

READER = ("reader-key", "reader-secret-key")


@pytest.fixture(scope="module")
def two_identities(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    server = S3Server(data_dir=tmp_path_factory.mktemp("s3-two"), reader=READER)
    server.start()
    make_s3_store(server, "links")  # creates the bucket as the owner
    yield server
    server.stop()


@pytest.fixture
def public_store(two_identities: S3Server) -> Iterator[object]:
    public = f"http://localhost:{two_identities.port}"
    with override_settings(
        **s3_settings(two_identities, "links"),
        S3_PUBLIC_ENDPOINT_URL=public,
        S3_SIGNING_ACCESS_KEY_ID=READER[0],
        S3_SIGNING_SECRET_ACCESS_KEY=READER[1],
    ):
        get_artifact_store.cache_clear()
        yield get_artifact_store()
    get_artifact_store.cache_clear()


def fetch(url: str, method: str = "GET", data: bytes | None = None) -> tuple[int, bytes]:
    request = urllib.request.Request(url, method=method, data=data)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def test_a_link_names_the_public_host_and_the_reader_and_serves_the_bytes(
    public_store: object, two_identities: S3Server
) -> None:
    store = get_artifact_store()
    key = f"tests/{uuid.uuid4().hex}/clip.bin"
    store.save_bytes(key, b"the video bytes")

    url = store.download_url(key, expires_in=60)

    parts = urlsplit(url)
    assert parts.netloc == f"localhost:{two_identities.port}"
    credential = parse_qs(parts.query)["X-Amz-Credential"][0]
    assert credential.startswith(READER[0] + "/")
    assert two_identities.access_key not in url
    assert fetch(url) == (200, b"the video bytes")


def test_the_signing_identity_cannot_write(public_store: object) -> None:
    """What a leaked link's key could be used for: reading, not writing."""
    store = get_artifact_store()
    key = f"tests/{uuid.uuid4().hex}/planted.bin"
    put = store.signer.generate_presigned_url(  # type: ignore[attr-defined]
        "put_object", Params={"Bucket": "links", "Key": key}, ExpiresIn=60
    )
    status, body = fetch(put, method="PUT", data=b"planted")
    assert status == 403
    assert b"<Code>AccessDenied</Code>" in body  # refused for what it is, not a bad signature
    assert key not in store.keys("tests/")


def test_deploy_check_warns_while_links_use_the_storage_identity(tmp_path: Path) -> None:
    with override_settings(S3_BUCKET="b", S3_ACCESS_KEY_ID="root", S3_SIGNING_ACCESS_KEY_ID=""):
        assert [w.id for w in download_links_are_signed_read_only()] == ["jobs.W010"]
    with override_settings(S3_BUCKET="b", S3_ACCESS_KEY_ID="root", S3_SIGNING_ACCESS_KEY_ID="root"):
        assert [w.id for w in download_links_are_signed_read_only()] == ["jobs.W010"]
    with override_settings(S3_BUCKET="b", S3_ACCESS_KEY_ID="root", S3_SIGNING_ACCESS_KEY_ID="ro"):
        assert download_links_are_signed_read_only() == []
    with override_settings(S3_BUCKET=""):
        assert download_links_are_signed_read_only() == []
