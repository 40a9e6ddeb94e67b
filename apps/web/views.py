"""The pages of the web UI.

Each view renders what the page shows first, scoped to the signed-in user; what
changes afterwards (job states, uploads, submissions, cancel and retry) goes through
the REST API and the ``/ws/jobs/`` stream from the page's JavaScript modules in
``static/web/``. Views here only read, except deleting a profile.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.contrib.auth.models import User
from django.contrib.auth.views import LoginView
from django.core.paginator import Paginator
from django.db.models.fields.json import KeyTextTransform, KeyTransform
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.utils import timezone
from django.views.decorators.http import require_POST

from apps.capabilities.manifest import manifest
from apps.capabilities.registry import get_registry
from apps.graphs.planner import load_templates
from apps.jobs.models import Job, Profile
from myspinbot.queues import broker_queues

PAGE_SIZE = 20


class SignInView(LoginView):
    template_name = "web/login.html"
    redirect_authenticated_user = True


def _user(request: HttpRequest) -> User:
    user = request.user
    assert isinstance(user, User), "login_required let only signed-in users through"
    return user


def _is_htmx(request: HttpRequest) -> bool:
    return request.headers.get("HX-Request") == "true"


def duration_text(start: datetime | None, end: datetime | None) -> str:
    """``1h 02m``, ``3m 05s`` or ``12s``; empty without a start."""
    if start is None:
        return ""
    seconds = max(0, int(((end or timezone.now()) - start).total_seconds()))
    hours, rest = divmod(seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    if hours:
        return f"{hours}h {minutes:02d}m"
    if minutes:
        return f"{minutes}m {seconds:02d}s"
    return f"{seconds}s"


def pipeline_label(template: str, metadata_template: str | None) -> str:
    """What to call a job's pipeline: the template's label, also for a graph built from
    a template (its metadata names it), else "Custom graph"."""
    templates = load_templates()
    name = template or metadata_template or ""
    if name in templates:
        label = templates[name].label
        return label if template else f"{label}, adapted"
    return "Custom graph"


@login_required
def jobs(request: HttpRequest) -> HttpResponse:
    """The user's jobs, newest first, a page at a time, optionally of one status."""
    status = request.GET.get("status", "")
    if status not in Job.Status.values:
        status = ""
    rows = Job.objects.filter(owner=_user(request)).annotate(
        metadata_template=KeyTextTransform("template", KeyTransform("metadata", "graph__document"))
    )
    if status:
        rows = rows.filter(status=status)
    page = Paginator(rows.order_by("-created_at"), PAGE_SIZE).get_page(request.GET.get("page"))
    for job in page:
        job.duration_text = duration_text(job.started_at, job.finished_at)  # type: ignore[attr-defined]
        job.label = pipeline_label(job.template, job.metadata_template)  # type: ignore[attr-defined]
    context = {
        "page": page,
        "status": status,
        "statuses": Job.Status.values,
        "has_any": status != "" or page.paginator.count > 0,
        "nav": "jobs",
    }
    template = "web/_jobs_table.html" if _is_htmx(request) else "web/jobs.html"
    return render(request, template, context)


@login_required
def job(request: HttpRequest, job_id: uuid.UUID) -> HttpResponse:
    """One job: its graph, events, results. Another user's job is a 404."""
    found = Job.objects.filter(pk=job_id, owner=_user(request)).select_related("graph").first()
    if found is None:
        raise Http404("no such job")
    metadata = found.graph.document.get("metadata") or {}
    label = pipeline_label(found.template, metadata.get("template"))
    return render(request, "web/job.html", {"job": found, "label": label, "nav": "jobs"})


def _upload_limits() -> dict[str, Any]:
    kinds = settings.MYSPINBOT_UPLOAD_KINDS
    return {kind: {"maxBytes": rules["max_bytes"]} for kind, rules in kinds.items()}


@login_required
def new_video(request: HttpRequest) -> HttpResponse:
    """The submission form. Pipelines and their parameter schemas come from
    ``/api/templates``; the template documents are embedded so that the page can swap a
    pipeline's profile-building step for a profile the user already has."""
    owned = Profile.objects.filter(owner=_user(request))
    voice_profiles = list(owned.filter(kind=Profile.Kind.VOICE))
    # Only a LoRA profile with stored weights can stand in for training.
    lora_profiles = list(owned.filter(kind=Profile.Kind.LORA, data__has_key="lora"))
    chosen = request.GET.get("profile", "")
    chosen_kind = next(
        (p.kind for p in [*voice_profiles, *lora_profiles] if str(p.pk) == chosen), ""
    )
    for profile in lora_profiles:
        profile.trigger = str(profile.data.get("trigger", ""))  # type: ignore[attr-defined]
    context = {
        "nav": "new",
        "voice_profiles": voice_profiles,
        "lora_profiles": lora_profiles,
        "chosen_profile": chosen,
        "page_data": {
            "graphs": {name: t.graph for name, t in load_templates().items()},
            "limits": _upload_limits(),
            "photos": get_registry().get("lora.train").input("photos").to_json()["count"],
            "profile": chosen,
            "profileKind": chosen_kind,
        },
    }
    return render(request, "web/new.html", context)


def media_refs(data: Any) -> list[dict[str, Any]]:
    """Artifact references (``{"artifact": id, "content_type": ...}``) of images and audio
    anywhere in a profile's data, each once, in the order found."""
    found: list[dict[str, Any]] = []
    seen: set[str] = set()

    def walk(value: Any) -> None:
        if isinstance(value, dict):
            kind = str(value.get("content_type", ""))
            if "artifact" in value and kind.startswith(("image/", "audio/")):
                if str(value["artifact"]) not in seen:
                    seen.add(str(value["artifact"]))
                    found.append({"id": str(value["artifact"]), "content_type": kind})
                return
            for item in value.values():
                walk(item)
        elif isinstance(value, list):
            for item in value:
                walk(item)

    walk(data)
    return found


def lora_sample(data: Any) -> list[dict[str, Any]]:
    """The newest sample image a LoRA profile stored (training keeps one every
    ``sample_every`` steps, in step order), as a one-item list; empty without one."""
    samples = data.get("samples") if isinstance(data, dict) else None
    images = media_refs(samples if isinstance(samples, list) else [])
    return [m for m in images if m["content_type"].startswith("image/")][-1:]


@login_required
def profiles(request: HttpRequest) -> HttpResponse:
    """The user's trained LoRAs and voice profiles with their samples."""
    rows = list(Profile.objects.filter(owner=_user(request)).select_related("job"))
    for profile in rows:
        lora = profile.kind == Profile.Kind.LORA
        profile.media = lora_sample(profile.data) if lora else media_refs(profile.data)  # type: ignore[attr-defined]
        profile.usable = not lora or "lora" in profile.data  # type: ignore[attr-defined]
    return render(request, "web/profiles.html", {"profiles": rows, "nav": "profiles"})


@login_required
@require_POST
def delete_profile(request: HttpRequest, profile_id: uuid.UUID) -> HttpResponse:
    """Forget a profile (the job that built it and its artifacts stay)."""
    deleted, _ = Profile.objects.filter(pk=profile_id, owner=_user(request)).delete()
    if not deleted:
        raise Http404("no such profile")
    messages.success(request, "The profile was deleted.")
    return redirect("web:profiles")


def queue_lengths() -> dict[str, int] | None:
    """Messages waiting in each queue, or None when the broker does not answer."""
    from myspinbot.celery import app

    names = list(broker_queues().values())
    try:
        with app.connection_for_read() as connection:
            channel: Any = connection.default_channel
            return {name: int(channel.queue_declare(name).message_count) for name in names}
    except Exception:  # the page says the broker is down instead of failing
        return None


@login_required
def system(request: HttpRequest) -> HttpResponse:
    """Workers online with their queues and devices, queue lengths, the models of the
    manifest (state, size, licence, the command that installs a missing one), operator
    links."""
    report = manifest(staff=request.user.is_staff)
    context = {
        "workers": report["workers"],
        "models": report["models"],
        "note": report["note"],
        "queues": queue_lengths(),
        "flower_url": settings.FLOWER_URL,
        "nav": "system",
    }
    template = "web/_system_status.html" if _is_htmx(request) else "web/system.html"
    return render(request, template, context)
