"""Operators' view of jobs: status at a glance, cancel and retry from the list."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from uuid import UUID

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils import timezone

from apps.jobs import engine
from apps.jobs.apps import announce
from apps.jobs.models import ApiToken, Artifact, Job, JobEvent, NodeRun, Profile


class NodeRunInline(admin.TabularInline):
    model = NodeRun
    fields = (
        "node_id",
        "service",
        "queue",
        "status",
        "attempt",
        "progress",
        "worker",
        "heartbeat_at",
        "started_at",
        "finished_at",
        "error",
    )
    readonly_fields = fields
    extra = 0
    can_delete = False
    show_change_link = True


@admin.register(Job)
class JobAdmin(admin.ModelAdmin):
    list_display = (
        "id",
        "owner",
        "template",
        "status",
        "progress_percent",
        "created_at",
        "started_at",
        "finished_at",
    )
    list_filter = ("status", "template", "created_at")
    search_fields = ("id", "owner__username", "template")
    readonly_fields = (
        "id",
        "owner",
        "graph",
        "template",
        "status",
        "progress",
        "error",
        "event_seq",
        "created_at",
        "started_at",
        "finished_at",
        "updated_at",
    )
    inlines = [NodeRunInline]
    actions = ["cancel_jobs", "retry_jobs"]
    date_hierarchy = "created_at"

    @admin.display(description="progress")
    def progress_percent(self, job: Job) -> str:
        return f"{job.progress:.0%}"

    @admin.action(description="Cancel selected jobs")
    def cancel_jobs(self, request: HttpRequest, queryset: QuerySet[Job]) -> None:
        self._each(request, queryset, engine.cancel_job, "cancelled")

    @admin.action(description="Retry failed or cancelled nodes of selected jobs")
    def retry_jobs(self, request: HttpRequest, queryset: QuerySet[Job]) -> None:
        self._each(request, queryset, engine.retry_job, "retried")

    def _each(
        self,
        request: HttpRequest,
        queryset: QuerySet[Job],
        action: Callable[[UUID], Job],
        verb: str,
    ) -> None:
        done = 0
        for job in queryset:
            try:
                action(job.pk)
                done += 1
            except engine.JobStateError as error:
                self.message_user(request, str(error), messages.WARNING)
        if done:
            self.message_user(request, f"{done} job(s) {verb}.", messages.SUCCESS)


@admin.register(JobEvent)
class JobEventAdmin(admin.ModelAdmin):
    list_display = ("job", "seq", "type", "node_id", "created_at")
    list_filter = ("type",)
    search_fields = ("job__id", "node_id")
    readonly_fields = ("job", "seq", "type", "node_id", "payload", "created_at")


@admin.register(Artifact)
class ArtifactAdmin(admin.ModelAdmin):
    list_display = (
        "id",
        "owner",
        "job",
        "node_id",
        "name",
        "content_type",
        "size_bytes",
        "created_at",
    )
    list_filter = ("content_type",)
    search_fields = ("id", "sha256", "key", "owner__username")
    readonly_fields = (
        "id",
        "owner",
        "job",
        "node_id",
        "name",
        "bucket",
        "key",
        "size_bytes",
        "sha256",
        "content_type",
        "created_at",
    )


@admin.register(ApiToken)
class ApiTokenAdmin(admin.ModelAdmin):
    """Tokens are created here (the token is shown once, in a message) and revoked by
    setting ``revoked_at`` (action below); only their sha256 is stored."""

    list_display = ("user", "name", "created_at", "last_used_at", "revoked_at")
    list_filter = ("revoked_at",)
    search_fields = ("user__username", "name")
    fields = ("user", "name", "created_at", "last_used_at", "revoked_at")
    readonly_fields = ("created_at", "last_used_at", "revoked_at")
    actions = ["revoke"]

    def save_model(self, request: HttpRequest, obj: ApiToken, form: Any, change: bool) -> None:
        if change:
            super().save_model(request, obj, form, change)
            return
        token = ApiToken.generate()
        obj.token_hash = ApiToken.hash(token)
        super().save_model(request, obj, form, change)
        self.message_user(
            request,
            f"Token for {obj.user} (copy it now, it is not shown again): {token}",
            messages.WARNING,
        )

    @admin.action(description="Revoke selected tokens")
    def revoke(self, request: HttpRequest, queryset: QuerySet[ApiToken]) -> None:
        live = queryset.filter(revoked_at=None)
        users = set(live.values_list("user_id", flat=True))
        count = live.update(revoked_at=timezone.now())
        for user_id in users:  # their open WebSockets check their token now
            announce(user_id)
        self.message_user(request, f"{count} token(s) revoked.", messages.SUCCESS)


@admin.register(Profile)
class ProfileAdmin(admin.ModelAdmin):
    list_display = ("id", "owner", "kind", "name", "job", "created_at")
    list_filter = ("kind",)
    search_fields = ("id", "name", "owner__username")
    readonly_fields = ("id", "owner", "kind", "job", "node_id", "data", "created_at", "updated_at")


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
