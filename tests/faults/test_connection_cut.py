"""A running node's heartbeat survives its database connection being cut (a PostgreSQL
restart or a proxy dropping it): the next beat connects again."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest
from django.conf import settings
from django.contrib.auth.models import User
from django.db import connection

from apps.jobs import engine
from apps.jobs.execution import claim, heartbeats
from apps.jobs.models import NodeRun
from testkit.graphs import chain, wait_for_job
from testkit.services import CeleryWorker

pytestmark = pytest.mark.django_db(transaction=True)


def cut_other_connections() -> int:
    """Terminate every other backend of this test database: the cut is real, on the
    server side, and only this test's own connections are on this database."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
        return int(cursor.fetchone()[0])


def beats(run: NodeRun, after: Any, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        beat = NodeRun.objects.values_list("heartbeat_at", flat=True).get(pk=run.pk)
        if beat is not None and beat > after:
            return True
        time.sleep(0.05)
    return False


def test_a_heartbeat_reconnects_after_its_connection_is_cut(settings: Any) -> None:
    settings.MYSPINBOT_HEARTBEAT_TIMEOUT = 0.3  # a beat every 0.1 s
    job = engine.submit_job(User.objects.create_user("ada"), chain("debug.sleep"))
    claimed = claim(str(job.pk), "n0", 1, "test")
    assert claimed is not None
    heartbeats.add(claimed.run.pk, 1)
    try:
        first = NodeRun.objects.values_list("heartbeat_at", flat=True).get(pk=claimed.run.pk)
        assert beats(claimed.run, first, timeout=5)

        assert cut_other_connections() == 1  # the heartbeat thread's connection
        cut_at = NodeRun.objects.values_list("heartbeat_at", flat=True).get(pk=claimed.run.pk)
        time.sleep(0.3)  # a beat or two fail on the dead connection

        assert beats(claimed.run, cut_at, timeout=5), "the heartbeat stopped for good"
    finally:
        heartbeats.remove(claimed.run.pk)


@pytest.mark.slow
def test_a_worker_runs_nodes_again_after_its_connections_are_cut(
    start_worker: Callable[..., CeleryWorker],
) -> None:
    user = User.objects.create_user("ada")
    start_worker(
        "cpu",
        [settings.CELERY_CPU_QUEUE],
        concurrency=1,
        env={"MYSPINBOT_REDISPATCH_AFTER": "5", "MYSPINBOT_SWEEP_INTERVAL": "0.5"},
    )
    before = wait_for_job(engine.submit_job(user, chain("debug.echo")), timeout=60)
    assert before.status == "completed"  # the pool process now holds a connection

    assert cut_other_connections() >= 1  # the worker's connections, as a restart would

    after = wait_for_job(engine.submit_job(user, chain("debug.echo", "debug.echo")), timeout=60)
    assert after.status == "completed"
