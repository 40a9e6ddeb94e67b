"""``make test``: real PostgreSQL, Redis and an S3-compatible server on loopback."""

from __future__ import annotations

from myspinbot.settings.base import *  # noqa: F403
from myspinbot.settings.base import database_from_url
from myspinbot.settings.env import env_str, env_url

SECRET_KEY = env_str("SECRET_KEY", "test-key-not-for-production")
DEBUG = False
MYSPINBOT_DEBUG_SERVICES = True

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
CELERY_BROKER_URL = REDIS_URL
CELERY_RESULT_BACKEND = REDIS_URL
CHANNEL_LAYERS = {
    "default": {
        "BACKEND": "channels_redis.core.RedisChannelLayer",
        "CONFIG": {"hosts": [REDIS_URL], "capacity": 1000, "expiry": 60},
    }
}

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
