"""``make test``: real PostgreSQL, Redis and an S3-compatible server on loopback."""

from __future__ import annotations

from myspinbot.settings.base import *  # noqa: F403
from myspinbot.settings.base import broker_transport_options, channel_layers, database_from_url
from myspinbot.settings.broker import task_queues
from myspinbot.settings.env import env_str, env_url

SECRET_KEY = env_str("SECRET_KEY", "test-key-not-for-production")
DEBUG = False
MYSPINBOT_DEBUG_SERVICES = True
# Planning a lip-sync job would otherwise wait a broadcast timeout for GPU workers.
MYSPINBOT_LIPSYNC_GPU_PROBE = False
# Every test signs in from 127.0.0.1 against one Redis: the throttle's own test sets a low
# limit; the rest of the suite (the abuse corpus posts junk to /login/) must not trip it.
MYSPINBOT_SIGNIN_MAX_FAILURES = 10_000

_database_url = env_url(
    "TEST_DATABASE_URL",
    "postgres://postgres@127.0.0.1:5432/myspinbot",
    schemes=("postgres", "postgresql"),
)
assert _database_url is not None
DATABASES = {"default": database_from_url(_database_url)}
DATABASES["default"]["CONN_MAX_AGE"] = 0

# A database of its own on the shared Redis, so tests never touch `make run`'s queues.
REDIS_URL = env_url(
    "TEST_REDIS_URL", "redis://127.0.0.1:6379/13", schemes=("redis", "rediss", "unix")
)
assert REDIS_URL is not None
# The broker is that Redis unless TEST_BROKER_URL names another (``BROKER=rabbitmq make
# test-faults`` points it at a RabbitMQ vhost).
CELERY_BROKER_URL = env_url(
    "TEST_BROKER_URL", REDIS_URL, schemes=("redis", "rediss", "unix", "amqp", "amqps")
)
assert CELERY_BROKER_URL is not None
CELERY_RESULT_BACKEND = REDIS_URL
CELERY_TASK_QUEUES = task_queues(CELERY_BROKER_URL, CELERY_CPU_QUEUE, CELERY_GPU_QUEUE)  # noqa: F405
CELERY_TASK_DEFAULT_EXCHANGE_TYPE = CELERY_TASK_QUEUES[0].exchange.type
CELERY_BROKER_TRANSPORT_OPTIONS = broker_transport_options(CELERY_BROKER_URL)
CHANNEL_LAYERS = channel_layers(REDIS_URL)

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
