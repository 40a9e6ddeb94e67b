"""Documents written for the original system are read as ours: ``task``, its service ids,
``null`` optional fields and any string as a node id (``apps.graphs.original``)."""

from __future__ import annotations

import json
import re

import pytest

from apps.capabilities.registry import CapabilityRegistry
from apps.graphs.original import is_storage_safe, normalise, storage_key
from apps.graphs.validation import ValidationIssue, validate_graph
from tests.graphs.test_validation import issues_of

SAFE_KEY = re.compile(r"[A-Za-z0-9_-]{1,64}")

# The original's own example pipelines (its backend's config/pipelines.json, written in
# its later notes' ``task`` form) and its capabilities graph, byte for byte as it posted them.
SADTALKER = {
    "schema": "langgraph.v1",
    "workflowId": "sadtalker-1",
    "context": {},
    "metadata": {"planner": "control-plane", "version": "unknown"},
    "nodes": [
        {"id": "script", "name": "Generate script", "task": "script.generateScript",
         "plane": "node", "status": "pending", "params": {"prompt": "otters"},
         "input": None, "output": None, "error": None, "retries": None,
         "telemetry": None, "tags": None},
        {"id": "train_voice", "name": "Train voice", "task": "dummy.dummy_task",
         "plane": "python", "status": "pending", "params": {"preset": "sadtalker"}},
        {"id": "generate_video", "name": "Generate video", "task": "dummy.dummy_task",
         "plane": "python", "status": "pending", "params": {"preset": "sadtalker"}},
    ],
    "edges": [
        {"from": "script", "to": "train_voice", "kind": "normal"},
        {"from": "train_voice", "to": "generate_video", "kind": "normal"},
    ],
}  # fmt: skip

CAPABILITIES = {
    "schema": "langgraph.v1",
    "workflowId": "2b7ad0b4-93a4-4f36-9b1c-6a1ad0d5ef11",
    "nodes": [
        {"id": "worker.info", "name": "Get Worker Capabilities", "task": "get_capabilities",
         "plane": "python", "status": "pending", "progressWeight": 0.5},
        {"id": "control.info", "name": "Combined Capabilities Manifests",
         "task": "capabilities.getManifest", "plane": "node", "status": "pending",
         "progressWeight": 0.5},
    ],
    "edges": [{"from": "worker.info", "to": "control.info", "kind": "normal"}],
}  # fmt: skip


def test_the_originals_sadtalker_pipeline_is_valid_and_records_what_was_mapped(
    registry: CapabilityRegistry,
) -> None:
    document = validate_graph(json.loads(json.dumps(SADTALKER)), registry=registry)

    assert [(n.id, n.service, n.plane) for n in document.nodes] == [
        ("script", "llm.generate_script", "node"),
        ("train_voice", "debug.noop", "python"),
        ("generate_video", "debug.noop", "python"),
    ]
    assert document.nodes[0].params == {"topic": "otters"}
    assert document.metadata == {
        "planner": "control-plane",
        "version": "unknown",
        "original": {
            "nodes": {
                "script": {
                    "service": "script.generateScript",
                    "serviceField": "task",
                    "params": {"prompt": "topic"},
                    "dropped": ["input", "output", "error", "retries", "telemetry", "tags"],
                },
                "train_voice": {"service": "dummy.dummy_task", "serviceField": "task"},
                "generate_video": {"service": "dummy.dummy_task", "serviceField": "task"},
            }
        },
    }


def test_the_originals_capabilities_graph_runs_capabilities_report(
    registry: CapabilityRegistry,
) -> None:
    document = validate_graph(CAPABILITIES, registry=registry)

    assert [(n.id, n.service) for n in document.nodes] == [
        ("worker.info", "capabilities.report"),
        ("control.info", "capabilities.report"),
    ]
    assert [(e.source, e.target) for e in document.edges] == [("worker.info", "control.info")]


@pytest.mark.parametrize(
    "node_id",
    ["../../a", "a" * 65, "a\u202eb", "__proto__/x", "..", ".", "a b", "日本", "x\n", "a:b/c"],
)
def test_an_unsafe_node_id_is_mapped_to_a_safe_key_everywhere(
    registry: CapabilityRegistry, node_id: str
) -> None:
    original = {
        "schema": "langgraph.v1",
        "nodes": [{"id": node_id, "service": "debug.noop"}, {"id": "b", "service": "debug.noop"}],
        "edges": [{"from": node_id, "to": "b"}],
    }

    document = validate_graph(original, registry=registry)

    key = document.nodes[0].id
    assert key == storage_key(node_id)
    assert SAFE_KEY.fullmatch(key)
    assert "." not in key
    assert "/" not in key
    assert document.nodes[0].name == node_id
    assert (document.edges[0].source, document.edges[0].target) == (key, "b")
    assert document.metadata["original"] == {"nodes": {key: {"id": node_id}}}


def test_safe_ids_are_kept_and_normalising_twice_changes_nothing(
    registry: CapabilityRegistry,
) -> None:
    once = validate_graph(CAPABILITIES, registry=registry).to_json()

    again, issues = normalise(once)

    assert issues == []
    assert again == once
    assert validate_graph(once, registry=registry).to_json() == once
    assert is_storage_safe("worker.info")
    assert not is_storage_safe("..")


def test_a_key_taken_by_another_node_gets_a_longer_hash(registry: CapabilityRegistry) -> None:
    taken = storage_key("a b")
    document = validate_graph(
        {
            "schema": "langgraph.v1",
            "nodes": [
                {"id": taken, "service": "debug.noop"},
                {"id": "a b", "service": "debug.noop"},
            ],
            "edges": [],
        },
        registry=registry,
    )

    assert [n.id for n in document.nodes] == [taken, storage_key("a b", length=20)]


def test_an_empty_node_id_is_refused(registry: CapabilityRegistry) -> None:
    document = {
        "schema": "langgraph.v1",
        "nodes": [{"id": "", "service": "debug.noop"}],
        "edges": [],
    }

    assert issues_of(document, registry) == [
        ValidationIssue("schema", "a node id must not be empty", node="", path="nodes[0].id")
    ]


def test_later_issues_name_the_nodes_by_their_original_ids(registry: CapabilityRegistry) -> None:
    document = {
        "schema": "langgraph.v1",
        "nodes": [
            {"id": "../x", "service": "debug.noop"},
            {"id": "../x", "service": "debug.noop"},
            {"id": "y y", "service": "no.such"},
        ],
        "edges": [],
    }

    assert issues_of(document, registry) == [
        ValidationIssue(
            "duplicate_node_id",
            "node id '../x' is used by 2 nodes",
            node="../x",
            path="nodes[1].id",
        ),
        ValidationIssue(
            "unknown_service",
            "node 'y y' uses unknown service 'no.such'",
            node="y y",
            path="nodes[2].service",
        ),
    ]


def test_a_task_and_a_service_that_disagree_are_refused(registry: CapabilityRegistry) -> None:
    document = {
        "schema": "langgraph.v1",
        "nodes": [{"id": "a", "service": "debug.noop", "task": "debug.echo"}],
        "edges": [],
    }

    assert issues_of(document, registry) == [
        ValidationIssue(
            "schema",
            "node 'a' names 'debug.echo' as its task and 'debug.noop' as its service; "
            "give one of them",
            node="a",
            path="nodes[0].task",
        )
    ]


def test_an_original_service_with_no_equivalent_is_refused_with_the_reason(
    registry: CapabilityRegistry,
) -> None:
    document = {
        "schema": "langgraph.v1",
        "nodes": [{"id": "post", "task": "script.postProcess", "plane": "node"}],
        "edges": [],
    }

    [issue] = issues_of(document, registry)

    assert (issue.rule, issue.node, issue.path) == (
        "unsupported_service",
        "post",
        "nodes[0].service",
    )
    assert issue.message == (
        "node 'post': the original system's 'script.postProcess' has no service here: the "
        "original only named this step and never implemented it; llm.generate_script's "
        "output is used as it is"
    )


def test_a_null_in_a_field_the_original_never_allowed_null_in_is_still_refused(
    registry: CapabilityRegistry,
) -> None:
    document = {
        "schema": "langgraph.v1",
        "nodes": [{"id": "a", "service": "debug.noop", "params": None}],
        "edges": [],
    }

    assert [(i.rule, i.path) for i in issues_of(document, registry)] == [
        ("schema", "nodes[0].params")
    ]
