"""Stopping PostgreSQL for 10 s under running jobs: ``/readyz`` says 503 naming the
database, workers wait and recover, and every job completes with each node completed
once. The cluster is a private one started for this test, never the machine's."""

from __future__ import annotations

import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from django.conf import settings

from testkit.services import REPO, PostgresCluster
from tests.faults.stack import Api, Stack
from tests.faults.test_restarts import sleepy_chain


@pytest.fixture
def private_postgres() -> Iterator[PostgresCluster]:
    cluster = PostgresCluster()
    cluster.start()
    yield cluster
    cluster.remove()


def manage(env: dict[str, str], *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=REPO,
        env=env,
        check=True,
        capture_output=True,
        text=True,
        timeout=180,
    )
    return done.stdout


@pytest.mark.slow
def test_stopping_postgres_for_ten_seconds_loses_no_job(
    stack: Stack, private_postgres: PostgresCluster, tmp_path: Path
) -> None:
    database_url = private_postgres.create_database("faults")
    stack.env["TEST_DATABASE_URL"] = database_url
    manage(stack.env, "migrate", "--noinput", "-v", "0")
    token = manage(stack.env, "createapitoken", "ada", "--create-user").strip().splitlines()[-1]
    web = stack.start_web()
    api = Api(web.http, token)
    cpu = [settings.CELERY_CPU_QUEUE]
    stack.start_worker("cpu-a", cpu, concurrency=2)
    stack.start_worker("cpu-b", cpu, concurrency=2)
    job_ids = [api.submit(sleepy_chain(index, length=3, seconds=1.0)) for index in range(8)]
    assert api.request("GET", "/readyz", auth=False).status == 200
    deadline = time.monotonic() + 60
    while api.job(job_ids[0])["status"] != "running":
        assert time.monotonic() < deadline
        time.sleep(0.2)

    private_postgres.stop("fast")  # every connection is cut; nothing answers for 10 s
    stopped_at = time.monotonic()
    down = api.request("GET", "/readyz", auth=False, timeout=15)
    listing = api.request("GET", "/api/jobs", timeout=15)
    time.sleep(max(0.0, 10.0 - (time.monotonic() - stopped_at)))
    private_postgres.start()
    statuses = api.wait_finished(job_ids, timeout=240)
    up = api.request("GET", "/readyz", auth=False)

    assert down.status == 503
    assert down.body["down"] == ["database"]
    assert listing.status == 503
    assert listing.body["error"]["code"] == "database_unavailable"
    assert Counter(statuses.values()) == {"completed": 8}
    assert up.status == 200
    with psycopg.connect(database_url) as connection:
        rows: list[Any] = connection.execute(
            "SELECT job_id, node_id, count(*) FROM jobs_jobevent "
            "WHERE type = 'node.completed' GROUP BY job_id, node_id"
        ).fetchall()
        unfinished = connection.execute(
            "SELECT count(*) FROM graphs_noderun WHERE status <> 'completed'"
        ).fetchone()
    assert len(rows) == 8 * 3
    assert {count for _, _, count in rows} == {1}
    assert unfinished == (0,)
