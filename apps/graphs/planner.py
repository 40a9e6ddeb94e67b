"""Templates: named graphs stored as JSON files in ``pipelines/``, and the planner
that turns a template plus per-node params and job inputs into a validated graph.

A template node asks for a job input by listing its name in ``input`` with the
value ``null``; the planner fills it from the job's ``inputs`` and refuses a job
that leaves one out.
"""

from __future__ import annotations

import copy
import functools
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from django.conf import settings

from apps.capabilities.manifest import live_workers, runnable_services
from apps.capabilities.registry import CapabilityRegistry, get_registry
from apps.graphs.document import GraphDocument
from apps.graphs.validation import GraphValidationError, ValidationIssue, validate_graph

PIPELINES_DIR = Path(__file__).resolve().parent / "pipelines"


class UnknownTemplate(KeyError):
    def __init__(self, name: str, known: list[str]) -> None:
        self.message = f"unknown template {name!r}; templates: {', '.join(known) or 'none'}"
        super().__init__(self.message)

    def __str__(self) -> str:
        return self.message


@dataclass(frozen=True)
class Template:
    name: str
    label: str
    description: str
    graph: dict[str, Any]

    @property
    def services(self) -> list[str]:
        return sorted({node["service"] for node in self.graph["nodes"]})

    def required_inputs(self) -> list[str]:
        return sorted(
            {
                key
                for node in self.graph["nodes"]
                for key, value in node.get("input", {}).items()
                if value is None
            }
        )


@functools.cache
def load_templates() -> dict[str, Template]:
    """Every template in ``pipelines/``, by file name; each is validated as it loads."""
    templates = {}
    for path in sorted(PIPELINES_DIR.glob("*.json")):
        data = json.loads(path.read_text())
        templates[path.stem] = Template(
            name=path.stem,
            label=data["label"],
            description=data["description"],
            graph=data["graph"],
        )
    return templates


def get_template(name: str) -> Template:
    templates = load_templates()
    if name not in templates:
        raise UnknownTemplate(name, sorted(templates))
    return templates[name]


def plan(
    name: str,
    params: dict[str, dict[str, Any]] | None = None,
    inputs: dict[str, Any] | None = None,
    *,
    metadata: dict[str, Any] | None = None,
    registry: CapabilityRegistry | None = None,
) -> GraphDocument:
    """The template's graph with ``params`` merged over each node's params and the job
    ``inputs`` filled in, validated. Raises ``UnknownTemplate`` or ``GraphValidationError``."""
    template = get_template(name)
    document = copy.deepcopy(template.graph)
    params, inputs = params or {}, inputs or {}
    nodes = {node["id"]: node for node in document["nodes"]}
    issues = [
        ValidationIssue(
            "unknown_node",
            f"template {name!r} has no node {node_id!r}",
            node=node_id,
            path=f"params.{node_id}",
        )
        for node_id in params
        if node_id not in nodes
    ]
    for node_id, overrides in params.items():
        if node_id in nodes:
            if not isinstance(overrides, dict):
                issues.append(
                    ValidationIssue(
                        "schema",
                        "params of a node must be an object",
                        node=node_id,
                        path=f"params.{node_id}",
                    )
                )
                continue
            nodes[node_id]["params"] = {**nodes[node_id].get("params", {}), **overrides}
    for node in document["nodes"]:
        for key, value in node.get("input", {}).items():
            if value is None:
                if key not in inputs:
                    issues.append(
                        ValidationIssue(
                            "missing_input",
                            f"input {key!r} is required",
                            node=node["id"],
                            path=f"inputs.{key}",
                        )
                    )
                else:
                    node["input"][key] = inputs[key]
    if issues:
        raise GraphValidationError(issues)
    document["metadata"] = {**document.get("metadata", {}), **(metadata or {}), "template": name}
    return validate_graph(
        document,
        registry=registry or get_registry(),
        max_nodes=settings.MYSPINBOT_MAX_GRAPH_NODES,
    )


def talking_video_template(photos: int) -> tuple[str, dict[str, Any]]:
    """``narrated_video`` when the workers up now run every step of it (lip-sync included)
    and there are enough photos for its identity LoRA; else ``quick``, and the job's
    metadata says why."""
    runnable = runnable_services(live_workers())
    missing = [s for s in get_template("narrated_video").services if s not in runnable]
    reasons = [f"no worker runs {', '.join(missing)}"] if missing else []
    count = get_registry().get("lora.train").input("photos").count
    assert count is not None
    if not count[0] <= photos <= count[1]:
        reasons.append(f"its identity LoRA needs {count[0]} to {count[1]} photos, not {photos}")
    if not reasons:
        return "narrated_video", {}
    return "quick", {
        "fallback": f"narrated_video cannot run ({'; '.join(reasons)}): "
        "the quick CPU pipeline was used",
    }
