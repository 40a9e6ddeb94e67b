"""Operators' view of stored graphs."""

from __future__ import annotations

from django.contrib import admin

from apps.graphs.models import Graph


@admin.register(Graph)
class GraphAdmin(admin.ModelAdmin):
    list_display = ("id", "workflow_id", "node_count", "created_at")
    search_fields = ("id", "workflow_id")
    readonly_fields = ("id", "workflow_id", "document", "node_count", "created_at")
