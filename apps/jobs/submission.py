"""Submitting a job, the same way for every client (REST API, command line).

Everything that depends only on the request is checked first, outside any transaction:
values ``jsonb`` cannot hold, artifact references (resolved to the caller's own
artifacts), the template's plan or the graph's validation. Only then does one
transaction lock the caller's user row, check their limits and quotas (counted one
submission after the other) and store the job.
"""

from __future__ import annotations

import math
import uuid
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.contrib.auth.models import User
from django.db.models import Count, Q
from django.utils import timezone

from apps.capabilities.registry import get_registry
from apps.graphs.document import GraphDocument
from apps.graphs.planner import plan
from apps.graphs.user_templates import templates_for
from apps.graphs.validation import GraphValidationError, ValidationIssue, validate_graph
from apps.jobs import engine, quotas
from apps.jobs.models import Artifact, Job
from myspinbot.errors import Rejected
from myspinbot.jsonb import check_storable

ARTIFACT_REF = "artifact"


def resolve_artifact_refs(
    owner: User, value: Any, where: str = "inputs", found: set[uuid.UUID] | None = None
) -> Any:
    """Replace each ``{"artifact": "<id>"}`` with the caller's artifact (id, sha256, ...),
    adding its id to ``found`` when given.

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
            if found is not None:
                found.add(artifact_id)
            return {ARTIFACT_REF: str(artifact.pk), **artifact.to_json()}
        return {k: resolve_artifact_refs(owner, v, f"{where}.{k}", found) for k, v in value.items()}
    if isinstance(value, list):
        return [
            resolve_artifact_refs(owner, v, f"{where}[{i}]", found) for i, v in enumerate(value)
        ]
    return value


def check_limits(owner: User) -> None:
    """429 when the caller has too many jobs in flight or submitted too many this minute.

    Locks the user row until the transaction ends so concurrent submissions are counted
    one by one (see :func:`check_rates` for a caller that holds the lock already).
    """
    quotas.lock_user(owner)
    check_rates(owner)


def check_rates(owner: User) -> None:
    """:func:`check_limits` for a caller that has locked the user row: both counts in
    one query."""
    window_start = timezone.now() - timedelta(minutes=1)
    in_flight_q = Q(status__in=[Job.Status.QUEUED, Job.Status.RUNNING])
    recent_q = Q(created_at__gte=window_start)
    counts = Job.objects.filter(in_flight_q | recent_q, owner=owner).aggregate(
        in_flight=Count("pk", filter=in_flight_q), recent=Count("pk", filter=recent_q)
    )
    in_flight = counts["in_flight"]
    if in_flight >= settings.MYSPINBOT_MAX_JOBS_IN_FLIGHT:
        raise Rejected(
            429,
            "too_many_jobs",
            f"{in_flight} jobs in flight; the limit is {settings.MYSPINBOT_MAX_JOBS_IN_FLIGHT}",
            headers={"Retry-After": "10"},
        )
    if counts["recent"] >= settings.MYSPINBOT_SUBMISSIONS_PER_MINUTE:
        oldest = (
            Job.objects.filter(recent_q, owner=owner)
            .order_by("created_at")
            .values_list("created_at", flat=True)
            .first()
        )
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

    Raises ``Rejected`` (limits, foreign artifacts, values ``jsonb`` cannot hold),
    ``GraphValidationError`` or ``UnknownTemplate``; nothing is stored then.
    """
    for where, value in (
        ("params", params),
        ("inputs", inputs),
        ("graph", graph),
        ("metadata", metadata),
    ):
        check_storable(value, where)
    referenced: set[uuid.UUID] = set()
    if template is not None:
        resolved = resolve_artifact_refs(owner, inputs or {}, found=referenced)
        graph_doc = plan(
            template,
            params,
            resolved,
            metadata=metadata,
            templates=templates_for(owner, template),
        )
    else:
        graph_doc = _validated(owner, graph, referenced)

    def admit(locked_owner: User) -> None:
        check_rates(locked_owner)
        _check_still_there(locked_owner, referenced)

    return engine.create_job(owner, graph_doc, template=template or "", admit=admit)


def _validated(owner: User, graph: dict[str, Any] | None, found: set[uuid.UUID]) -> GraphDocument:
    document = dict(graph or {})
    if document.get("nodes") == []:
        # A valid document, but not a job: there would be nothing to run.
        raise GraphValidationError(
            [ValidationIssue("no_nodes", "a job needs at least one node", path="nodes")]
        )
    if isinstance(document.get("nodes"), list):
        document["nodes"] = [
            {
                **node,
                "input": resolve_artifact_refs(
                    owner, node["input"], f"nodes.{node.get('id')}.input", found
                ),
            }
            if isinstance(node, dict) and isinstance(node.get("input"), dict)
            else node
            for node in document["nodes"]
        ]
    return validate_graph(
        document, registry=get_registry(), max_nodes=settings.MYSPINBOT_MAX_GRAPH_NODES
    )


def _check_still_there(owner: User, artifact_ids: set[uuid.UUID]) -> None:
    """422 when an artifact resolved before the user lock was deleted since: deleting
    takes the same lock, so what is there now stays until the job is stored."""
    if not artifact_ids:
        return
    present = set(
        Artifact.objects.filter(pk__in=artifact_ids, owner=owner).values_list("pk", flat=True)
    )
    missing = sorted(str(artifact_id) for artifact_id in artifact_ids - present)
    if missing:
        raise Rejected(422, "unknown_artifact", f"inputs: no artifact {missing[0]}")
