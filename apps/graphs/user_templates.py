"""Users' ComfyUI workflows as templates: one ``comfyui.workflow`` node each.

A workflow template's graph runs the workflow with its sidecar's bindings. A bound image
or audio becomes a job input of the same name (``input: {"image": null}``); a bound
prompt, negative prompt or seed becomes a node param whose default is the value the
workflow was exported with, so a job may override it. Only the owner lists, plans or
deletes their templates.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.contrib.auth.models import User

from apps.capabilities.registry import get_registry
from apps.capabilities.services.comfyui_workflow import workflow as wf
from apps.graphs.models import WORKFLOW_PREFIX, WorkflowTemplate
from apps.graphs.planner import Template, load_templates
from apps.graphs.validation import GraphValidationError, ValidationIssue, validate_graph

SERVICE = "comfyui.workflow"
NODE_ID = "workflow"
FILE_BINDINGS = ("image", "audio")
VALUE_BINDINGS = ("prompt", "negative_prompt", "seed")


def graph_of(label: str, workflow: Any, bindings: Any) -> dict[str, Any]:
    """The ``langgraph.v1`` graph that runs ``workflow`` with ``bindings``, validated.

    Raises ``GraphValidationError``: rule ``invalid_workflow`` naming each problem the
    workflow code finds (a node without ``class_type``, a link to an unknown node, a
    binding to a missing node or field), else the graph validator's issues."""
    problems = wf.problems(workflow, bindings)
    if problems:
        raise GraphValidationError(
            [ValidationIssue("invalid_workflow", problem, path="workflow") for problem in problems]
        )
    graph = _graph(label, workflow, bindings)
    validate_graph(graph, registry=get_registry(), max_nodes=settings.MYSPINBOT_MAX_GRAPH_NODES)
    return graph


def _graph(label: str, workflow: dict[str, Any], bindings: dict[str, Any]) -> dict[str, Any]:
    params: dict[str, Any] = {"workflow": workflow, "bindings": bindings}
    for name in VALUE_BINDINGS:
        if name in bindings:
            exported = workflow[bindings[name]["node"]]["inputs"][bindings[name]["field"]]
            if _fits(name, exported):
                params[name] = exported
    node = {
        "id": NODE_ID,
        "name": label,
        "service": SERVICE,
        "plane": "cpu",
        "params": params,
        "input": {name: None for name in FILE_BINDINGS if name in bindings},
        "progressWeight": 1,
    }
    return {
        "schema": "langgraph.v1",
        "workflowId": "comfyui-workflow",
        "metadata": {"catalogue": "user"},
        "nodes": [node],
        "edges": [],
    }


def _fits(name: str, value: Any) -> bool:
    """Whether the exported value can be the param's default (a link cannot)."""
    if name == "seed":
        return isinstance(value, int) and not isinstance(value, bool) and value >= 0
    if name == "prompt":
        return isinstance(value, str) and bool(value.strip())
    return isinstance(value, str)


def as_template(record: WorkflowTemplate) -> Template:
    return Template(
        name=record.name,
        label=record.label,
        description=record.description or "Your ComfyUI workflow",
        # Checked when it was uploaded; a job from it is validated again when submitted.
        graph=_graph(record.label, record.workflow, record.bindings),
    )


def templates_for(owner: User, wanted: str | None = None) -> dict[str, Template]:
    """The built-in templates and ``owner``'s workflow templates (queried only when
    ``wanted`` is None or names one of them)."""
    templates = dict(load_templates())
    if wanted is None or wanted.startswith(WORKFLOW_PREFIX):
        for record in WorkflowTemplate.objects.filter(owner=owner):
            templates[record.name] = as_template(record)
    return templates
