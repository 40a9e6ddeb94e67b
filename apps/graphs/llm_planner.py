"""The planner for a request in words: an LLM builds a ``langgraph.v1`` graph from the
capability manifests, or the best-matching template stands in, saying why.

:func:`propose` asks the Ollama server of ``MYSPINBOT_LLM_URL`` for a graph (the graph's
JSON Schema is the reply ``format``), checks each reply with the real validator and feeds
the problems back (``MYSPINBOT_LLM_MAX_REASKS`` re-asks, :func:`apps.capabilities.ollama.
chat_json`). The outcome:

- a valid graph whose every service some worker offers → ``source: "llm"``;
- a valid graph still naming a service no worker offers after the re-asks → refused,
  ``Rejected(422, "service_not_offered")`` with the reason;
- no LLM configured, the LLM failing, or no valid graph after the re-asks → the
  best-matching template (``source: "template"``) with ``reason`` saying why.

Nothing runs here: the returned graph is what ``POST /api/jobs`` runs, unchanged. A node
takes a job input the way a template does, by naming it in ``input`` with the value
``null``; :func:`fill_inputs` puts the request's ``inputs`` there.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any

from django.conf import settings

from apps.capabilities import ollama
from apps.capabilities.registry import CapabilityRegistry, get_registry
from apps.graphs.planner import Template, plan
from apps.graphs.validation import GraphValidationError, validate_graph
from myspinbot.errors import Rejected, ServiceError
from myspinbot.schemas import load_schema

SYSTEM_PROMPT = """\
You plan the steps of a video job as a graph in the "langgraph.v1" JSON format.
Reply with only the JSON object: {{"schema": "langgraph.v1", "workflowId": <short slug>, \
"metadata": {{}}, "nodes": [...], "edges": [...]}}.
A node is {{"id": <unique slug>, "name": <what it does, in words>, "service": <a service id \
below>, "plane": <the service's queue>, "params": <an object matching the service's params \
schema>, "input": <object>, "progressWeight": <1-10>}}. An edge {{"from": <node id>, "to": \
<node id>}} makes a node's outputs the inputs of the next one; the graph has no cycles.
A node takes one of the job's inputs by naming it in "input" with the value null, e.g. \
"input": {{"photos": null}}. The job's inputs are: {inputs}.
Use only these services (id, queue, params schema, inputs it reads, outputs):
{catalogue}"""

WORD = re.compile(r"[a-z0-9]+")
# Words that say nothing about which template fits.
STOP_WORDS = frozenset(
    {"a", "an", "and", "are", "as", "at", "be", "by", "for", "from", "i", "in", "is", "it"}
    | {"me", "my", "of", "on", "or", "the", "then", "to", "what", "with"}
)
SCRIPT_SERVICE = "llm.generate_script"
TOPIC_CHARS = 500  # llm.generate_script's topic maxLength


@dataclass(frozen=True)
class Proposal:
    """A graph for review: ``source`` is ``"llm"`` or ``"template"``; ``reason`` says why a
    template stands in (None for an LLM plan); ``template`` names it; ``attempts`` counts
    LLM requests and ``model`` names the LLM (None without one)."""

    graph: dict[str, Any]
    source: str
    reason: str | None
    template: str | None
    attempts: int
    model: str | None

    def to_json(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "reason": self.reason,
            "template": self.template,
            "attempts": self.attempts,
            "model": self.model,
            "graph": self.graph,
        }


def propose(
    request: str,
    inputs: Mapping[str, Any],
    *,
    offered: Collection[str],
    templates: Mapping[str, Template],
    registry: CapabilityRegistry | None = None,
) -> Proposal:
    """A graph for ``request`` using only services in ``offered`` (what the workers that
    are up run), with ``inputs`` filled in; see the module docstring for the outcomes.

    Raises ``Rejected(422, "service_not_offered")`` for an LLM plan that names a service
    no worker offers, and what :func:`best_template` raises when no template fits."""
    registry = registry or get_registry()
    url = settings.MYSPINBOT_LLM_URL
    if not url:
        return best_template(
            request, inputs, templates, offered, "no LLM is configured (MYSPINBOT_LLM_URL)"
        )
    usable = sorted(service for service in offered if service in registry)
    if not usable:
        return best_template(
            request, inputs, templates, offered, "no worker is up, so the LLM has nothing to plan"
        )
    model = settings.MYSPINBOT_LLM_MODEL
    judge = _Judge(inputs, set(offered), registry)
    try:
        reply = ollama.chat_json(
            url,
            model=model,
            messages=[
                {"role": "system", "content": system_prompt(usable, inputs, registry)},
                {"role": "user", "content": request},
            ],
            schema=load_schema("graph"),
            options={"temperature": 0.2},
            timeout=settings.MYSPINBOT_LLM_TIMEOUT,
            max_reasks=settings.MYSPINBOT_LLM_MAX_REASKS,
            check=judge.check,
        )
    except ServiceError as exc:
        return best_template(
            request, inputs, templates, offered, f"the LLM ({model}) failed: {exc.message}"
        )
    if reply.problem is None:
        graph = fill_inputs(reply.value, inputs)
        graph["metadata"] = {**graph.get("metadata", {}), "planner": "llm", "model": model}
        return Proposal(graph, "llm", None, None, reply.attempts, model)
    if judge.unoffered:
        raise Rejected(
            422,
            "service_not_offered",
            f"the plan of {model} needs {', '.join(judge.unoffered)}, which no worker "
            f"that is up offers (after {reply.attempts} attempts)",
            details={"services": judge.unoffered, "graph": fill_inputs(reply.value, inputs)},
        )
    return best_template(
        request,
        inputs,
        templates,
        offered,
        f"the LLM ({model}) gave no valid graph in {reply.attempts} attempts: {reply.problem}",
        attempts=reply.attempts,
        model=model,
    )


class _Judge:
    """The ``check`` of :func:`ollama.chat_json`: the validator's problems, then the
    services no worker offers (kept in ``unoffered`` for the last reply judged)."""

    def __init__(
        self, inputs: Mapping[str, Any], offered: set[str], registry: CapabilityRegistry
    ) -> None:
        self.inputs, self.offered, self.registry = inputs, offered, registry
        self.unoffered: list[str] = []

    def check(self, value: dict[str, Any]) -> str | None:
        self.unoffered = []
        if not value.get("nodes"):
            return "the graph has no nodes: a job needs at least one step"
        try:
            graph = validate_graph(
                fill_inputs(value, self.inputs),
                registry=self.registry,
                max_nodes=settings.MYSPINBOT_MAX_GRAPH_NODES,
            )
        except GraphValidationError as exc:
            return f"the graph is not valid: {exc}"
        self.unoffered = sorted({n.service for n in graph.nodes} - self.offered)
        if self.unoffered:
            return f"no worker offers {', '.join(self.unoffered)}; use only the services listed"
        return None


def fill_inputs(graph: dict[str, Any], inputs: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of ``graph`` with each node input that is ``null`` and named in ``inputs``
    set to that job input (the template convention)."""
    filled = copy.deepcopy(graph)
    for node in filled.get("nodes") or []:
        if isinstance(node, dict) and isinstance(node.get("input"), dict):
            for key, value in node["input"].items():
                if value is None and key in inputs:
                    node["input"][key] = copy.deepcopy(inputs[key])
    return filled


def system_prompt(
    services: list[str], inputs: Mapping[str, Any], registry: CapabilityRegistry
) -> str:
    """The instructions and the catalogue of ``services`` from their manifests."""
    lines = []
    for service_id in services:
        capability = registry.get(service_id)
        entry = {
            "id": capability.id,
            "description": capability.description,
            "queue": capability.queue,
            "params": capability.params_schema,
            "inputs": [
                {"name": port.name, "kind": port.kind, "reads": list(port.reads)}
                for port in capability.inputs
            ],
            "outputs": [port.name for port in capability.outputs],
        }
        lines.append("- " + json.dumps(entry, ensure_ascii=False, sort_keys=True))
    return SYSTEM_PROMPT.format(
        inputs=", ".join(sorted(inputs)) or "none", catalogue="\n".join(lines)
    )


def best_template(
    request: str,
    inputs: Mapping[str, Any],
    templates: Mapping[str, Template],
    offered: Collection[str],
    reason: str,
    *,
    attempts: int = 0,
    model: str | None = None,
) -> Proposal:
    """The template that fits ``request`` best, planned with ``inputs`` and the request
    as the script's topic: first one whose required inputs are all given, then the most
    words shared with its label and description, then one whose every service a worker
    offers (ties: by name). ``reason`` says why a template stands in, and the result what
    no worker runs. Raises ``Rejected(422, "invalid_graph")`` with ``reason`` and the
    validator's issues when it still lacks a job input."""
    if not templates:
        raise Rejected(422, "no_template", f"{reason}, and there is no template to use instead")
    words = _words(request)

    def score(template: Template) -> tuple[bool, int, bool]:
        return (
            set(template.required_inputs()) <= set(inputs),
            len(words & _words(f"{template.label} {template.description}")),
            set(template.services) <= set(offered),
        )

    chosen = max(sorted(templates.values(), key=lambda t: t.name), key=score)
    topic = {
        node["id"]: {"topic": request.strip()[:TOPIC_CHARS]}
        for node in chosen.graph["nodes"]
        if node["service"] == SCRIPT_SERVICE and "topic" not in node.get("params", {})
    }
    said = f"{reason}; using the template {chosen.label!r} ({chosen.name})"
    try:
        document = plan(chosen.name, topic, dict(inputs), templates=templates).to_json()
    except GraphValidationError as exc:
        raise Rejected(
            422,
            "invalid_graph",
            f"{reason}; the best-matching template {chosen.label!r} ({chosen.name}) "
            f"cannot stand in: {exc}",
            details={"issues": [issue.to_json() for issue in exc.issues]},
        ) from exc
    missing = sorted(set(chosen.services) - set(offered))
    if missing:
        said += f", though no worker that is up runs {', '.join(missing)}"
    return Proposal(document, "template", said, chosen.name, attempts, model)


def _words(text: str) -> set[str]:
    return set(WORD.findall(text.lower())) - STOP_WORDS
