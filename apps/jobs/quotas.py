"""What one user may hold and spend: stored bytes, GPU-seconds a day, GPU nodes a job,
and the uploads they can list, delete, and that expire when nothing uses them.

Every limit is a setting (``MYSPINBOT_QUOTA_*``, ``MYSPINBOT_MAX_GPU_NODES_PER_JOB``,
``MYSPINBOT_UPLOAD_EXPIRE_DAYS``); 0 turns a quota off. The checks run inside the
submitting or uploading transaction, after the caller's user row is locked
(:func:`lock_user`), so two concurrent requests are counted one after the other.

- Storage counts every artifact the user owns (uploads and job results; a cached
  result reused by another of the user's jobs counts once, where it was stored). An
  upload that would cross the quota is a 413; a job submitted while at or over it a 409,
  because its results would be stored on top.
- GPU time is the sum, over the user's node runs on the ``gpu`` queue that started in
  the last 24 hours, of their run time (a running one up to now). A job submitted
  while at or over it is a 429 with ``Retry-After``.
- A job with more GPU nodes than ``MYSPINBOT_MAX_GPU_NODES_PER_JOB`` is a 422.
"""

from __future__ import annotations

import functools
import math
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from django.conf import settings
from django.contrib.auth.models import User
from django.db import transaction
from django.db.models import Q, Sum
from django.utils import timezone

from apps.jobs.artifacts import artifact_ids, delete_stored
from apps.jobs.models import Artifact, Job, JobInput, NodeRun, Profile
from myspinbot.errors import Rejected

if TYPE_CHECKING:
    from apps.capabilities.registry import CapabilityRegistry
    from apps.graphs.document import GraphDocument

GPU_QUEUE = "gpu"
GPU_WINDOW = timedelta(hours=24)
UPLOAD_PREFIX = "uploads/"


def lock_user(owner: User) -> None:
    """Lock the user row until the transaction ends (quota checks count one by one)."""
    User.objects.select_for_update().filter(pk=owner.pk).first()


# --- Storage ------------------------------------------------------------------------


def storage_used(owner: User) -> int:
    """Bytes of every artifact the user owns."""
    total = Artifact.objects.filter(owner=owner).aggregate(total=Sum("size_bytes"))["total"]
    return int(total or 0)


def check_upload(owner: User, size: int) -> None:
    """413 ``storage_quota_exceeded`` when ``size`` more bytes would cross the quota."""
    quota = settings.MYSPINBOT_QUOTA_STORAGE_BYTES
    if not quota:
        return
    used = storage_used(owner)
    if used + size > quota:
        raise Rejected(
            413,
            "storage_quota_exceeded",
            f"this upload of {size} bytes would take your storage to {used + size} bytes; "
            f"your quota is {quota} bytes (delete uploads or jobs to make room)",
        )


# --- Jobs -----------------------------------------------------------------------------


def gpu_seconds_used(owner: User, now: datetime | None = None) -> tuple[float, datetime | None]:
    """GPU-seconds the user's runs that started in the last 24 h have used (running ones
    up to ``now``), and when the oldest of them started."""
    now = now or timezone.now()
    runs = NodeRun.objects.filter(
        job__owner=owner, queue=GPU_QUEUE, started_at__gte=now - GPU_WINDOW
    ).values_list("started_at", "finished_at")
    used, starts = 0.0, []
    for started, finished in runs:
        if started is None:
            continue
        used += max(0.0, ((finished or now) - started).total_seconds())
        starts.append(started)
    return used, min(starts, default=None)


def check_job(owner: User, graph: GraphDocument, registry: CapabilityRegistry) -> None:
    """Refuse a job that the caller's quotas do not leave room for (see the module doc)."""
    limit = settings.MYSPINBOT_MAX_GPU_NODES_PER_JOB
    gpu_nodes = [
        node.id
        for node in graph.nodes
        if node.service in registry and registry.get(node.service).queue == GPU_QUEUE
    ]
    if limit and len(gpu_nodes) > limit:
        raise Rejected(
            422,
            "too_many_gpu_nodes",
            f"the job has {len(gpu_nodes)} GPU nodes; at most {limit} are allowed per job",
        )
    storage = settings.MYSPINBOT_QUOTA_STORAGE_BYTES
    if storage and (used := storage_used(owner)) >= storage:
        raise Rejected(
            409,
            "storage_quota_exceeded",
            f"your artifacts take {used} bytes; your quota is {storage} bytes "
            "(delete uploads or jobs to make room)",
        )
    budget = settings.MYSPINBOT_QUOTA_GPU_SECONDS_PER_DAY
    if budget and gpu_nodes:
        now = timezone.now()
        seconds, oldest = gpu_seconds_used(owner, now)
        if seconds >= budget:
            wait = (oldest + GPU_WINDOW - now).total_seconds() if oldest else 60.0
            raise Rejected(
                429,
                "gpu_quota_exceeded",
                f"you have used {seconds:.0f} GPU-seconds in the last 24 hours; "
                f"the quota is {budget}",
                headers={"Retry-After": str(max(1, math.ceil(wait)))},
            )


# --- Uploads ------------------------------------------------------------------------


def uploads_of(owner: User) -> Any:
    """The user's uploads (a queryset, newest first)."""
    return Artifact.objects.filter(
        owner=owner, job__isnull=True, node_id="", key__startswith=UPLOAD_PREFIX
    ).order_by("-created_at")


@dataclass(frozen=True)
class UploadUse:
    """Who holds an upload: unfinished jobs and profiles (blocking deletion), and when a
    job last named it (``None``: never)."""

    running_jobs: list[str]
    profiles: list[str]
    last_used: datetime | None


def uses(owner: User, upload_ids: set[str]) -> dict[str, UploadUse]:
    """:class:`UploadUse` of each of ``upload_ids`` (the owner's)."""
    running: dict[str, list[str]] = {key: [] for key in upload_ids}
    profiles: dict[str, list[str]] = {key: [] for key in upload_ids}
    last: dict[str, datetime | None] = dict.fromkeys(upload_ids)
    named = JobInput.objects.filter(artifact_id__in=upload_ids, job__owner=owner).values_list(
        "artifact_id", "job_id", "job__status", "job__created_at"
    )
    for artifact_id, job_id, status, created in named:
        found = str(artifact_id)
        if status not in Job.FINISHED:
            running[found].append(str(job_id))
        previous = last[found]
        last[found] = created if previous is None else max(previous, created)
    for profile_id, data in Profile.objects.filter(owner=owner).values_list("pk", "data"):
        for found in artifact_ids(data) & upload_ids:
            profiles[found].append(str(profile_id))
    return {key: UploadUse(running[key], profiles[key], last[key]) for key in upload_ids}


def delete_upload(owner: User, upload_id: uuid.UUID) -> None:
    """Delete one of the owner's uploads and its bytes.

    404 ``not_found`` when it is not one of theirs; 409 ``upload_in_use`` while an
    unfinished job or a profile holds it (finished jobs keep their results; a rerun of
    one would then ask for the upload again)."""
    with transaction.atomic():
        lock_user(owner)
        upload = uploads_of(owner).select_for_update().filter(pk=upload_id).first()
        if upload is None:
            raise Rejected(404, "not_found", f"no upload {upload_id}")
        use = uses(owner, {str(upload.pk)})[str(upload.pk)]
        if use.running_jobs or use.profiles:
            holders = [f"job {j}" for j in use.running_jobs] + [
                f"profile {p}" for p in use.profiles
            ]
            raise Rejected(
                409, "upload_in_use", f"upload {upload_id} is in use by {', '.join(holders)}"
            )
        key = upload.key
        upload.delete()
        transaction.on_commit(lambda: delete_stored([key]))


def expire_uploads(now: datetime | None = None) -> list[str]:
    """Delete every upload that nothing has used for ``MYSPINBOT_UPLOAD_EXPIRE_DAYS``:
    stored that long ago, named by no job since, held by no profile and no unfinished
    job. Returns the ids deleted. 0 days: uploads never expire."""
    days = settings.MYSPINBOT_UPLOAD_EXPIRE_DAYS
    if not days:
        return []
    cutoff = (now or timezone.now()) - timedelta(days=days)
    old = Artifact.objects.filter(
        Q(job__isnull=True) & Q(node_id="") & Q(key__startswith=UPLOAD_PREFIX),
        created_at__lt=cutoff,
    )
    expired: list[str] = []
    for owner_id in old.values_list("owner_id", flat=True).distinct():
        owner = User.objects.get(pk=owner_id)
        with transaction.atomic():
            lock_user(owner)
            rows = old.filter(owner=owner).values_list("pk", "key")
            candidates = {str(pk): key for pk, key in rows}
            found = uses(owner, set(candidates))
            doomed = [
                pk
                for pk, use in found.items()
                if not use.running_jobs
                and not use.profiles
                and (use.last_used is None or use.last_used < cutoff)
            ]
            Artifact.objects.filter(pk__in=doomed).delete()
            keys = [candidates[pk] for pk in doomed]
            transaction.on_commit(functools.partial(delete_stored, keys))
        expired.extend(doomed)
    return expired
