"""A real node context for service tests: a stored job, the session's S3 store, real
artifact recording and a scratch folder — only the worker loop is left out."""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from django.contrib.auth.models import User

from apps.capabilities.context import NodeContext
from apps.capabilities.registry import get_registry
from apps.jobs import engine
from apps.jobs.artifacts import NodeArtifacts, artifact_ref
from apps.jobs.execution import claim
from apps.jobs.models import Artifact, Job
from apps.jobs.profiles import NodeProfiles
from myspinbot.storage import get_artifact_store
from testkit.graphs import graph, node


@dataclass
class Progress:
    reports: list[tuple[float, str | None]] = field(default_factory=list)
    cancel: bool = False

    def report(self, fraction: float, message: str | None) -> None:
        self.reports.append((fraction, message))

    def cancelled(self) -> bool:
        return self.cancel


@dataclass
class ServiceRun:
    """What a service test needs: the context to call the handler with, and helpers."""

    context: NodeContext
    progress: Progress
    job: Job
    owner: User

    def upload(self, name: str, data: bytes, content_type: str) -> dict[str, Any]:
        """Store bytes as the owner's upload and return its reference (as job inputs carry)."""
        return store_upload(self.owner, name, data, content_type)

    def read(self, ref: dict[str, Any]) -> bytes:
        with self.context.artifacts.open(ref) as handle:
            return bytes(handle.read())


ServiceRunFactory = Callable[..., ServiceRun]


def make_service_run(
    service: str,
    params: dict[str, Any] | None = None,
    inputs: dict[str, Any] | None = None,
    username: str = "media",
) -> ServiceRun:
    """Needs the database (``@pytest.mark.django_db``)."""
    owner, _ = User.objects.get_or_create(username=username)
    job = engine.submit_job(owner, graph([node("n", service, params=params or {})], []))
    # Claimed as a worker would: only the running attempt may record artifacts.
    assert claim(str(job.pk), "n", 1, "service-test") is not None
    progress = Progress()
    store = get_artifact_store()
    context = NodeContext(
        job_id=str(job.pk),
        node_id="n",
        attempt=1,
        params=get_registry().get(service).with_defaults(params or {}),
        inputs=inputs or {},
        store=store,
        progress_callback=progress.report,
        cancelled_callback=progress.cancelled,
        artifacts=NodeArtifacts(
            store, job_id=str(job.pk), node_id="n", attempt=1, owner_id=owner.pk
        ),
        workdir=Path(tempfile.mkdtemp(prefix="service-test-")),
        owner_id=owner.pk,
        profiles=NodeProfiles(job_id=str(job.pk), node_id="n", attempt=1, owner_id=owner.pk),
    )
    return ServiceRun(context, progress, job, owner)


def store_upload(owner: User, name: str, data: bytes, content_type: str) -> dict[str, Any]:
    """Store bytes as ``owner``'s upload and return its reference (as job inputs carry)."""
    stored = get_artifact_store().save_bytes(f"uploads/{owner.pk}/{name}", data, content_type)
    artifact = Artifact.objects.create(
        owner=owner,
        name=name,
        bucket=stored.bucket,
        key=stored.key,
        size_bytes=stored.size_bytes,
        sha256=stored.sha256,
        content_type=content_type,
    )
    return artifact_ref(artifact)
