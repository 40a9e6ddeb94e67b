"""The stored graph of a job, as submitted, and the workflows users keep as templates."""

from __future__ import annotations

import uuid

from django.conf import settings
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


# Template names of users' workflows start with this; built-in names never contain ':'.
WORKFLOW_PREFIX = "workflow:"


class WorkflowTemplate(models.Model):
    """A user's API-format ComfyUI workflow and its sidecar, kept as a template of one
    ``comfyui.workflow`` node (:mod:`apps.graphs.user_templates`). Only its owner sees it."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="workflow_templates"
    )
    label = models.CharField(max_length=100)
    description = models.TextField(blank=True, default="")
    workflow = models.JSONField()
    bindings = models.JSONField(default=dict)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["created_at", "id"]

    def __str__(self) -> str:
        return f"workflow template {self.label!r} of {self.owner_id}"

    @property
    def name(self) -> str:
        """The name a job gives as its ``template``."""
        return f"{WORKFLOW_PREFIX}{self.id}"
