"""Heartbeats are written and judged by the database's clock, so workers and sweepers on
machines whose clocks disagree neither take a live node for dead nor miss a dead one."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.contrib.auth.models import User
from django.db.models.functions import Now
from django.utils import timezone

from apps.jobs import engine
from apps.jobs.execution import ProgressReporter, claim
from apps.jobs.models import NodeRun
from apps.jobs.sweeper import sweep
from testkit.graphs import chain

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def running() -> NodeRun:
    """A node claimed by a worker whose clock is an hour behind the database's."""
    user = User.objects.create_user("ada")
    job = engine.submit_job(user, chain("debug.noop"))
    behind = timezone.now() - timedelta(hours=1)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(timezone, "now", lambda: behind)
        claimed = claim(str(job.pk), "n0", 1, "slow-clock@test")
        assert claimed is not None
        ProgressReporter(claimed.run, 1).report(0.5, "half way")
    return NodeRun.objects.get(pk=claimed.run.pk)


def test_a_worker_whose_clock_is_behind_is_not_taken_for_dead(running: NodeRun) -> None:
    assert sweep().redispatched == []
    assert NodeRun.objects.get(pk=running.pk).attempt == 1


def test_a_sweeper_whose_clock_is_ahead_takes_no_live_node(running: NodeRun) -> None:
    ahead = timezone.now() + timedelta(hours=1)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(timezone, "now", lambda: ahead)
        report = sweep()

    assert report.redispatched == []
    assert NodeRun.objects.get(pk=running.pk).status == "running"


def test_a_heartbeat_older_than_the_timeout_by_the_database_clock_is_recovered(
    running: NodeRun,
) -> None:
    NodeRun.objects.filter(pk=running.pk).update(heartbeat_at=Now() - timedelta(minutes=5))

    assert sweep().redispatched == [running.task_id.replace(":1", ":2")]
    assert NodeRun.objects.get(pk=running.pk).attempt == 2
