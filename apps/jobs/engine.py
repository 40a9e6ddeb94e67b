"""The engine: turns walker plans into NodeRun state, events and Celery messages.

Every function that changes a job's NodeRuns first locks the job row, so two
nodes finishing at once are planned one after the other and a successor is
dispatched once. A completion in a graph without ``on_failure`` edges (on PostgreSQL)
does not plan the whole graph: it counts its successors' ``NodeRun.waiting`` down and
releases those that reach 0 (:func:`release`), in O(its out-degree).

A dispatch is an outbox entry written with the state change: the run is queued with
its attempt's ``task_id`` and ``sent_at`` null, in the same transaction. After commit
:func:`relay` sends the message and marks the run sent; a message that could not be
sent (broker away, the process died right after commit) is sent again by the sweeper
within ``MYSPINBOT_UNSENT_RESEND_AFTER`` seconds.
"""

from __future__ import annotations

import logging
import random
import threading
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from django.conf import settings
from django.contrib.auth.models import User
from django.db import DatabaseError, connection, transaction
from django.db.models import F, FloatField, Sum
from django.db.models.functions import Now
from django.utils import timezone
from kombu.exceptions import OperationalError

from apps.capabilities.registry import Capability, get_registry
from apps.capabilities.services.comfyui_workflow.preflight import refuse_missing_nodes
from apps.graphs import walker
from apps.graphs.caching import cache_key
from apps.graphs.document import GraphDocument
from apps.graphs.models import Graph
from apps.graphs.validation import validate_graph
from apps.jobs import quotas
from apps.jobs.artifacts import name_inputs, share_reused
from apps.jobs.events import Event, emit
from apps.jobs.models import Job, NodeRun
from myspinbot import metrics
from myspinbot.queues import broker_queue

logger = logging.getLogger(__name__)

Status = NodeRun.Status


class JobStateError(Exception):
    """The job is not in a state that allows this action (e.g. cancelling a finished job)."""


@dataclass(frozen=True)
class GraphStructure:
    """What the engine needs from a stored document, parsed once per process."""

    edges: tuple[walker.Edge, ...]
    incoming: dict[str, tuple[walker.Edge, ...]]
    params: dict[str, dict[str, Any]]
    static_inputs: dict[str, dict[str, Any]]
    # The targets of each node's edges (one entry per edge).
    outgoing: dict[str, tuple[str, ...]]
    # Every edge is satisfied by its source completing (no ``on_failure`` edge): a node is
    # ready once its ``NodeRun.waiting`` counter reaches 0 (see :func:`release`).
    counted: bool
    total_weight: float


_structures: dict[UUID, GraphStructure] = {}
_structures_lock = threading.Lock()


def graph_structure(graph_id: UUID, document: dict[str, Any] | None = None) -> GraphStructure:
    """Edges, predecessors and node params of a graph. Documents never change, so each is
    read and parsed once per process (``document``, when the caller has it, saves the
    read)."""
    cached = _structures.get(graph_id)
    if cached is not None:
        return cached
    if document is None:
        document = Graph.objects.values_list("document", flat=True).get(pk=graph_id)
    edges = tuple(
        walker.Edge(edge["from"], edge["to"], edge.get("kind", "normal"))
        for edge in document["edges"]
    )
    incoming: dict[str, list[walker.Edge]] = {node["id"]: [] for node in document["nodes"]}
    outgoing: dict[str, list[str]] = {node["id"]: [] for node in document["nodes"]}
    for edge in edges:
        incoming[edge.target].append(edge)
        outgoing[edge.source].append(edge.target)
    structure = GraphStructure(
        edges=edges,
        incoming={node_id: tuple(items) for node_id, items in incoming.items()},
        params={node["id"]: node.get("params", {}) for node in document["nodes"]},
        static_inputs={node["id"]: node.get("input", {}) for node in document["nodes"]},
        outgoing={node_id: tuple(items) for node_id, items in outgoing.items()},
        counted=all(edge.kind != "on_failure" for edge in edges),
        total_weight=sum(float(node.get("progressWeight", 1.0)) for node in document["nodes"]),
    )
    with _structures_lock:
        if len(_structures) > 1024:
            _structures.clear()
        _structures[graph_id] = structure
    return structure


def queue_name(capability: Capability) -> str:
    """The broker queue of a capability's logical queue (``cpu``/``gpu``)."""
    return broker_queue(capability.queue)


def task_id(job_id: UUID | str, node_id: str, attempt: int) -> str:
    return f"{job_id}:{node_id}:{attempt}"


# --- Submitting -------------------------------------------------------------------


def submit_job(owner: User, document: object, *, template: str = "") -> Job:
    """Validate ``document`` and store it as a new job (see :func:`create_job`).

    Raises ``GraphValidationError`` (nothing stored) when the document is invalid.
    """
    graph_doc = validate_graph(
        document, registry=get_registry(), max_nodes=settings.MYSPINBOT_MAX_GRAPH_NODES
    )
    return create_job(owner, graph_doc, template=template)


def submit_template(
    owner: User,
    name: str,
    params: dict[str, dict[str, Any]] | None = None,
    inputs: dict[str, Any] | None = None,
    *,
    metadata: dict[str, Any] | None = None,
) -> Job:
    """Plan a template with per-node params and job inputs (and extra graph ``metadata``),
    and store it as a new job."""
    from apps.graphs.planner import plan

    return create_job(owner, plan(name, params, inputs, metadata=metadata), template=name)


def create_job(
    owner: User,
    graph_doc: GraphDocument,
    *,
    template: str = "",
    admit: Callable[[User], None] | None = None,
) -> Job:
    """Store a validated graph as a job with its NodeRuns in one transaction, and queue
    the nodes that are ready (their messages go out when the transaction commits).

    ``admit`` runs right after the owner's row is locked, to refuse the job (by raising)
    on the caller's own limits. Raises ``Rejected`` when the owner's quotas leave no room
    (``apps.jobs.quotas``) or a ComfyUI workflow uses a node class its servers lack."""
    registry = get_registry()
    refuse_missing_nodes(graph_doc.nodes)
    document = graph_doc.to_json()
    with transaction.atomic():
        quotas.lock_user(owner)
        if admit is not None:
            admit(owner)
        quotas.check_job(owner, graph_doc, registry)
        graph = Graph.objects.create(
            document=document,
            workflow_id=graph_doc.workflow_id or "",
            node_count=len(graph_doc.nodes),
        )
        structure = graph_structure(graph.pk, document)
        # Nobody else sees the job before commit: planning it needs no row lock.
        job = Job.objects.create(owner=owner, graph=graph, template=template)
        name_inputs(job, document)
        runs = []
        for node in graph_doc.nodes:
            capability = registry.get(node.service)
            runs.append(
                NodeRun(
                    job=job,
                    node_id=node.id,
                    service=capability.id,
                    queue=capability.queue,
                    max_attempts=node.retries.max_attempts or capability.max_attempts,
                    progress_weight=float(node.progress_weight),
                    waiting=len(structure.incoming[node.id]),
                )
            )
        NodeRun.objects.bulk_create(runs)
        advance_locked(
            job,
            [Event("job.queued", payload={"nodes": len(runs), "template": template})],
            runs=runs,
        )
        metrics.job_submitted(job)
    return job


# --- Advancing ----------------------------------------------------------------------


def lock_job(job_id: UUID | str) -> Job | None:
    """The job with its row locked until the transaction ends, or None if it is gone."""
    return Job.objects.select_for_update().filter(pk=job_id).first()


def inputs_for(structure: GraphStructure, runs: dict[str, NodeRun], node_id: str) -> dict[str, Any]:
    """Static inputs of the node plus, per predecessor, its output (or its error when the
    node runs on an ``on_failure`` edge)."""
    inputs: dict[str, Any] = dict(structure.static_inputs.get(node_id, {}))
    for edge in structure.incoming[node_id]:
        source = runs[edge.source]
        if source.status == Status.COMPLETED:
            inputs[edge.source] = source.output or {}
        else:
            inputs[edge.source] = {"error": source.error}
    return inputs


def advance_locked(
    job: Job, events: Sequence[Event] = (), *, runs: Sequence[NodeRun] | None = None
) -> None:
    """Apply walker plans until stable: skip, reuse cached results, dispatch, finish.

    ``events`` (what the caller just did) are written first, with the plan's own events,
    in one append. Reads every node's state in one narrow query and loads full rows
    only for the nodes being dispatched and their predecessors; ``runs``, every run of
    the job as the database holds it (a job just created), saves both reads.
    """
    if job.is_finished:
        emit(job, events)
        return
    registry = get_registry()
    structure = graph_structure(job.graph_id)
    states: dict[str, str] = {}
    progress: dict[str, tuple[float, float]] = {}
    loaded: dict[str, NodeRun] = {}
    if runs is not None:
        for run in runs:
            states[run.node_id], progress[run.node_id] = (
                run.status,
                (run.progress, run.progress_weight),
            )
            loaded[run.node_id] = run
    else:
        for node_id, status, fraction, weight in NodeRun.objects.filter(job_id=job.pk).values_list(
            "node_id", "status", "progress", "progress_weight"
        ):
            states[node_id], progress[node_id] = status, (fraction, weight)
    now = timezone.now()
    events = list(events)
    skipped: list[str] = []
    changed: list[NodeRun] = []
    to_send: list[NodeRun] = []
    reused_from: dict[str, tuple[UUID, str]] = {}
    while True:
        plan = walker.plan(states, structure.edges)  # type: ignore[arg-type]
        for node_id in plan.skip:
            states[node_id] = Status.SKIPPED
            skipped.append(node_id)
            events.append(Event("node.skipped", node_id))
        if not plan.dispatch:
            break
        needed = set(plan.dispatch)
        for node_id in plan.dispatch:
            needed.update(edge.source for edge in structure.incoming[node_id])
        missing = needed - loaded.keys()
        if missing:
            for run in NodeRun.objects.filter(job_id=job.pk, node_id__in=missing):
                loaded[run.node_id] = run
        keys: dict[str, str] = {}
        for node_id in plan.dispatch:
            capability = registry.get(loaded[node_id].service)
            if capability.cacheable:
                inputs = inputs_for(structure, loaded, node_id)
                keys[node_id] = cache_key(capability, structure.params[node_id], inputs)
        found = _cached_runs(job, set(keys.values()))
        reused = False
        for node_id in plan.dispatch:
            run = loaded[node_id]
            changed.append(run)
            source = found.get(keys.get(node_id, ""))
            run.cache_key = keys.get(node_id, "")
            if source is not None:
                run.status, run.progress, run.finished_at = Status.COMPLETED, 1.0, now
                run.output, run.cached_from = source.output, source
                states[node_id] = Status.COMPLETED
                reused_from[node_id] = (source.job_id, source.node_id)
                metrics.cache_hit(run.service)
                events.append(
                    Event(
                        "node.cached",
                        node_id,
                        {"from_job": str(source.job_id), "from_node": source.node_id},
                    )
                )
                reused = True
                continue
            run.status, run.attempt = Status.QUEUED, run.attempt + 1
            run.task_id, run.dispatched_at = task_id(job.pk, node_id, run.attempt), now
            run.sent_at = None
            states[node_id] = Status.QUEUED
            to_send.append(run)
            events.append(
                Event("node.queued", node_id, {"attempt": run.attempt, "queue": run.queue})
            )
        if not reused:
            break
    if skipped:
        NodeRun.objects.filter(job_id=job.pk, node_id__in=skipped).update(
            status=Status.SKIPPED, progress=1.0, finished_at=now
        )
    if len(changed) <= 2:  # bulk_update's CASE expressions cost more than plain UPDATEs
        for run in changed:
            NodeRun.objects.filter(pk=run.pk).update(
                status=run.status,
                attempt=run.attempt,
                task_id=run.task_id,
                dispatched_at=run.dispatched_at,
                sent_at=run.sent_at,
                progress=run.progress,
                finished_at=run.finished_at,
                output=run.output,
                cache_key=run.cache_key,
                cached_from=run.cached_from,
            )
    else:
        NodeRun.objects.bulk_update(
            changed,
            [
                "status",
                "attempt",
                "task_id",
                "dispatched_at",
                "sent_at",
                "progress",
                "finished_at",
                "output",
                "cache_key",
                "cached_from",
            ],
        )
    if reused_from and counts_waiting(structure):  # their successors wait for one less
        _count_down(job.pk, Counter(t for node in reused_from for t in structure.outgoing[node]))
    events = _with_reused(job.pk, events, reused_from)
    job.progress = _weighted_progress(states, progress)
    fields = ["progress"]
    if plan.job_status is not None:
        job.status = Job.Status.COMPLETED if plan.job_status == "completed" else Job.Status.FAILED
        job.finished_at = now
        job.progress = 1.0
        job.error = (
            _first_unhandled_error(job, structure) if job.status == Job.Status.FAILED else None
        )
        fields += ["status", "finished_at", "error"]
        events.append(
            Event(f"job.{job.status}", payload={"status": job.status, "error": job.error})
        )
        metrics.job_finished(job)
    if to_send:  # registered before emit() so messages leave before events are published
        transaction.on_commit(lambda: relay(to_send))
    emit(job, events, save=fields)


def counts_waiting(structure: GraphStructure) -> bool:
    """Whether the job's successors are released by their ``waiting`` counters
    (:func:`release`) rather than by a full plan: graphs without ``on_failure`` edges, on
    PostgreSQL. SQLite (``make run``) always plans the whole graph."""
    return structure.counted and connection.vendor == "postgresql"


def _count_down(job_id: UUID | str, decrements: Counter[str]) -> list[tuple[Any, ...]]:
    """Take ``decrements[node]`` off the ``waiting`` counter of each pending node, in one
    statement; return ``(pk, node_id, waiting, service, queue, attempt, progress_weight)``
    of the nodes it touched. The row lock of each UPDATE makes the counts exact however
    many completions run at once: exactly one of them sees a node reach 0."""
    if not decrements:
        return []
    with connection.cursor() as cursor:
        cursor.execute(
            "UPDATE graphs_noderun AS run SET waiting = run.waiting - d.n "
            "FROM unnest(%s::varchar[], %s::int[]) AS d(node_id, n) "
            "WHERE run.job_id = %s AND run.node_id = d.node_id AND run.status = %s "
            "RETURNING run.id, run.node_id, run.waiting, run.service, run.queue, run.attempt, "
            "run.progress_weight",
            [list(decrements), list(decrements.values()), str(job_id), Status.PENDING],
        )
        return list(cursor.fetchall())


def release(
    job: Job,
    structure: GraphStructure,
    done: dict[str, dict[str, Any]],
    events: Sequence[Event],
    *,
    progress_gain: float = 0.0,
) -> None:
    """Advance a job of a counted graph (:func:`counts_waiting`) after the nodes in
    ``done`` (``{node: output}``) completed, in O(their out-degree) rather than a plan of
    the whole graph: their successors' counters go down, and each successor that reaches 0
    is answered from the output cache or queued. A cached node releases its own
    successors the same way. The caller holds the job's lock and has written ``done``.

    ``progress_gain`` is what the completions added to the job's weighted progress. Once
    no node of the job is queued or running, the full plan runs once to end the job (or
    to find what a counter missed)."""
    registry = get_registry()
    now = timezone.now()
    events = list(events)
    outputs = dict(done)
    to_send: list[NodeRun] = []
    reused_from: dict[str, tuple[UUID, str]] = {}
    while done:
        touched = _count_down(job.pk, Counter(t for node in done for t in structure.outgoing[node]))
        ready = [
            NodeRun(
                pk=pk,
                job_id=job.pk,
                node_id=node_id,
                service=service,
                queue=queue,
                attempt=attempt,
                progress_weight=weight,
                status=Status.PENDING,
            )
            for pk, node_id, waiting, service, queue, attempt, weight in touched
            if waiting == 0
        ]
        done = {}
        if not ready:
            break
        keys: dict[str, str] = {}
        wanted = {
            edge.source for run in ready for edge in structure.incoming[run.node_id]
        } - outputs.keys()
        if wanted and any(registry.get(run.service).cacheable for run in ready):
            for pred, output in NodeRun.objects.filter(
                job_id=job.pk, node_id__in=wanted
            ).values_list("node_id", "output"):
                outputs[pred] = output or {}
        for run in ready:
            capability = registry.get(run.service)
            if capability.cacheable:
                inputs: dict[str, Any] = dict(structure.static_inputs.get(run.node_id, {}))
                for edge in structure.incoming[run.node_id]:
                    inputs[edge.source] = outputs.get(edge.source) or {}
                keys[run.node_id] = cache_key(capability, structure.params[run.node_id], inputs)
        found = _cached_runs(job, set(keys.values()))
        queued: list[NodeRun] = []
        for run in ready:
            source = found.get(keys.get(run.node_id, ""))
            run.cache_key = keys.get(run.node_id, "")
            if source is None:
                run.status, run.attempt = Status.QUEUED, run.attempt + 1
                run.task_id = task_id(job.pk, run.node_id, run.attempt)
                queued.append(run)
                events.append(
                    Event("node.queued", run.node_id, {"attempt": run.attempt, "queue": run.queue})
                )
                continue
            NodeRun.objects.filter(pk=run.pk).update(
                status=Status.COMPLETED,
                progress=1.0,
                finished_at=now,
                output=source.output,
                cached_from=source,
                cache_key=run.cache_key,
            )
            done[run.node_id] = outputs[run.node_id] = source.output or {}
            reused_from[run.node_id] = (source.job_id, source.node_id)
            progress_gain += run.progress_weight
            metrics.cache_hit(run.service)
            events.append(
                Event(
                    "node.cached",
                    run.node_id,
                    {"from_job": str(source.job_id), "from_node": source.node_id},
                )
            )
        if queued:
            _queue(job.pk, queued, now)
            to_send += queued
    events = _with_reused(job.pk, events, reused_from)
    if not to_send and not (
        NodeRun.objects.filter(job_id=job.pk, status__in=[Status.QUEUED, Status.RUNNING]).exists()
    ):
        advance_locked(job, events)  # nothing left running: the plan ends the job
        return
    if structure.total_weight:
        job.progress = min(1.0, job.progress + progress_gain / structure.total_weight)
    if to_send:  # registered before emit() so messages leave before events are published
        transaction.on_commit(lambda: relay(to_send))
    emit(job, events, save=["progress"])


def _queue(job_id: UUID | str, runs: Sequence[NodeRun], now: Any) -> None:
    """Queue the next attempt of each run in one statement (the outbox: ``sent_at``
    null until :func:`relay` has sent its message)."""
    with connection.cursor() as cursor:
        cursor.execute(
            "UPDATE graphs_noderun AS run SET status = %s, attempt = run.attempt + 1, "
            "task_id = %s || ':' || run.node_id || ':' || (run.attempt + 1), "
            "dispatched_at = %s, sent_at = NULL, cache_key = d.cache_key "
            "FROM unnest(%s::bigint[], %s::varchar[]) AS d(id, cache_key) "
            "WHERE run.id = d.id",
            [
                Status.QUEUED,
                str(job_id),
                now,
                [run.pk for run in runs],
                [run.cache_key for run in runs],
            ],
        )


def _with_reused(
    job_id: UUID | str, events: list[Event], reused_from: dict[str, tuple[UUID, str]]
) -> list[Event]:
    """Record what the cached nodes reuse; each ``node.cached`` event is followed by the
    ``artifact.stored`` events a fresh run of its node would have emitted."""
    stored = share_reused(job_id, reused_from)
    if not stored:
        return events
    return [
        follow
        for event in events
        for follow in (
            event,
            *(stored.get(event.node_id or "", []) if event.type == "node.cached" else []),
        )
    ]


def _cached_runs(job: Job, keys: set[str]) -> dict[str, NodeRun]:
    """The newest completed run of the job's owner for each cache key, locked until the
    transaction ends so that deleting its job waits until the reuse is recorded."""
    if not keys:
        return {}
    found: dict[str, NodeRun] = {}
    runs = (
        NodeRun.objects.filter(
            cache_key__in=keys, status=Status.COMPLETED, job__owner_id=job.owner_id
        )
        .select_for_update(of=("self",), no_key=True)
        .order_by("finished_at")
    )
    for run in runs:
        found[run.cache_key] = run
    return found


def _first_unhandled_error(job: Job, structure: GraphStructure) -> dict[str, Any] | None:
    handled = {edge.source for edge in structure.edges if edge.kind == "on_failure"}
    failed = (
        NodeRun.objects.filter(job_id=job.pk, status=Status.FAILED)
        .exclude(node_id__in=handled)
        .order_by("finished_at")
        .values_list("node_id", "error")
        .first()
    )
    return {"node": failed[0], **(failed[1] or {})} if failed else None


def _weighted_progress(states: dict[str, str], progress: dict[str, tuple[float, float]]) -> float:
    total = weighted = 0.0
    for node_id, (fraction, weight) in progress.items():
        total += weight
        weighted += weight * (1.0 if states[node_id] in NodeRun.TERMINAL else fraction)
    return min(1.0, weighted / total) if total else 1.0


def refresh_job_progress(job_id: UUID | str) -> float:
    """Recompute a job's progress from its NodeRuns in one query and store it."""
    totals = NodeRun.objects.filter(job_id=job_id).aggregate(
        weight=Sum("progress_weight"),
        done=Sum(F("progress") * F("progress_weight"), output_field=FloatField()),
    )
    progress = min(1.0, (totals["done"] or 0.0) / totals["weight"]) if totals["weight"] else 1.0
    Job.objects.filter(pk=job_id).update(progress=progress, updated_at=timezone.now())
    return float(progress)


# --- Sending ------------------------------------------------------------------------


def retry_delay(attempts_used: int) -> float:
    """Exponential backoff with full jitter over the upper half: base * 2^(n-1), capped."""
    ceiling = min(
        settings.MYSPINBOT_RETRY_BACKOFF_MAX,
        settings.MYSPINBOT_RETRY_BACKOFF * 2 ** max(0, attempts_used - 1),
    )
    return ceiling / 2 + random.random() * ceiling / 2


def relay(runs: Sequence[NodeRun], countdown: float | None = None) -> bool:
    """Send the messages of runs whose queuing has committed, and mark them sent.

    A broker that cannot be reached, or a RabbitMQ that refuses a message (a publisher
    confirm's nack: a full queue, a queue without its leader), leaves them unsent
    (logged, not raised: the caller's transaction has committed and the outbox keeps the
    dispatch); the sweeper sends them again. Marking is fenced by ``task_id``, so it never
    marks a newer attempt. Returns whether the messages went out."""
    try:
        send_runs(runs, countdown)
    except (OperationalError, OSError) as error:
        logger.warning(
            "could not send %s (%s); the sweeper sends them again",
            [run.task_id for run in runs],
            error,
        )
        return False
    try:
        NodeRun.objects.filter(
            pk__in=[run.pk for run in runs], task_id__in=[run.task_id for run in runs]
        ).filter(sent_at=None).update(sent_at=Now())  # the clock the sweeper compares with
    except DatabaseError:  # the sweeper will send a duplicate, which is harmless
        logger.exception("could not mark %s sent", [run.task_id for run in runs])
    return True


def send_runs(runs: Sequence[NodeRun], countdown: float | None = None) -> None:
    """One Celery message per run, named after its service, on its capability's queue."""
    from myspinbot.celery import app

    registry = get_registry()
    with app.producer_or_acquire() as producer:
        for run in runs:
            capability = registry.get(run.service)
            app.send_task(
                capability.id,
                args=[str(run.job_id), run.node_id, run.attempt],
                task_id=run.task_id,
                queue=queue_name(capability),
                soft_time_limit=capability.timeout_seconds,
                time_limit=capability.timeout_seconds + settings.MYSPINBOT_HARD_TIMEOUT_GRACE,
                countdown=countdown,
                producer=producer,
                # Sent by name, Celery cannot see the task's ignore_result and would
                # subscribe to the result backend per message: a round trip each, and a
                # result consumer that, once Redis was away, fails every later send.
                ignore_result=True,
            )


# --- Cancel and retry -------------------------------------------------------------------


def cancel_job(job_id: UUID | str) -> Job:
    """Cancel a job now: pending and queued nodes are cancelled (their messages revoked),
    running handlers stop at their next progress report; a handler that has not stopped
    after ``MYSPINBOT_CANCEL_GRACE`` seconds is terminated by the sweeper."""
    with transaction.atomic():
        job = lock_job(job_id)
        if job is None:
            raise Job.DoesNotExist(f"job {job_id} does not exist")
        if job.is_finished:
            raise JobStateError(f"job {job.pk} is already {job.status}")
        now = timezone.now()
        active = list(
            NodeRun.objects.filter(
                job=job, status__in=[Status.PENDING, Status.QUEUED, Status.RUNNING]
            )
        )
        queued = [run.task_id for run in active if run.status == Status.QUEUED]
        events = []
        for run in active:
            was_running = run.status == Status.RUNNING
            run.status, run.progress = Status.CANCELLED, 1.0
            run.error = {"message": "the job was cancelled", "code": "cancelled", "details": {}}
            # A running handler sets finished_at when it has stopped; the sweeper looks for
            # cancelled runs without it.
            run.finished_at = None if was_running else now
            events.append(Event("node.cancelled", run.node_id, {"was_running": was_running}))
        NodeRun.objects.bulk_update(active, ["status", "progress", "error", "finished_at"])
        job.status, job.finished_at = Job.Status.CANCELLED, now
        events.append(Event("job.cancelled", payload={"status": job.status}))
        metrics.job_finished(job)
        emit(job, events, save=["status", "finished_at"])
        if queued:
            transaction.on_commit(lambda: revoke(queued))
    return job


def revoke(task_ids: list[str], terminate: bool = False) -> None:
    from myspinbot.celery import app

    app.control.revoke(task_ids, terminate=terminate, signal="SIGKILL")


def retry_job(job_id: UUID | str) -> Job:
    """Run the failed, skipped and cancelled nodes of a finished job again, keeping the
    completed ones; each re-run node gets a fresh attempt budget."""
    with transaction.atomic():
        job = lock_job(job_id)
        if job is None:
            raise Job.DoesNotExist(f"job {job_id} does not exist")
        if not job.is_finished:
            raise JobStateError(f"job {job.pk} is still {job.status}")
        rerun = list(
            NodeRun.objects.filter(
                job=job, status__in=[Status.FAILED, Status.SKIPPED, Status.CANCELLED]
            )
        )
        if not rerun:
            raise JobStateError(f"job {job.pk} has no failed, skipped or cancelled node")
        structure = graph_structure(job.graph_id)
        again = {run.node_id for run in rerun}
        for run in rerun:
            run.status, run.progress, run.error, run.output = Status.PENDING, 0.0, None, None
            run.finished_at, run.round_start, run.lost_attempts = None, run.attempt, 0
            # The kept nodes all completed: a re-run node waits for its re-run predecessors.
            run.waiting = sum(edge.source in again for edge in structure.incoming[run.node_id])
        NodeRun.objects.bulk_update(
            rerun,
            [
                "status",
                "progress",
                "error",
                "output",
                "finished_at",
                "round_start",
                "lost_attempts",
                "waiting",
            ],
        )
        job.status, job.finished_at, job.error = Job.Status.QUEUED, None, None
        job.save(update_fields=["status", "finished_at", "error", "updated_at"])
        advance_locked(job, [Event("job.queued", payload={"retry": [r.node_id for r in rerun]})])
    return job
