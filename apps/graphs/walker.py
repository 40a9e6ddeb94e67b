"""The graph walker: decides what a job does next from its node states.

A pure function with no Django and no I/O. The caller holds a row lock on the job,
reads every node's state, calls :func:`plan`, and applies the result: dispatch the
``dispatch`` nodes, mark the ``skip`` nodes skipped, and finish the job with
``job_status`` when it is set.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Final, Literal, get_args

# The one list of the states a node of a running job can be in. ``NodeRun.Status``
# (the database choices), the graph document's ``status`` (through
# ``document.DOCUMENT_STATUS``) and the WebSocket's ``nodeStatus`` are checked against it
# by tests/graphs/test_node_states.py.
NodeState = Literal["pending", "queued", "running", "completed", "failed", "skipped", "cancelled"]
NODE_STATES: Final[tuple[NodeState, ...]] = get_args(NodeState)
EdgeKind = Literal["normal", "on_success", "on_failure"]
JobStatus = Literal["completed", "failed"]

TERMINAL_STATES: Final[frozenset[NodeState]] = frozenset(
    {"completed", "failed", "skipped", "cancelled"}
)
ACTIVE_STATES: Final[frozenset[NodeState]] = frozenset({"queued", "running"})

# The one source state that satisfies an edge of each kind. Any other terminal
# source state makes the edge impossible; a non-terminal one leaves it open.
_SATISFYING_STATE: Final[Mapping[EdgeKind, NodeState]] = {
    "normal": "completed",
    "on_success": "completed",
    "on_failure": "failed",
}


@dataclass(frozen=True)
class Edge:
    """``target`` may run only after ``source`` reached the state ``kind`` asks for."""

    source: str
    target: str
    kind: EdgeKind = "normal"


@dataclass(frozen=True)
class Plan:
    """What to do next.

    ``dispatch``: pending nodes ready to run now, in the order the nodes were given.
    ``skip``: pending nodes that can never run, in the order the nodes were given.
    ``job_status``: the job's final status once this plan is applied, or ``None``
    while any node is pending, queued, running or being dispatched.
    """

    dispatch: tuple[str, ...]
    skip: tuple[str, ...]
    job_status: JobStatus | None


def plan(states: Mapping[str, NodeState], edges: Sequence[Edge]) -> Plan:
    """Decide which pending nodes to dispatch or skip, and whether the job is done.

    ``states`` maps every node of a validated DAG to its state; ``edges`` only name
    nodes in ``states``. An edge is satisfied when its source is ``completed``
    (``normal``/``on_success``) or ``failed`` (``on_failure``), and impossible when
    its source reached any other terminal state. A pending node is dispatched when
    all its incoming edges are satisfied, and skipped when one is impossible;
    skipping cascades to the pending nodes below within this call.

    A cancelled node, or a failed node without an outgoing ``on_failure`` edge, is an
    unhandled failure: then nothing is dispatched, every pending node is skipped, and
    the job ends ``failed`` once no node is queued or running. Otherwise the job ends
    ``completed`` once no node is pending, queued or running.

    Runs in O(nodes + edges).
    """
    pending: list[str] = []
    failed: list[str] = []
    any_active = False
    any_cancelled = False
    for node, state in states.items():
        if state == "pending":
            pending.append(node)
        elif state == "failed":
            failed.append(node)
        elif state == "cancelled":
            any_cancelled = True
        elif state in ACTIVE_STATES:
            any_active = True

    if any_cancelled or (failed and not _all_handled(failed, edges)):
        return Plan((), tuple(pending), None if any_active else "failed")

    incoming: dict[str, list[Edge]] = {}
    # Edges between two pending nodes: the only ones a skip can cascade along.
    pending_successors: dict[str, list[str]] = {}
    for edge in edges:
        if states[edge.target] == "pending":
            incoming.setdefault(edge.target, []).append(edge)
            if states[edge.source] == "pending":
                pending_successors.setdefault(edge.source, []).append(edge.target)

    skipped: set[str] = set()
    worklist: list[str] = []
    for node in pending:
        if any(_is_impossible(edge, states) for edge in incoming.get(node, ())):
            skipped.add(node)
            worklist.append(node)
    while worklist:
        for target in pending_successors.get(worklist.pop(), ()):
            if target not in skipped:
                skipped.add(target)
                worklist.append(target)

    dispatch = tuple(
        node
        for node in pending
        if node not in skipped
        and all(
            states[edge.source] == _SATISFYING_STATE[edge.kind] for edge in incoming.get(node, ())
        )
    )
    skip = tuple(node for node in pending if node in skipped)

    still_pending = len(pending) - len(dispatch) - len(skip)
    finished = not any_active and not dispatch and still_pending == 0
    return Plan(dispatch, skip, "completed" if finished else None)


def _is_impossible(edge: Edge, states: Mapping[str, NodeState]) -> bool:
    source_state = states[edge.source]
    return source_state in TERMINAL_STATES and source_state != _SATISFYING_STATE[edge.kind]


def _all_handled(failed: list[str], edges: Sequence[Edge]) -> bool:
    handled = {edge.source for edge in edges if edge.kind == "on_failure"}
    return all(node in handled for node in failed)
