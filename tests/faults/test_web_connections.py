"""The web process under load does not pile up database connections: each request's
connection goes back to the process's pool when it ends (the soak ran PostgreSQL out of
connections before, with ``too many clients already`` answered as 503s, when ASGI's
request threads each kept one)."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from django.contrib.auth.models import User
from django.db import connection

from apps.jobs.models import ApiToken
from testkit.services import AsgiServer
from tests.faults.stack import Api

pytestmark = pytest.mark.django_db(transaction=True)


# The web server under test names its connections, so that connections of other
# processes of the test session (workers of earlier tests ending) are not counted.
APPLICATION_NAME = "myspinbot-web-under-test"
POOL_SIZE = 3


def web_backends() -> int:
    """The web server's connections now."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity "
            "WHERE datname = current_database() AND application_name = %s",
            [APPLICATION_NAME],
        )
        return int(cursor.fetchone()[0])


def test_the_web_process_holds_no_more_connections_than_its_pool_after_its_requests_end(
    worker_env: dict[str, str], tmp_path: Path
) -> None:
    # The production-like settings: persistent connections (DATABASE_CONN_MAX_AGE 60),
    # which the web process turns into a pool.
    env = {
        **worker_env,
        "DJANGO_SETTINGS_MODULE": "myspinbot.settings.local",
        "DATABASE_POOL_MAX_SIZE": str(POOL_SIZE),
        "DATABASE_URL": f"{worker_env['TEST_DATABASE_URL']}?application_name={APPLICATION_NAME}",
        "REDIS_URL": worker_env["TEST_REDIS_URL"],
        "DEBUG": "false",
    }
    web = AsgiServer(env=env, log_path=tmp_path / "web.log")
    web.start()
    try:
        _, token = ApiToken.issue(User.objects.create_user("ada"), "load")
        api = Api(web.http, token)
        with ThreadPoolExecutor(max_workers=10) as pool:
            answers = list(pool.map(lambda _: api.request("GET", "/api/jobs").status, range(60)))
        # A connection kept by a request thread (persistent connections are kept 60 s)
        # would still be there after the deadline, one per request thread.
        deadline = time.monotonic() + 5
        left = web_backends()
        while left > POOL_SIZE and time.monotonic() < deadline:
            time.sleep(0.05)
            left = web_backends()
    finally:
        web.stop()

    assert answers == [200] * 60
    assert 1 <= left <= POOL_SIZE
