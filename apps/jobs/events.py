"""Appending to a job's event log with gap-free sequence numbers.

Each event is published to the job's channel-layer group after its transaction
commits (see ``live``), so WebSocket clients see it only once it is durable.

Sequence numbers come from ``Job.event_seq``, bumped by an UPDATE in the same
transaction as the INSERT of the events, so two writers cannot take the same
number and a rolled-back transaction leaves no hole.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

from django.db import connection, transaction

from apps.jobs import live
from apps.jobs.models import Job, JobEvent


@dataclass(frozen=True)
class Event:
    type: str
    node_id: str | None = None
    payload: dict[str, Any] = field(default_factory=dict)


def _allocate(job_id: UUID | str, count: int) -> tuple[int, str, float]:
    """Reserve ``count`` sequence numbers; return the first with the job's status and
    progress as this transaction sees them. Locks the job row until commit."""
    table = Job._meta.db_table
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {table} SET event_seq = event_seq + %s WHERE id = %s "
            "RETURNING event_seq, status, progress",
            [count, UUID(str(job_id)).hex if connection.vendor == "sqlite" else str(job_id)],
        )
        row = cursor.fetchone()
    if row is None:
        raise Job.DoesNotExist(f"job {job_id} does not exist")
    return int(row[0]) - count + 1, str(row[1]), float(row[2])


def emit(
    job: Job | UUID | str, events: Sequence[Event], *, save: Sequence[str] = ()
) -> list[JobEvent]:
    """Append ``events`` to the job's log, in order. Must run inside a transaction.

    Given a ``Job`` whose row the caller has locked (``select_for_update``), the numbers
    come from the instance and the job is saved once, with the fields in ``save``;
    given an id, they are taken with one UPDATE on the row.
    """
    if not transaction.get_connection().in_atomic_block:
        raise RuntimeError("emit() must run inside transaction.atomic()")
    if isinstance(job, Job):
        job_id: UUID | str = job.pk
        first = job.event_seq + 1
        job.event_seq += len(events)
        if events or save:
            job.save(update_fields=["event_seq", "updated_at", *save])
        status, progress = job.status, job.progress
    elif not events:
        return []
    else:
        job_id = job
        first, status, progress = _allocate(job_id, len(events))
    if not events:
        return []
    rows = JobEvent.objects.bulk_create(
        JobEvent(
            job_id=job_id,
            seq=first + offset,
            type=event.type,
            node_id=event.node_id,
            payload=event.payload,
            job_status=status,
            job_progress=progress,
        )
        for offset, event in enumerate(events)
    )
    transaction.on_commit(lambda: live.publish(rows))
    return rows
