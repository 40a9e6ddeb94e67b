"""The web process under load does not pile up database connections: each request's
connection is closed when it ends, as Django advises for ASGI (the soak ran PostgreSQL
out of connections before, with ``too many clients already`` answered as 503s)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from django.contrib.auth.models import User
from django.db import connection

from apps.jobs.models import ApiToken
from tests.faults.stack import Api
from tests.support.services import AsgiServer

pytestmark = pytest.mark.django_db(transaction=True)


def other_backends() -> int:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
        return int(cursor.fetchone()[0])


def test_the_web_process_holds_no_connection_after_its_requests_end(
    worker_env: dict[str, str], tmp_path: Path
) -> None:
    # The production-like settings: persistent connections (DATABASE_CONN_MAX_AGE 60).
    env = {
        **worker_env,
        "DJANGO_SETTINGS_MODULE": "myspinbot.settings.local",
        "DATABASE_URL": worker_env["TEST_DATABASE_URL"],
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
        left = other_backends()
    finally:
        web.stop()

    assert answers == [200] * 60
    assert left == 0
