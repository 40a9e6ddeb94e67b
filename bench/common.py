"""What every benchmark needs: its own database and Redis database (so it never touches
``make run`` or ``make test``), the environment set before Django starts so the bench and
the processes it starts agree, and real worker processes."""

from __future__ import annotations

import os
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

REPO = Path(__file__).resolve().parent.parent
# The benchmarks' own database and Redis database (never make run's or make test's).
DATABASE_URL = os.environ.get(
    "BENCH_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/myspinbot_bench"
)
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/12")


def configure_environment(
    *,
    database_url: str,
    redis_url: str,
    settings: str = "myspinbot.settings.local",
    artifact_root: Path | None = None,
    extra: dict[str, str] | None = None,
) -> None:
    """Point this process (and every process it starts) at the bench's own services."""
    os.environ["DJANGO_SETTINGS_MODULE"] = settings
    # ``local`` reads DATABASE_URL/REDIS_URL, ``test`` the TEST_* twins: set both.
    os.environ["DATABASE_URL"] = os.environ["TEST_DATABASE_URL"] = database_url
    os.environ["REDIS_URL"] = os.environ["TEST_REDIS_URL"] = redis_url
    os.environ["DEBUG"] = "false"  # DEBUG would keep every query in memory
    os.environ["PYTHONUNBUFFERED"] = "1"
    if artifact_root is not None:  # a local artifact folder: no S3 server needed
        os.environ["S3_BUCKET"] = ""
        os.environ.pop("S3_ENDPOINT_URL", None)
        os.environ["ARTIFACT_ROOT"] = str(artifact_root)
    os.environ.update(extra or {})
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))


def ensure_database(database_url: str) -> None:
    """Create the bench database if it is missing (migrate after ``django.setup()``)."""
    import psycopg

    parts = urlsplit(database_url)
    name = parts.path.lstrip("/")
    maintenance = urlunsplit(parts._replace(scheme="postgresql", path="/postgres"))
    with psycopg.connect(maintenance, autocommit=True, connect_timeout=5) as conn:
        if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone():
            conn.execute(f'CREATE DATABASE "{name}"')


@contextmanager
def running_workers(
    count: int, concurrency: int, queues: list[str], log_dir: Path
) -> Iterator[list[Any]]:
    """``count`` real ``celery worker`` processes on ``queues``; stopped on exit."""
    from testkit.services import CeleryWorker

    workers = []
    try:
        for index in range(count):
            worker = CeleryWorker(
                name=f"bench{index}-{uuid.uuid4().hex[:6]}",
                queues=queues,
                env=dict(os.environ),
                concurrency=concurrency,
                log_path=log_dir / f"worker{index}.log",
            )
            workers.append(worker)
            worker.start()
        yield workers
    finally:
        for worker in workers:
            worker.stop()


def purge_queues(*queues: str) -> None:
    from myspinbot.celery import app
    from testkit import broker

    broker.purge(app, list(queues))
