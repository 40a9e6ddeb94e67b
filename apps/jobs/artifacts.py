"""Artifacts a node writes and reads while it runs.

A handler saves through :class:`NodeArtifacts`: the bytes go to the artifact store under
``jobs/<job>/<node>/<attempt>/<name>``, an ``Artifact`` row records them for the job's
owner, and an ``artifact.stored`` event announces them. What the handler gets back (and
puts in its output) is a reference: ``{"artifact": <id>, "key", "sha256", ...}``, the
same shape job inputs use for uploads.

Only the attempt that is still the node's running one records an artifact: a superseded
attempt (its worker was presumed dead, the job was cancelled) has its object deleted
instead. When a node reaches its final state, what earlier attempts of it stored is
removed (:func:`discard_superseded`), so a killed or retried attempt leaves nothing behind.

A node answered from the cache stores nothing: :func:`share_reused` lists the artifacts
of the run it reused as the job's own (a ``ReusedArtifact`` row each, no bytes copied) and
announces each with the ``artifact.stored`` event a fresh run would have emitted.
:func:`unreferenced_after` says which artifacts a deleted job may take with it.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import IO, Any, BinaryIO
from uuid import UUID

from django.db import transaction
from django.db.models import Q

from apps.jobs.events import Event, emit
from apps.jobs.models import Artifact, JobInput, ReusedArtifact
from myspinbot import metrics
from myspinbot.errors import Cancelled, PermanentError
from myspinbot.storage import (
    ArtifactNotFound,
    ArtifactStore,
    StorageError,
    StoredObject,
    get_artifact_store,
)

logger = logging.getLogger(__name__)

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")


def artifact_ref(artifact: Artifact) -> dict[str, Any]:
    """The reference a node output or job input carries for an artifact."""
    return {"artifact": str(artifact.pk), **artifact.to_json()}


def attempt_is_running(job_id: str, node_id: str, attempt: int) -> bool:
    """Whether ``attempt`` is the node's running one, holding the job's row lock until the
    transaction ends (the sweeper and cancel take it before superseding)."""
    from apps.jobs.models import Job, NodeRun

    if not Job.objects.select_for_update().filter(pk=job_id).exists():
        return False
    return NodeRun.objects.filter(
        job_id=job_id, node_id=node_id, attempt=attempt, status=NodeRun.Status.RUNNING
    ).exists()


class NodeArtifacts:
    """The artifact side of one node attempt."""

    def __init__(
        self, store: ArtifactStore, *, job_id: str, node_id: str, attempt: int, owner_id: int
    ) -> None:
        self.store = store
        self.job_id, self.node_id, self.attempt, self.owner_id = job_id, node_id, attempt, owner_id

    def save(
        self, name: str, source: bytes | str | os.PathLike[str] | IO[bytes], content_type: str
    ) -> dict[str, Any]:
        """Store ``source`` as this node's artifact ``name``; return its reference."""
        if not _NAME.match(name):
            raise ValueError(f"artifact name {name!r} must be a plain file name")
        key = f"{attempt_prefix(self.job_id, self.node_id, self.attempt)}{name}"
        if isinstance(source, bytes):
            stored = self.store.save_bytes(key, source, content_type)
        else:
            stored = self.store.save_file(key, source, content_type)
        with transaction.atomic():
            current = self._still_running()
            if current:
                artifact = self._record(name, stored, content_type)
        if not current:
            _delete_objects(self.store, [key])
            raise Cancelled(
                f"attempt {self.attempt} of {self.job_id}:{self.node_id} is no longer "
                f"the running one; {key} was not recorded"
            )
        metrics.artifact_stored("node", stored.size_bytes)
        return artifact_ref(artifact)

    def _record(self, name: str, stored: StoredObject, content_type: str) -> Artifact:
        """The row and the ``artifact.stored`` event of a stored object."""
        artifact, _ = Artifact.objects.update_or_create(
            bucket=stored.bucket,
            key=stored.key,
            defaults={
                "owner_id": self.owner_id,
                "job_id": self.job_id,
                "node_id": self.node_id,
                "name": name,
                "size_bytes": stored.size_bytes,
                "sha256": stored.sha256,
                "content_type": stored.content_type,
            },
        )
        emit(
            self.job_id,
            [
                Event(
                    "artifact.stored",
                    self.node_id,
                    {
                        "artifact": str(artifact.pk),
                        "name": name,
                        "content_type": content_type,
                        "size_bytes": stored.size_bytes,
                    },
                )
            ],
        )
        return artifact

    def _still_running(self) -> bool:
        return attempt_is_running(self.job_id, self.node_id, self.attempt)

    def saved(self, prefix: str) -> list[dict[str, Any]]:
        """References of this node's artifacts whose name starts with ``prefix``, newest
        name first (any attempt: a retry finds its predecessors' checkpoints)."""
        from apps.jobs.models import Artifact

        stored = Artifact.objects.filter(
            job_id=self.job_id, node_id=self.node_id, name__startswith=prefix
        ).order_by("-name", "-created_at")
        return [artifact_ref(artifact) for artifact in stored]

    def discard(self, ref: dict[str, Any]) -> None:
        """Remove one of this node's artifacts (any attempt's): its row now, its object once
        the row's removal is committed (e.g. a checkpoint that a newer one replaces)."""
        artifact = self._resolve(ref)
        if (str(artifact.job_id), artifact.node_id) != (str(self.job_id), self.node_id):
            raise ValueError(f"artifact {artifact.pk} is not one of this node's")
        key = artifact.key
        artifact.delete()
        transaction.on_commit(lambda: _delete_objects(self.store, [key]))

    def open(self, ref: dict[str, Any]) -> BinaryIO:
        """Read an artifact this job may use (its owner's), by reference."""
        artifact = self._resolve(ref)
        try:
            return self.store.open(artifact.key)
        except ArtifactNotFound:
            raise PermanentError("artifact_missing", f"artifact {artifact.pk} is gone") from None

    def fetch(self, ref: dict[str, Any], folder: Path, name: str | None = None) -> Path:
        """Copy an artifact into ``folder`` (for tools that need a file path)."""
        artifact = self._resolve(ref)
        target = folder / (name or artifact.key.rsplit("/", 1)[-1])
        with self.open(ref) as source, target.open("wb") as sink:
            shutil.copyfileobj(source, sink, 1024 * 1024)
        return target

    def _resolve(self, ref: dict[str, Any]) -> Artifact:
        if not isinstance(ref, dict) or "artifact" not in ref:
            raise PermanentError("bad_input", f"not an artifact reference: {ref!r}"[:200])
        artifact = Artifact.objects.filter(pk=ref["artifact"], owner_id=self.owner_id).first()
        if artifact is None:
            raise PermanentError("bad_input", f"unknown artifact {ref['artifact']}")
        return artifact


def node_prefix(job_id: UUID | str, node_id: str) -> str:
    return f"jobs/{job_id}/{node_id}/"


def attempt_prefix(job_id: UUID | str, node_id: str, attempt: int) -> str:
    return f"{node_prefix(job_id, node_id)}{attempt}/"


def discard_superseded(store: ArtifactStore, job_id: UUID | str, node_id: str, keep: int) -> int:
    """Remove what attempts of the node other than ``keep`` stored: their rows now (in the
    caller's transaction), their objects once it commits, together with any object an
    attempt stored but never recorded (killed in between). Returns the rows removed.

    Attempt 1 has no earlier attempts, so the common case costs nothing."""
    if keep <= 1:
        return 0
    prefix, kept = node_prefix(job_id, node_id), attempt_prefix(job_id, node_id, keep)
    rows = Artifact.objects.filter(job_id=job_id, node_id=node_id, key__startswith=prefix).exclude(
        key__startswith=kept
    )
    removed, _ = rows.delete()

    def delete_objects() -> None:
        try:
            stale = [key for key in store.keys(prefix) if not key.startswith(kept)]
        except StorageError:
            logger.exception("could not list %s to remove superseded artifacts", prefix)
            return
        _delete_objects(store, stale)

    transaction.on_commit(delete_objects)
    return removed


def _delete_objects(store: ArtifactStore, keys: list[str]) -> None:
    for key in keys:
        try:
            store.delete(key)
        except StorageError:
            logger.exception("could not delete superseded artifact %s", key)


# --- Reuse and references -----------------------------------------------------------------


def delete_stored(keys: list[str]) -> None:
    """Delete these objects from the artifact store (their rows are gone already); one
    that cannot be deleted is logged and left for the operator, never raised to a
    client whose deletion has committed."""
    store = get_artifact_store()
    for key in keys:
        try:
            store.delete(key)
        except StorageError:
            logger.exception("could not delete %s from the artifact store", key)


def artifact_ids(value: Any) -> set[str]:
    """The ids of every artifact reference (``{"artifact": id, ...}``) anywhere in a JSON
    value."""
    found: set[str] = set()
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            if isinstance(item.get("artifact"), str):
                found.add(item["artifact"])
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return found


def artifact_uuids(value: Any) -> set[UUID]:
    """:func:`artifact_ids` that are well-formed ids (what a row can refer to)."""
    found: set[UUID] = set()
    for text in artifact_ids(value):
        try:
            found.add(UUID(text))
        except ValueError:
            continue
    return found


def name_inputs(job: Any, document: Any) -> None:
    """Record (``JobInput``) the owner's artifacts that the job's graph names."""
    named = artifact_uuids(document)
    if not named:
        return
    present = Artifact.objects.filter(pk__in=named, owner_id=job.owner_id)
    JobInput.objects.bulk_create(
        [JobInput(job=job, artifact_id=pk) for pk in present.values_list("pk", flat=True)]
    )


def share_reused(
    job_id: UUID | str, reused: Mapping[str, tuple[UUID | str, str]]
) -> dict[str, list[Event]]:
    """List for the job's cached nodes (``{node: (source job, source node)}``) what the
    runs they reused hold: what those nodes stored and what they themselves reused.

    Returns, per cached node, the ``artifact.stored`` events a fresh run of it would have
    emitted (oldest artifact first), for the caller to append after its ``node.cached``."""
    if not reused:
        return {}
    wanted = {(str(job), node): target for target, (job, node) in reused.items()}
    made = Q()
    for job, node in wanted:
        made |= Q(job_id=job, node_id=node)
    fields = ("name", "content_type", "size_bytes", "created_at")
    rows = list(Artifact.objects.filter(made).values_list("pk", "job_id", "node_id", *fields))
    rows += ReusedArtifact.objects.filter(made).values_list(
        "artifact_id", "job_id", "node_id", *(f"artifact__{name}" for name in fields)
    )
    ReusedArtifact.objects.bulk_create(
        [
            ReusedArtifact(job_id=job_id, node_id=wanted[(str(job), node)], artifact_id=pk)
            for pk, job, node, *_ in rows
        ],
        ignore_conflicts=True,
    )
    stored: dict[str, list[Event]] = {}
    for pk, job, node, name, content_type, size, _ in sorted(rows, key=lambda row: row[-1]):
        target = wanted[(str(job), node)]
        payload = {
            "artifact": str(pk),
            "name": name,
            "content_type": content_type,
            "size_bytes": size,
        }
        stored.setdefault(target, []).append(Event("artifact.stored", target, payload))
    return stored


def job_artifacts(job_id: UUID | str) -> list[Artifact]:
    """A job's results, oldest first: what its nodes stored and what its cached nodes
    reused. A reused artifact is shown as a fresh run would show it, with this job's id
    and the reusing node's id."""
    artifacts = list(Artifact.objects.filter(job_id=job_id))
    for link in ReusedArtifact.objects.filter(job_id=job_id).select_related("artifact"):
        artifact = link.artifact
        artifact.job_id, artifact.node_id = job_id, link.node_id
        artifacts.append(artifact)
    return sorted(artifacts, key=lambda artifact: artifact.created_at)


def unreferenced_after(job: Any) -> list[Artifact]:
    """The artifacts that nothing refers to once ``job`` is deleted: those it stored, and
    those it reused whose maker is already gone, unless another job reuses them, names
    them in its graph, or a profile of the owner holds them.

    Call it in the transaction that deletes the job: it locks the job's runs, so a job
    being planned now either reuses them before (and its references are seen here) or
    finds them gone (and runs its node itself)."""
    from apps.jobs.models import NodeRun, Profile

    list(NodeRun.objects.select_for_update().filter(job=job).values_list("pk", flat=True))

    candidates = {
        artifact.pk: artifact
        for artifact in Artifact.objects.filter(
            Q(job=job) | Q(reuses__job=job, job__isnull=True, node_id__gt="")
        ).distinct()
    }
    if not candidates:
        return []
    kept = {
        str(pk)
        for pk in ReusedArtifact.objects.filter(artifact_id__in=candidates)
        .exclude(job=job)
        .values_list("artifact_id", flat=True)
    }
    kept |= {
        str(pk)
        for pk in JobInput.objects.filter(artifact_id__in=candidates)
        .exclude(job=job)
        .values_list("artifact_id", flat=True)
    }
    for data in Profile.objects.filter(owner_id=job.owner_id).values_list("data", flat=True):
        kept |= artifact_ids(data)
    return [artifact for pk, artifact in candidates.items() if str(pk) not in kept]
