"""The whole platform as real processes for fault tests: a private Redis, the ASGI
server, Celery workers, an S3 server and PostgreSQL, plus the clients a user has (HTTP
and WebSocket), so a test can stop or kill any part and watch what a user sees."""

from __future__ import annotations

import contextlib
import functools
import json
import threading
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from websockets.exceptions import ConnectionClosed, InvalidHandshake
from websockets.sync.client import connect as ws_connect

from testkit.services import AsgiServer, CeleryWorker, RedisServer, control_app


@dataclass
class Response:
    status: int
    body: Any
    headers: dict[str, str]  # names in lower case


class Api:
    """A small HTTP client of the REST API with a bearer token (stdlib only)."""

    def __init__(self, base: str, token: str) -> None:
        self.base, self.token = base, token

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        data: bytes | None = None,
        content_type: str = "application/json",
        timeout: float = 30.0,
        auth: bool = True,
    ) -> Response:
        headers = {"Authorization": f"Bearer {self.token}"} if auth else {}
        if body is not None:
            data = json.dumps(body).encode()
        if data is not None:
            headers["Content-Type"] = content_type
        request = urllib.request.Request(
            self.base + path, data=data, method=method, headers=headers
        )
        try:
            with urllib.request.urlopen(request, timeout=timeout) as answer:
                raw, status, got = answer.read(), answer.status, dict(answer.headers)
        except urllib.error.HTTPError as error:
            raw, status, got = error.read(), error.code, dict(error.headers)
        try:
            parsed = json.loads(raw) if raw else None
        except ValueError:
            parsed = raw.decode(errors="replace")
        return Response(status, parsed, {name.lower(): value for name, value in got.items()})

    def upload(self, name: str, content: bytes, content_type: str) -> Response:
        boundary = uuid.uuid4().hex
        data = (
            (
                f'--{boundary}\r\nContent-Disposition: form-data; name="file"; '
                f'filename="{name}"\r\nContent-Type: {content_type}\r\n\r\n'
            ).encode()
            + content
            + f"\r\n--{boundary}--\r\n".encode()
        )
        return self.request(
            "POST",
            "/api/uploads",
            data=data,
            content_type=f"multipart/form-data; boundary={boundary}",
        )

    def submit(self, graph: dict[str, Any]) -> str:
        answer = self.request("POST", "/api/jobs", {"graph": graph})
        assert answer.status == 201, (answer.status, answer.body)
        return str(answer.body["id"])

    def job(self, job_id: str) -> dict[str, Any]:
        answer = self.request("GET", f"/api/jobs/{job_id}")
        assert answer.status == 200, (answer.status, answer.body)
        return dict(answer.body)

    def wait_finished(self, job_ids: list[str], timeout: float) -> dict[str, str]:
        """Poll until every job is finished; answers that fail (server away) are retried."""
        deadline = time.monotonic() + timeout
        statuses: dict[str, str] = {}
        while time.monotonic() < deadline:
            for job_id in job_ids:
                if statuses.get(job_id) in ("completed", "failed", "cancelled"):
                    continue
                try:
                    answer = self.request("GET", f"/api/jobs/{job_id}", timeout=5)
                except OSError:
                    continue
                if answer.status == 200:
                    statuses[job_id] = answer.body["status"]
            if all(statuses.get(j) in ("completed", "failed", "cancelled") for j in job_ids):
                return statuses
            time.sleep(0.5)
        raise AssertionError(f"jobs not finished after {timeout}s: {statuses}")


class Subscriber(threading.Thread):
    """A WebSocket client of ``/ws/jobs/`` that keeps every event of its jobs and, when
    the socket drops, reconnects and subscribes again with ``since`` = the last seq seen."""

    def __init__(self, ws_base: str, token: str, job_ids: list[str]) -> None:
        super().__init__(daemon=True)
        self.url = f"{ws_base}/ws/jobs/?token={token}"
        self.job_ids = job_ids
        self.events: dict[str, list[dict[str, Any]]] = {job_id: [] for job_id in job_ids}
        self.finished: set[str] = set()
        self.connections = 0
        self.subscribed = threading.Event()
        self.stopped = threading.Event()
        self.errors: list[str] = []

    def last_seq(self, job_id: str) -> int:
        return self.events[job_id][-1]["seq"] if self.events[job_id] else 0

    def run(self) -> None:
        while not self.stopped.is_set() and len(self.finished) < len(self.job_ids):
            try:
                with ws_connect(self.url, open_timeout=5, close_timeout=1) as socket:
                    self.connections += 1
                    for job_id in self.job_ids:
                        since = self.last_seq(job_id)
                        socket.send(
                            json.dumps({"action": "subscribe", "jobId": job_id, "since": since})
                        )
                    self._read(socket)
            except (OSError, ConnectionClosed, InvalidHandshake, TimeoutError):
                time.sleep(0.3)

    def _read(self, socket: Any) -> None:
        pending = set(self.job_ids)
        while not self.stopped.is_set() and len(self.finished) < len(self.job_ids):
            try:
                message = json.loads(socket.recv(timeout=1))
            except TimeoutError:
                continue
            if message["type"] == "subscribed":
                pending.discard(message["jobId"])
                if not pending:
                    self.subscribed.set()
            elif message["type"] == "ping":
                socket.send(json.dumps({"action": "pong"}))
            elif message["type"] == "error":
                self.errors.append(json.dumps(message))
            elif message["type"] == "event":
                self.events[message["jobId"]].append(message)
                if message["event"] in ("job.completed", "job.failed", "job.cancelled"):
                    self.finished.add(message["jobId"])

    def stop(self) -> None:
        self.stopped.set()
        self.join(timeout=10)


@dataclass
class Stack:
    """The processes of one fault test and the environment they share."""

    env: dict[str, str]
    log_dir: Path
    redis: RedisServer
    # The broker: the private Redis, or a RabbitMQ vhost.
    broker_url: str
    web: AsgiServer | None = None
    workers: list[CeleryWorker] = field(default_factory=list)

    @functools.cached_property
    def control(self) -> Any:
        """A Celery app on this stack's broker, its queues as the platform declares them."""
        return control_app(self.broker_url)

    def start_web(self) -> AsgiServer:
        self.web = AsgiServer(env=self.env, log_path=self.log_dir / "web.log")
        self.web.start()
        return self.web

    def start_worker(
        self,
        name: str,
        queues: list[str],
        concurrency: int = 1,
        env: dict[str, str] | None = None,
        host: str = "test",
    ) -> CeleryWorker:
        worker = CeleryWorker(
            name=f"{name}-{uuid.uuid4().hex[:6]}",
            queues=queues,
            env={**self.env, **(env or {})},
            concurrency=concurrency,
            log_path=self.log_dir / f"{name}.log",
            broker_url=self.broker_url,
            host=host,
        )
        worker.start(ready_timeout=90)
        self.workers.append(worker)
        return worker

    def stop(self) -> None:
        for worker in self.workers:
            with contextlib.suppress(Exception):  # a killed worker: nothing left to stop
                worker.stop()
        if self.web is not None:
            self.web.stop()
        self.redis.stop()
