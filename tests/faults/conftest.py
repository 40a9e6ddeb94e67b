"""Fault tests: the platform runs as real processes (PostgreSQL, a private Redis, the S3
server, Celery workers, uvicorn) and a test breaks one of them for real."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from django.conf import settings
from django.contrib.auth.models import User

from apps.jobs.models import ApiToken
from myspinbot.settings.broker import is_rabbitmq
from testkit import broker
from testkit.services import RedisServer
from tests.faults.stack import Api, Stack

# Recovery timings short enough for a test, long enough for a loaded 2-core machine.
FAST_RECOVERY = {
    "MYSPINBOT_HEARTBEAT_TIMEOUT": "5",
    "MYSPINBOT_SWEEP_INTERVAL": "0.5",
    "MYSPINBOT_REDISPATCH_AFTER": "5",
    "MYSPINBOT_RETRY_BACKOFF": "0.5",
    "MYSPINBOT_RETRY_BACKOFF_MAX": "4",
    "MYSPINBOT_WS_PING_INTERVAL": "2",
    "MYSPINBOT_MAX_JOBS_IN_FLIGHT": "1000",
    "MYSPINBOT_SUBMISSIONS_PER_MINUTE": "1000",
    "MYSPINBOT_CAPABILITY_DIRS": str(
        Path(__file__).resolve().parent.parent / "support" / "capabilities"
    ),
}


BROKERS = ("redis", "rabbitmq")


@pytest.fixture
def broker_kind(request: pytest.FixtureRequest) -> str:
    """The broker of this test's stack: the one ``TEST_BROKER_URL`` names (``BROKER=rabbitmq
    make test-faults`` sets it), or the one a test asks for with
    ``@pytest.mark.parametrize("broker_kind", [...], indirect=True)``."""
    default = "rabbitmq" if is_rabbitmq(str(settings.CELERY_BROKER_URL)) else "redis"
    kind = str(getattr(request, "param", default))
    assert kind in BROKERS, kind
    return kind


@pytest.fixture
def stack(
    worker_env: dict[str, str], tmp_path: Path, broker_kind: str, request: pytest.FixtureRequest
) -> Iterator[Stack]:
    """A private Redis (so it can be restarted: results, Channels and, on the Redis broker,
    the queues) with the test database and the session's S3 server; on RabbitMQ the
    broker is the test vhost, its queues emptied first. The test starts the web server
    and workers it needs."""
    redis = RedisServer()
    redis.start()
    if broker_kind == "rabbitmq":
        broker_url = str(request.getfixturevalue("rabbitmq_url"))
    else:
        broker_url = redis.url
    env = {**worker_env, **FAST_RECOVERY, "TEST_REDIS_URL": redis.url}
    env["TEST_BROKER_URL"] = broker_url
    running = Stack(env=env, log_dir=tmp_path, redis=redis, broker_url=broker_url)
    if broker_kind == "rabbitmq":
        broker.purge(running.control, [settings.CELERY_CPU_QUEUE, settings.CELERY_GPU_QUEUE])
    yield running
    running.stop()


@pytest.fixture
def api_for(stack: Stack) -> Callable[[User], Api]:
    def make(user: User) -> Api:
        assert stack.web is not None, "start the web server first"
        _, token = ApiToken.issue(user, "fault test")
        return Api(stack.web.http, token)

    return make
