"""Jobs, the state of each of their nodes, their event log and the artifacts they produce."""

from __future__ import annotations

import hashlib
import secrets
import uuid
from typing import Any

from django.conf import settings
from django.db import models

from apps.graphs.walker import TERMINAL_STATES


class Job(models.Model):
    """One run of a graph for one user. State lives here, not in the broker."""

    class Status(models.TextChoices):
        QUEUED = "queued"
        RUNNING = "running"
        COMPLETED = "completed"
        FAILED = "failed"
        CANCELLED = "cancelled"

    FINISHED = (Status.COMPLETED, Status.FAILED, Status.CANCELLED)

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="jobs"
    )
    graph = models.OneToOneField("graphs.Graph", on_delete=models.PROTECT, related_name="job")
    template = models.CharField(max_length=100, blank=True, default="")
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.QUEUED)
    progress = models.FloatField(default=0.0)
    error = models.JSONField(null=True, blank=True)
    # Last sequence number handed to a JobEvent; bumped in the same transaction as the insert.
    event_seq = models.PositiveIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["owner", "-created_at"]), models.Index(fields=["status"])]

    def __str__(self) -> str:
        return f"{self.template or 'graph'} {self.id} ({self.status})"

    @property
    def is_finished(self) -> bool:
        return self.status in self.FINISHED


class NodeRun(models.Model):
    """The state of one node of one job. Changed only by conditional updates."""

    # The choices spell out ``walker.NodeState`` (Django needs the members written here);
    # tests/graphs/test_node_states.py fails when the two differ.
    class Status(models.TextChoices):
        PENDING = "pending"
        QUEUED = "queued"
        RUNNING = "running"
        COMPLETED = "completed"
        FAILED = "failed"
        SKIPPED = "skipped"
        CANCELLED = "cancelled"

    TERMINAL = tuple(sorted(TERMINAL_STATES))

    job = models.ForeignKey(Job, on_delete=models.CASCADE, related_name="node_runs")
    node_id = models.CharField(max_length=64)
    service = models.CharField(max_length=100)
    queue = models.CharField(max_length=16)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    # Attempt 0 has not been dispatched; each dispatch (retry or recovery) bumps it.
    attempt = models.PositiveIntegerField(default=0)
    max_attempts = models.PositiveIntegerField(default=1)
    # Attempts that ended because their worker vanished; they do not use up max_attempts.
    lost_attempts = models.PositiveIntegerField(default=0)
    # The attempt number before the current round (a retried job starts a new round).
    round_start = models.PositiveIntegerField(default=0)
    # Incoming edges whose source has not completed yet, while the node is pending: the
    # completion that brings it to 0 (one UPDATE ... RETURNING) is the one that releases
    # the node (graphs without ``on_failure`` edges, on PostgreSQL; see engine.release).
    waiting = models.IntegerField(default=0, db_default=0)
    task_id = models.CharField(max_length=200, blank=True, default="")
    worker = models.CharField(max_length=200, blank=True, default="")
    progress = models.FloatField(default=0.0)
    progress_weight = models.FloatField(default=1.0)
    dispatched_at = models.DateTimeField(null=True, blank=True)
    # The outbox: a dispatch (status queued, this attempt's task_id) is written with
    # sent_at null in the transaction that queues the node; the relay sets it once the
    # broker has the message, and the sweeper resends a queued run still unsent.
    sent_at = models.DateTimeField(null=True, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    output = models.JSONField(null=True, blank=True)
    error = models.JSONField(null=True, blank=True)
    cache_key = models.CharField(max_length=64, blank=True, default="", db_index=True)
    cached_from = models.ForeignKey(
        "self", on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )

    class Meta:
        # The table keeps the name it had when this model lived in apps.graphs.
        db_table = "graphs_noderun"
        ordering = ["job_id", "id"]
        constraints = [
            models.UniqueConstraint(fields=["job", "node_id"], name="noderun_unique_node")
        ]
        indexes = [
            models.Index(fields=["status", "heartbeat_at"], name="graphs_node_status_d769ff_idx"),
            models.Index(
                fields=["dispatched_at"],
                name="noderun_unsent",
                condition=models.Q(status="queued", sent_at=None),
            ),
        ]

    def __str__(self) -> str:
        return f"{self.node_id} ({self.status}, attempt {self.attempt})"


class JobEvent(models.Model):
    """A state change of a job; ``seq`` is gap-free and increasing per job."""

    job = models.ForeignKey(Job, on_delete=models.CASCADE, related_name="events")
    seq = models.PositiveIntegerField()
    type = models.CharField(max_length=32)
    # null for job-level events, as in job-event.schema.json
    node_id = models.CharField(max_length=64, null=True, blank=True)  # noqa: DJ001
    payload = models.JSONField(default=dict)
    # The job's status and progress when the event was written, so a client can show
    # the job from its event stream alone.
    job_status = models.CharField(max_length=16, default="")
    job_progress = models.FloatField(default=0.0)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["job_id", "seq"]
        constraints = [models.UniqueConstraint(fields=["job", "seq"], name="jobevent_unique_seq")]

    def __str__(self) -> str:
        return f"{self.job_id}#{self.seq} {self.type}"

    def to_json(self) -> dict[str, Any]:
        """The ``job-event.schema.json`` form."""
        return {
            "job_id": str(self.job_id),
            "seq": self.seq,
            "type": self.type,
            "node_id": self.node_id,
            "payload": self.payload,
            "job_status": self.job_status,
            "job_progress": round(self.job_progress, 4),
            "created_at": self.created_at.isoformat(),
        }


class Artifact(models.Model):
    """A stored object a job produced or a user uploaded."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="artifacts"
    )
    job = models.ForeignKey(
        Job, on_delete=models.SET_NULL, null=True, blank=True, related_name="artifacts"
    )
    node_id = models.CharField(max_length=64, blank=True, default="")
    name = models.CharField(max_length=200, blank=True, default="")
    bucket = models.CharField(max_length=200)
    key = models.CharField(max_length=512)
    size_bytes = models.BigIntegerField()
    sha256 = models.CharField(max_length=64, db_index=True)
    content_type = models.CharField(max_length=200)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(fields=["bucket", "key"], name="artifact_unique_object")
        ]

    def __str__(self) -> str:
        return f"{self.bucket}/{self.key}"

    def to_json(self) -> dict[str, Any]:
        """The ``artifact.schema.json`` form."""
        return {
            "id": str(self.id),
            "bucket": self.bucket,
            "key": self.key,
            "size_bytes": self.size_bytes,
            "sha256": self.sha256,
            "content_type": self.content_type,
            "created_at": self.created_at.isoformat(),
        }


class ReusedArtifact(models.Model):
    """An artifact a job holds because one of its nodes was answered from the cache.

    The bytes and the ``Artifact`` row stay those of the run that stored them; this row
    lists the artifact among the reusing job's results (under the reusing node) and is a
    reference that keeps it alive when the job that made it is deleted."""

    job = models.ForeignKey(Job, on_delete=models.CASCADE, related_name="reused_artifacts")
    node_id = models.CharField(max_length=64)
    artifact = models.ForeignKey(Artifact, on_delete=models.CASCADE, related_name="reuses")

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["job", "node_id", "artifact"], name="reusedartifact_unique"
            )
        ]

    def __str__(self) -> str:
        return f"{self.job_id}:{self.node_id} reuses {self.artifact_id}"


class JobInput(models.Model):
    """An artifact a job's graph names (an upload or an earlier result), written when the
    job is stored: what keeps an artifact alive and says who uses it, found by index
    instead of by reading every graph document."""

    job = models.ForeignKey(Job, on_delete=models.CASCADE, related_name="input_refs")
    artifact = models.ForeignKey(Artifact, on_delete=models.CASCADE, related_name="named_by")

    class Meta:
        constraints = [models.UniqueConstraint(fields=["job", "artifact"], name="jobinput_unique")]

    def __str__(self) -> str:
        return f"{self.job_id} names {self.artifact_id}"


class ApiToken(models.Model):
    """A revocable bearer token for API clients. Only its sha256 is stored; the token
    itself is shown once, when it is created."""

    PREFIX = "msb_"

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_tokens"
    )
    name = models.CharField(max_length=100, blank=True, default="")
    token_hash = models.CharField(max_length=64, unique=True, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.user} {self.name or self.pk}{' (revoked)' if self.revoked_at else ''}"

    @staticmethod
    def hash(token: str) -> str:
        return hashlib.sha256(token.encode()).hexdigest()

    @classmethod
    def generate(cls) -> str:
        """A new token text (its hash is what gets stored)."""
        return cls.PREFIX + secrets.token_urlsafe(32)

    @classmethod
    def issue(cls, user: Any, name: str = "") -> tuple[ApiToken, str]:
        """Create a token for ``user``; return the record and the token text (shown once)."""
        token = cls.generate()
        return cls.objects.create(user=user, name=name, token_hash=cls.hash(token)), token


class Profile(models.Model):
    """A trained result a user reuses in later jobs: a voice profile or an identity LoRA."""

    class Kind(models.TextChoices):
        VOICE = "voice"
        LORA = "lora"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="profiles"
    )
    kind = models.CharField(max_length=16, choices=Kind.choices)
    name = models.CharField(max_length=200, blank=True, default="")
    # The job and node that built it; a rerun of the same node updates it in place.
    job = models.ForeignKey(
        Job, on_delete=models.SET_NULL, null=True, blank=True, related_name="profiles"
    )
    node_id = models.CharField(max_length=64, blank=True, default="")
    # Measurements and artifact references (e.g. the cleaned reference clip).
    data = models.JSONField(default=dict)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["job", "node_id"],
                name="profile_unique_node",
                condition=models.Q(job__isnull=False),
            )
        ]

    def __str__(self) -> str:
        return f"{self.kind} profile {self.name or self.pk}"

    def to_json(self) -> dict[str, Any]:
        return {
            "id": str(self.pk),
            "kind": self.kind,
            "name": self.name,
            "job_id": str(self.job_id) if self.job_id else None,
            "node_id": self.node_id,
            "data": self.data,
            "created_at": self.created_at.isoformat(),
        }
