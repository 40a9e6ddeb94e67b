"""Operators' view of graphs and node runs."""

from __future__ import annotations

from django.contrib import admin

from apps.graphs.models import Graph, NodeRun


@admin.register(Graph)
class GraphAdmin(admin.ModelAdmin):
    list_display = ("id", "workflow_id", "node_count", "created_at")
    search_fields = ("id", "workflow_id")
    readonly_fields = ("id", "workflow_id", "document", "node_count", "created_at")


@admin.register(NodeRun)
class NodeRunAdmin(admin.ModelAdmin):
    list_display = (
        "job",
        "node_id",
        "service",
        "queue",
        "status",
        "attempt",
        "worker",
        "heartbeat_at",
        "started_at",
        "finished_at",
    )
    list_filter = ("status", "queue", "service")
    search_fields = ("job__id", "node_id", "task_id", "worker")
    readonly_fields = [field.name for field in NodeRun._meta.fields]
