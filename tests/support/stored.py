"""Job results made directly in the store, for tests about what keeps them."""

from __future__ import annotations

from apps.jobs.models import Artifact, Job
from myspinbot.storage import get_artifact_store


def stored_result(job: Job, data: bytes) -> Artifact:
    """A result of ``job``'s node ``n0``, its bytes in the store."""
    stored = get_artifact_store().save_bytes(f"jobs/{job.pk}/out.bin", data, "a/b")
    return Artifact.objects.create(
        owner=job.owner,
        job=job,
        node_id="n0",
        bucket=stored.bucket,
        key=stored.key,
        size_bytes=stored.size_bytes,
        sha256=stored.sha256,
        content_type="a/b",
    )
