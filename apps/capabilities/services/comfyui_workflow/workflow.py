"""An API-format ComfyUI workflow and its sidecar of bindings.

The workflow is ComfyUI's API format: ``{node_id: {"class_type", "inputs"}}``, where an
input is a value or a link ``[source_node_id, output_index]``. The sidecar says which
node input takes each value the service binds:
``{"prompt": {"node": "6", "field": "text"}, "seed": {...}, "image": {...}, ...}``.
"""

from __future__ import annotations

import copy
from typing import Any

BINDABLE = ("prompt", "negative_prompt", "seed", "image", "audio")


def problems(workflow: object, bindings: object) -> list[str]:
    """What is wrong with a workflow and its bindings, each naming the node or binding;
    empty when both are usable."""
    if not isinstance(workflow, dict) or not workflow:
        return ["the workflow must be a non-empty object of node id -> {class_type, inputs}"]
    found: list[str] = []
    for node_id, node in workflow.items():
        if (
            not isinstance(node, dict)
            or not isinstance(node.get("class_type"), str)
            or not node["class_type"]
        ):
            found.append(
                f"node {node_id!r}: needs a class_type "
                "(is this the API format? export with 'Save (API)')"
            )
            continue
        inputs = node.get("inputs")
        if not isinstance(inputs, dict):
            found.append(f"node {node_id!r}: inputs must be an object")
            continue
        for name, value in inputs.items():
            if is_link(value) and str(value[0]) not in workflow:
                found.append(f"node {node_id!r}: input {name!r} links to unknown node {value[0]!r}")
    if not isinstance(bindings, dict):
        return [*found, "bindings must be an object"]
    for name, binding in bindings.items():
        if name not in BINDABLE:
            found.append(f"binding {name!r}: unknown (one of {', '.join(BINDABLE)})")
        elif (
            not isinstance(binding, dict)
            or not isinstance(binding.get("node"), str)
            or not isinstance(binding.get("field"), str)
        ):
            found.append(f"binding {name!r}: must be {{node, field}}")
        elif not isinstance(workflow.get(binding["node"]), dict):
            found.append(f"binding {name!r}: no node {binding['node']!r} in the workflow")
        elif binding["field"] not in (workflow[binding["node"]].get("inputs") or {}):
            found.append(
                f"binding {name!r}: node {binding['node']!r} has no input {binding['field']!r}"
            )
    return found


def is_link(value: object) -> bool:
    """Whether an input value is a link ``[node_id, output_index]`` to another node."""
    return (
        isinstance(value, list)
        and len(value) == 2
        and isinstance(value[0], (str, int))
        and isinstance(value[1], int)
    )


def class_types(workflow: dict[str, Any]) -> set[str]:
    """The node classes a workflow uses."""
    return {
        str(node["class_type"])
        for node in workflow.values()
        if isinstance(node, dict) and "class_type" in node
    }


def bind(
    workflow: dict[str, Any], bindings: dict[str, Any], values: dict[str, Any]
) -> dict[str, Any]:
    """A copy of ``workflow`` with each value of ``values`` set where its binding says
    (values without a binding are left out)."""
    bound = copy.deepcopy(workflow)
    for name, value in values.items():
        binding = bindings.get(name)
        if binding is not None:
            bound[binding["node"]]["inputs"][binding["field"]] = value
    return bound
