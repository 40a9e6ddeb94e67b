"""The stored graph of a job and the state of each of its nodes."""

from __future__ import annotations

import uuid

from django.db import models


class Graph(models.Model):
    """The ``langgraph.v1`` document a job runs, as validated when it was submitted.

    The document is not rewritten while the job runs; live node state is in
    :class:`NodeRun` and merged into the document when a client asks for it.
    """

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    workflow_id = models.CharField(max_length=200, blank=True, default="")
    document = models.JSONField()
    node_count = models.PositiveIntegerField()
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return f"graph {self.workflow_id or self.id} ({self.node_count} nodes)"


class NodeRun(models.Model):
    """The state of one node of one job. Changed only by conditional updates."""

    class Status(models.TextChoices):
        PENDING = "pending"
        QUEUED = "queued"
        RUNNING = "running"
        COMPLETED = "completed"
        FAILED = "failed"
        SKIPPED = "skipped"
        CANCELLED = "cancelled"

    TERMINAL = (Status.COMPLETED, Status.FAILED, Status.SKIPPED, Status.CANCELLED)

    job = models.ForeignKey("jobs.Job", on_delete=models.CASCADE, related_name="node_runs")
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
    task_id = models.CharField(max_length=200, blank=True, default="")
    worker = models.CharField(max_length=200, blank=True, default="")
    progress = models.FloatField(default=0.0)
    progress_weight = models.FloatField(default=1.0)
    dispatched_at = models.DateTimeField(null=True, blank=True)
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
        ordering = ["job_id", "id"]
        constraints = [
            models.UniqueConstraint(fields=["job", "node_id"], name="noderun_unique_node")
        ]
        indexes = [models.Index(fields=["status", "heartbeat_at"])]

    def __str__(self) -> str:
        return f"{self.node_id} ({self.status}, attempt {self.attempt})"
