"""Documents written for the original system, read as ``langgraph.v1`` documents of ours.

The original's graphs differ from ours in four ways, all mended here before validation
(:func:`normalise`, called by ``validate_graph``), so its documents run unchanged:

- a node may name its work under ``task`` instead of ``service``;
- it names that work with its own service ids, which ``apps.capabilities.aliases`` maps
  to the services here that do that work (renaming parameters where ours differ), or
  refuses with the reason (rule ``unsupported_service``);
- ``null`` is allowed in the optional node fields ``input``, ``output``, ``error``,
  ``retries``, ``telemetry`` and ``tags``: such a field is left out;
- any non-empty string is a node id. An id that is not a storage-safe key (``[A-Za-z0-9_.:-]``,
  at most 64 characters, not only dots) is replaced inside by a key made of its safe
  characters and a hash of it (:func:`storage_key`), in the nodes and in the edges (and
  a node without a ``name`` is named by its id). Only the key ever reaches a task id, a
  database row, a file path or an object key.

What was changed is recorded in the document's ``metadata.original``, keyed by the
node's key: ``{"id", "service", "serviceField", "params", "dropped"}`` (each only when it
applies), so the UI and the API show both names. Problems found later are reported with
the original id (:func:`restore_ids`).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Container, Mapping, Sequence
from dataclasses import replace
from typing import Any

from apps.capabilities.aliases import alias_for
from apps.graphs.validation import ValidationIssue

METADATA_KEY = "original"
NULLABLE_FIELDS = ("input", "output", "error", "retries", "telemetry", "tags")
_SAFE_ID = re.compile(r"[A-Za-z0-9_.:-]{1,64}")
_UNSAFE_RUN = re.compile(r"[^A-Za-z0-9_-]+")
_KEPT_CHARACTERS = 40
_HASH_CHARACTERS = 10


def is_storage_safe(node_id: str) -> bool:
    """True when ``node_id`` may be used as it is in task ids, rows and object keys."""
    return bool(_SAFE_ID.fullmatch(node_id)) and node_id.strip(".") != ""


def storage_key(node_id: str, length: int = _HASH_CHARACTERS) -> str:
    """A storage-safe key for ``node_id``: its letters, digits, ``_`` and ``-`` (other
    runs become one ``_``, at most 40 kept), a ``-``, and ``length`` hex digits of its
    sha256. Never contains ``.``, ``/`` or ``:``; at most 57 characters."""
    kept = _UNSAFE_RUN.sub("_", node_id).strip("_")[:_KEPT_CHARACTERS] or "node"
    digest = hashlib.sha256(node_id.encode("utf-8", "surrogatepass")).hexdigest()
    return f"{kept}-{digest[:length]}"


def normalise(
    document: dict[str, Any], known: Container[str] = ()
) -> tuple[dict[str, Any], list[ValidationIssue]]:
    """Return ``document`` in our form (a new dict; the argument is not changed) and the
    problems that stop it from being one (empty ids, a ``task`` and a ``service`` that
    disagree, an original service no service here can run). ``known`` holds the services
    of this server: an alias to one it lacks (``debug.noop`` where the ``debug.*``
    services are off) is refused naming both.

    A document already in our form comes back equal to itself, ``metadata.original``
    included, so normalising twice changes nothing.
    """
    nodes = document.get("nodes")
    if not isinstance(nodes, list):
        return document, []
    keys = _node_keys(nodes)
    issues: list[ValidationIssue] = []
    records: dict[str, dict[str, Any]] = {}
    new_nodes: list[Any] = []
    for position, node in enumerate(nodes):
        if not isinstance(node, dict):
            new_nodes.append(node)
            continue
        new_node, record = _normalise_node(position, node, keys, known, issues)
        new_nodes.append(new_node)
        if record:
            records.setdefault(str(new_node.get("id")), {}).update(record)
    result = {**document, "nodes": new_nodes}
    edges = document.get("edges")
    if isinstance(edges, list):
        result["edges"] = [_normalise_edge(edge, keys) for edge in edges]
    if records:
        metadata = document.get("metadata")
        result["metadata"] = {
            **(metadata if isinstance(metadata, dict) else {}),
            METADATA_KEY: {"nodes": records},
        }
    return result, issues


def _node_keys(nodes: Sequence[Any]) -> dict[str, str]:
    """Original id → key, for every string id that is not storage-safe. A key that
    another node uses as its own id gets a longer hash."""
    ids = {node.get("id") for node in nodes if isinstance(node, dict)}
    taken = {node_id for node_id in ids if isinstance(node_id, str) and is_storage_safe(node_id)}
    keys: dict[str, str] = {}
    for node_id in ids:
        if isinstance(node_id, str) and node_id and node_id not in taken:
            key = storage_key(node_id)
            if key in taken:
                key = storage_key(node_id, length=20)
            keys[node_id] = key
    return keys


def _normalise_node(
    position: int,
    node: dict[str, Any],
    keys: Mapping[str, str],
    known: Container[str],
    issues: list[ValidationIssue],
) -> tuple[dict[str, Any], dict[str, Any]]:
    record: dict[str, Any] = {}
    new = dict(node)
    node_id = node.get("id")
    shown = node_id if isinstance(node_id, str) else None
    where = f"nodes[{position}]"
    if node_id == "":
        issues.append(
            ValidationIssue("schema", "a node id must not be empty", node="", path=f"{where}.id")
        )
    elif isinstance(node_id, str) and node_id in keys:
        new["id"] = keys[node_id]
        record["id"] = node_id
        if not new.get("name"):
            new["name"] = node_id  # what the UI shows of a node

    dropped = [name for name in NULLABLE_FIELDS if name in new and new[name] is None]
    for name in dropped:
        del new[name]
    if dropped:
        record["dropped"] = dropped

    if "task" in new:
        task = new.pop("task")
        if "service" not in new:
            new["service"] = task
            record["serviceField"] = "task"
        elif new["service"] != task:
            issues.append(
                ValidationIssue(
                    "schema",
                    f"node {shown!r} names {task!r} as its task and {new['service']!r} as "
                    "its service; give one of them",
                    node=shown,
                    path=f"{where}.task",
                )
            )

    service = new.get("service")
    alias = alias_for(service) if isinstance(service, str) else None
    if alias is not None:
        if alias.service is None or alias.service not in known:
            why = (
                alias.why
                if alias.service is None
                else f"it runs as {alias.service!r}, which this server does not offer"
            )
            issues.append(
                ValidationIssue(
                    "unsupported_service",
                    f"node {shown!r}: the original system's {service!r} has no service here: {why}",
                    node=shown,
                    path=f"{where}.service",
                )
            )
        else:
            if alias.service != service:
                new["service"] = alias.service
                record["service"] = service
            params = new.get("params")
            if isinstance(params, dict):
                renamed = {
                    old: ours
                    for old, ours in alias.params.items()
                    if old in params and ours not in params
                }
                if renamed:
                    new["params"] = {renamed.get(k, k): v for k, v in params.items()}
                    record["params"] = renamed
    return new, record


def _normalise_edge(edge: Any, keys: Mapping[str, str]) -> Any:
    if not isinstance(edge, dict):
        return edge
    new = dict(edge)
    for end in ("from", "to"):
        value = new.get(end)
        if isinstance(value, str) and value in keys:
            new[end] = keys[value]
    return new


def original_ids(document: Mapping[str, Any]) -> dict[str, str]:
    """Key → original id, from ``metadata.original`` of a normalised document."""
    metadata = document.get("metadata")
    recorded = metadata.get(METADATA_KEY) if isinstance(metadata, dict) else None
    nodes = recorded.get("nodes") if isinstance(recorded, dict) else None
    if not isinstance(nodes, dict):
        return {}
    return {
        key: record["id"]
        for key, record in nodes.items()
        if isinstance(record, dict) and isinstance(record.get("id"), str)
    }


def restore_ids(
    issues: Sequence[ValidationIssue], originals: Mapping[str, str]
) -> list[ValidationIssue]:
    """``issues`` naming each node by the id its author gave it rather than its key."""
    if not originals:
        return list(issues)
    restored = []
    for issue in issues:
        message = issue.message
        for key, node_id in originals.items():
            message = message.replace(repr(key), repr(node_id))
        node = originals.get(issue.node, issue.node) if issue.node is not None else None
        restored.append(replace(issue, message=message, node=node))
    return restored
