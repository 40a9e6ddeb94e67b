"""The stored graph of a job, as submitted."""

from __future__ import annotations

import uuid

from django.db import models


class Graph(models.Model):
    """The ``langgraph.v1`` document a job runs, as validated when it was submitted.

    The document is not rewritten while the job runs; live node state is in
    :class:`apps.jobs.models.NodeRun` and merged into the document when a client asks for it.
    """

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    workflow_id = models.CharField(max_length=200, blank=True, default="")
    document = models.JSONField()
    node_count = models.PositiveIntegerField()
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return f"graph {self.workflow_id or self.id} ({self.node_count} nodes)"
