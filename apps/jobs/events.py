"""Appending to a job's event log with gap-free sequence numbers.

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

from apps.jobs.models import Job, JobEvent


@dataclass(frozen=True)
class Event:
    type: str
    node_id: str | None = None
    payload: dict[str, Any] = field(default_factory=dict)


def _allocate(job_id: UUID | str, count: int) -> int:
    """Reserve ``count`` sequence numbers; return the first. Locks the job row until commit."""
    table = Job._meta.db_table
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {table} SET event_seq = event_seq + %s WHERE id = %s RETURNING event_seq",
            [count, UUID(str(job_id)).hex if connection.vendor == "sqlite" else str(job_id)],
        )
        row = cursor.fetchone()
    if row is None:
        raise Job.DoesNotExist(f"job {job_id} does not exist")
    return int(row[0]) - count + 1


def emit(job_id: UUID | str, events: Sequence[Event]) -> list[JobEvent]:
    """Append ``events`` to the job's log, in order. Must run inside a transaction."""
    if not events:
        return []
    if not transaction.get_connection().in_atomic_block:
        raise RuntimeError("emit() must run inside transaction.atomic()")
    first = _allocate(job_id, len(events))
    rows = [
        JobEvent(
            job_id=job_id,
            seq=first + offset,
            type=event.type,
            node_id=event.node_id,
            payload=event.payload,
        )
        for offset, event in enumerate(events)
    ]
    return JobEvent.objects.bulk_create(rows)


def emit_one(job_id: UUID | str, type: str, node_id: str | None = None, **payload: Any) -> JobEvent:
    """Append one event (see :func:`emit`)."""
    return emit(job_id, [Event(type, node_id, payload)])[0]
