"""The ``langgraph.v1`` graph document as typed models.

``schemas/graph.schema.json`` is the contract; the models here mirror it field for field
(``tests/graphs/test_document.py`` fails when the two drift). JSON names are kept as
aliases (``from``, ``to``, ``workflowId``, ``maxAttempts``, ``progressWeight``); Python
code uses the snake_case attributes (``edge.source``, ``node.max_attempts``...).

Parse untrusted JSON with :meth:`GraphDocument.from_json`, which accepts exactly what the
JSON Schema accepts; plain ``model_validate`` and the constructors also accept the Python
attribute names, for building documents in code.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, Final, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
)

GRAPH_SCHEMA_ID = "langgraph.v1"

Plane = Literal["node", "python", "cpu", "gpu"]
NodeStatus = Literal["pending", "ready", "running", "completed", "failed", "skipped"]

# How each state of a running node reads in a ``langgraph.v1`` document, whose status
# vocabulary (from the original system) has ``ready`` for queued and no ``cancelled``.
# Keyed by every ``walker.NodeState`` (the database column is a plain string).
DOCUMENT_STATUS: Final[Mapping[str, NodeStatus]] = {
    "pending": "pending",
    "queued": "ready",
    "running": "running",
    "completed": "completed",
    "failed": "failed",
    "skipped": "skipped",
    "cancelled": "skipped",
}
EdgeKind = Literal["normal", "on_success", "on_failure"]

NODE_ID_PATTERN = r"^[A-Za-z0-9_.:-]{1,64}$"
# A node's progressWeight; with at most 500 nodes the sum stays far from overflow.
MAX_PROGRESS_WEIGHT = 1000


def _json_integer(value: object) -> object:
    # JSON Schema's "integer": 3 and 3.0 are integers, true is not. Pydantic's strict
    # int would refuse 3.0 and its lax int would take true; this matches the schema.
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


JsonInt = Annotated[int, BeforeValidator(_json_integer)]


_FROM_JSON = {"from_json": True}


def _reject_null(value: object, info: ValidationInfo) -> object:
    # Fields that may be absent but not null in the schema: None stands for "absent".
    # JSON input with an explicit null is refused like the schema refuses it; Python
    # code may still pass None to mean "absent".
    if value is None and info.context == _FROM_JSON:
        raise ValueError("null is not allowed; leave the field out instead")
    return value


# JSON names are given as validation_alias + serialization_alias rather than alias, so
# that type checkers see the Python names in constructors: GraphEdge(source=..., target=...).
class _Model(BaseModel):
    model_config = ConfigDict(populate_by_name=True, extra="forbid", strict=True)


class NodeError(_Model):
    """Why a node failed: a human message, a machine-readable code, and details."""

    message: str
    code: str = ""
    details: dict[str, Any] = Field(default_factory=dict)


class NodeRetries(_Model):
    """The attempt in progress (0 before the first) and the node's attempt limit.

    ``max_attempts`` is ``None`` when the document leaves it out; the service
    capability's ``maxAttempts`` applies then.
    """

    attempt: JsonInt = Field(default=0, ge=0)
    max_attempts: Annotated[int, Field(ge=1, le=20), BeforeValidator(_json_integer)] | None = Field(
        default=None, validation_alias="maxAttempts", serialization_alias="maxAttempts"
    )

    _not_null = field_validator("max_attempts", mode="before")(_reject_null)


class GraphNode(_Model):
    """One call of a service. Only ``id`` and ``service`` are required."""

    id: str = Field(pattern=NODE_ID_PATTERN)
    name: str = ""
    service: str = Field(min_length=1)
    plane: Plane | None = None
    status: NodeStatus = "pending"
    params: dict[str, Any] = Field(default_factory=dict)
    input: dict[str, Any] = Field(default_factory=dict)
    output: dict[str, Any] | None = None
    error: NodeError | None = None
    retries: NodeRetries = Field(default_factory=NodeRetries)
    tags: list[str] = Field(default_factory=list)
    telemetry: dict[str, Any] = Field(default_factory=dict)
    progress_weight: float = Field(
        default=1,
        validation_alias="progressWeight",
        serialization_alias="progressWeight",
        ge=0,
        le=MAX_PROGRESS_WEIGHT,
    )

    _not_null = field_validator("plane", mode="before")(_reject_null)


class GraphEdge(_Model):
    """``target`` runs after ``source`` reached the state ``kind`` asks for."""

    source: str = Field(validation_alias="from", serialization_alias="from")
    target: str = Field(validation_alias="to", serialization_alias="to")
    kind: EdgeKind = "normal"
    metadata: dict[str, Any] = Field(default_factory=dict)


class GraphDocument(_Model):
    """A whole ``langgraph.v1`` document."""

    schema_: Literal["langgraph.v1"] = Field(
        validation_alias="schema", serialization_alias="schema"
    )
    workflow_id: str | None = Field(
        default=None, validation_alias="workflowId", serialization_alias="workflowId"
    )
    context: dict[str, Any] = Field(default_factory=dict)
    metadata: dict[str, Any] = Field(default_factory=dict)
    nodes: list[GraphNode]
    edges: list[GraphEdge]

    _not_null = field_validator("workflow_id", mode="before")(_reject_null)

    @classmethod
    def from_json(cls, data: object) -> GraphDocument:
        """Parse a JSON value, accepting only the JSON names (``from``, not ``source``).

        Raises ``pydantic.ValidationError`` when ``data`` is not a valid document.
        Graph-level rules (unique ids, no cycles, known services) are checked by
        :func:`apps.graphs.validation.validate_graph`, not here.
        """
        return cls.model_validate(data, by_alias=True, by_name=False, context=_FROM_JSON)

    def to_json(self) -> dict[str, Any]:
        """Return the document as JSON-ready data with the schema's names.

        Fields left out of the source document that have no value (``workflowId``,
        ``plane``, ``output``, ``error``, ``retries.maxAttempts``) stay out; everything
        else is written with its default, so the result always satisfies the schema.
        """
        data: dict[str, Any] = self.model_dump(mode="json", by_alias=True, exclude_none=True)
        return data

    def node(self, node_id: str) -> GraphNode:
        """Return the node with id ``node_id``; ``KeyError`` when there is none."""
        for node in self.nodes:
            if node.id == node_id:
                return node
        raise KeyError(node_id)
