"""Real service processes for tests: an S3-compatible server, a Redis-compatible
server and Celery workers, each on loopback, each stoppable so a test can do the fault."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from myspinbot.devservices import (
    LOOPBACK,
    port_open,
    redis_command,
    s3_command,
    s3_environment,
    wait_for_port,
)

REPO = Path(__file__).resolve().parent.parent.parent


def _port_block(size: int) -> int:
    """A base port such that base..base+size and their gRPC twins (+10000) are free."""
    for _ in range(200):
        base = random.randint(20000, 29000)
        ports = [base + i for i in range(size)] + [base + 10000 + i for i in range(size)]
        if not any(port_open(LOOPBACK, port, timeout=0.05) for port in ports):
            return base
    raise RuntimeError("no free block of loopback ports")


def _stop(process: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
    if process.poll() is not None:
        return
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout)


@dataclass
class S3Server:
    """``weed mini`` with one S3 identity; ``stop()``/``start()`` keep its data."""

    data_dir: Path
    access_key: str = "test-access"
    secret_key: str = "test-secret-key"
    port: int = field(default_factory=lambda: _port_block(7))
    process: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    def start(self) -> None:
        log = open(self.data_dir / "weed.log", "ab")  # noqa: SIM115 - owned by the process
        self.process = subprocess.Popen(
            s3_command(self.port, self.data_dir),
            env=s3_environment(self.access_key, self.secret_key),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        wait_for_port(LOOPBACK, self.port, timeout=60)

    def stop(self) -> None:
        if self.process is not None:
            _stop(self.process)
            self.process = None


@dataclass
class RedisServer:
    """An embedded Redis-compatible server that keeps nothing on disk."""

    port: int = field(default_factory=lambda: _port_block(1))
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://{LOOPBACK}:{self.port}/0"

    def start(self) -> None:
        workdir = Path(tempfile.mkdtemp(prefix="myspinbot-test-redis-"))
        self.process = subprocess.Popen(
            redis_command(self.port, workdir),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        wait_for_port(LOOPBACK, self.port)

    def stop(self) -> None:
        if self.process is not None:
            _stop(self.process)
            self.process = None


@dataclass
class CeleryWorker:
    """A real ``celery worker`` in its own process group (so SIGKILL can take all of it)."""

    name: str
    queues: list[str]
    env: dict[str, str]
    concurrency: int = 1
    log_path: Path | None = None
    process: subprocess.Popen[bytes] | None = None

    @property
    def hostname(self) -> str:
        return f"{self.name}@test"

    def start(self, ready_timeout: float = 60.0) -> None:
        from myspinbot.celery import app

        log = open(self.log_path or os.devnull, "ab")  # noqa: SIM115 - owned by the process
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "myspinbot",
                "worker",
                "-Q",
                ",".join(self.queues),
                "-n",
                self.hostname,
                f"--concurrency={self.concurrency}",
                "--without-gossip",
                "--without-mingle",
                "--loglevel=INFO",
            ],
            cwd=REPO,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + ready_timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"worker {self.name} exited with {self.process.returncode}")
            replies = app.control.ping(destination=[self.hostname], timeout=0.5)
            if replies:
                return
        raise TimeoutError(f"worker {self.name} did not answer ping in {ready_timeout:g}s")

    def stop(self) -> None:
        if self.process is not None:
            _stop(self.process, timeout=20)
            self.process = None

    def kill(self) -> None:
        """SIGKILL the whole worker: main process and pool children."""
        if self.process is not None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)
            self.process = None
