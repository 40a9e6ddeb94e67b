"""An attempt whose worker is gone: recorded as lost, the node queued again or failed.

Two paths find such attempts: the sweeper (a running node whose heartbeat stopped) and,
on RabbitMQ, the worker that receives the message again (the broker redelivers an
unacknowledged message the moment its consumer's connection drops). Both call
:func:`record_lost_attempt` under the job's row lock, so whichever comes first wins and
the other finds nothing to do.
"""

from __future__ import annotations

from typing import Literal

from django.conf import settings
from django.utils import timezone

from apps.jobs import engine
from apps.jobs.artifacts import discard_superseded
from apps.jobs.events import Event, emit
from apps.jobs.models import Job, NodeRun
from myspinbot import metrics
from myspinbot.storage import get_artifact_store

Status = NodeRun.Status
DetectedBy = Literal["heartbeat", "redelivery"]


def record_lost_attempt(
    job: Job, run: NodeRun, *, detected_by: DetectedBy, task_id: str | None = None
) -> bool:
    """Give up ``run``'s running attempt (the caller holds the job's lock and has read
    ``run`` for update): queue the next attempt (``task_id`` names its message, default
    the attempt's own id) and return True, or fail the node when it has lost
    ``MYSPINBOT_MAX_LOST_ATTEMPTS`` attempts already and return False.

    The caller sends (or, on redelivery, runs) the queued attempt after commit."""
    attempt = run.attempt
    lost = {
        "message": f"worker {run.worker or '?'} stopped answering",
        "code": "worker_lost",
        "details": {"attempt": attempt, "worker": run.worker, "detectedBy": detected_by},
    }
    if run.lost_attempts >= settings.MYSPINBOT_MAX_LOST_ATTEMPTS:
        run.status, run.error, run.progress = Status.FAILED, lost, 1.0
        run.finished_at = timezone.now()
        run.save(update_fields=["status", "error", "progress", "finished_at"])
        metrics.node_failed(run, "worker_lost")
        discard_superseded(get_artifact_store(), run.job_id, run.node_id, keep=attempt)
        engine.advance_locked(
            job, [Event("node.failed", run.node_id, {"attempt": attempt, "error": lost})]
        )
        return False
    run.status, run.attempt = Status.QUEUED, run.attempt + 1
    run.lost_attempts += 1
    run.task_id = task_id or engine.task_id(job.pk, run.node_id, run.attempt)
    run.dispatched_at, run.heartbeat_at, run.worker = timezone.now(), None, ""
    run.sent_at = None
    run.save(
        update_fields=[
            "status",
            "attempt",
            "lost_attempts",
            "task_id",
            "dispatched_at",
            "sent_at",
            "heartbeat_at",
            "worker",
        ]
    )
    emit(
        job,
        [
            Event(
                "node.retrying",
                run.node_id,
                {
                    "attempt": run.attempt,
                    "reason": "worker_lost",
                    "detectedBy": detected_by,
                    "error": lost,
                },
            )
        ],
    )
    metrics.node_retried(run, "worker_lost")
    return True
