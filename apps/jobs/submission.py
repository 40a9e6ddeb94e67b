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

from apps.graphs.validation import GraphValidationError, ValidationIssue
from apps.jobs import engine
from apps.jobs.models import Artifact, Job
from myspinbot.errors import Rejected

ARTIFACT_REF = "artifact"
# JSON nested deeper than this is refused before anything walks it recursively (the
# graph schema, artifact references, PostgreSQL's jsonb parser all recurse).
MAX_JSON_DEPTH = 32


def check_storable(value: Any, where: str) -> None:
    """422 when ``value`` cannot be stored as ``jsonb``: nesting deeper than
    :data:`MAX_JSON_DEPTH`, a string (key or value) with a NUL character or a lone
    UTF-16 surrogate, or a number too big for a float (``1e400`` reads as infinity),
    all of which PostgreSQL refuses. Walks iteratively."""
    stack: list[tuple[Any, str, int]] = [(value, where, 1)]
    while stack:
        item, path, depth = stack.pop()
        if isinstance(item, dict | list) and depth > MAX_JSON_DEPTH:
            raise Rejected(
                422, "too_deep", f"{path}: JSON nested deeper than {MAX_JSON_DEPTH} levels"
            )
        if isinstance(item, dict):
            for key, child in item.items():
                _check_scalar(key, f"{path}.<key>")
                stack.append((child, f"{path}.{key}", depth + 1))
        elif isinstance(item, list):
            stack.extend((child, f"{path}[{i}]", depth + 1) for i, child in enumerate(item))
        else:
            _check_scalar(item, path)


def _check_scalar(value: Any, path: str) -> None:
    if isinstance(value, float) and not math.isfinite(value):
        raise Rejected(422, "invalid_number", f"{path}: number out of range")
    if not isinstance(value, str):
        return
    if "\x00" in value:
        raise Rejected(422, "invalid_text", f"{path}: text must not contain NUL characters")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise Rejected(
            422, "invalid_text", f"{path}: text must be valid Unicode (no lone surrogates)"
        ) from None


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
    with transaction.atomic():
        check_limits(owner)
        if template is not None:
            resolved = resolve_artifact_refs(owner, inputs or {})
            return engine.submit_template(owner, template, params, resolved, metadata=metadata)
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
                        owner, node["input"], f"nodes.{node.get('id')}.input"
                    ),
                }
                if isinstance(node, dict) and isinstance(node.get("input"), dict)
                else node
                for node in document["nodes"]
            ]
        return engine.submit_job(owner, document)
