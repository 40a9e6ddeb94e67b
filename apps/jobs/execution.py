"""Running one node attempt inside a worker: claim, heartbeat, handler, outcome.

Every write is conditional on the attempt still being the current one, so a
redelivered message, a sweeper that re-dispatched the node, or a cancel all win
over a late worker: its writes simply match no row.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from celery.exceptions import SoftTimeLimitExceeded
from django.conf import settings
from django.db import connection, connections, transaction
from django.db.models import Q
from django.db.models.functions import Now
from django.utils import timezone

from apps.capabilities.context import NodeContext, made_workdir
from apps.capabilities.registry import get_registry, load_handler
from apps.jobs import engine
from apps.jobs.artifacts import NodeArtifacts, discard_superseded
from apps.jobs.events import Event, emit
from apps.jobs.models import Job, NodeRun
from apps.jobs.profiles import NodeProfiles
from apps.jobs.recovery import record_lost_attempt
from myspinbot import metrics
from myspinbot.errors import Cancelled, ServiceError, TransientError
from myspinbot.queues import broker_is_rabbitmq
from myspinbot.storage import StorageUnavailable, get_artifact_store

logger = logging.getLogger(__name__)

Status = NodeRun.Status


def _current(run_pk: int, attempt: int, status: str = Status.RUNNING) -> Any:
    return NodeRun.objects.filter(pk=run_pk, attempt=attempt, status=status)


class Heartbeats:
    """Writes ``heartbeat_at`` every third of the heartbeat timeout for every attempt this
    process is running, from one thread per process: the thread is started by the first
    attempt and then serves every later one, so a node costs no thread of its own, and
    one beat is one ``UPDATE`` for all the attempts of the process (a thread pool worker
    runs several at once).

    Heartbeats are the database's clock (``now()``), as is the sweeper's cutoff, so a
    worker whose clock is behind another machine's is not taken for dead."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.lock = threading.Lock()
        self.running: dict[int, int] = {}  # NodeRun pk -> attempt
        self.thread: threading.Thread | None = None
        self.pid = 0
        self.interval = 0.0
        self.woken = threading.Event()

    def add(self, run_pk: int, attempt: int) -> None:
        with self.lock:
            self.running[run_pk] = attempt
            # A forked pool process inherits the object but not the parent's thread.
            if self.thread is None or self.pid != os.getpid() or not self.thread.is_alive():
                self.pid = os.getpid()
                self.woken = threading.Event()
                self.thread = threading.Thread(target=self._beat, name="heartbeats", daemon=True)
                self.thread.start()
            elif self.interval > settings.MYSPINBOT_HEARTBEAT_TIMEOUT / 3:
                self.woken.set()  # the timeout was shortened: do not sleep the old interval

    def remove(self, run_pk: int) -> None:
        with self.lock:
            self.running.pop(run_pk, None)
            if not self.running:
                self.woken.set()  # let the thread give its connection back now

    def _beat(self) -> None:
        while True:
            self.interval = settings.MYSPINBOT_HEARTBEAT_TIMEOUT / 3
            self.woken.wait(self.interval)
            self.woken.clear()
            with self.lock:
                running = list(self.running.items())
            if not running:
                connection.close()  # nothing to beat for: hold no idle connection
                continue
            current = Q()
            for run_pk, attempt in running:
                current |= Q(pk=run_pk, attempt=attempt)
            try:
                NodeRun.objects.filter(current, status=Status.RUNNING).update(heartbeat_at=Now())
            except Exception:  # the database may be briefly away: keep beating
                logger.exception("heartbeat of NodeRuns %s failed", [pk for pk, _ in running])
                # A broken connection is not reopened by Django on its own: drop it
                # so the next beat connects afresh once the database is back.
                connection.close()


heartbeats = Heartbeats()
# A forked pool process starts afresh (a lock held at fork time would never be released).
os.register_at_fork(after_in_child=heartbeats.reset)


@dataclass(frozen=True)
class Claimed:
    """A run this worker now owns, with what its handler needs."""

    run: NodeRun
    structure: engine.GraphStructure
    predecessors: dict[str, NodeRun]
    owner_id: int


def claim(job_id: str, node_id: str, attempt: int, worker: str) -> Claimed | None:
    """Move the queued run of this attempt to running; None if another delivery (or a
    newer attempt, or a cancel) got there first."""
    with transaction.atomic():
        job = engine.lock_job(job_id)
        if job is None or job.is_finished:
            return None
        now = timezone.now()
        claimed = NodeRun.objects.filter(
            job_id=job_id, node_id=node_id, attempt=attempt, status=Status.QUEUED
        ).update(
            status=Status.RUNNING,
            started_at=now,
            heartbeat_at=Now(),
            worker=worker,
            progress=0.0,
            finished_at=None,
        )
        if not claimed:
            return None
        events = [Event("node.started", node_id, {"attempt": attempt, "worker": worker})]
        save: list[str] = []
        if job.status == Job.Status.QUEUED:
            job.status, job.started_at = Job.Status.RUNNING, now
            save = ["status", "started_at"]
            events.insert(0, Event("job.started"))
        emit(job, events, save=save)
    structure = engine.graph_structure(job.graph_id)
    wanted = [node_id, *(edge.source for edge in structure.incoming[node_id])]
    runs = {run.node_id: run for run in NodeRun.objects.filter(job_id=job_id, node_id__in=wanted)}
    return Claimed(runs.pop(node_id), structure, runs, job.owner_id)


def drop_broken_connections() -> None:
    """Close this thread's database connections that failed and no longer answer.

    Celery's Django fixup keeps a worker process's connections across tasks
    (``CELERY_DB_REUSE_MAX``) without checking them, so a connection cut by a database
    restart would fail every later task of the process ("the connection is closed")."""
    for conn in connections.all(initialized_only=True):
        if conn.connection is None or not conn.errors_occurred:
            continue
        if conn.is_usable():
            conn.errors_occurred = False  # an error of a query, not of the connection
        else:
            conn.close()


def take_over(job_id: str, node_id: str, task_id: str) -> int | None:
    """The attempt this redelivered message now runs, after recording the one it ran
    before as lost; None when the node is not running from this message (a duplicate, or
    the sweeper or a cancel got there first) or has lost too many attempts (then failed).

    RabbitMQ delivers a message again only once the consumer that held it is gone (its
    connection dropped, or its pool process died and the message was rejected): the
    attempt that message started is dead, and waiting for its heartbeat to go stale would
    cost ``MYSPINBOT_HEARTBEAT_TIMEOUT`` for nothing. The next attempt keeps the message's
    task id, so a later cancel revokes (and terminates) the message that runs it."""
    with transaction.atomic():
        job = engine.lock_job(job_id)
        if job is None or job.is_finished:
            return None
        run = (
            NodeRun.objects.select_for_update()
            .filter(job_id=job_id, node_id=node_id, task_id=task_id, status=Status.RUNNING)
            .first()
        )
        if run is None or not record_lost_attempt(
            job, run, detected_by="redelivery", task_id=task_id
        ):
            return None
        # The message is in this worker's hands: the outbox has nothing to send.
        NodeRun.objects.filter(pk=run.pk, attempt=run.attempt).update(sent_at=Now())
        return int(run.attempt)


def execute(
    job_id: str,
    node_id: str,
    attempt: int,
    worker: str,
    *,
    task_id: str = "",
    redelivered: bool = False,
) -> None:
    """Run one attempt of a node to its outcome (called by the service's Celery task).

    A message RabbitMQ delivers again whose node is still running from it takes the
    node over (:func:`take_over`) and runs the next attempt at once."""
    drop_broken_connections()
    claimed = claim(job_id, node_id, attempt, worker)
    if claimed is None and redelivered and task_id and broker_is_rabbitmq():
        next_attempt = take_over(job_id, node_id, task_id)
        if next_attempt is not None:
            logger.warning(
                "%s:%s: redelivered while attempt %s was running; its worker is gone, "
                "running attempt %s",
                job_id,
                node_id,
                next_attempt - 1,
                next_attempt,
            )
            attempt = next_attempt
            claimed = claim(job_id, node_id, attempt, worker)
    if claimed is None:
        logger.info("skip %s:%s:%s: not queued for this attempt", job_id, node_id, attempt)
        return
    run, structure = claimed.run, claimed.structure
    metrics.node_started(run)
    capability = get_registry().get(run.service)
    inputs = engine.inputs_for(structure, claimed.predecessors, node_id)
    reporter = ProgressReporter(run, attempt)
    store = get_artifact_store()  # one per process (a boto3 client is costly to build)
    context = NodeContext(
        job_id=str(job_id),
        node_id=node_id,
        attempt=attempt,
        params=capability.with_defaults(structure.params[node_id]),
        inputs=inputs,
        store=store,
        progress_callback=reporter.report,
        cancelled_callback=reporter.cancelled,
        artifacts=NodeArtifacts(
            store,
            job_id=str(job_id),
            node_id=node_id,
            attempt=attempt,
            owner_id=claimed.owner_id,
        ),
        workdir=lambda: Path(tempfile.mkdtemp(prefix=f"node-{node_id[:32]}-")),
        owner_id=claimed.owner_id,
        profiles=NodeProfiles(
            job_id=str(job_id), node_id=node_id, attempt=attempt, owner_id=claimed.owner_id
        ),
    )
    heartbeats.add(run.pk, attempt)
    try:
        output = load_handler(capability)(context)
        _check_output(output)
    except Cancelled:
        _current(run.pk, attempt, Status.CANCELLED).update(finished_at=timezone.now())
        return
    except SoftTimeLimitExceeded:
        fail(
            run,
            attempt,
            ServiceError(
                "timeout", f"{capability.id} ran past its {capability.timeout_seconds}s limit"
            ),
        )
        return
    except ServiceError as error:
        fail(run, attempt, error)
        return
    except StorageUnavailable as error:  # the artifact store is away: later may work
        fail(run, attempt, TransientError("storage_unavailable", str(error)[:500]))
        return
    except Exception as error:
        if _is_device_out_of_memory(error):
            fail(run, attempt, _gpu_oom(error))
            return
        logger.exception("handler of %s failed on %s:%s", capability.id, job_id, node_id)
        fail(run, attempt, ServiceError("internal_error", f"{type(error).__name__}: {error}"))
        return
    finally:
        heartbeats.remove(run.pk)
        workdir = made_workdir(context)
        if workdir is not None:
            shutil.rmtree(workdir, ignore_errors=True)
    complete(run, attempt, output, structure)


def _is_device_out_of_memory(error: BaseException) -> bool:
    """torch's out-of-memory error, recognised without importing torch here."""
    kind = type(error)
    return kind.__name__ == "OutOfMemoryError" and kind.__module__.startswith("torch")


def _gpu_oom(error: BaseException) -> ServiceError:
    """A handler let the device's out-of-memory error through (GPU handlers normally turn
    it into ``gpu_oom`` themselves): same code, permanent, and the model cache cleared."""
    cache = sys.modules.get("gpu_tasks.model_cache")
    if cache is not None:
        cache.get_cache().clear()
    return ServiceError("gpu_oom", f"out of GPU memory: {str(error)[:500]}", retryable=False)


def _check_output(output: object) -> None:
    if not isinstance(output, dict):
        raise ServiceError("bad_output", f"handler returned {type(output).__name__}, not an object")
    try:
        json.dumps(output)
    except (TypeError, ValueError) as error:
        raise ServiceError("bad_output", f"handler output is not JSON: {error}") from None


def complete(
    run: NodeRun,
    attempt: int,
    output: dict[str, Any],
    structure: engine.GraphStructure | None = None,
) -> None:
    with transaction.atomic():
        job = engine.lock_job(run.job_id)
        if job is None:
            return
        structure = structure or engine.graph_structure(job.graph_id)
        event = Event("node.completed", run.node_id, {"attempt": attempt})
        if engine.counts_waiting(structure) and not job.is_finished:
            gained = _mark_completed(run.pk, attempt, output)
            if gained is None:
                return
            metrics.node_completed(run)
            discard_superseded(get_artifact_store(), run.job_id, run.node_id, keep=attempt)
            engine.release(job, structure, {run.node_id: output}, [event], progress_gain=gained)
            return
        updated = _current(run.pk, attempt).update(
            status=Status.COMPLETED,
            output=output,
            progress=1.0,
            finished_at=timezone.now(),
            error=None,
        )
        if not updated:
            return
        metrics.node_completed(run)
        discard_superseded(get_artifact_store(), run.job_id, run.node_id, keep=attempt)
        engine.advance_locked(job, [event])


def _mark_completed(run_pk: int, attempt: int, output: dict[str, Any]) -> float | None:
    """Complete the running attempt in one fenced statement; return what it adds to the
    job's weighted progress (its weight times the fraction it had not reported yet), or
    None when the attempt is no longer the running one."""
    with connection.cursor() as cursor:
        cursor.execute(
            "WITH before AS (SELECT progress FROM graphs_noderun WHERE id = %s) "
            "UPDATE graphs_noderun SET status = %s, output = %s::jsonb, progress = 1.0, "
            "finished_at = %s, error = NULL "
            "WHERE id = %s AND attempt = %s AND status = %s "
            "RETURNING progress_weight * (1.0 - (SELECT progress FROM before))",
            [
                run_pk,
                Status.COMPLETED,
                json.dumps(output),
                timezone.now(),
                run_pk,
                attempt,
                Status.RUNNING,
            ],
        )
        row = cursor.fetchone()
    return None if row is None else float(row[0])


def fail(run: NodeRun, attempt: int, error: ServiceError) -> None:
    """Retry with backoff while the error is retryable and attempts remain; else fail."""
    with transaction.atomic():
        job = engine.lock_job(run.job_id)
        if job is None:
            return
        current = _current(run.pk, attempt).select_for_update().first()
        if current is None:
            return
        used = current.attempt - current.round_start - current.lost_attempts
        if error.retryable and used < current.max_attempts:
            delay = engine.retry_delay(used)
            current.status, current.attempt = Status.QUEUED, current.attempt + 1
            current.task_id = engine.task_id(job.pk, current.node_id, current.attempt)
            current.dispatched_at, current.error = timezone.now(), error.to_json()
            current.sent_at = None
            current.worker, current.heartbeat_at = "", None
            current.save(
                update_fields=[
                    "status",
                    "attempt",
                    "task_id",
                    "dispatched_at",
                    "sent_at",
                    "error",
                    "worker",
                    "heartbeat_at",
                ]
            )
            emit(
                job,
                [
                    Event(
                        "node.retrying",
                        current.node_id,
                        {
                            "attempt": current.attempt,
                            "delay": round(delay, 3),
                            "error": error.to_json(),
                        },
                    )
                ],
            )
            transaction.on_commit(lambda: engine.relay([current], countdown=delay))
            metrics.node_retried(current, error.code)
            return
        current.status, current.error = Status.FAILED, error.to_json()
        current.progress, current.finished_at = 1.0, timezone.now()
        current.save(update_fields=["status", "error", "progress", "finished_at"])
        metrics.node_failed(current, error.code)
        discard_superseded(get_artifact_store(), run.job_id, run.node_id, keep=attempt)
        engine.advance_locked(
            job,
            [Event("node.failed", current.node_id, {"attempt": attempt, "error": error.to_json()})],
        )


class ProgressReporter:
    """The handler's progress and cancellation callbacks for one attempt.

    Progress is written at most every ``MYSPINBOT_PROGRESS_EVENT_INTERVAL`` seconds
    (and always at 100 %); each write also refreshes the heartbeat and the job's progress.
    """

    def __init__(self, run: NodeRun, attempt: int) -> None:
        self.run_pk, self.job_id, self.node_id, self.attempt = (
            run.pk,
            run.job_id,
            run.node_id,
            attempt,
        )
        self.last_written = 0.0

    def report(self, fraction: float, message: str | None) -> None:
        now = time.monotonic()
        if fraction < 1.0 and now - self.last_written < settings.MYSPINBOT_PROGRESS_EVENT_INTERVAL:
            return
        self.last_written = now
        with transaction.atomic():
            if engine.lock_job(self.job_id) is None:
                return
            if not _current(self.run_pk, self.attempt).update(
                progress=fraction, heartbeat_at=Now()
            ):
                return
            engine.refresh_job_progress(self.job_id)
            payload: dict[str, Any] = {"progress": round(fraction, 4)}
            if message:
                payload["message"] = message[:500]
            emit(self.job_id, [Event("node.progress", self.node_id, payload)])

    def cancelled(self) -> bool:
        """True once this attempt is no longer the running one (cancelled or superseded)."""
        return not _current(self.run_pk, self.attempt).exists()
