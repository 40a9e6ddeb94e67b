"""``GET /api/templates``: the pipelines a user can start, and whether the workers that
are up now can run every step of each."""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest
from ninja import Router, Schema

from apps.capabilities.manifest import (
    live_workers,
    missing_models_reason,
    model_availability,
    models_for,
    runnable_services,
)
from apps.capabilities.registry import get_registry
from apps.graphs.planner import load_templates

router = Router(tags=["capabilities"])


class TemplateOut(Schema):
    name: str
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


@router.get("/templates", response=TemplateList)
def templates(request: HttpRequest) -> dict[str, Any]:
    """Pipelines with their nodes and parameter schemas, whether the workers that are up
    now can run every step (if not, why: the models missing and the command that fetches
    them), and the models of the manifest they use."""
    registry = get_registry()
    workers = live_workers()
    runnable = runnable_services(workers)
    models = model_availability(workers)
    result = []
    for template in load_templates().values():
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
        result.append(
            {
                "name": template.name,
                "label": template.label,
                "description": template.description,
                "nodes": nodes,
                "edges": template.graph["edges"],
                "requiredInputs": template.required_inputs(),
                "available": not missing,
                "unavailableReason": reason,
                "models": models_for(template.services, models),
            }
        )
    return {"templates": result}
