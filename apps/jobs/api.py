"""REST routes for jobs, their events, uploads and artifacts, and the original
system's routes (``/api/train``, ``/api/status/{jobId}``, ``/api/infinitetalk``).

Every query is scoped to the caller: another user's job or artifact is a 404.
"""

from __future__ import annotations

import json
import re
import uuid
from datetime import timedelta
from typing import Any, Literal

from django.conf import settings
from django.contrib.auth.models import User
from django.db import transaction
from django.db.models import Sum
from django.http import HttpRequest
from django.http.response import HttpResponseBase
from django.utils import timezone
from ninja import File, Form, Query, Router, Schema, Status
from ninja.files import UploadedFile
from pydantic import Field, model_validator

from apps.graphs.document import DOCUMENT_STATUS
from apps.graphs.models import Graph
from apps.jobs import engine, quotas, samples, submission
from apps.jobs.artifacts import delete_stored, job_artifacts, unreferenced_after
from apps.jobs.models import Artifact, Job, JobEvent, NodeRun
from apps.jobs.submission import ARTIFACT_REF
from apps.jobs.uploads import accept_upload
from myspinbot.downloads import Served, serve
from myspinbot.error_shape import ErrorOut
from myspinbot.errors import Rejected
from myspinbot.storage import LocalArtifactStore, get_artifact_store

router = Router(tags=["jobs"])
compat_router = Router(tags=["original system"])


# --- Schemas -------------------------------------------------------------------------


class JobCreate(Schema):
    """Either a template with per-node params and job inputs, or a whole graph."""

    template: str | None = Field(None, max_length=100)
    params: dict[str, dict[str, Any]] = {}
    inputs: dict[str, Any] = {}
    graph: dict[str, Any] | None = None

    @model_validator(mode="after")
    def _one_source(self) -> JobCreate:
        if (self.template is None) == (self.graph is None):
            raise ValueError("give either 'template' or 'graph', not both or neither")
        if self.graph is not None and (self.params or self.inputs):
            raise ValueError("'params' and 'inputs' go with 'template'; a graph carries its own")
        return self


class Pagination(Schema):
    limit: int
    offset: int
    total: int


class JobSummary(Schema):
    id: uuid.UUID
    jobId: uuid.UUID
    status: str
    progress: float
    template: str
    error: dict[str, Any] | None
    createdAt: str
    startedAt: str | None
    finishedAt: str | None
    updatedAt: str
    lastSeq: int


class JobList(Schema):
    jobs: list[JobSummary]
    pagination: Pagination


class JobDetail(JobSummary):
    graph: dict[str, Any]
    artifacts: list[dict[str, Any]]


class EventList(Schema):
    jobId: uuid.UUID
    events: list[dict[str, Any]]
    lastSeq: int


class FaceCheckOut(Schema):
    found: bool
    code: str
    message: str
    width: int
    height: int
    box: list[float] | None = None
    faces: int = 0


class UploadOut(Schema):
    id: uuid.UUID
    sha256: str
    content_type: str
    size_bytes: int
    name: str
    face: FaceCheckOut | None = None


class UploadItem(Schema):
    id: uuid.UUID
    name: str
    content_type: str
    size_bytes: int
    sha256: str
    created_at: str
    last_used_at: str | None
    expires_at: str | None
    in_use_by: list[str]


class StorageOut(Schema):
    used_bytes: int
    quota_bytes: int
    uploads_bytes: int


class UploadList(Schema):
    uploads: list[UploadItem]
    storage: StorageOut
    pagination: Pagination


class ArtifactOut(Schema):
    id: uuid.UUID
    bucket: str
    key: str
    name: str
    size_bytes: int
    sha256: str
    content_type: str
    created_at: str
    job_id: uuid.UUID | None
    node_id: str
    url: str
    url_expires_at: str


class JobFilters(Schema):
    limit: int = 20
    offset: int = Field(0, ge=0, le=1_000_000)
    status: Literal["queued", "running", "completed", "failed", "cancelled"] | None = None


class PageQuery(Schema):
    limit: int = 20
    offset: int = Field(0, ge=0, le=1_000_000)


class EventWindow(Schema):
    since: int = Field(0, ge=0, le=2**31)
    limit: int = Field(1000, ge=1, le=1000)


class CompatTrain(Schema):
    topic: str | None = Field(None, max_length=2000)
    prompt: str | None = Field(None, max_length=2000)
    photos: list[Any] = Field(default_factory=list, max_length=100)


# The original's clients may send no body at all (``req.body || {}`` there).
EMPTY_TRAIN = CompatTrain(topic=None, prompt=None)


class CompatStatus(Schema):
    jobId: uuid.UUID
    status: str
    progress: float


class CompatCreated(Schema):
    jobId: uuid.UUID
    status: str
    # For an empty ``POST /api/train``: the template and sample inputs it ran on.
    defaults: dict[str, Any] | None = None


# --- Helpers ---------------------------------------------------------------------------


def caller(request: HttpRequest) -> User:
    user = request.auth  # type: ignore[attr-defined]
    assert isinstance(user, User)
    return user


def own_job(request: HttpRequest, job_id: uuid.UUID) -> Job:
    job = Job.objects.filter(pk=job_id, owner=caller(request)).select_related("graph").first()
    if job is None:
        raise Rejected(404, "not_found", f"no job {job_id}")
    return job


def own_artifact(request: HttpRequest, artifact_id: uuid.UUID) -> Artifact:
    artifact = Artifact.objects.filter(pk=artifact_id, owner=caller(request)).first()
    if artifact is None:
        raise Rejected(404, "not_found", f"no artifact {artifact_id}")
    return artifact


def _iso(value: Any) -> str | None:
    return value.isoformat() if value is not None else None


def job_summary(job: Job) -> dict[str, Any]:
    return {
        "id": job.pk,
        "jobId": job.pk,
        "status": job.status,
        "progress": round(job.progress, 4),
        "template": job.template,
        "error": job.error,
        "createdAt": _iso(job.created_at),
        "startedAt": _iso(job.started_at),
        "finishedAt": _iso(job.finished_at),
        "updatedAt": _iso(job.updated_at),
        "lastSeq": job.event_seq,
    }


def live_graph(job: Job) -> dict[str, Any]:
    """The job's document with each node's live status, output, error and telemetry."""
    document = json.loads(json.dumps(job.graph.document))
    runs = {run.node_id: run for run in NodeRun.objects.filter(job=job)}
    for node in document["nodes"]:
        run = runs[node["id"]]
        node["status"] = DOCUMENT_STATUS[run.status]
        node["output"] = run.output
        node["error"] = run.error
        node["retries"] = {"attempt": run.attempt, "maxAttempts": run.max_attempts}
        node["telemetry"] = {
            **node.get("telemetry", {}),
            "state": run.status,
            "queue": run.queue,
            "progress": round(run.progress, 4),
            "worker": run.worker,
            "cached": run.cached_from_id is not None,
            "startedAt": _iso(run.started_at),
            "finishedAt": _iso(run.finished_at),
        }
    return document


def artifact_json(artifact: Artifact) -> dict[str, Any]:
    return {
        **artifact.to_json(),
        "name": artifact.name,
        "job_id": artifact.job_id,
        "node_id": artifact.node_id,
    }


def submit(owner: User, body: JobCreate) -> Job:
    return submission.submit(
        owner, template=body.template, params=body.params, inputs=body.inputs, graph=body.graph
    )


# --- Jobs -------------------------------------------------------------------------------


@router.post("/jobs", response={201: JobDetail, 401: ErrorOut, 422: ErrorOut, 429: ErrorOut})
def create_job(request: HttpRequest, body: JobCreate) -> Status[dict[str, Any]]:
    """Submit a job from a template (``template``, ``params``, ``inputs``) or a whole
    ``langgraph.v1`` graph. Inputs refer to uploads as ``{"artifact": "<id>"}``."""
    job = submit(caller(request), body)
    return Status(201, job_detail(job, reload=False))  # the job as its transaction left it


def job_detail(job: Job, *, reload: bool = True) -> dict[str, Any]:
    if reload:
        job.refresh_from_db()
    artifacts = [artifact_json(a) for a in job_artifacts(job.pk)]
    return {**job_summary(job), "graph": live_graph(job), "artifacts": artifacts}


@router.get("/jobs", response={200: JobList, 401: ErrorOut})
def list_jobs(request: HttpRequest, filters: Query[JobFilters]) -> dict[str, Any]:
    """The caller's jobs, newest first (``limit`` is clamped to 1..100)."""
    limit = min(100, max(1, filters.limit))
    jobs = Job.objects.filter(owner=caller(request))
    if filters.status:
        jobs = jobs.filter(status=filters.status)
    total = jobs.count()
    page = jobs.order_by("-created_at")[filters.offset : filters.offset + limit]
    return {
        "jobs": [job_summary(job) for job in page],
        "pagination": {"limit": limit, "offset": filters.offset, "total": total},
    }


@router.get("/jobs/{job_id}", response={200: JobDetail, 401: ErrorOut, 404: ErrorOut})
def get_job(request: HttpRequest, job_id: uuid.UUID) -> dict[str, Any]:
    """The job with its graph (live node states), progress, artifacts and timestamps."""
    return job_detail(own_job(request, job_id))


@router.get("/jobs/{job_id}/events", response={200: EventList, 401: ErrorOut, 404: ErrorOut})
def job_events(
    request: HttpRequest, job_id: uuid.UUID, window: Query[EventWindow]
) -> dict[str, Any]:
    """Events with ``seq`` greater than ``since``, in order (at most ``limit``)."""
    job = own_job(request, job_id)
    events = JobEvent.objects.filter(job=job, seq__gt=window.since).order_by("seq")
    events = events[: window.limit]
    return {"jobId": job.pk, "events": [e.to_json() for e in events], "lastSeq": job.event_seq}


@router.post(
    "/jobs/{job_id}/cancel", response={202: JobSummary, 401: ErrorOut, 404: ErrorOut, 409: ErrorOut}
)
def cancel_job(request: HttpRequest, job_id: uuid.UUID) -> Status[dict[str, Any]]:
    """Cancel a queued or running job; a finished job is a 409."""
    job = own_job(request, job_id)
    try:
        job = engine.cancel_job(job.pk)
    except engine.JobStateError as error:
        raise Rejected(409, "job_finished", str(error)) from None
    return Status(202, job_summary(job))


@router.post(
    "/jobs/{job_id}/retry",
    response={202: JobSummary, 401: ErrorOut, 404: ErrorOut, 409: ErrorOut, 429: ErrorOut},
)
def retry_job(request: HttpRequest, job_id: uuid.UUID) -> Status[dict[str, Any]]:
    """Run the failed, skipped and cancelled nodes of a finished job again, reusing the
    completed ones."""
    job = own_job(request, job_id)
    with transaction.atomic():
        submission.check_limits(caller(request))
        try:
            job = engine.retry_job(job.pk)
        except engine.JobStateError as error:
            raise Rejected(409, "not_retryable", str(error)) from None
    return Status(202, job_summary(job))


@router.delete("/jobs/{job_id}", response={204: None, 401: ErrorOut, 404: ErrorOut, 409: ErrorOut})
def delete_job(request: HttpRequest, job_id: uuid.UUID) -> Status[None]:
    """Delete a finished job with its events and the artifacts no other job refers to."""
    job = own_job(request, job_id)
    if not job.is_finished:
        raise Rejected(409, "job_running", f"job {job.pk} is {job.status}; cancel it first")
    with transaction.atomic():
        # The user's lock orders this against a submission that names the job's results.
        quotas.lock_user(job.owner)
        doomed = unreferenced_after(job)
        graph_id = job.graph_id
        Artifact.objects.filter(pk__in=[a.pk for a in doomed]).delete()
        job.delete()
        Graph.objects.filter(pk=graph_id).delete()
        keys = [a.key for a in doomed]
        transaction.on_commit(lambda: delete_stored(keys))
    return Status(204, None)


# --- Uploads and artifacts -----------------------------------------------------------------


def _upload(owner: User, file: UploadedFile) -> Artifact:
    return accept_upload(owner, file, file.size or 0, file.name or "")


@router.post(
    "/uploads",
    response={
        201: UploadOut,
        401: ErrorOut,
        413: ErrorOut,
        415: ErrorOut,
        422: ErrorOut,
        503: ErrorOut,
    },
)
def upload(request: HttpRequest, file: File[UploadedFile]) -> Status[dict[str, Any]]:
    """Upload an image or an audio file (multipart field ``file``). The kind is sniffed
    from the bytes; refer to it from job inputs as ``{"artifact": "<id>"}``. For an image,
    ``face`` says whether a face a talking head can use is in it (and where), or why not:
    ``no_face``, ``face_too_small``, ``face_turned_away``, or ``several_faces`` (the largest
    is used)."""
    artifact = _upload(caller(request), file)
    face = None
    if artifact.content_type.startswith("image/"):
        from apps.capabilities.media.face import check_portrait

        face = check_portrait(file)
    return Status(
        201,
        {
            "id": artifact.pk,
            "sha256": artifact.sha256,
            "content_type": artifact.content_type,
            "size_bytes": artifact.size_bytes,
            "name": artifact.name,
            "face": face,
        },
    )


@router.get("/uploads", response={200: UploadList, 401: ErrorOut})
def list_uploads(request: HttpRequest, page: Query[PageQuery]) -> dict[str, Any]:
    """The caller's uploads, newest first, with who holds each (unfinished jobs and
    profiles: such an upload cannot be deleted), when a job last named it, when it
    expires if nothing names it again, and the caller's storage against the quota."""
    owner = caller(request)
    limit = min(100, max(1, page.limit))
    uploads = quotas.uploads_of(owner)
    total = uploads.count()
    chosen = list(uploads[page.offset : page.offset + limit])
    found = quotas.uses(owner, {str(u.pk) for u in chosen})
    days = settings.MYSPINBOT_UPLOAD_EXPIRE_DAYS
    items = []
    for upload in chosen:
        use = found[str(upload.pk)]
        held = [f"job:{j}" for j in use.running_jobs] + [f"profile:{p}" for p in use.profiles]
        last = use.last_used or upload.created_at
        expires = None if not days or held else (last + timedelta(days=days)).isoformat()
        items.append(
            {
                "id": upload.pk,
                "name": upload.name,
                "content_type": upload.content_type,
                "size_bytes": upload.size_bytes,
                "sha256": upload.sha256,
                "created_at": upload.created_at.isoformat(),
                "last_used_at": use.last_used.isoformat() if use.last_used else None,
                "expires_at": expires,
                "in_use_by": held,
            }
        )
    uploads_bytes = uploads.aggregate(total=Sum("size_bytes"))["total"] or 0
    return {
        "uploads": items,
        "storage": {
            "used_bytes": quotas.storage_used(owner),
            "quota_bytes": settings.MYSPINBOT_QUOTA_STORAGE_BYTES,
            "uploads_bytes": int(uploads_bytes),
        },
        "pagination": {"limit": limit, "offset": page.offset, "total": total},
    }


@router.delete(
    "/uploads/{upload_id}", response={204: None, 401: ErrorOut, 404: ErrorOut, 409: ErrorOut}
)
def delete_upload(request: HttpRequest, upload_id: uuid.UUID) -> Status[None]:
    """Delete one of the caller's uploads and its bytes (409 ``upload_in_use`` while an
    unfinished job or a profile holds it)."""
    quotas.delete_upload(caller(request), upload_id)
    return Status(204, None)


@router.get(
    "/artifacts/{artifact_id}",
    response={200: ArtifactOut, 401: ErrorOut, 404: ErrorOut, 503: ErrorOut},
)
def get_artifact(request: HttpRequest, artifact_id: uuid.UUID) -> dict[str, Any]:
    """Artifact metadata and a short-lived download URL."""
    artifact = own_artifact(request, artifact_id)
    store = get_artifact_store()
    ttl = settings.ARTIFACT_URL_TTL_SECONDS
    if isinstance(store, LocalArtifactStore):
        url = f"/api/artifacts/{artifact.pk}/download"
    else:
        url = store.download_url(artifact.key, expires_in=ttl)
    expires = timezone.now() + timedelta(seconds=ttl)
    return {**artifact_json(artifact), "url": url, "url_expires_at": expires.isoformat()}


@router.get(
    "/artifacts/{artifact_id}/download",
    response={
        200: None,
        206: None,
        304: None,
        401: ErrorOut,
        404: ErrorOut,
        416: ErrorOut,
        503: ErrorOut,
    },
)
def download_artifact(request: HttpRequest, artifact_id: uuid.UUID) -> HttpResponseBase:
    """The artifact's bytes, streamed. A single ``Range`` is a 206 with ``Content-Range``
    (only that range is read from the store), an unsatisfiable one a 416; ``ETag`` is the
    sha256, and ``If-None-Match`` naming it a 304 (see ``myspinbot.downloads``)."""
    artifact = own_artifact(request, artifact_id)
    filename = re.sub(r"[^A-Za-z0-9._ -]", "_", artifact.name or artifact.key.rsplit("/", 1)[-1])
    item = Served(
        key=artifact.key,
        size_bytes=artifact.size_bytes,
        sha256=artifact.sha256,
        content_type=artifact.content_type,
        created_at=artifact.created_at,
        filename=filename,
    )
    return serve(request, get_artifact_store(), item)


# --- The original system's routes ---------------------------------------------------------


@compat_router.post(
    "/train", response={201: CompatCreated, 401: ErrorOut, 422: ErrorOut, 429: ErrorOut}
)
def compat_train(request: HttpRequest, body: CompatTrain = EMPTY_TRAIN) -> Status[dict[str, Any]]:
    """The original default training workflow, ``train_and_render``: script → identity
    LoRA from ``photos`` → keyframe → speech → the keyframe lip-synced → MP4 (a keyframe
    with no usable face is animated instead, and its ``lipsync`` node says why).

    Answered at once with 201 and the job once the request is well formed: a ``topic`` (or
    ``prompt``) and ``photos`` that are the caller's uploads. How many photos there are and
    whether they are readable pictures of a face is checked when ``lora.train`` runs (it
    needs 5 to 60): a job with too few fails there, at its ``train_lora`` node, with the
    node error ``bad_input``, seen in ``GET /api/status/{jobId}`` and the job's events.

    The original's empty body (no body, or ``{}``) runs its default job instead: the
    ``quick`` template on the sample inputs (``apps.jobs.samples``: a public-domain
    portrait, a spoken sample clip and its transcript, uploaded as the caller's own), about
    a sample topic; ``defaults`` in the answer says which.
    """
    owner = caller(request)
    if body.topic is None and body.prompt is None and not body.photos:
        job = submission.submit(
            owner,
            template=samples.SAMPLE_TEMPLATE,
            params={"script": {"topic": samples.SAMPLE_TOPIC}},
            inputs=samples.sample_inputs(owner),
        )
        return Status(201, {"jobId": job.pk, "status": job.status, "defaults": samples.DESCRIPTION})
    topic = (body.topic or body.prompt or "").strip()
    if not topic:
        raise Rejected(
            422, "invalid_request", "topic (or prompt) is required: what the video is about"
        )
    job = submit(
        owner,
        JobCreate(
            template="train_and_render",
            params={"script": {"topic": topic}},
            inputs={"photos": body.photos},
        ),
    )
    return Status(201, {"jobId": job.pk, "status": job.status})


@compat_router.get("/status/{job_id}", response={200: CompatStatus, 401: ErrorOut, 404: ErrorOut})
def compat_status(request: HttpRequest, job_id: uuid.UUID) -> dict[str, Any]:
    """``{jobId, status, progress}`` of one of the caller's jobs."""
    job = own_job(request, job_id)
    return {"jobId": job.pk, "status": job.status, "progress": round(job.progress, 4)}


class InfiniteTalkData(Schema):
    prompt: str = Field("", max_length=2000)
    refText: str = Field("", max_length=5000)


@compat_router.post(
    "/infinitetalk",
    response={
        201: CompatCreated,
        401: ErrorOut,
        413: ErrorOut,
        415: ErrorOut,
        422: ErrorOut,
        429: ErrorOut,
        503: ErrorOut,
    },
)
def compat_infinitetalk(
    request: HttpRequest,
    image_file: File[UploadedFile],
    audio_file: File[UploadedFile],
    data: Form[str],
) -> Status[dict[str, Any]]:
    """A portrait, a voice clip and ``data`` = JSON ``{prompt, refText}`` → a narrated video job."""
    try:
        if not data.lstrip().startswith("{"):
            # A ninja Schema reads any value as an object with default fields.
            raise ValueError("data must be a JSON object")
        fields = InfiniteTalkData.model_validate_json(data)
    except ValueError as error:
        raise Rejected(422, "invalid_request", f"data: {error}".splitlines()[0]) from None
    owner = caller(request)
    with transaction.atomic():
        submission.check_limits(owner)
    uploaded: list[Artifact] = []
    try:
        uploaded.append(image := _upload(owner, image_file))
        uploaded.append(audio := _upload(owner, audio_file))
        if not image.content_type.startswith("image/"):
            raise Rejected(415, "unsupported_media_type", "image_file must be an image")
        if not audio.content_type.startswith("audio/"):
            raise Rejected(415, "unsupported_media_type", "audio_file must be audio")
        script = (
            {"topic": fields.prompt} if fields.prompt.strip() else {"narration": fields.refText}
        )
        job = submission.submit(
            owner,
            template="quick",
            params={"script": script},
            inputs={
                "photos": [{ARTIFACT_REF: str(image.pk)}],
                "voice_sample": {ARTIFACT_REF: str(audio.pk)},
                "transcript": fields.refText,
            },
        )
    except BaseException:
        _discard(uploaded)
        raise
    return Status(201, {"jobId": job.pk, "status": job.status})


def _discard(artifacts: list[Artifact]) -> None:
    """Remove uploads of a request that failed after storing them."""
    store = get_artifact_store()
    for artifact in artifacts:
        store.delete(artifact.key)
        artifact.delete()
