"""The embedded servers `make run` and `make test` fall back on really start and stop."""

from __future__ import annotations

import os
import signal

from myspinbot.devservices import LOOPBACK, ensure_redis, port_open, redis_answers
from testkit.services import _port_block


def test_ensure_redis_starts_the_embedded_server_only_when_none_answers() -> None:
    port = _port_block(1)
    url = f"redis://{LOOPBACK}:{port}/0"
    assert redis_answers(url) is False

    ensure_redis(url)
    try:
        assert redis_answers(url) is True
        import redis

        client = redis.Redis.from_url(url)
        pid = int(client.info("server")["process_id"])
        ensure_redis(url)  # already up: nothing new is started
        assert int(client.info("server")["process_id"]) == pid
        assert client.config_get("save") == {"save": ""}
        assert client.config_get("appendonly") == {"appendonly": "no"}
        client.close()
    finally:
        os.kill(pid, signal.SIGTERM)
    import time

    deadline = time.monotonic() + 10
    while port_open(LOOPBACK, port) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert port_open(LOOPBACK, port) is False
