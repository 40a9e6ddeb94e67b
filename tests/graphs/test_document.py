"""The models in apps/graphs/document.py and schemas/graph.schema.json must not drift."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
from jsonschema import Draft202012Validator
from pydantic import BaseModel, ValidationError

from apps.graphs.document import (
    GraphDocument,
    GraphEdge,
    GraphNode,
    NodeError,
    NodeRetries,
)
from myspinbot.schemas import SCHEMA_DIR, load_schema, schema_validator

GRAPH_SCHEMA = load_schema("graph")

# Each model and the part of graph.schema.json it mirrors.
MODELS: list[tuple[type[BaseModel], dict[str, Any]]] = [
    (GraphDocument, GRAPH_SCHEMA),
    (GraphNode, GRAPH_SCHEMA["$defs"]["node"]),
    (GraphEdge, GRAPH_SCHEMA["$defs"]["edge"]),
    (NodeError, GRAPH_SCHEMA["$defs"]["nodeError"]),
    (NodeRetries, GRAPH_SCHEMA["$defs"]["nodeRetries"]),
]
MODEL_IDS = [model.__name__ for model, _ in MODELS]
CONSTRAINTS = ("pattern", "minimum", "maximum", "minLength", "maxLength")


def json_fields(model: type[BaseModel]) -> dict[str, Any]:
    return {field.serialization_alias or name: field for name, field in model.model_fields.items()}


def model_property_schema(model: type[BaseModel], name: str) -> dict[str, Any]:
    schema: dict[str, Any] = model.model_json_schema(by_alias=True)["properties"][name]
    return schema


def enum_values(schema: dict[str, Any]) -> list[Any] | None:
    """The allowed values of a property (``enum``/``const``), looking inside ``anyOf``."""
    if "enum" in schema:
        return list(schema["enum"])
    if "const" in schema:
        return [schema["const"]]
    for option in schema.get("anyOf", []):
        values = enum_values(option)
        if values is not None:
            return values
    return None


def constraints(schema: dict[str, Any]) -> dict[str, Any]:
    found = {key: schema[key] for key in CONSTRAINTS if key in schema}
    for option in schema.get("anyOf", []):
        found.update(constraints(option))
    return found


@pytest.mark.parametrize(("model", "schema"), MODELS, ids=MODEL_IDS)
def test_model_properties_match_schema(model: type[BaseModel], schema: dict[str, Any]) -> None:
    assert set(json_fields(model)) == set(schema["properties"])


@pytest.mark.parametrize(("model", "schema"), MODELS, ids=MODEL_IDS)
def test_model_required_fields_match_schema(model: type[BaseModel], schema: dict[str, Any]) -> None:
    required = {name for name, field in json_fields(model).items() if field.is_required()}

    assert required == set(schema.get("required", []))


@pytest.mark.parametrize(("model", "schema"), MODELS, ids=MODEL_IDS)
def test_model_enums_match_schema(model: type[BaseModel], schema: dict[str, Any]) -> None:
    for name, property_schema in schema["properties"].items():
        assert enum_values(model_property_schema(model, name)) == enum_values(property_schema), name


@pytest.mark.parametrize(("model", "schema"), MODELS, ids=MODEL_IDS)
def test_model_constraints_match_schema(model: type[BaseModel], schema: dict[str, Any]) -> None:
    for name, property_schema in schema["properties"].items():
        assert constraints(model_property_schema(model, name)) == constraints(property_schema), name


@pytest.mark.parametrize(("model", "schema"), MODELS, ids=MODEL_IDS)
def test_model_defaults_match_schema(model: type[BaseModel], schema: dict[str, Any]) -> None:
    fields = json_fields(model)
    for name, property_schema in schema["properties"].items():
        if "default" in property_schema:
            default = fields[name].get_default(call_default_factory=True)
            assert default == property_schema["default"], name


@pytest.mark.parametrize(("model", "schema"), MODELS, ids=MODEL_IDS)
def test_models_forbid_unknown_properties_like_the_schema(
    model: type[BaseModel], schema: dict[str, Any]
) -> None:
    assert schema["additionalProperties"] is False
    assert model.model_config["extra"] == "forbid"


def test_free_form_objects_accept_any_keys() -> None:
    for name in ("context", "metadata"):
        assert GRAPH_SCHEMA["properties"][name]["additionalProperties"] is True


# -- Same verdict from jsonschema and pydantic ------------------------------------------


def node(**fields: Any) -> dict[str, Any]:
    return {"id": "n1", "service": "debug.noop", **fields}


def doc(nodes: Any = None, edges: Any = None, **top: Any) -> Any:
    return {
        "schema": "langgraph.v1",
        "nodes": [node()] if nodes is None else nodes,
        "edges": [] if edges is None else edges,
        **top,
    }


ORIGINAL_SYSTEM_DOCUMENT: dict[str, Any] = {
    "schema": "langgraph.v1",
    "workflowId": "wf-2024-001",
    "context": {"userId": "u1", "topic": "volcanoes", "nested": {"any": [1, 2]}},
    "metadata": {"createdBy": "node-orchestrator", "version": 3},
    "nodes": [
        {
            "id": "script",
            "name": "Write script",
            "service": "debug.echo",
            "plane": "node",
            "status": "completed",
            "params": {"topic": "volcanoes"},
            "input": {},
            "output": {"text": "Hello"},
            "error": None,
            "retries": {"attempt": 1, "maxAttempts": 3},
            "tags": ["llm"],
            "telemetry": {"durationMs": 1200},
            "progressWeight": 0.5,
        },
        {
            "id": "voice",
            "name": "Speak",
            "service": "debug.sleep",
            "plane": "python",
            "status": "failed",
            "params": {"seconds": 1},
            "input": {"from": "script"},
            "output": None,
            "error": {"message": "boom", "code": "E_TTS", "details": {"line": 3}},
            "retries": {"attempt": 3, "maxAttempts": 3},
            "tags": [],
            "telemetry": {},
            "progressWeight": 2,
        },
    ],
    "edges": [{"from": "script", "to": "voice", "kind": "normal", "metadata": {}}],
}

VALID = {
    "minimal": doc(nodes=[], edges=[]),
    "original system document": ORIGINAL_SYSTEM_DOCUMENT,
    "gpu plane, ready": doc([node(plane="gpu", status="ready")]),
    "integral float attempt": doc([node(retries={"attempt": 2.0, "maxAttempts": 20})]),
    "retries without maxAttempts": doc([node(retries={"attempt": 0})]),
    "empty retries": doc([node(retries={})]),
    "id of 64 allowed characters": doc([node(id="a" * 60 + "_.:-")]),
    "zero weight": doc([node(progressWeight=0)]),
    "error with message only": doc([node(error={"message": "x"})]),
    "edge kinds": doc(
        [node(id="a"), node(id="b")],
        [
            {"from": "a", "to": "b", "kind": "on_failure", "metadata": {"why": 1}},
            {"from": "a", "to": "b", "kind": "on_success"},
        ],
    ),
}

INVALID = {
    "not an object": [],
    "wrong schema version": doc(schema="langgraph.v2"),
    "missing nodes": {"schema": "langgraph.v1", "edges": []},
    "missing edges": {"schema": "langgraph.v1", "nodes": []},
    "unknown top-level property": doc(version=1),
    "null workflowId": doc(workflowId=None),
    "numeric workflowId": doc(workflowId=5),
    "context not an object": doc(context=[]),
    "nodes not a list": doc(nodes={"a": node()}),
    "node not an object": doc(["n1"]),
    "node without id": doc([{"service": "debug.noop"}]),
    "node without service": doc([{"id": "n1"}]),
    "empty service": doc([node(service="")]),
    "misspelt node property": doc([node(param={})]),
    "snake_case node property": doc([node(progress_weight=1)]),
    "empty id": doc([node(id="")]),
    "id with a space": doc([node(id="a b")]),
    "id of 65 characters": doc([node(id="a" * 65)]),
    "numeric id": doc([node(id=1)]),
    "null name": doc([node(name=None)]),
    "unknown plane": doc([node(plane="tpu")]),
    "null plane": doc([node(plane=None)]),
    "unknown status": doc([node(status="queued")]),
    "params not an object": doc([node(params=[])]),
    "null params": doc([node(params=None)]),
    "output a string": doc([node(output="x")]),
    "error without message": doc([node(error={"code": "x"})]),
    "error with extra property": doc([node(error={"message": "x", "trace": "..."})]),
    "maxAttempts 0": doc([node(retries={"maxAttempts": 0})]),
    "maxAttempts 21": doc([node(retries={"maxAttempts": 21})]),
    "maxAttempts null": doc([node(retries={"maxAttempts": None})]),
    "maxAttempts a string": doc([node(retries={"maxAttempts": "3"})]),
    "maxAttempts fractional": doc([node(retries={"maxAttempts": 2.5})]),
    "maxAttempts boolean": doc([node(retries={"maxAttempts": True})]),
    "negative attempt": doc([node(retries={"attempt": -1})]),
    "snake_case retries property": doc([node(retries={"max_attempts": 3})]),
    "negative weight": doc([node(progressWeight=-0.1)]),
    "weight a string": doc([node(progressWeight="1")]),
    "weight boolean": doc([node(progressWeight=True)]),
    "tag not a string": doc([node(tags=[1])]),
    "edge without to": doc(edges=[{"from": "n1"}]),
    "edge with python names": doc(edges=[{"source": "n1", "target": "n1"}]),
    "unknown edge kind": doc(edges=[{"from": "n1", "to": "n1", "kind": "always"}]),
    "edge with extra property": doc(edges=[{"from": "n1", "to": "n1", "label": "x"}]),
    "edge end not a string": doc(edges=[{"from": "n1", "to": 2}]),
}


def schema_accepts(document: Any) -> bool:
    return schema_validator("graph").is_valid(document)


def models_accept(document: Any) -> bool:
    try:
        GraphDocument.from_json(copy.deepcopy(document))
    except ValidationError:
        return False
    return True


@pytest.mark.parametrize("name", sorted(VALID))
def test_valid_examples_pass_schema_and_models(name: str) -> None:
    assert (schema_accepts(VALID[name]), models_accept(VALID[name])) == (True, True)


@pytest.mark.parametrize("name", sorted(INVALID))
def test_invalid_examples_fail_schema_and_models(name: str) -> None:
    assert (schema_accepts(INVALID[name]), models_accept(INVALID[name])) == (False, False)


@pytest.mark.parametrize("name", sorted(VALID))
def test_to_json_round_trips_and_satisfies_the_schema(name: str) -> None:
    document = GraphDocument.from_json(VALID[name])

    dumped = document.to_json()

    assert schema_accepts(dumped)
    assert GraphDocument.from_json(dumped) == document


def test_original_document_loads_unchanged() -> None:
    document = GraphDocument.from_json(ORIGINAL_SYSTEM_DOCUMENT)

    assert document.to_json() == ORIGINAL_SYSTEM_DOCUMENT | {
        "nodes": [
            {k: v for k, v in item.items() if v is not None}
            for item in ORIGINAL_SYSTEM_DOCUMENT["nodes"]
        ]
    }
    voice = document.node("voice")
    assert (voice.plane, voice.retries.max_attempts, voice.progress_weight) == ("python", 3, 2)
    assert voice.error == NodeError(message="boom", code="E_TTS", details={"line": 3})
    assert (document.edges[0].source, document.edges[0].target) == ("script", "voice")
    assert document.workflow_id == "wf-2024-001"


def test_defaults_of_a_minimal_node() -> None:
    parsed = GraphDocument.from_json(doc()).nodes[0]

    assert parsed == GraphNode(
        id="n1",
        name="",
        service="debug.noop",
        plane=None,
        status="pending",
        params={},
        input={},
        output=None,
        error=None,
        retries=NodeRetries(attempt=0, max_attempts=None),
        tags=[],
        telemetry={},
        progress_weight=1,
    )


def test_models_can_be_built_with_python_names() -> None:
    edge = GraphEdge(source="a", target="b")

    assert edge.model_dump(by_alias=True) == {
        "from": "a",
        "to": "b",
        "kind": "normal",
        "metadata": {},
    }


def test_node_lookup_by_id() -> None:
    document = GraphDocument.from_json(ORIGINAL_SYSTEM_DOCUMENT)

    assert document.node("script").name == "Write script"
    with pytest.raises(KeyError):
        document.node("missing")


# -- The schema files ------------------------------------------------------------------


@pytest.mark.parametrize("name", ["graph", "capability", "job-event", "artifact", "model-manifest"])
def test_schemas_are_valid_draft_2020_12_with_id_and_title(name: str) -> None:
    schema = load_schema(name)

    Draft202012Validator.check_schema(schema)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["$id"] == f"https://myspinbot.local/schemas/{name}.schema.json"
    assert schema["title"]


def test_every_schema_file_is_loadable() -> None:
    names = sorted(
        path.name.removesuffix(".schema.json") for path in SCHEMA_DIR.glob("*.schema.json")
    )

    assert names == ["artifact", "capability", "graph", "job-event", "model-manifest"]
    assert load_schema("graph") is load_schema("graph")
    assert json.loads((SCHEMA_DIR / "graph.schema.json").read_text()) == GRAPH_SCHEMA


def test_job_event_schema() -> None:
    event = {
        "job_id": "9b2f1a1e-6a5c-4a7e-9c1e-0d3b5f7a2c11",
        "seq": 1,
        "type": "node.progress",
        "node_id": "voice",
        "payload": {"progress": 0.5},
        "job_status": "running",
        "job_progress": 0.25,
        "created_at": "2025-01-01T12:00:00Z",
    }
    validator = schema_validator("job-event")

    assert validator.is_valid(event)
    assert validator.is_valid(event | {"node_id": None, "type": "job.queued"})
    assert not validator.is_valid(event | {"seq": 0})
    assert not validator.is_valid(event | {"type": "node.exploded"})
    assert not validator.is_valid(event | {"job_id": "not-a-uuid"})
    assert not validator.is_valid({k: v for k, v in event.items() if k != "node_id"})
    assert not validator.is_valid(event | {"job_status": "exploded"})


def test_artifact_schema() -> None:
    artifact = {
        "id": "9b2f1a1e-6a5c-4a7e-9c1e-0d3b5f7a2c11",
        "bucket": "myspinbot",
        "key": "jobs/1/voice.wav",
        "size_bytes": 0,
        "sha256": "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
        "content_type": "audio/wav",
        "created_at": "2025-01-01T12:00:00Z",
    }
    validator = schema_validator("artifact")

    assert validator.is_valid(artifact)
    assert not validator.is_valid(artifact | {"size_bytes": -1})
    assert not validator.is_valid(artifact | {"sha256": "E3B0" + "0" * 60})
    assert not validator.is_valid(artifact | {"sha256": "abc"})
