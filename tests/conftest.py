"""Shared fixtures: a real S3-compatible server for the whole session (the default
artifact store in tests), real Celery workers on demand, and clean caches."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.test import override_settings

from myspinbot.devservices import ensure_rabbitmq
from myspinbot.settings.broker import is_rabbitmq
from myspinbot.storage import S3ArtifactStore, get_artifact_store
from testkit import broker
from testkit.services import CeleryWorker, S3Server
from tests.support.ollama import FakeOllama


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    server = S3Server(data_dir=tmp_path_factory.mktemp("s3"))
    server.start()
    yield server
    server.stop()


def s3_settings(server: S3Server, bucket: str) -> dict[str, object]:
    return {
        "S3_ENDPOINT_URL": server.endpoint,
        "S3_BUCKET": bucket,
        "S3_ACCESS_KEY_ID": server.access_key,
        "S3_SECRET_ACCESS_KEY": server.secret_key,
        "S3_REGION": "us-east-1",
    }


def make_s3_store(server: S3Server, bucket: str) -> S3ArtifactStore:
    store = S3ArtifactStore(
        bucket=bucket,
        endpoint_url=server.endpoint,
        region="us-east-1",
        access_key_id=server.access_key,
        secret_access_key=server.secret_key,
        timeout=5.0,
    )
    # The server accepts connections a moment before its filer can create buckets.
    for _ in range(50):
        try:
            store.ensure_bucket()
            return store
        except Exception:
            import time

            time.sleep(0.2)
    store.ensure_bucket()
    return store


@pytest.fixture(scope="session", autouse=True)
def _artifacts_on_s3(s3_server: S3Server) -> Iterator[None]:
    """Every test stores artifacts on the real S3 server unless it says otherwise."""
    bucket = "myspinbot-test"
    make_s3_store(s3_server, bucket)
    with override_settings(**s3_settings(s3_server, bucket)):
        get_artifact_store.cache_clear()
        yield
    get_artifact_store.cache_clear()


@pytest.fixture(autouse=True)
def _fresh_artifact_store() -> Iterator[None]:
    get_artifact_store.cache_clear()
    yield
    get_artifact_store.cache_clear()


@pytest.fixture(scope="session")
def rabbitmq_url() -> str:
    """The RabbitMQ vhost of RabbitMQ tests: the broker's own when ``TEST_BROKER_URL`` is
    RabbitMQ, else ``TEST_RABBITMQ_URL`` (default the ``myspinbot-test`` vhost on this
    machine's server). The server is started if it is down and the vhost created."""
    url = str(settings.CELERY_BROKER_URL)
    if not is_rabbitmq(url):
        url = os.environ.get(
            "TEST_RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:5672/myspinbot-test"
        )
    ensure_rabbitmq(url, settings.CELERY_CONSUMER_TIMEOUT)
    return url


@pytest.fixture
def worker_env(s3_server: S3Server) -> dict[str, str]:
    """Environment for a worker subprocess that sees what this test process sees."""
    from django.db import connection

    db = connection.settings_dict
    user, host, port = db["USER"] or "postgres", db["HOST"] or "127.0.0.1", db["PORT"] or 5432
    database_url = f"postgres://{user}@{host}:{port}/{db['NAME']}"
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "myspinbot.settings.test",
        "TEST_DATABASE_URL": database_url,
        "TEST_REDIS_URL": settings.REDIS_URL,
        "TEST_BROKER_URL": settings.CELERY_BROKER_URL,
        "CELERY_CPU_QUEUE": settings.CELERY_CPU_QUEUE,
        "CELERY_GPU_QUEUE": settings.CELERY_GPU_QUEUE,
        "S3_ENDPOINT_URL": settings.S3_ENDPOINT_URL,
        "S3_BUCKET": settings.S3_BUCKET,
        "S3_ACCESS_KEY_ID": settings.S3_ACCESS_KEY_ID,
        "S3_SECRET_ACCESS_KEY": settings.S3_SECRET_ACCESS_KEY,
        "PYTHONUNBUFFERED": "1",
        "MYSPINBOT_HEARTBEAT_TIMEOUT": str(settings.MYSPINBOT_HEARTBEAT_TIMEOUT),
        "MYSPINBOT_SWEEP_INTERVAL": str(settings.MYSPINBOT_SWEEP_INTERVAL),
    }
    return env


@pytest.fixture
def start_worker(worker_env: dict[str, str], tmp_path: Path) -> Iterator[object]:
    """Factory: ``start_worker("cpu", queues=[...])`` starts a real worker; all stop at teardown."""
    from myspinbot.celery import app

    started: list[CeleryWorker] = []

    def start(
        name: str, queues: list[str], concurrency: int = 1, env: dict[str, str] | None = None
    ) -> CeleryWorker:
        worker = CeleryWorker(
            name=f"{name}-{uuid.uuid4().hex[:6]}",
            queues=queues,
            env={**worker_env, **(env or {})},
            concurrency=concurrency,
            log_path=tmp_path / f"{name}.log",
        )
        worker.start()
        started.append(worker)
        return worker

    broker.purge(app, [settings.CELERY_CPU_QUEUE, settings.CELERY_GPU_QUEUE])
    yield start
    for worker in started:
        worker.stop()


@pytest.fixture
def ollama(settings: Any) -> Iterator[FakeOllama]:
    """The stand-in Ollama server, set as the LLM (model llama3.1:8b, 5 s timeout, two
    re-asks); the test scripts its answers."""
    server = FakeOllama()
    server.start()
    settings.MYSPINBOT_LLM_URL = server.url
    settings.MYSPINBOT_LLM_MODEL = "llama3.1:8b"
    settings.MYSPINBOT_LLM_TIMEOUT = 5.0
    settings.MYSPINBOT_LLM_MAX_REASKS = 2
    yield server
    server.stop()
