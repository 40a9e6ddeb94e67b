"""A finished video on its job page, in Debian's Chromium, from the local folder (the
player reads the authenticated download route) and from S3 (a presigned URL): the player
gets its poster whichever of the two loads first, and seeking to the middle is answered
with byte ranges (206), which Safari needs to play at all."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from django.contrib.auth.models import User
from django.test import override_settings
from PIL import Image

from apps.capabilities.media import video as media
from apps.jobs import engine
from apps.jobs.models import Artifact, Job
from myspinbot.storage import get_artifact_store
from testkit.graphs import graph, node, run_to_end
from testkit.services import AsgiServer
from tests.support.media import wav_bytes
from tests.web.conftest import Tab, sign_in

pytestmark = pytest.mark.django_db(transaction=True)

SECONDS = 12

# Holds back the page's fetch of one artifact's metadata (so its URL arrives last).
DELAY_ARTIFACT = """(artifactId) => {
  const fetchNow = window.fetch.bind(window);
  window.fetch = async (path, options) => {
    if (String(path) === `/api/artifacts/${artifactId}`) {
      await new Promise((resolve) => setTimeout(resolve, 1200));
    }
    return fetchNow(path, options);
  };
}"""

SEEK_TO_MIDDLE = """async () => {
  const v = document.querySelector('#players video');
  const once = (name) => new Promise((r) => v.addEventListener(name, r, {once: true}));
  if (!(v.duration > 0)) await once('loadedmetadata');
  const seeked = once('seeked');
  v.currentTime = v.duration / 2;
  await seeked;
  if (v.readyState < 2) await once('loadeddata');
  return {duration: v.duration, currentTime: v.currentTime, readyState: v.readyState};
}"""


@pytest.fixture(params=["local", "s3"])
def store_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def live_url(store_kind: str, worker_env: dict[str, str], tmp_path: Path) -> Iterator[str]:
    """uvicorn on this test database, storing in a local folder or on the S3 server
    (overrides the package's ``live_url``: the browser fixtures run against this one)."""
    env = {k: v for k, v in worker_env.items() if k != "DJANGO_ALLOW_ASYNC_UNSAFE"}
    env["DJANGO_SETTINGS_MODULE"] = os.environ["DJANGO_SETTINGS_MODULE"]
    overrides: dict[str, Any] = {}
    if store_kind == "local":
        root = tmp_path / "artifacts"
        for name in ("S3_ENDPOINT_URL", "S3_BUCKET", "S3_ACCESS_KEY_ID", "S3_SECRET_ACCESS_KEY"):
            env.pop(name)
        env["ARTIFACT_ROOT"] = str(root)
        overrides = {"S3_BUCKET": "", "S3_ENDPOINT_URL": None, "ARTIFACT_ROOT": root}
    web = AsgiServer(env=env, log_path=tmp_path / "uvicorn.log")
    web.start(timeout=30)
    with override_settings(**overrides):
        get_artifact_store.cache_clear()
        try:
            yield web.http
        finally:
            web.stop()
            get_artifact_store.cache_clear()


def finished_video_job(owner: User, folder: Path) -> tuple[Job, Artifact, Artifact]:
    """A completed job whose ``video`` node stored a real composed MP4 (12 s of a noise
    picture at a low CRF: about 8 MB, more than a player reads ahead) and its poster."""
    folder.mkdir(parents=True, exist_ok=True)
    picture = np.random.default_rng(0).integers(0, 255, (240, 320, 3), dtype=np.uint8)
    Image.fromarray(picture).save(folder / "picture.png")
    (folder / "narration.wav").write_bytes(wav_bytes(seconds=SECONDS))
    settings = media.VideoSettings(
        320, 240, 10, zoom=1.3, captions=False, crf=8, preset="ultrafast"
    )
    made = media.compose(
        [folder / "picture.png"],
        media.read_audio(folder / "narration.wav"),
        [],
        settings,
        folder / "video.mp4",
        lambda fraction, message: None,
    )
    job = engine.submit_job(owner, graph([node("video", "debug.noop")], []))
    run_to_end(job)
    store = get_artifact_store()
    stored = []
    for name, content_type, data in (
        ("video.mp4", "video/mp4", (folder / "video.mp4").read_bytes()),
        ("poster.jpg", "image/jpeg", made.poster_jpeg),
    ):
        saved = store.save_bytes(f"jobs/{job.pk}/video/{name}", data, content_type)
        stored.append(
            Artifact.objects.create(
                owner=owner,
                job=job,
                node_id="video",
                name=name,
                bucket=saved.bucket,
                key=saved.key,
                size_bytes=saved.size_bytes,
                sha256=saved.sha256,
                content_type=content_type,
            )
        )
    return job, stored[0], stored[1]


def record_media_traffic(tab: Tab, video: Artifact) -> list[dict[str, Any]]:
    """Every response to a request for the video's bytes: its status, Range and
    Content-Range."""
    seen: list[dict[str, Any]] = []

    def on_response(response: Any) -> None:
        url = response.url
        if f"/api/artifacts/{video.pk}/download" in url or video.key in url:
            seen.append(
                {
                    "status": response.status,
                    "range": response.request.headers.get("range"),
                    "content_range": response.headers.get("content-range"),
                    "accept_ranges": response.headers.get("accept-ranges"),
                }
            )

    tab.page.on("response", on_response)
    return seen


@pytest.mark.parametrize("last", ["video", "poster"])
def test_the_player_gets_its_poster_and_seeking_is_ranged(
    store_kind: str, open_tab: Callable[..., Tab], tmp_path: Path, last: str
) -> None:
    ada = User.objects.create_user("ada", password="ada-secret-pw")
    job, video, poster = finished_video_job(ada, tmp_path / "media")
    tab = open_tab()
    sign_in(tab, "ada", "ada-secret-pw")
    traffic = record_media_traffic(tab, video)
    # Whichever URL the page learns last, the player ends with the poster on it.
    tab.page.add_init_script(
        f"({DELAY_ARTIFACT})({str((video if last == 'video' else poster).pk)!r})"
    )

    tab.go(f"/jobs/{job.pk}/")
    tab.page.locator("#players video").wait_for()
    tab.page.locator(f"img[data-artifact-id='{poster.pk}']").wait_for()
    tab.page.wait_for_function(
        f"() => {{ const img = document.querySelector(\"img[data-artifact-id='{poster.pk}']\");"
        " const v = document.querySelector('#players video');"
        " return img.src && v.poster === img.src; }"
    )
    sought = tab.page.evaluate(SEEK_TO_MIDDLE)

    assert abs(sought["duration"] - SECONDS) < 0.2
    assert abs(sought["currentTime"] - SECONDS / 2) < 0.2
    assert traffic, "the player fetched no bytes of the video"
    assert all(seen["range"] for seen in traffic), traffic
    assert all(seen["status"] == 206 for seen in traffic), traffic
    assert all(seen["accept_ranges"] == "bytes" for seen in traffic), traffic
    starts = [int(seen["range"].removeprefix("bytes=").split("-")[0]) for seen in traffic]
    # The seek asked for bytes from the middle, not the file again from its start.
    assert max(starts) > video.size_bytes // 4, traffic
    assert tab.errors == []


def test_the_pages_work_under_their_content_security_policy(
    store_kind: str, open_tab: Callable[..., Tab], tmp_path: Path
) -> None:
    """With the policy enforced (as every browser does): the job page plays its video from
    the store (a presigned S3 URL, or the download route) and shows its poster, the other
    pages render, and the browser reports no violation."""
    ada = User.objects.create_user("ada", password="ada-secret-pw")
    job, _, poster = finished_video_job(ada, tmp_path / "media")
    tab = open_tab(enforce_csp=True)
    sign_in(tab, "ada", "ada-secret-pw")

    response = tab.go(f"/jobs/{job.pk}/")
    policy = response.headers["content-security-policy"]
    assert "script-src 'self'" in policy
    assert "'unsafe-eval'" not in policy
    tab.page.locator(f"img[data-artifact-id='{poster.pk}']").wait_for()
    deadline = time.monotonic() + 20
    state: dict[str, Any] = {}
    while time.monotonic() < deadline:
        # evaluate() runs through the DevTools protocol, which the policy does not cover.
        state = tab.page.evaluate(
            "() => { const v = document.querySelector('#players video');"
            " return {ready: v ? v.readyState : 0, duration: v ? v.duration : 0}; }"
        )
        if state["ready"] >= 2:
            break
        time.sleep(0.2)
    assert state["ready"] >= 2, state
    assert abs(state["duration"] - SECONDS) < 0.2
    for path in ("/", "/new/", "/profiles/", "/system/"):
        page = tab.go(path)
        assert "content-security-policy" in page.headers, path
        tab.page.wait_for_load_state("networkidle")
    assert [e for e in tab.errors if "Content Security Policy" in e] == []
    assert tab.errors == []
