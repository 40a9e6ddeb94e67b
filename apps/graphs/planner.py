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
from collections.abc import Callable, Mapping
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


def get_template(name: str, templates: Mapping[str, Template] | None = None) -> Template:
    """The template ``name`` of ``templates`` (default: the built-in ones)."""
    templates = load_templates() if templates is None else templates
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
    templates: Mapping[str, Template] | None = None,
) -> GraphDocument:
    """The template's graph with ``params`` merged over each node's params and the job
    ``inputs`` filled in, validated. ``templates`` are those to pick from (default: the
    built-in ones; a user's own come from :func:`apps.graphs.user_templates.templates_for`).
    Raises ``UnknownTemplate`` or ``GraphValidationError``."""
    template = get_template(name, templates)
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
    offered = _gpu_services_offered()
    choices = {
        **choose_speech(document, lambda: GPU_SPEECH in offered()),
        **choose_lipsync(document, lambda: GPU_LIPSYNC in offered()),
    }
    document["metadata"] = {
        **document.get("metadata", {}),
        **choices,
        **(metadata or {}),
        "template": name,
    }
    return validate_graph(
        document,
        registry=registry or get_registry(),
        max_nodes=settings.MYSPINBOT_MAX_GRAPH_NODES,
    )


CPU_LIPSYNC, GPU_LIPSYNC = "lipsync.sync", "lipsync.gpu"
CPU_SPEECH, GPU_SPEECH, PROFILE_SERVICE = "tts.speak", "tts.clone", "voice.build_profile"


def _gpu_services_offered() -> Callable[[], list[str]]:
    """The services the workers that are up offer, asked once and only when first needed
    (and only when the setting ``MYSPINBOT_LIPSYNC_GPU_PROBE`` is on: the broadcast waits
    for its timeout)."""
    found: list[list[str]] = []

    def offered() -> list[str]:
        if not found:
            probe = getattr(settings, "MYSPINBOT_LIPSYNC_GPU_PROBE", True)
            found.append(list(runnable_services(live_workers())) if probe else [])
        return found[0]

    return offered


def choose_lipsync(document: dict[str, Any], offered: Callable[[], bool]) -> dict[str, str]:
    """Run each CPU lip-sync node (``lipsync.sync``) on the GPU service instead when
    ``offered()`` (asked only if there is such a node) says a worker offers it; the job's
    metadata says which backend was chosen and why, nothing without a lip-sync node."""
    if not any(node["service"] == CPU_LIPSYNC for node in document["nodes"]):
        return {}
    if not offered():
        return {
            "lipsync": (
                "CPU face-mesh backend (lipsync.sync): no worker offers a GPU lip-sync backend"
            )
        }
    for node in document["nodes"]:
        if node["service"] == CPU_LIPSYNC:
            node["service"] = GPU_LIPSYNC
            node["plane"] = "gpu"
            node["params"] = {}
    return {
        "lipsync": (
            "GPU backend (lipsync.gpu): a gpu worker offers one, so it outranks the CPU face mesh"
        )
    }


def choose_speech(document: dict[str, Any], offered: Callable[[], bool]) -> dict[str, str]:
    """Run each ``tts.speak`` node that follows a voice profile (a ``voice.build_profile``
    predecessor or the input ``profile_id``) on the GPU cloning service instead when
    ``offered()`` says a worker offers it; the job's metadata says which engine was chosen
    and why, nothing without such a node."""
    services = {node["id"]: node["service"] for node in document["nodes"]}
    profiled = {
        edge["to"]
        for edge in document.get("edges", [])
        if services.get(edge["from"]) == PROFILE_SERVICE
    }
    nodes = [
        node
        for node in document["nodes"]
        if node["service"] == CPU_SPEECH
        and (node["id"] in profiled or "profile_id" in node.get("input", {}))
    ]
    if not nodes:
        return {}
    if not offered():
        return {
            "speech": (
                "CPU engine (tts.speak): no worker offers a GPU cloning engine; the neural "
                "voice is conformed to the profile's pitch, rate and timbre"
            )
        }
    for node in nodes:
        node["service"] = GPU_SPEECH
        node["plane"] = "gpu"
        node["params"] = {}
    return {
        "speech": (
            "GPU cloning engine (tts.clone): a gpu worker offers one, so the narration is "
            "spoken in the voice of the profile's reference clip"
        )
    }
