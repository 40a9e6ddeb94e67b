"""The seams between steps: what a node produces must fit what its successor accepts.

Each service states its side once, in its ``capability.json``:

- ``accepts``: by input kind, the bounds of each measured property it takes from a
  predecessor (``video.compose``: images at least 64 px a side, clips of at most 240
  frames at most 120 fps);
- an output's ``produces``: each property as a number, a node param (``{"param":
  "width"}``) or the same property of what one of its inputs receives (``{"input":
  "keyframe"}``), optionally times a ``scale`` range (an upscaler: ``[2, 4]``);
- an input's ``reads``: the predecessor outputs it is fed from (default its own name).

:func:`check_contracts` walks the graph in dependency order, works out the range of
each property every output can have, and reports one ``contract_mismatch`` per
connection whose range is not inside the successor's bounds, naming both nodes, so a
job is refused at submission rather than failing at its last step. A property nobody
can know before running (a speech's length) is not checked.
"""

from __future__ import annotations

from collections.abc import Mapping
from graphlib import TopologicalSorter
from typing import Any

from apps.capabilities.registry import Capability, CapabilityRegistry
from apps.graphs.document import GraphDocument
from apps.graphs.validation import ValidationIssue

Range = tuple[float, float]
# Each property's unit, for the messages.
UNITS = {"width": " px", "height": " px", "fps": " fps", "duration_seconds": " s"}


def check_contracts(graph: GraphDocument, registry: CapabilityRegistry) -> list[ValidationIssue]:
    """One ``contract_mismatch`` issue per connection that breaks its successor's bounds.

    ``graph`` has passed the structural and service checks (acyclic, known services,
    valid params).
    """
    capabilities = {node.id: registry.get(node.service) for node in graph.nodes}
    params = {node.id: capabilities[node.id].with_defaults(node.params) for node in graph.nodes}
    feeding = [
        (index, edge.source, edge.target)
        for index, edge in enumerate(graph.edges)
        if edge.kind != "on_failure"  # a failed source hands on no outputs
    ]
    order = TopologicalSorter({node.id: set() for node in graph.nodes})
    for _, source, target in feeding:
        order.add(target, source)

    produced: dict[str, dict[str, dict[str, Range | None]]] = {}
    issues: list[ValidationIssue] = []
    for node_id in order.static_order():
        capability = capabilities[node_id]
        received: dict[str, dict[str, Range | None]] = {}
        for index, source, target in feeding:
            if target != node_id:
                continue
            for port in capability.inputs:
                for output in capabilities[source].outputs:
                    if output.name not in port.takes:
                        continue
                    measures = produced[source][output.name]
                    _merge(received.setdefault(port.name, {}), measures)
                    issues.extend(
                        _mismatches(
                            index,
                            (source, capabilities[source], output.name),
                            (node_id, capability, port.name, port.kind),
                            measures,
                        )
                    )
        produced[node_id] = {
            output.name: {
                name: _resolve(name, spec, params[node_id], received)
                for name, spec in output.produces.items()
            }
            for output in capability.outputs
        }
    return issues


def _resolve(
    name: str,
    spec: Any,
    params: Mapping[str, Any],
    received: Mapping[str, Mapping[str, Range | None]],
) -> Range | None:
    """The range of one produced property, or None when it cannot be known now."""
    if isinstance(spec, int | float):
        return float(spec), float(spec)
    base: Range | None
    if "param" in spec:
        value = params.get(spec["param"])
        base = (float(value), float(value)) if isinstance(value, int | float) else None
    else:
        base = received.get(spec["input"], {}).get(name)
    if base is None:
        return None
    low, high = spec.get("scale", (1, 1))
    return base[0] * low, base[1] * high


def _merge(into: dict[str, Range | None], measures: Mapping[str, Range | None]) -> None:
    """Widen ``into`` to cover ``measures`` (an input fed by several outputs)."""
    for name, value in measures.items():
        if name not in into:
            into[name] = value
            continue
        current = into[name]
        into[name] = (
            None
            if current is None or value is None
            else (min(current[0], value[0]), max(current[1], value[1]))
        )


def _mismatches(
    edge: int,
    source: tuple[str, Capability, str],
    target: tuple[str, Capability, str, str],
    measures: Mapping[str, Range | None],
) -> list[ValidationIssue]:
    source_id, source_capability, output = source
    target_id, target_capability, port, kind = target
    issues = []
    for name, bounds in target_capability.accepts.get(kind, {}).items():
        value = measures.get(name)
        if value is None:
            continue
        low, high = bounds.get("min"), bounds.get("max")
        if (low is None or value[0] >= low) and (high is None or value[1] <= high):
            continue
        unit = UNITS.get(name, "")
        accepted = (
            f"{_number(low)}-{_number(high)}{unit}"
            if low is not None and high is not None
            else f"at least {_number(low)}{unit}"
            if low is not None
            else f"at most {_number(high)}{unit}"
        )
        given = (
            _number(value[0])
            if value[0] == value[1]
            else f"{_number(value[0])}-{_number(value[1])}"
        )
        issues.append(
            ValidationIssue(
                "contract_mismatch",
                f"node {source_id!r} ({source_capability.id}) gives {output!r} with {name} "
                f"{given}{unit}, but node {target_id!r} ({target_capability.id}) takes "
                f"{kind} {port!r} with {name} {accepted}",
                node=target_id,
                edge=edge,
                path=f"edges[{edge}]",
            )
        )
    return issues


def _number(value: float | None) -> str:
    return f"{value:g}"
