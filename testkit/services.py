"""Real service processes for tests: an S3-compatible server, a Redis-compatible
server and Celery workers, each on loopback, each stoppable so a test can do the fault."""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from myspinbot.devservices import (
    LOOPBACK,
    port_open,
    redis_command,
    s3_command,
    s3_environment,
    wait_for_port,
)

REPO = Path(__file__).resolve().parent.parent


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
    # (access key, secret) of a second identity that may only read objects, when wanted
    reader: tuple[str, str] | None = None

    @property
    def endpoint(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    def _identities(self) -> Path:
        """The server's identity file: this server's own identity and the read-only one."""
        assert self.reader is not None

        def identity(name: str, key: str, secret: str, actions: list[str]) -> dict[str, object]:
            return {
                "name": name,
                "credentials": [{"accessKey": key, "secretKey": secret}],
                "actions": actions,
            }

        path = self.data_dir / "identities.json"
        path.write_text(
            json.dumps(
                {
                    "identities": [
                        identity(
                            "owner",
                            self.access_key,
                            self.secret_key,
                            ["Admin", "Read", "List", "Tagging", "Write"],
                        ),
                        identity("reader", *self.reader, ["Read"]),
                    ]
                }
            )
        )
        return path

    def start(self) -> None:
        log = open(self.data_dir / "weed.log", "ab")  # noqa: SIM115 - owned by the process
        command = s3_command(self.port, self.data_dir)
        if self.reader is not None:
            command.append(f"-s3.config={self._identities()}")
        self.process = subprocess.Popen(
            command,
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

    def freeze(self) -> None:
        """SIGSTOP: connections stay open but nothing answers (a hung server)."""
        assert self.process is not None
        os.killpg(self.process.pid, signal.SIGSTOP)

    def thaw(self) -> None:
        assert self.process is not None
        os.killpg(self.process.pid, signal.SIGCONT)


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


def control_app(broker_url: str) -> Any:
    """A Celery app that only talks to workers over ``broker_url`` (ping, inspect) and
    sees the task queues as the platform declares them on that broker."""
    from celery import Celery
    from django.conf import settings

    from myspinbot.settings.broker import task_queues

    app = Celery("myspinbot-control", broker=broker_url, set_as_current=False)
    app.conf.task_queues = task_queues(
        broker_url, settings.CELERY_CPU_QUEUE, settings.CELERY_GPU_QUEUE
    )
    return app


@dataclass
class CeleryWorker:
    """A real ``celery worker`` in its own process group (so SIGKILL can take all of it)."""

    name: str
    queues: list[str]
    env: dict[str, str]
    concurrency: int = 1
    log_path: Path | None = None
    process: subprocess.Popen[bytes] | None = None
    # The worker's broker when it is not the test process's own (a private Redis).
    broker_url: str | None = None
    # The host part of the worker's node name (``name@host``).
    host: str = "test"

    @property
    def hostname(self) -> str:
        return f"{self.name}@{self.host}"

    def start(self, ready_timeout: float = 60.0) -> None:
        from myspinbot.celery import app

        if self.broker_url is not None:
            app = control_app(self.broker_url)

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
        try:
            self._wait_ready(app, ready_timeout)
        except BaseException:  # a worker that never got ready must not outlive the test
            self.stop()
            raise

    def _wait_ready(self, app: Any, ready_timeout: float) -> None:
        assert self.process is not None
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


def _as_postgres_user(command: list[str]) -> list[str]:
    """PostgreSQL refuses to run as root (CI runs as root): run as ``postgres`` then."""
    if os.geteuid() == 0:
        return ["runuser", "-u", "postgres", "--", *command]
    return command


def postgres_bin(name: str) -> str:
    """A PostgreSQL server binary (``initdb``, ``pg_ctl``) of the newest installed version."""
    versions = sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=lambda p: int(p.parent.name))
    for folder in reversed(versions):
        if (folder / name).exists():
            return str(folder / name)
    raise FileNotFoundError(f"no PostgreSQL {name} under /usr/lib/postgresql/*/bin")


@dataclass
class PostgresCluster:
    """A private PostgreSQL cluster in a temporary folder, on its own loopback port.

    Never the machine's shared cluster: tests stop and start this one at will.
    ``fsync=off``: the cluster lives only as long as the test.
    """

    port: int = field(default_factory=lambda: _port_block(1))
    data_dir: Path | None = None

    @property
    def url(self) -> str:
        return f"postgres://postgres@{LOOPBACK}:{self.port}/postgres"

    def database_url(self, name: str) -> str:
        return f"postgres://postgres@{LOOPBACK}:{self.port}/{name}"

    def init(self) -> None:
        # mkdtemp is 0700 and owned by whoever runs the tests: hand it to the server's user.
        root = Path(tempfile.mkdtemp(prefix="myspinbot-test-pg-"))
        if os.geteuid() == 0:
            import pwd

            entry = pwd.getpwnam("postgres")
            os.chown(root, entry.pw_uid, entry.pw_gid)
        self.data_dir = root / "data"
        subprocess.run(
            _as_postgres_user(
                [
                    postgres_bin("initdb"),
                    "-D",
                    str(self.data_dir),
                    "-U",
                    "postgres",
                    "--auth=trust",
                    "--no-sync",
                    "--encoding=UTF8",
                ]
            ),
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )

    def _pg_ctl(self, *args: str) -> None:
        assert self.data_dir is not None, "init() first"
        subprocess.run(
            _as_postgres_user([postgres_bin("pg_ctl"), "-D", str(self.data_dir), *args]),
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            timeout=60,
        )

    def start(self) -> None:
        if self.data_dir is None:
            self.init()
        assert self.data_dir is not None
        options = (
            f"-p {self.port} -c listen_addresses={LOOPBACK} "
            f"-c unix_socket_directories={self.data_dir.parent} -c fsync=off "
            "-c full_page_writes=off -c synchronous_commit=off -c max_connections=200"
        )
        self._pg_ctl("-o", options, "-l", str(self.data_dir.parent / "postgres.log"), "-w", "start")
        wait_for_port(LOOPBACK, self.port)

    def stop(self, mode: str = "fast") -> None:
        """``fast`` disconnects clients and shuts down cleanly; ``immediate`` is a crash."""
        self._pg_ctl("-m", mode, "-w", "stop")

    def create_database(self, name: str) -> str:
        import psycopg
        from psycopg import sql

        with psycopg.connect(self.url, autocommit=True, connect_timeout=5) as connection:
            connection.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return self.database_url(name)

    def remove(self) -> None:
        if self.data_dir is None:
            return
        with contextlib.suppress(subprocess.CalledProcessError):  # already stopped
            self.stop("immediate")
        import shutil

        shutil.rmtree(self.data_dir.parent, ignore_errors=True)
        self.data_dir = None


@dataclass
class AsgiServer:
    """The ASGI application under uvicorn, in its own process group; restartable on its port."""

    env: dict[str, str]
    port: int = field(default_factory=lambda: _port_block(1))
    log_path: Path | None = None
    log_level: str = "warning"
    process: subprocess.Popen[bytes] | None = None
    # The checkout whose code it serves (a bench compares this one with an older one).
    cwd: Path = REPO

    @property
    def http(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    @property
    def ws(self) -> str:
        return f"ws://{LOOPBACK}:{self.port}"

    def start(self, timeout: float = 60.0) -> None:
        log = open(self.log_path or os.devnull, "ab")  # noqa: SIM115 - owned by the process
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "uvicorn",
                "myspinbot.asgi:application",
                "--host",
                LOOPBACK,
                "--port",
                str(self.port),
                "--log-level",
                self.log_level,
                "--lifespan",
                "off",
            ],
            cwd=self.cwd,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while not port_open(LOOPBACK, self.port, timeout=0.2):
            if self.process.poll() is not None or time.monotonic() > deadline:
                output = self.log_path.read_text() if self.log_path else ""
                raise RuntimeError(f"uvicorn did not start on port {self.port}\n{output}")
            time.sleep(0.1)

    def stop(self) -> None:
        if self.process is not None:
            _stop(self.process, timeout=20)
            self.process = None

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None
