"""Byte ranges and conditional requests over real HTTP (uvicorn serving the ASGI app),
from the local folder and from the real S3-compatible server: the authenticated
download route, the local store's signed links and S3's presigned URLs."""

from __future__ import annotations

import hashlib
import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests
from django.contrib.auth.models import User
from django.test import override_settings

from apps.jobs.models import ApiToken, Artifact
from myspinbot.storage import ArtifactStore, LocalArtifactStore, get_artifact_store
from testkit.services import AsgiServer

pytestmark = pytest.mark.django_db(transaction=True)

# Not a multiple of any chunk size, so the last range is a short one.
DATA = bytes(range(256)) * 4000 + b"tail"
SHA = hashlib.sha256(DATA).hexdigest()


@dataclass
class Live:
    base: str
    store: ArtifactStore
    token: str
    artifact: Artifact

    def get(self, path: str, **headers: str) -> requests.Response:
        return requests.get(
            self.base + path,
            headers={"Authorization": f"Bearer {self.token}", **headers},
            timeout=10,
        )

    @property
    def download(self) -> str:
        return f"/api/artifacts/{self.artifact.pk}/download"


@pytest.fixture(scope="module", params=["local", "s3"])
def server(
    request: pytest.FixtureRequest,
    django_db_setup: None,
    s3_server: object,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[str, Path | None]]:
    """uvicorn on the test database, storing on the local folder it yields or on the
    session's S3 server (``None``); one per store for the module's tests."""
    from django.conf import settings
    from django.db import connection

    db = connection.settings_dict
    env = {k: v for k, v in os.environ.items() if not k.startswith("S3_") and k != "ARTIFACT_ROOT"}
    env.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)
    env["TEST_DATABASE_URL"] = (
        f"postgres://{db['USER'] or 'postgres'}@{db['HOST'] or '127.0.0.1'}:"
        f"{db['PORT'] or 5432}/{db['NAME']}"
    )
    env["TEST_REDIS_URL"] = settings.REDIS_URL
    folder = tmp_path_factory.mktemp(f"downloads-{request.param}")
    local_root: Path | None = None
    if request.param == "local":
        local_root = folder / "artifacts"
        env["ARTIFACT_ROOT"] = str(local_root)
    else:
        for name in ("S3_ENDPOINT_URL", "S3_BUCKET", "S3_ACCESS_KEY_ID", "S3_SECRET_ACCESS_KEY"):
            env[name] = str(getattr(settings, name))
    web = AsgiServer(env=env, log_path=folder / "uvicorn.log")
    web.start(timeout=30)
    yield web.http, local_root
    web.stop()


@pytest.fixture
def live(server: tuple[str, Path | None]) -> Iterator[Live]:
    """One stored artifact of ada's (``DATA``) in the server's store, and her API token."""
    base, local_root = server
    overrides = (
        {"S3_BUCKET": "", "S3_ENDPOINT_URL": None, "ARTIFACT_ROOT": local_root}
        if local_root is not None
        else {}
    )
    with override_settings(**overrides):
        get_artifact_store.cache_clear()
        store = get_artifact_store()
        assert isinstance(store, LocalArtifactStore) == (local_root is not None)
        ada = User.objects.create_user("ada", password="pw-ada-123")
        key = f"tests/{uuid.uuid4().hex}/video.mp4"
        stored = store.save_bytes(key, DATA, "video/mp4")
        artifact = Artifact.objects.create(
            owner=ada,
            name="video.mp4",
            bucket=stored.bucket,
            key=key,
            size_bytes=stored.size_bytes,
            sha256=stored.sha256,
            content_type="video/mp4",
        )
        _, token = ApiToken.issue(ada, "test")
        yield Live(base, store, token, artifact)
    get_artifact_store.cache_clear()


def test_a_whole_download_says_it_takes_ranges_and_carries_the_sha256_etag(live: Live) -> None:
    response = live.get(live.download)

    assert response.status_code == 200
    assert response.content == DATA
    assert response.headers["Accept-Ranges"] == "bytes"
    assert response.headers["Content-Length"] == str(len(DATA))
    assert response.headers["ETag"] == f'"{SHA}"'
    assert response.headers["Content-Type"] == "video/mp4"
    assert response.headers["Cache-Control"] == "private, no-cache"


@pytest.mark.parametrize(
    ("header", "start", "end"),
    [
        ("bytes=0-99", 0, 99),
        ("bytes=500000-500009", 500000, 500009),
        ("bytes=1023999-", 1023999, len(DATA) - 1),
        ("bytes=-4", len(DATA) - 4, len(DATA) - 1),
        ("bytes=1000-99999999", 1000, len(DATA) - 1),
    ],
)
def test_a_single_range_is_206_with_exactly_those_bytes(
    live: Live, header: str, start: int, end: int
) -> None:
    response = live.get(live.download, Range=header)

    assert response.status_code == 206
    assert response.headers["Content-Range"] == f"bytes {start}-{end}/{len(DATA)}"
    assert response.headers["Content-Length"] == str(end - start + 1)
    assert response.headers["Accept-Ranges"] == "bytes"
    assert response.headers["ETag"] == f'"{SHA}"'
    assert response.content == DATA[start : end + 1]


@pytest.mark.parametrize("header", ["bytes=1024004-", "bytes=99999999-100000000", "bytes=-0"])
def test_a_range_past_the_end_is_416_with_the_size(live: Live, header: str) -> None:
    response = live.get(live.download, Range=header)

    assert response.status_code == 416
    assert response.headers["Content-Range"] == f"bytes */{len(DATA)}"
    assert response.json()["error"]["code"] == "range_not_satisfiable"


@pytest.mark.parametrize("header", ["bytes=0-1,5-9", "lines=0-9", "bytes=9-2", "bytes=x-"])
def test_several_ranges_or_a_malformed_one_get_the_whole_object(live: Live, header: str) -> None:
    response = live.get(live.download, Range=header)

    assert response.status_code == 200
    assert response.content == DATA


def test_if_none_match_with_the_etag_is_304_without_a_body(live: Live) -> None:
    etag = live.get(live.download, Range="bytes=0-0").headers["ETag"]

    again = live.get(live.download, **{"If-None-Match": etag})
    weak = live.get(live.download, **{"If-None-Match": f'"other", W/{etag}'})
    other = live.get(live.download, **{"If-None-Match": '"not-this-one"'})

    assert again.status_code == 304
    assert again.content == b""
    assert again.headers["ETag"] == etag
    assert weak.status_code == 304
    assert other.status_code == 200
    assert other.content == DATA


def test_if_range_keeps_the_range_only_for_the_current_etag(live: Live) -> None:
    current = live.get(live.download, Range="bytes=10-19", **{"If-Range": f'"{SHA}"'})
    stale = live.get(live.download, Range="bytes=10-19", **{"If-Range": '"an-older-version"'})

    assert current.status_code == 206
    assert current.content == DATA[10:20]
    assert stale.status_code == 200
    assert stale.content == DATA


def test_another_users_artifact_is_404_with_or_without_a_range(live: Live) -> None:
    bob = User.objects.create_user("bob", password="pw-bob-123")
    _, bobs_token = ApiToken.issue(bob, "test")

    for headers in ({}, {"Range": "bytes=0-9"}, {"If-None-Match": f'"{SHA}"'}):
        response = requests.get(
            live.base + live.download,
            headers={"Authorization": f"Bearer {bobs_token}", **headers},
            timeout=10,
        )
        assert response.status_code == 404, headers
        assert response.json()["error"]["code"] == "not_found"
        assert "Content-Range" not in response.headers


def test_the_metadata_url_answers_ranges_and_etags_too(live: Live) -> None:
    """The URL the web UI puts in its players: the download route (local store), or a
    presigned S3 URL that the S3 server itself answers."""
    meta = live.get(f"/api/artifacts/{live.artifact.pk}").json()
    url = meta["url"] if meta["url"].startswith("http") else live.base + meta["url"]

    part = requests.get(
        url, headers={"Authorization": f"Bearer {live.token}", "Range": "bytes=4-7"}, timeout=10
    )
    past = requests.get(
        url,
        headers={"Authorization": f"Bearer {live.token}", "Range": f"bytes={len(DATA)}-"},
        timeout=10,
    )

    assert part.status_code == 206
    assert part.content == DATA[4:8]
    assert part.headers["Content-Range"] == f"bytes 4-7/{len(DATA)}"
    assert past.status_code == 416
    assert part.headers["ETag"]


@pytest.mark.parametrize("server", ["local"], indirect=True)
def test_a_local_signed_link_answers_ranges_and_conditional_requests(live: Live) -> None:
    assert isinstance(live.store, LocalArtifactStore)
    link = live.base + live.store.download_url(live.artifact.key, expires_in=60)

    part = requests.get(link, headers={"Range": "bytes=-10"}, timeout=10)
    cached = requests.get(link, headers={"If-None-Match": f'"{SHA}"'}, timeout=10)
    past = requests.get(link, headers={"Range": "bytes=2000000-"}, timeout=10)

    assert part.status_code == 206
    assert part.content == DATA[-10:]
    assert part.headers["Content-Range"] == f"bytes {len(DATA) - 10}-{len(DATA) - 1}/{len(DATA)}"
    assert cached.status_code == 304
    assert past.status_code == 416
    assert past.headers["Content-Range"] == f"bytes */{len(DATA)}"
