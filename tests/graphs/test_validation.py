from __future__ import annotations

import itertools
from typing import Any

import pytest

from apps.capabilities.registry import SERVICES_DIR, CapabilityRegistry
from apps.graphs.document import GraphDocument
from apps.graphs.original import storage_key
from apps.graphs.validation import GraphValidationError, ValidationIssue, validate_graph


def node(node_id: str, service: str = "debug.noop", **fields: Any) -> dict[str, Any]:
    return {"id": node_id, "service": service, **fields}


def edge(source: str, target: str, **fields: Any) -> dict[str, Any]:
    return {"from": source, "to": target, **fields}


def graph(nodes: list[Any], edges: list[Any] | None = None, **top: Any) -> dict[str, Any]:
    return {"schema": "langgraph.v1", "nodes": nodes, "edges": edges or [], **top}


def issues_of(
    document: object, registry: CapabilityRegistry, **kwargs: Any
) -> list[ValidationIssue]:
    with pytest.raises(GraphValidationError) as caught:
        validate_graph(document, registry=registry, **kwargs)
    return caught.value.issues


# -- Accepted graphs ---------------------------------------------------------------------


def test_diamond_is_valid(registry: CapabilityRegistry) -> None:
    document = graph(
        [node("a"), node("b", "debug.sleep", params={"seconds": 0.1}), node("c"), node("d")],
        [edge("a", "b"), edge("a", "c"), edge("b", "d"), edge("c", "d", kind="on_success")],
    )

    result = validate_graph(document, registry=registry)

    assert isinstance(result, GraphDocument)
    assert [n.id for n in result.nodes] == ["a", "b", "c", "d"]
    assert [(e.source, e.target, e.kind) for e in result.edges] == [
        ("a", "b", "normal"),
        ("a", "c", "normal"),
        ("b", "d", "normal"),
        ("c", "d", "on_success"),
    ]


def test_disconnected_graph_with_several_roots_is_valid(registry: CapabilityRegistry) -> None:
    document = graph(
        [node("a"), node("b"), node("c"), node("lonely"), node("d")],
        [edge("a", "c"), edge("b", "c"), edge("d", "c", kind="on_failure")],
    )

    assert len(validate_graph(document, registry=registry).nodes) == 5


def test_empty_graph_is_valid(registry: CapabilityRegistry) -> None:
    assert validate_graph(graph([]), registry=registry).nodes == []


def test_original_system_document_is_valid(registry: CapabilityRegistry) -> None:
    document = {
        "schema": "langgraph.v1",
        "workflowId": "wf-1",
        "context": {"topic": "tides"},
        "metadata": {"createdBy": "node-orchestrator"},
        "nodes": [
            {
                "id": "script",
                "name": "Write script",
                "service": "debug.echo",
                "plane": "node",
                "status": "pending",
                "params": {"topic": "tides"},
                "input": {},
                "output": None,
                "error": None,
                "retries": {"attempt": 0, "maxAttempts": 3},
                "tags": ["llm"],
                "telemetry": {},
                "progressWeight": 1,
            },
            {
                "id": "render",
                "name": "Render",
                "service": "debug.sleep",
                "plane": "python",
                "status": "pending",
                "params": {"seconds": 2},
                "input": {"script": "script.output"},
                "output": None,
                "error": None,
                "retries": {"attempt": 0, "maxAttempts": 3},
                "tags": [],
                "telemetry": {},
                "progressWeight": 3,
            },
        ],
        "edges": [{"from": "script", "to": "render", "kind": "normal"}],
    }

    result = validate_graph(document, registry=registry)

    assert [(n.id, n.plane) for n in result.nodes] == [("script", "node"), ("render", "python")]


def test_max_attempts_up_to_the_service_limit_is_accepted(registry: CapabilityRegistry) -> None:
    document = graph(
        [
            node("a", "debug.fail", retries={"maxAttempts": 1}),
            node("b", "debug.fail", retries={"maxAttempts": 3}),
        ]
    )

    result = validate_graph(document, registry=registry)

    assert [n.retries.max_attempts for n in result.nodes] == [1, 3]


def test_rule_too_many_attempts(registry: CapabilityRegistry) -> None:
    document = graph(
        [node("ok"), node("a", "debug.fail", retries={"attempt": 0, "maxAttempts": 20})]
    )

    assert issues_of(document, registry) == [
        ValidationIssue(
            "too_many_attempts",
            "node 'a' asks for 20 attempts; service 'debug.fail' allows at most 3",
            node="a",
            path="nodes[1].retries.maxAttempts",
        )
    ]


def test_rule_schema_progress_weight_above_the_maximum(registry: CapabilityRegistry) -> None:
    document = graph([node("ok", progressWeight=1000), node("a", progressWeight=1e308)])

    assert issues_of(document, registry) == [
        ValidationIssue(
            "schema",
            "1e+308 is greater than the maximum of 1000",
            node="a",
            path="nodes[1].progressWeight",
        )
    ]


def test_deep_chain_is_valid(registry: CapabilityRegistry) -> None:
    ids = [f"n{i}" for i in range(500)]
    document = graph([node(i) for i in ids], [edge(a, b) for a, b in itertools.pairwise(ids)])

    assert len(validate_graph(document, registry=registry).edges) == 499


# -- One test per rule -------------------------------------------------------------------


@pytest.mark.parametrize("document", [[], "graph", None, 3])
def test_rule_schema_not_an_object(registry: CapabilityRegistry, document: object) -> None:
    assert issues_of(document, registry) == [
        ValidationIssue("schema", "the graph document must be a JSON object")
    ]


def test_rule_schema_reports_every_error_with_path_and_node(registry: CapabilityRegistry) -> None:
    document = graph(
        [node("a"), node("b", retries={"maxAttempts": 0}), node("c", plane="tpu")],
        [edge("a", "b", kind="always")],
    )

    assert issues_of(document, registry) == [
        ValidationIssue(
            "schema",
            "0 is less than the minimum of 1",
            node="b",
            path="nodes[1].retries.maxAttempts",
        ),
        ValidationIssue(
            "schema",
            "'tpu' is not one of ['node', 'python', 'cpu', 'gpu']",
            node="c",
            path="nodes[2].plane",
        ),
        ValidationIssue(
            "schema",
            "'always' is not one of ['normal', 'on_success', 'on_failure']",
            edge=0,
            path="edges[0].kind",
        ),
    ]


def test_rule_schema_at_the_root(registry: CapabilityRegistry) -> None:
    assert issues_of({"schema": "langgraph.v1", "nodes": []}, registry) == [
        ValidationIssue("schema", "'edges' is a required property")
    ]


def test_rule_schema_stops_before_structure_checks(registry: CapabilityRegistry) -> None:
    document = graph([node("a"), node("a", params=[])], [edge("a", "zz")])

    assert issues_of(document, registry) == [
        ValidationIssue("schema", "[] is not of type 'object'", node="a", path="nodes[1].params")
    ]


def test_a_node_id_with_a_trailing_newline_is_mapped_to_a_key(registry: CapabilityRegistry) -> None:
    # Python's re lets "$" match before a final newline: "a\n" is not a safe key.
    document = validate_graph(graph([node("a\n")]), registry=registry)

    assert [n.id for n in document.nodes] == [storage_key("a\n")]
    assert document.metadata["original"] == {"nodes": {storage_key("a\n"): {"id": "a\n"}}}


def test_rule_too_many_nodes(registry: CapabilityRegistry) -> None:
    document = graph([node("a"), node("b"), node("c")])

    assert issues_of(document, registry, max_nodes=2) == [
        ValidationIssue(
            "too_many_nodes", "the graph has 3 nodes; at most 2 are allowed", path="nodes"
        )
    ]


def test_rule_too_many_nodes_comes_before_the_schema(registry: CapabilityRegistry) -> None:
    # 10,000 broken nodes: refused on their count without validating any of them.
    document = graph([{"id": i, "bogus": True} for i in range(10_000)])

    assert issues_of(document, registry) == [
        ValidationIssue(
            "too_many_nodes", "the graph has 10000 nodes; at most 500 are allowed", path="nodes"
        )
    ]


def test_rule_too_many_edges(registry: CapabilityRegistry) -> None:
    document = graph([node("a"), node("b")], [edge("a", "b")] * 9)

    assert issues_of(document, registry, max_nodes=2) == [
        ValidationIssue(
            "too_many_edges", "the graph has 9 edges; at most 8 are allowed", path="edges"
        )
    ]


def test_rule_duplicate_node_id(registry: CapabilityRegistry) -> None:
    document = graph([node("a"), node("b"), node("a"), node("a")])

    assert issues_of(document, registry) == [
        ValidationIssue(
            "duplicate_node_id", "node id 'a' is used by 3 nodes", node="a", path="nodes[2].id"
        )
    ]


def test_rule_unknown_node(registry: CapabilityRegistry) -> None:
    document = graph([node("a"), node("b")], [edge("a", "b"), edge("ghost", "b"), edge("a", "x")])

    assert issues_of(document, registry) == [
        ValidationIssue(
            "unknown_node",
            "edge 1 'from' names unknown node 'ghost'",
            node="ghost",
            edge=1,
            path="edges[1].from",
        ),
        ValidationIssue(
            "unknown_node",
            "edge 2 'to' names unknown node 'x'",
            node="x",
            edge=2,
            path="edges[2].to",
        ),
    ]


def test_rule_self_loop(registry: CapabilityRegistry) -> None:
    document = graph([node("a"), node("b")], [edge("a", "b"), edge("b", "b")])

    assert issues_of(document, registry) == [
        ValidationIssue(
            "self_loop", "edge 1 goes from node 'b' to itself", node="b", edge=1, path="edges[1]"
        )
    ]


def test_rule_cycle(registry: CapabilityRegistry) -> None:
    document = graph(
        [node("start"), node("a"), node("b"), node("c")],
        [edge("start", "a"), edge("a", "b"), edge("b", "c"), edge("c", "a")],
    )

    assert issues_of(document, registry) == [
        ValidationIssue(
            "cycle",
            "the graph has a cycle: a -> b -> c -> a",
            node="a",
            edge=3,
            path="edges[3]",
        )
    ]


def test_rule_cycle_in_a_deep_graph_without_recursion(registry: CapabilityRegistry) -> None:
    ids = [f"n{i}" for i in range(500)]
    edges = [edge(a, b) for a, b in itertools.pairwise(ids)] + [edge("n499", "n0")]

    issues = issues_of(graph([node(i) for i in ids], edges), registry)

    assert [(i.rule, i.node, i.edge) for i in issues] == [("cycle", "n0", 499)]
    assert issues[0].message == "the graph has a cycle: " + " -> ".join([*ids, "n0"])


def test_rule_unknown_service(registry: CapabilityRegistry) -> None:
    document = graph([node("a"), node("b", "video.render")], [edge("a", "b")])

    assert issues_of(document, registry) == [
        ValidationIssue(
            "unknown_service",
            "node 'b' uses unknown service 'video.render'",
            node="b",
            path="nodes[1].service",
        )
    ]


def test_debug_services_are_unknown_when_excluded() -> None:
    production = CapabilityRegistry.from_directories([SERVICES_DIR], include_debug=False)

    assert [i.rule for i in issues_of(graph([node("a")]), production)] == ["unknown_service"]


def test_rule_invalid_params(registry: CapabilityRegistry) -> None:
    document = graph(
        [
            node("ok", "debug.sleep", params={"seconds": 1}),
            node("slow", "debug.sleep", params={"seconds": 4000, "secs": 1}),
            node("flaky", "debug.fail", params={"times": -1}),
        ]
    )

    assert issues_of(document, registry) == [
        ValidationIssue(
            "invalid_params",
            "node 'slow' params: Additional properties are not allowed ('secs' was unexpected)",
            node="slow",
            path="nodes[1].params",
        ),
        ValidationIssue(
            "invalid_params",
            "node 'slow' params.seconds: 4000 is greater than the maximum of 3600",
            node="slow",
            path="nodes[1].params.seconds",
        ),
        ValidationIssue(
            "invalid_params",
            "node 'flaky' params.times: -1 is less than the minimum of 0",
            node="flaky",
            path="nodes[2].params.times",
        ),
    ]


def test_structure_and_service_issues_are_reported_together(
    registry: CapabilityRegistry,
) -> None:
    document = graph(
        [node("a"), node("b", "nope"), node("c", "debug.sleep", params={"seconds": -1})],
        [edge("a", "a"), edge("a", "b")],
    )

    assert [(i.rule, i.node) for i in issues_of(document, registry)] == [
        ("self_loop", "a"),
        ("unknown_service", "b"),
        ("invalid_params", "c"),
    ]


def test_error_to_json(registry: CapabilityRegistry) -> None:
    with pytest.raises(GraphValidationError) as caught:
        validate_graph(
            graph([node("a"), node("b")], [edge("a", "a"), edge("b", "b")]), registry=registry
        )

    assert caught.value.to_json() == {
        "detail": "invalid graph: self_loop: edge 0 goes from node 'a' to itself (and 1 more)",
        "issues": [
            {
                "rule": "self_loop",
                "message": "edge 0 goes from node 'a' to itself",
                "node": "a",
                "edge": 0,
                "path": "edges[0]",
            },
            {
                "rule": "self_loop",
                "message": "edge 1 goes from node 'b' to itself",
                "node": "b",
                "edge": 1,
                "path": "edges[1]",
            },
        ],
    }
    assert isinstance(caught.value, ValueError)
