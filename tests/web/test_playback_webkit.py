"""The same finished video in WebKit, the engine of Safari (Debian's WebKitGTK, driven
by its W3C WebDriver ``WebKitWebDriver`` under a virtual X display): the player seeks
to the middle, and that seek is answered with a partial response (206).

WebDriver has no network log, so the requests are read from the web server's access
log; the local store serves the bytes through the authenticated download route (the S3
case goes to the S3 server through its presigned URL: the Chromium test covers it).
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import re
import shutil
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.test import override_settings

from myspinbot.storage import get_artifact_store
from testkit.services import AsgiServer
from tests.web.test_playback import SECONDS, SEEK_TO_MIDDLE, finished_video_job

pytestmark = pytest.mark.django_db(transaction=True)

MINIBROWSER = sorted(glob.glob("/usr/lib/*/webkit2gtk-4.*/MiniBrowser"))


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class WebDriver:
    """A minimal W3C WebDriver client (JSON over HTTP) for one session."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.session = ""

    def call(self, method: str, path: str, body: Any = None) -> Any:
        request = urllib.request.Request(
            f"{self.url}{path}",
            method=method,
            data=None if body is None else json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=60) as response:
            return json.load(response)["value"]

    def start(self) -> None:
        options = {"binary": MINIBROWSER[-1], "args": ["--automation"]}
        capabilities = {"alwaysMatch": {"webkitgtk:browserOptions": options}}
        self.session = self.call("POST", "/session", {"capabilities": capabilities})["sessionId"]

    def go(self, url: str) -> None:
        self.call("POST", f"/session/{self.session}/url", {"url": url})

    def run(self, script: str, *args: Any) -> Any:
        body = {"script": script, "args": list(args)}
        return self.call("POST", f"/session/{self.session}/execute/sync", body)

    def run_async(self, function: str) -> Any:
        """Await ``function`` (an async arrow function) in the page."""
        script = f"const done = arguments[arguments.length - 1]; ({function})().then(done);"
        body = {"script": script, "args": []}
        return self.call("POST", f"/session/{self.session}/execute/async", body)

    def wait_for(self, expression: str, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while not self.run(f"return Boolean({expression});"):
            assert time.monotonic() < deadline, f"timed out waiting for {expression}"
            time.sleep(0.1)


@pytest.fixture
def webkit(tmp_path: Path) -> Iterator[WebDriver]:
    assert shutil.which("WebKitWebDriver"), "make test installs webkit2gtk-driver"
    assert shutil.which("Xvfb"), "make test installs xvfb"
    assert MINIBROWSER, "webkit2gtk-driver ships MiniBrowser"
    # Xvfb picks a free display and writes its number to the pipe.
    read_end, write_end = os.pipe()
    xvfb = subprocess.Popen(
        ["Xvfb", "-displayfd", str(write_end), "-screen", "0", "1280x800x24", "-nolisten", "tcp"],
        pass_fds=(write_end,),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    os.close(write_end)
    with os.fdopen(read_end) as numbers:
        display = f":{numbers.readline().strip()}"
    port = free_port()
    driver_log = open(tmp_path / "webkitdriver.log", "wb")  # noqa: SIM115
    driver = subprocess.Popen(
        ["WebKitWebDriver", f"--port={port}"],
        env={**os.environ, "DISPLAY": display},
        stdout=driver_log,
        stderr=subprocess.STDOUT,
    )
    client = WebDriver(f"http://127.0.0.1:{port}")
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if client.call("GET", "/status").get("ready"):
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline, "WebKitWebDriver did not start"
            time.sleep(0.1)
        client.start()
        yield client
    finally:
        if client.session:
            with contextlib.suppress(OSError):
                client.call("DELETE", f"/session/{client.session}")
        driver.terminate()
        driver.wait(timeout=10)
        driver_log.close()
        xvfb.terminate()
        xvfb.wait(timeout=10)


@pytest.fixture
def web(worker_env: dict[str, str], tmp_path: Path) -> Iterator[AsgiServer]:
    """uvicorn with its access log on, storing in a local folder."""
    env = {k: v for k, v in worker_env.items() if k != "DJANGO_ALLOW_ASYNC_UNSAFE"}
    env["DJANGO_SETTINGS_MODULE"] = os.environ["DJANGO_SETTINGS_MODULE"]
    for name in ("S3_ENDPOINT_URL", "S3_BUCKET", "S3_ACCESS_KEY_ID", "S3_SECRET_ACCESS_KEY"):
        env.pop(name)
    root = tmp_path / "artifacts"
    env["ARTIFACT_ROOT"] = str(root)
    server = AsgiServer(env=env, log_path=tmp_path / "uvicorn.log", log_level="info")
    server.start(timeout=30)
    with override_settings(S3_BUCKET="", S3_ENDPOINT_URL=None, ARTIFACT_ROOT=root):
        get_artifact_store.cache_clear()
        try:
            yield server
        finally:
            server.stop()
            get_artifact_store.cache_clear()


def test_webkit_plays_the_video_and_seeks_with_ranged_requests(
    webkit: WebDriver, web: AsgiServer, tmp_path: Path
) -> None:
    ada = User.objects.create_user("ada", password="ada-secret-pw")
    job, video, poster = finished_video_job(ada, tmp_path / "media")

    webkit.go(f"{web.http}/login/")
    webkit.run(
        "document.getElementById('id_username').value = arguments[0];"
        "document.getElementById('id_password').value = arguments[1];"
        "document.getElementById('id_password').form.submit();",
        "ada",
        "ada-secret-pw",
    )
    webkit.wait_for("location.pathname === '/'")
    webkit.go(f"{web.http}/jobs/{job.pk}/")
    webkit.wait_for("document.querySelector('#players video')")
    webkit.wait_for(
        f"document.querySelector(\"img[data-artifact-id='{poster.pk}']\")?.src"
        " && document.querySelector('#players video').poster"
    )
    sought = webkit.run_async(SEEK_TO_MIDDLE)

    assert abs(sought["duration"] - SECONDS) < 0.2
    assert abs(sought["currentTime"] - SECONDS / 2) < 0.2
    assert sought["readyState"] >= 2
    assert web.log_path is not None
    log = web.log_path.read_text(errors="replace")
    statuses = re.findall(rf'"GET /api/artifacts/{video.pk}/download HTTP/1.1" (\d+)', log)
    assert statuses, log[-2000:]
    # WebKit's media loader may open with a plain GET (200, dropped once it knows the
    # size); the seek to the middle is then a ranged request, answered 206.
    assert statuses[-1] == "206", statuses
    assert set(statuses) <= {"200", "206"}, statuses
    assert statuses.count("200") <= 1, statuses
