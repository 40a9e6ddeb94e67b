"""Templates and plans: ``GET /api/templates`` (the pipelines a user can start, theirs
included, and whether the workers that are up now can run every step of each),
and ``POST``/``DELETE /api/templates`` (a user's ComfyUI workflow kept as a template).
``POST /api/plan`` lives in :mod:`apps.jobs.plans`: it checks artifacts as a job does."""

from __future__ import annotations

import uuid
from typing import Any

from django.conf import settings
from django.contrib.auth.models import User
from django.db import transaction
from django.http import HttpRequest
from ninja import Router, Schema, Status
from pydantic import Field

from apps.capabilities.manifest import (
    live_workers,
    missing_models_reason,
    model_availability,
    models_for,
    runnable_services,
)
from apps.capabilities.registry import get_registry
from apps.graphs.models import WorkflowTemplate
from apps.graphs.planner import Template, load_templates
from apps.graphs.user_templates import as_template, graph_of
from myspinbot.error_shape import ErrorOut
from myspinbot.errors import Rejected
from myspinbot.jsonb import check_storable

router = Router(tags=["capabilities"])


class TemplateOut(Schema):
    name: str
    id: uuid.UUID | None
    label: str
    description: str
    nodes: list[dict[str, Any]]
    edges: list[dict[str, Any]]
    requiredInputs: list[str]
    available: bool
    unavailableReason: str
    models: list[dict[str, Any]]


class TemplateList(Schema):
    templates: list[TemplateOut]


class WorkflowTemplateIn(Schema):
    """An API-format ComfyUI workflow (``Save (API)``) and its sidecar of bindings."""

    label: str = Field(min_length=1, max_length=100, pattern=r"\S")
    description: str = Field("", max_length=2000)
    workflow: dict[str, Any]
    bindings: dict[str, Any] = {}


def _caller(request: HttpRequest) -> User:
    user = request.auth  # type: ignore[attr-defined]
    assert isinstance(user, User)
    return user


@router.get("/templates", response=TemplateList)
def templates(request: HttpRequest) -> dict[str, Any]:
    """Pipelines with their nodes and parameter schemas, whether the workers that are up
    now can run every step (if not, why: the models missing and the command that fetches
    them), and the models of the manifest they use: the built-in ones, then the caller's
    workflow templates."""
    workers = live_workers()
    runnable, models = runnable_services(workers), model_availability(workers)
    listed = [template_json(t, runnable, models) for t in load_templates().values()]
    for record in WorkflowTemplate.objects.filter(owner=_caller(request)):
        listed.append(template_json(as_template(record), runnable, models, record.pk))
    return {"templates": listed}


def template_json(
    template: Template,
    runnable: set[str],
    models: list[dict[str, Any]],
    record_id: uuid.UUID | None = None,
) -> dict[str, Any]:
    """A template as listed; ``id`` is the record's for a user's workflow, else None."""
    registry = get_registry()
    nodes = []
    for node in template.graph["nodes"]:
        capability = registry.get(node["service"]) if node["service"] in registry else None
        nodes.append(
            {
                "id": node["id"],
                "name": node.get("name", node["id"]),
                "service": node["service"],
                "queue": capability.queue if capability else None,
                "params": node.get("params", {}),
                "paramsSchema": capability.params_schema if capability else None,
                "tags": node.get("tags", []),
            }
        )
    missing = sorted(s for s in template.services if s not in runnable)
    reason = f"no worker runs {', '.join(missing)}" if missing else ""
    because = missing_models_reason(missing, models)
    if because:
        reason = f"{reason}: {because}"
    return {
        "name": template.name,
        "id": record_id,
        "label": template.label,
        "description": template.description,
        "nodes": nodes,
        "edges": template.graph["edges"],
        "requiredInputs": template.required_inputs(),
        "available": not missing,
        "unavailableReason": reason,
        "models": models_for(template.services, models),
    }


@router.post("/templates", response={201: TemplateOut, 401: ErrorOut, 422: ErrorOut})
def create_template(request: HttpRequest, body: WorkflowTemplateIn) -> Status[dict[str, Any]]:
    """Keep an API-format ComfyUI workflow and its sidecar as one of the caller's
    templates (a graph of one ``comfyui.workflow`` node), checked as a job would be."""
    owner = _caller(request)
    check_storable(body.workflow, "workflow")
    check_storable(body.bindings, "bindings")
    graph_of(body.label, body.workflow, body.bindings)
    with transaction.atomic():
        # The user row's lock counts concurrent uploads one after the other.
        User.objects.select_for_update().filter(pk=owner.pk).first()
        count = WorkflowTemplate.objects.filter(owner=owner).count()
        if count >= settings.MYSPINBOT_MAX_WORKFLOW_TEMPLATES:
            raise Rejected(
                422,
                "too_many_templates",
                f"you keep {count} workflow templates; the limit is "
                f"{settings.MYSPINBOT_MAX_WORKFLOW_TEMPLATES} (delete one first)",
            )
        record = WorkflowTemplate.objects.create(
            owner=owner,
            label=body.label.strip(),
            description=body.description.strip(),
            workflow=body.workflow,
            bindings=body.bindings,
        )
    workers = live_workers()
    runnable, models = runnable_services(workers), model_availability(workers)
    return Status(201, template_json(as_template(record), runnable, models, record.pk))


@router.delete("/templates/{template_id}", response={204: None, 401: ErrorOut, 404: ErrorOut})
def delete_template(request: HttpRequest, template_id: uuid.UUID) -> Status[None]:
    """Delete one of the caller's workflow templates (jobs made from it keep their graph)."""
    deleted, _ = WorkflowTemplate.objects.filter(pk=template_id, owner=_caller(request)).delete()
    if not deleted:
        raise Rejected(404, "not_found", f"no template {template_id}")
    return Status(204, None)
