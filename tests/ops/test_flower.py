"""Flower as ``make run`` starts it (the Procfile's line): behind basic auth, and its task
history survives a restart."""

from __future__ import annotations

import base64
import json
import os
import signal
import stat
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.contrib.auth.models import User

from apps.jobs import engine
from testkit.graphs import graph, node, wait_for_job
from testkit.services import REPO, CeleryWorker
from tests.ops.scrape import free_port

pytestmark = pytest.mark.django_db(transaction=True)


def procfile_command(name: str) -> str:
    for line in (REPO / "Procfile").read_text().splitlines():
        if line.startswith(f"{name}:"):
            return line.split(":", 1)[1].strip()
    raise AssertionError(f"no {name} in the Procfile")


class Flower:
    def __init__(self, env: dict[str, str], port: int, log: Path) -> None:
        self.env, self.port, self.log = env, port, log
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                ["bash", "-c", procfile_command("flower")],
                cwd=REPO,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            assert self.process.poll() is None, self.log.read_text()[-2000:]
            try:
                with urllib.request.urlopen(self.url("/healthcheck"), timeout=2):
                    return
            except OSError:
                time.sleep(0.2)
        raise AssertionError("Flower did not start: " + self.log.read_text()[-2000:])

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            self.process.wait(20)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def get(self, path: str, login: str | None) -> Any:
        request = urllib.request.Request(self.url(path))
        if login:
            request.add_header(
                "Authorization", "Basic " + base64.b64encode(login.encode()).decode()
            )
        with urllib.request.urlopen(request, timeout=5) as response:
            return json.loads(response.read())


def test_flower_asks_for_a_login_and_keeps_task_history_across_a_restart(
    start_worker: Callable[..., CeleryWorker],
    worker_env: dict[str, str],
    tmp_path: Path,
) -> None:
    # Given a worker, and Flower started by the Procfile's line with a FLOWER_URL in its
    # environment (the web's setting, which Flower must not see)
    worker = start_worker("cpu", [settings.CELERY_CPU_QUEUE])
    env = {
        **worker_env,
        "VAR_DIR": str(tmp_path),
        "HOST": "127.0.0.1",
        "FLOWER_PORT": str(free_port()),
        "FLOWER_URL": "http://flower.invalid/",
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",  # as make run's
    }
    env.pop("FLOWER_BASIC_AUTH", None)
    flower = Flower(env, int(env["FLOWER_PORT"]), tmp_path / "flower.log")
    flower.start()
    try:
        login_file = tmp_path / "flower-auth"
        login = login_file.read_text().strip()

        # When a job's node runs (once Flower hears the worker's events)
        wait_for_worker(flower, login, worker.hostname)
        user = User.objects.create_user("flower-ada", password="pw")
        document = graph([node("n", "debug.noop", params={"nonce": uuid.uuid4().hex})], [])
        job = wait_for_job(engine.submit_job(user, document))
        task_id = engine.task_id(job.pk, "n", 1)
        seen = wait_for_task(flower, login, task_id)

        # Then Flower refuses anonymous and wrong logins, and shows the task
        for wrong in (None, "admin:not-the-password"):
            with pytest.raises(urllib.error.HTTPError) as refused:
                flower.get("/api/tasks", wrong)
            assert refused.value.code == 401
        assert (seen["name"], seen["state"]) == ("debug.noop", "SUCCESS")
        assert stat.S_IMODE(login_file.stat().st_mode) == 0o600
        assert login.startswith("admin:")
        assert len(login) == len("admin:") + 24

        # And after a restart (same login file, same database) the task is still there
        flower.stop()
        flower.start()
        assert flower.get(f"/api/task/info/{task_id}", login)["state"] == "SUCCESS"
        assert login_file.read_text().strip() == login
    finally:
        flower.stop()


def wait_for_worker(flower: Flower, login: str, hostname: str) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        workers = flower.get("/workers?json=1", login)["data"]
        if any(item.get("hostname") == hostname and item.get("status") for item in workers):
            return
        time.sleep(0.2)
    raise AssertionError(f"Flower never heard from {hostname}: {workers}")


def wait_for_task(flower: Flower, login: str, task_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        tasks = flower.get("/api/tasks", login)
        if tasks.get(task_id, {}).get("state") == "SUCCESS":
            return dict(tasks[task_id])
        time.sleep(0.2)
    raise AssertionError(f"Flower never showed {task_id} as done: {sorted(tasks)}")
