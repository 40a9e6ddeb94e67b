"""Validation of a posted graph, before anything is stored.

:func:`validate_graph` checks a JSON value in stages and stops at the first stage that
finds a problem, reporting every problem of that stage:

1. shape: the document is a JSON object and within the size limits
   (rules ``schema``, ``too_many_nodes``, ``too_many_edges``) — checked before the
   schema so an oversized graph is refused cheaply;
1b. the original system's form (``apps.graphs.original``): ``task``, its service ids
   (rule ``unsupported_service`` where none here does that work), ``null`` optional
   fields and ids that are not storage-safe keys are mended; issues name nodes by the
   ids their author gave them;
2. ``schema``: ``schemas/graph.schema.json``;
3. graph and services: ``duplicate_node_id``, ``unknown_node``, ``self_loop``,
   ``cycle``, ``unknown_service``, ``invalid_params``, ``too_many_attempts``;
4. ``contract_mismatch``: what a node produces does not fit what its successor accepts
   (``apps.graphs.contracts``, from the services' ``capability.json``).

Disconnected parts and several roots are valid. A node's ``retries.maxAttempts`` may lower
its service's ``maxAttempts`` but not raise it (rule ``too_many_attempts``): the engine
gives the node run exactly the attempts the node asks for.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from pydantic import ValidationError as PydanticValidationError
from pydantic_core import ErrorDetails

from apps.capabilities.registry import CapabilityRegistry, json_path
from apps.graphs.document import GraphDocument, GraphEdge
from myspinbot.schemas import schema_validator

DEFAULT_MAX_NODES = 500
EDGES_PER_NODE = 4


@dataclass(frozen=True)
class ValidationIssue:
    """One problem: the ``rule`` broken, a readable ``message``, and where it is.

    ``node`` is the node id concerned, ``edge`` the index of the edge in ``edges``, and
    ``path`` the JSON location (``nodes[3].retries.maxAttempts``; ``""`` for the root).
    """

    rule: str
    message: str
    node: str | None = None
    edge: int | None = None
    path: str = ""

    def to_json(self) -> dict[str, Any]:
        """Return ``{rule, message, node, edge, path}`` for an API response."""
        return asdict(self)


class GraphValidationError(ValueError):
    """The graph is not valid; ``issues`` lists every problem found (at least one)."""

    def __init__(self, issues: Sequence[ValidationIssue]) -> None:
        self.issues: list[ValidationIssue] = list(issues)
        first = self.issues[0]
        more = f" (and {len(self.issues) - 1} more)" if len(self.issues) > 1 else ""
        super().__init__(f"invalid graph: {first.rule}: {first.message}{more}")

    def to_json(self) -> dict[str, Any]:
        """Return ``{"detail": <summary>, "issues": [...]}`` for an API response."""
        return {"detail": str(self), "issues": [issue.to_json() for issue in self.issues]}


def validate_graph(
    document: object, *, registry: CapabilityRegistry, max_nodes: int = DEFAULT_MAX_NODES
) -> GraphDocument:
    """Return the parsed document when it is a valid graph for ``registry``.

    Raises :class:`GraphValidationError` listing the problems of the first failing stage
    (see the module docstring). ``max_nodes`` caps the nodes; edges are capped at
    ``4 * max_nodes``. Stores nothing.
    """
    if not isinstance(document, dict):
        raise GraphValidationError(
            [ValidationIssue("schema", "the graph document must be a JSON object")]
        )
    _raise_if(_check_limits(document, max_nodes))
    # Imported here: these modules build on this one's ValidationIssue.
    from apps.graphs.contracts import check_contracts
    from apps.graphs.original import normalise, original_ids, restore_ids

    document, issues = normalise(document, registry)
    originals = original_ids(document)

    def raise_if(found: Sequence[ValidationIssue]) -> None:
        _raise_if(restore_ids(found, originals))

    raise_if(issues)
    raise_if(_check_schema(document))
    try:
        graph = GraphDocument.from_json(document)
    except PydanticValidationError as exc:
        # The models mirror the schema, so this is only reached where Python's regex
        # dialect is laxer than the models' (e.g. "$" before a trailing newline).
        raise_if([_pydantic_issue(document, error) for error in exc.errors()])
        raise
    raise_if([*_check_structure(graph), *_check_services(graph, registry)])
    raise_if(check_contracts(graph, registry))
    return graph


def _raise_if(issues: Sequence[ValidationIssue]) -> None:
    if issues:
        raise GraphValidationError(issues)


def _check_limits(document: dict[str, Any], max_nodes: int) -> list[ValidationIssue]:
    issues = []
    nodes = document.get("nodes")
    if isinstance(nodes, list) and len(nodes) > max_nodes:
        issues.append(
            ValidationIssue(
                "too_many_nodes",
                f"the graph has {len(nodes)} nodes; at most {max_nodes} are allowed",
                path="nodes",
            )
        )
    edges = document.get("edges")
    max_edges = EDGES_PER_NODE * max_nodes
    if isinstance(edges, list) and len(edges) > max_edges:
        issues.append(
            ValidationIssue(
                "too_many_edges",
                f"the graph has {len(edges)} edges; at most {max_edges} are allowed",
                path="edges",
            )
        )
    return issues


def _check_schema(document: dict[str, Any]) -> list[ValidationIssue]:
    return [
        _located_issue(document, "schema", error.message, list(error.absolute_path))
        for error in schema_validator("graph").iter_errors(document)
    ]


def _pydantic_issue(document: dict[str, Any], error: ErrorDetails) -> ValidationIssue:
    return _located_issue(document, "schema", error["msg"], list(error["loc"]))


def _located_issue(
    document: dict[str, Any], rule: str, message: str, location: Sequence[str | int]
) -> ValidationIssue:
    """An issue at ``location``, naming the node or edge it falls in when there is one."""
    node: str | None = None
    edge: int | None = None
    if len(location) >= 2 and isinstance(location[1], int):
        if location[0] == "nodes":
            item = document["nodes"][location[1]]
            if isinstance(item, dict) and isinstance(item.get("id"), str):
                node = item["id"]
        elif location[0] == "edges":
            edge = location[1]
    return ValidationIssue(rule, message, node=node, edge=edge, path=json_path(location))


def _check_structure(graph: GraphDocument) -> list[ValidationIssue]:
    issues: list[ValidationIssue] = []

    counts: dict[str, int] = {}
    for node in graph.nodes:
        counts[node.id] = counts.get(node.id, 0) + 1
    for node_id, count in counts.items():
        if count > 1:
            issues.append(
                ValidationIssue(
                    "duplicate_node_id",
                    f"node id {node_id!r} is used by {count} nodes",
                    node=node_id,
                    path=f"nodes[{_indexes(graph, node_id)[1]}].id",
                )
            )

    usable: list[tuple[int, GraphEdge]] = []
    for index, edge in enumerate(graph.edges):
        ok = True
        for end, node_id in (("from", edge.source), ("to", edge.target)):
            if node_id not in counts:
                ok = False
                issues.append(
                    ValidationIssue(
                        "unknown_node",
                        f"edge {index} {end!r} names unknown node {node_id!r}",
                        node=node_id,
                        edge=index,
                        path=f"edges[{index}].{end}",
                    )
                )
        if ok and edge.source == edge.target:
            ok = False
            issues.append(
                ValidationIssue(
                    "self_loop",
                    f"edge {index} goes from node {edge.source!r} to itself",
                    node=edge.source,
                    edge=index,
                    path=f"edges[{index}]",
                )
            )
        if ok:
            usable.append((index, edge))

    issues.extend(_find_cycles(list(counts), usable))
    return issues


def _indexes(graph: GraphDocument, node_id: str) -> list[int]:
    return [index for index, node in enumerate(graph.nodes) if node.id == node_id]


def _find_cycles(
    node_ids: Iterable[str], edges: Sequence[tuple[int, GraphEdge]]
) -> list[ValidationIssue]:
    """One ``cycle`` issue per back edge of an iterative depth-first search.

    Every cycle contains at least one back edge, so a graph with no issue here is a DAG.
    Nodes and edges are visited in document order, so the report is deterministic.
    """
    successors: dict[str, list[tuple[int, str]]] = {}
    for index, edge in edges:
        successors.setdefault(edge.source, []).append((index, edge.target))

    issues: list[ValidationIssue] = []
    done: set[str] = set()
    for root in node_ids:
        if root in done:
            continue
        # path: the nodes on the current DFS path; on_path: their positions in it.
        path = [root]
        on_path = {root: 0}
        cursors = [iter(successors.get(root, ()))]
        while cursors:
            step = next(cursors[-1], None)
            if step is None:
                cursors.pop()
                finished = path.pop()
                del on_path[finished]
                done.add(finished)
                continue
            index, target = step
            if target in on_path:
                loop = [*path[on_path[target] :], target]
                issues.append(
                    ValidationIssue(
                        "cycle",
                        f"the graph has a cycle: {' -> '.join(loop)}",
                        node=target,
                        edge=index,
                        path=f"edges[{index}]",
                    )
                )
            elif target not in done:
                on_path[target] = len(path)
                path.append(target)
                cursors.append(iter(successors.get(target, ())))
    return issues


def _check_services(graph: GraphDocument, registry: CapabilityRegistry) -> list[ValidationIssue]:
    issues: list[ValidationIssue] = []
    for position, node in enumerate(graph.nodes):
        if node.service not in registry:
            issues.append(
                ValidationIssue(
                    "unknown_service",
                    f"node {node.id!r} uses unknown service {node.service!r}",
                    node=node.id,
                    path=f"nodes[{position}].service",
                )
            )
            continue
        capability = registry.get(node.service)
        wanted = node.retries.max_attempts
        if wanted is not None and wanted > capability.max_attempts:
            issues.append(
                ValidationIssue(
                    "too_many_attempts",
                    f"node {node.id!r} asks for {wanted} attempts; service {node.service!r} "
                    f"allows at most {capability.max_attempts}",
                    node=node.id,
                    path=f"nodes[{position}].retries.maxAttempts",
                )
            )
        for error in capability.params_errors(node.params):
            issues.append(
                ValidationIssue(
                    "invalid_params",
                    f"node {node.id!r} params{error.json_path[1:]}: {error.message}",
                    node=node.id,
                    path=json_path(["nodes", position, "params", *error.absolute_path]),
                )
            )
    return issues
