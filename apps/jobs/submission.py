"""Submitting a job, the same way for every client (REST API, command line).

Checks the caller's limits under a lock on their user row, resolves artifact
references in the inputs to the caller's own artifacts, plans a template or validates
a graph, and stores the job, all in one transaction.
"""

from __future__ import annotations

import math
import uuid
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.contrib.auth.models import User
from django.db import transaction
from django.utils import timezone

from apps.graphs import engine
from apps.jobs.models import Artifact, Job
from myspinbot.errors import Rejected

ARTIFACT_REF = "artifact"


def resolve_artifact_refs(owner: User, value: Any, where: str = "inputs") -> Any:
    """Replace each ``{"artifact": "<id>"}`` with the caller's artifact (id, sha256, ...).

    An id that is not one of the caller's artifacts is a 422 naming where it was found.
    """
    if isinstance(value, dict):
        if set(value) == {ARTIFACT_REF}:
            try:
                artifact_id = uuid.UUID(str(value[ARTIFACT_REF]))
            except ValueError:
                raise Rejected(422, "unknown_artifact", f"{where}: not an artifact id") from None
            artifact = Artifact.objects.filter(pk=artifact_id, owner=owner).first()
            if artifact is None:
                raise Rejected(422, "unknown_artifact", f"{where}: no artifact {artifact_id}")
            return {ARTIFACT_REF: str(artifact.pk), **artifact.to_json()}
        return {k: resolve_artifact_refs(owner, v, f"{where}.{k}") for k, v in value.items()}
    if isinstance(value, list):
        return [resolve_artifact_refs(owner, v, f"{where}[{i}]") for i, v in enumerate(value)]
    return value


def check_limits(owner: User) -> None:
    """429 when the caller has too many jobs in flight or submitted too many this minute.

    Runs under a lock on the user row so concurrent submissions are counted one by one.
    """
    User.objects.select_for_update().filter(pk=owner.pk).first()
    in_flight = Job.objects.filter(owner=owner, status__in=["queued", "running"]).count()
    if in_flight >= settings.MYSPINBOT_MAX_JOBS_IN_FLIGHT:
        raise Rejected(
            429,
            "too_many_jobs",
            f"{in_flight} jobs in flight; the limit is {settings.MYSPINBOT_MAX_JOBS_IN_FLIGHT}",
            headers={"Retry-After": "10"},
        )
    window_start = timezone.now() - timedelta(minutes=1)
    recent = Job.objects.filter(owner=owner, created_at__gte=window_start)
    if recent.count() >= settings.MYSPINBOT_SUBMISSIONS_PER_MINUTE:
        oldest = recent.order_by("created_at").values_list("created_at", flat=True).first()
        wait = (oldest + timedelta(minutes=1) - timezone.now()).total_seconds() if oldest else 60
        raise Rejected(
            429,
            "too_many_submissions",
            f"at most {settings.MYSPINBOT_SUBMISSIONS_PER_MINUTE} submissions per minute",
            headers={"Retry-After": str(max(1, math.ceil(wait)))},
        )


def submit(
    owner: User,
    *,
    template: str | None = None,
    params: dict[str, dict[str, Any]] | None = None,
    inputs: dict[str, Any] | None = None,
    graph: dict[str, Any] | None = None,
    metadata: dict[str, Any] | None = None,
) -> Job:
    """Store a job from a template (with per-node params and job inputs) or a graph.

    Raises ``Rejected`` (limits, foreign artifacts), ``GraphValidationError``
    or ``UnknownTemplate``; nothing is stored then.
    """
    with transaction.atomic():
        check_limits(owner)
        if template is not None:
            resolved = resolve_artifact_refs(owner, inputs or {})
            return engine.submit_template(owner, template, params, resolved, metadata=metadata)
        document = dict(graph or {})
        if isinstance(document.get("nodes"), list):
            document["nodes"] = [
                {
                    **node,
                    "input": resolve_artifact_refs(
                        owner, node["input"], f"nodes.{node.get('id')}.input"
                    ),
                }
                if isinstance(node, dict) and isinstance(node.get("input"), dict)
                else node
                for node in document["nodes"]
            ]
        return engine.submit_job(owner, document)
