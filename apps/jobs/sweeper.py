"""Recovery that does not wait for the broker.

A worker killed outright leaves its message unacknowledged in Redis until the
visibility timeout (hours, for GPU work). Instead, every worker runs this sweep
every few seconds: a running node whose heartbeat is older than
``MYSPINBOT_HEARTBEAT_TIMEOUT`` is dispatched again as a new attempt (the old
attempt can no longer write anything), a queued node whose message never reached the
broker (the outbox entry is still unsent after ``MYSPINBOT_UNSENT_RESEND_AFTER``) is
sent, one whose message went to a Redis that restarted since is sent again at once,
one whose message the broker may have lost is sent again after
``MYSPINBOT_REDISPATCH_AFTER``, and a cancelled handler that ignored the cancel is
terminated.
All changes are conditional updates, so any number of sweepers can run at once.

On RabbitMQ a killed worker's message returns to the queue at once and the worker that
receives it takes the node over (``execution.take_over``) long before its heartbeat is
stale; the heartbeat pass remains for hung workers and for Redis, which keeps the
message until the visibility timeout.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import redis
from django.conf import settings
from django.db import connection, transaction
from django.db.models import Expression
from django.db.models.functions import Now
from django.utils import timezone

from apps.jobs import engine, quotas
from apps.jobs.models import NodeRun
from apps.jobs.recovery import record_lost_attempt

logger = logging.getLogger(__name__)

Status = NodeRun.Status


@dataclass
class SweepReport:
    redispatched: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    resent: list[str] = field(default_factory=list)
    unsent: list[str] = field(default_factory=list)
    forgotten: list[str] = field(default_factory=list)
    terminated: list[str] = field(default_factory=list)


def sweep() -> SweepReport:
    """One pass over stale, lost and unstoppable node runs."""
    report = SweepReport()
    now = timezone.now()
    # Heartbeats are written with the database's clock and compared with it: the
    # workers that beat and the one sweeping may be different machines.
    cutoff = Now() - timedelta(seconds=settings.MYSPINBOT_HEARTBEAT_TIMEOUT)
    stale = NodeRun.objects.filter(status=Status.RUNNING, heartbeat_at__lt=cutoff)
    for pk, job_id, attempt in stale.values_list("pk", "job_id", "attempt"):
        _recover(pk, job_id, attempt, cutoff, report)

    report.forgotten = _forget_sent_before_broker_start()

    unsent_cutoff = now - timedelta(seconds=settings.MYSPINBOT_UNSENT_RESEND_AFTER)
    unsent = NodeRun.objects.filter(
        status=Status.QUEUED, sent_at=None, dispatched_at__lt=unsent_cutoff
    )
    for run in unsent:
        if _take_for_resend(run, now, sent_at=None) and engine.relay([run]):
            report.unsent.append(run.task_id)

    resend_cutoff = now - timedelta(seconds=settings.MYSPINBOT_REDISPATCH_AFTER)
    lost = NodeRun.objects.filter(
        status=Status.QUEUED, sent_at__isnull=False, dispatched_at__lt=resend_cutoff
    )
    for run in lost:
        if _take_for_resend(run, now) and engine.relay([run]):
            report.resent.append(run.task_id)

    grace_cutoff = now - timedelta(seconds=settings.MYSPINBOT_CANCEL_GRACE)
    unstopped = NodeRun.objects.filter(
        status=Status.CANCELLED, finished_at=None, job__finished_at__lt=grace_cutoff
    )
    for run in unstopped:
        if NodeRun.objects.filter(pk=run.pk, finished_at=None).update(finished_at=now):
            engine.revoke([run.task_id], terminate=True)
            report.terminated.append(run.task_id)
    return report


def broker_uptime() -> float | None:
    """Seconds since the Redis broker started, or None (another broker, or Redis does
    not answer within ``REDIS_TIMEOUT_SECONDS``)."""
    url = str(settings.CELERY_BROKER_URL)
    if not url.startswith(("redis://", "rediss://")):
        return None
    client = redis.Redis.from_url(
        url,
        socket_timeout=settings.REDIS_TIMEOUT_SECONDS,
        socket_connect_timeout=settings.REDIS_TIMEOUT_SECONDS,
    )
    try:
        return float(client.info("server")["uptime_in_seconds"])
    except (redis.RedisError, OSError):
        return None
    finally:
        client.close()


def _forget_sent_before_broker_start() -> list[str]:
    """Mark unsent the queued runs whose message went to a Redis that has restarted since
    (it may have kept nothing), so the outbox pass sends them again now.

    Sends are marked with the database's clock and the restart is placed on it as
    ``now() - uptime``, so every sweeper draws the same line and a message sent again
    after the restart is not forgotten twice. A Redis that kept its data gets a
    duplicate, which the claim makes harmless."""
    uptime = broker_uptime()
    if uptime is None:
        return []
    before = NodeRun.objects.filter(
        status=Status.QUEUED, sent_at__lt=Now() - timedelta(seconds=uptime)
    )
    forgotten = dict(before.values_list("pk", "task_id"))
    if forgotten:
        before.filter(pk__in=forgotten).update(sent_at=None)
    return list(forgotten.values())


def _take_for_resend(run: NodeRun, now: datetime, **unchanged: object) -> bool:
    """Whether this sweeper is the one to resend ``run`` now: a conditional update that
    only one of several sweepers wins, and that a newer attempt or a claim makes miss."""
    return bool(
        NodeRun.objects.filter(
            pk=run.pk,
            attempt=run.attempt,
            status=Status.QUEUED,
            dispatched_at=run.dispatched_at,
            **unchanged,
        ).update(dispatched_at=now)
    )


def _recover(
    pk: int, job_id: object, attempt: int, cutoff: Expression, report: SweepReport
) -> None:
    with transaction.atomic():
        job = engine.lock_job(str(job_id))
        if job is None:
            return
        run = (
            NodeRun.objects.select_for_update()
            .filter(pk=pk, attempt=attempt, status=Status.RUNNING, heartbeat_at__lt=cutoff)
            .first()
        )
        if run is None:
            return
        if record_lost_attempt(job, run, detected_by="heartbeat"):
            transaction.on_commit(lambda: engine.relay([run]))
            report.redispatched.append(run.task_id)
        else:
            report.failed.append(run.task_id)


class Sweeper(threading.Thread):
    """Runs :func:`sweep` every ``MYSPINBOT_SWEEP_INTERVAL`` seconds in a worker process."""

    def __init__(self) -> None:
        super().__init__(name="node-sweeper", daemon=True)
        self.stopped = threading.Event()

    def run(self) -> None:
        # Uploads expire on a slower beat than recovery (apps.jobs.quotas).
        next_expiry = time.monotonic()
        try:
            while not self.stopped.wait(settings.MYSPINBOT_SWEEP_INTERVAL):
                try:
                    report = sweep()
                    if any(vars(report).values()):
                        logger.warning("sweep: %s", report)
                    if time.monotonic() >= next_expiry:
                        next_expiry = time.monotonic() + settings.MYSPINBOT_UPLOAD_EXPIRE_EVERY
                        if expired := quotas.expire_uploads():
                            logger.warning("expired %d unused uploads", len(expired))
                except Exception:  # a database blip must not stop recovery for good
                    logger.exception("sweep failed")
                    connection.close()
        finally:
            connection.close()

    def stop(self) -> None:
        self.stopped.set()
