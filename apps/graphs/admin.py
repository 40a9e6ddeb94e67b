"""Operators' view of stored graphs and users' workflow templates."""

from __future__ import annotations

from django.contrib import admin

from apps.graphs.models import Graph, WorkflowTemplate


@admin.register(Graph)
class GraphAdmin(admin.ModelAdmin):
    list_display = ("id", "workflow_id", "node_count", "created_at")
    search_fields = ("id", "workflow_id")
    readonly_fields = ("id", "workflow_id", "document", "node_count", "created_at")


@admin.register(WorkflowTemplate)
class WorkflowTemplateAdmin(admin.ModelAdmin):
    list_display = ("id", "label", "owner", "created_at")
    search_fields = ("id", "label", "owner__username")
    readonly_fields = ("id", "owner", "workflow", "bindings", "created_at")
