from __future__ import annotations

import random
from collections.abc import Iterator, Mapping
from itertools import pairwise

from apps.graphs.walker import (
    ACTIVE_STATES,
    TERMINAL_STATES,
    Edge,
    EdgeKind,
    NodeState,
    Plan,
    plan,
)


def chain(*nodes: str, kind: EdgeKind = "normal") -> list[Edge]:
    return [Edge(a, b, kind) for a, b in pairwise(nodes)]


def apply(states: dict[str, NodeState], result: Plan) -> None:
    for node in result.dispatch:
        states[node] = "queued"
    for node in result.skip:
        states[node] = "skipped"


# --- constants -------------------------------------------------------------------


def test_state_sets():
    assert {"completed", "failed", "skipped", "cancelled"} == TERMINAL_STATES
    assert {"queued", "running"} == ACTIVE_STATES


# --- empty graph -----------------------------------------------------------------


def test_empty_graph_is_completed():
    assert plan({}, []) == Plan((), (), "completed")


def test_single_node_dispatches_then_completes():
    assert plan({"a": "pending"}, []) == Plan(("a",), (), None)
    assert plan({"a": "running"}, []) == Plan((), (), None)
    assert plan({"a": "completed"}, []) == Plan((), (), "completed")


def test_single_failed_node_fails_job():
    assert plan({"a": "failed"}, []) == Plan((), (), "failed")


# --- chains ----------------------------------------------------------------------


def test_chain_first_step_dispatches_root_only():
    states: dict[str, NodeState] = {"a": "pending", "b": "pending", "c": "pending"}

    result = plan(states, chain("a", "b", "c"))

    assert result == Plan(("a",), (), None)


def test_chain_waits_while_root_is_queued_or_running():
    edges = chain("a", "b", "c")

    for state in ("queued", "running"):
        result = plan({"a": state, "b": "pending", "c": "pending"}, edges)
        assert result == Plan((), (), None)


def test_chain_middle_dispatches_next_node():
    states: dict[str, NodeState] = {"a": "completed", "b": "pending", "c": "pending"}

    result = plan(states, chain("a", "b", "c"))

    assert result == Plan(("b",), (), None)


def test_chain_last_node_dispatches_after_middle_completes():
    states: dict[str, NodeState] = {
        "a": "completed",
        "b": "completed",
        "c": "pending",
    }

    result = plan(states, chain("a", "b", "c"))

    assert result == Plan(("c",), (), None)


def test_chain_end_is_completed():
    states: dict[str, NodeState] = {
        "a": "completed",
        "b": "completed",
        "c": "completed",
    }

    result = plan(states, chain("a", "b", "c"))

    assert result == Plan((), (), "completed")


def test_chain_runs_to_completion_step_by_step():
    edges = chain("a", "b", "c", "d")
    states: dict[str, NodeState] = dict.fromkeys("abcd", "pending")
    dispatched: list[tuple[str, ...]] = []

    while (result := plan(states, edges)).job_status is None:
        dispatched.append(result.dispatch)
        apply(states, result)
        for node in result.dispatch:
            states[node] = "completed"

    assert dispatched == [("a",), ("b",), ("c",), ("d",)]
    assert result == Plan((), (), "completed")


def test_queued_running_and_terminal_nodes_are_never_planned():
    # given every input of b, c, d, e is satisfied but none of them is pending
    states: dict[str, NodeState] = {
        "a": "completed",
        "b": "queued",
        "c": "running",
        "d": "completed",
        "e": "skipped",
    }
    edges = [Edge("a", n) for n in "bcde"]

    result = plan(states, edges)

    assert result == Plan((), (), None)


# --- diamond ---------------------------------------------------------------------

DIAMOND = [Edge("a", "b"), Edge("a", "c"), Edge("b", "d"), Edge("c", "d")]


def test_diamond_root_completed_dispatches_both_branches():
    states: dict[str, NodeState] = {
        "a": "completed",
        "b": "pending",
        "c": "pending",
        "d": "pending",
    }

    assert plan(states, DIAMOND) == Plan(("b", "c"), (), None)


def test_diamond_join_waits_for_both_branches():
    states: dict[str, NodeState] = {
        "a": "completed",
        "b": "completed",
        "c": "running",
        "d": "pending",
    }

    assert plan(states, DIAMOND) == Plan((), (), None)


def test_diamond_join_dispatches_once_both_completed():
    states: dict[str, NodeState] = {
        "a": "completed",
        "b": "completed",
        "c": "completed",
        "d": "pending",
    }

    assert plan(states, DIAMOND) == Plan(("d",), (), None)


def test_diamond_join_is_dispatched_exactly_once():
    states: dict[str, NodeState] = {
        "a": "completed",
        "b": "completed",
        "c": "completed",
        "d": "pending",
    }
    apply(states, plan(states, DIAMOND))

    # a second walk (say, a late event for c) does not dispatch d again
    assert plan(states, DIAMOND) == Plan((), (), None)


def test_diamond_branch_failure_fails_job_and_skips_join():
    states: dict[str, NodeState] = {
        "a": "completed",
        "b": "failed",
        "c": "completed",
        "d": "pending",
    }

    assert plan(states, DIAMOND) == Plan((), ("d",), "failed")


# --- wide fan-out and fan-in -----------------------------------------------------


def wide(n: int) -> tuple[list[str], list[Edge]]:
    middle = [f"m{i}" for i in range(n)]
    edges = [Edge("root", m) for m in middle] + [Edge(m, "sink") for m in middle]
    return middle, edges


def test_fan_out_dispatches_all_200_in_node_order():
    middle, edges = wide(200)
    states: dict[str, NodeState] = {"root": "completed"}
    states |= dict.fromkeys(middle, "pending")
    states["sink"] = "pending"

    result = plan(states, edges)

    assert result == Plan(tuple(middle), (), None)


def test_fan_out_first_step_dispatches_root_only():
    middle, edges = wide(200)
    states: dict[str, NodeState] = {"root": "pending"}
    states |= dict.fromkeys(middle, "pending")
    states["sink"] = "pending"

    assert plan(states, edges) == Plan(("root",), (), None)


def test_fan_in_waits_for_the_last_of_200():
    middle, edges = wide(200)
    states: dict[str, NodeState] = {"root": "completed"}
    states |= dict.fromkeys(middle, "completed")
    states["m137"] = "running"
    states["sink"] = "pending"

    assert plan(states, edges) == Plan((), (), None)


def test_fan_in_dispatches_sink_when_all_200_completed():
    middle, edges = wide(200)
    states: dict[str, NodeState] = {"root": "completed"}
    states |= dict.fromkeys(middle, "completed")
    states["sink"] = "pending"

    assert plan(states, edges) == Plan(("sink",), (), None)


def test_fan_in_one_failure_skips_sink_and_waits_for_the_rest():
    middle, edges = wide(200)
    states: dict[str, NodeState] = {"root": "completed"}
    states |= dict.fromkeys(middle, "running")
    states["m0"] = "failed"
    states["sink"] = "pending"

    assert plan(states, edges) == Plan((), ("sink",), None)


def test_fan_out_completes_one_node_at_a_time():
    middle, edges = wide(200)
    states: dict[str, NodeState] = {"root": "completed"}
    states |= dict.fromkeys(middle, "running")
    states["sink"] = "pending"
    results = []

    for m in middle:
        states[m] = "completed"
        results.append(plan(states, edges))

    assert results[:-1] == [Plan((), (), None)] * 199
    assert results[-1] == Plan(("sink",), (), None)


# --- on_success edges ------------------------------------------------------------


def test_on_success_edge_dispatches_when_source_completed():
    states: dict[str, NodeState] = {"a": "completed", "b": "pending"}

    result = plan(states, [Edge("a", "b", "on_success")])

    assert result == Plan(("b",), (), None)


def test_on_success_edge_waits_while_source_runs():
    states: dict[str, NodeState] = {"a": "running", "b": "pending"}

    result = plan(states, [Edge("a", "b", "on_success")])

    assert result == Plan((), (), None)


def test_on_success_edge_is_skipped_when_source_fails():
    states: dict[str, NodeState] = {"a": "failed", "b": "pending"}

    result = plan(states, [Edge("a", "b", "on_success")])

    assert result == Plan((), ("b",), "failed")


# --- on_failure edges ------------------------------------------------------------


def test_on_failure_branch_runs_when_source_fails():
    edges = [Edge("a", "next"), Edge("a", "handler", "on_failure")]
    states: dict[str, NodeState] = {
        "a": "failed",
        "next": "pending",
        "handler": "pending",
    }

    result = plan(states, edges)

    assert result == Plan(("handler",), ("next",), None)


def test_on_failure_handler_completing_completes_job():
    edges = [Edge("a", "next"), Edge("a", "handler", "on_failure")]
    states: dict[str, NodeState] = {
        "a": "failed",
        "next": "skipped",
        "handler": "completed",
    }

    assert plan(states, edges) == Plan((), (), "completed")


def test_on_failure_branch_is_skipped_when_source_succeeds():
    edges = [Edge("a", "next"), Edge("a", "handler", "on_failure")]
    states: dict[str, NodeState] = {
        "a": "completed",
        "next": "pending",
        "handler": "pending",
    }

    result = plan(states, edges)

    assert result == Plan(("next",), ("handler",), None)


def test_skipped_on_failure_branch_does_not_fail_job():
    edges = [Edge("a", "next"), Edge("a", "handler", "on_failure")]
    states: dict[str, NodeState] = {
        "a": "completed",
        "next": "completed",
        "handler": "skipped",
    }

    assert plan(states, edges) == Plan((), (), "completed")


def test_on_failure_branch_skipped_as_last_step_completes_job():
    edges = [Edge("a", "handler", "on_failure")]
    states: dict[str, NodeState] = {"a": "completed", "handler": "pending"}

    assert plan(states, edges) == Plan((), ("handler",), "completed")


def test_on_failure_branch_continues_after_handler():
    edges = [Edge("a", "handler", "on_failure"), Edge("handler", "notify")]
    states: dict[str, NodeState] = {
        "a": "failed",
        "handler": "completed",
        "notify": "pending",
    }

    assert plan(states, edges) == Plan(("notify",), (), None)


def test_handler_that_fails_fails_job():
    edges = [Edge("a", "handler", "on_failure")]
    states: dict[str, NodeState] = {"a": "failed", "handler": "failed"}

    assert plan(states, edges) == Plan((), (), "failed")


def test_handler_that_fails_skips_its_successors_and_fails_job():
    edges = [Edge("a", "handler", "on_failure"), Edge("handler", "notify")]
    states: dict[str, NodeState] = {
        "a": "failed",
        "handler": "failed",
        "notify": "pending",
    }

    assert plan(states, edges) == Plan((), ("notify",), "failed")


def test_handled_failure_leaves_independent_branch_running():
    edges = [Edge("a", "handler", "on_failure"), Edge("x", "y")]
    states: dict[str, NodeState] = {
        "a": "failed",
        "handler": "pending",
        "x": "completed",
        "y": "pending",
    }

    assert plan(states, edges) == Plan(("handler", "y"), (), None)


# --- skip cascade ----------------------------------------------------------------


def test_skip_cascades_down_a_long_chain_in_one_call():
    steps = [f"s{i}" for i in range(100)]
    edges = [Edge("a", "handler", "on_failure"), Edge("a", "s0")]
    edges += chain(*steps)
    states: dict[str, NodeState] = {"a": "failed", "handler": "pending"}
    states |= dict.fromkeys(steps, "pending")

    result = plan(states, edges)

    assert result == Plan(("handler",), tuple(steps), None)


def test_skip_cascade_given_edges_in_reverse_order():
    branch = [f"h{i}" for i in range(50)]
    edges = [Edge("a", "s0"), Edge("a", "h0", "on_failure"), *chain(*branch)][::-1]
    states: dict[str, NodeState] = {"a": "completed", "s0": "pending"}
    states |= dict.fromkeys(branch, "pending")

    result = plan(states, edges)

    assert result == Plan(("s0",), tuple(branch), None)


def test_skip_cascades_through_every_edge_kind():
    # a skipped node makes normal, on_success and on_failure edges all impossible
    edges = [
        Edge("a", "handler", "on_failure"),
        Edge("handler", "b", "normal"),
        Edge("handler", "c", "on_success"),
        Edge("handler", "d", "on_failure"),
    ]
    states: dict[str, NodeState] = {
        "a": "completed",
        "handler": "pending",
        "b": "pending",
        "c": "pending",
        "d": "pending",
    }

    assert plan(states, edges) == Plan((), ("handler", "b", "c", "d"), "completed")


def test_skip_cascade_into_join_with_a_ready_branch():
    # c's other input is completed, but its input from the skipped handler is not
    edges = [
        Edge("a", "handler", "on_failure"),
        Edge("handler", "c"),
        Edge("a", "b"),
        Edge("b", "c"),
    ]
    states: dict[str, NodeState] = {
        "a": "completed",
        "b": "completed",
        "handler": "pending",
        "c": "pending",
    }

    assert plan(states, edges) == Plan((), ("handler", "c"), "completed")


def test_skip_order_follows_node_order_not_cascade_order():
    edges = [Edge("a", "h", "on_failure"), Edge("h", "z"), Edge("z", "y")]
    states: dict[str, NodeState] = {
        "y": "pending",
        "a": "completed",
        "z": "pending",
        "h": "pending",
    }

    assert plan(states, edges) == Plan((), ("y", "z", "h"), "completed")


# --- fail fast -------------------------------------------------------------------


def test_fail_fast_skips_independent_pending_branch_while_another_runs():
    edges = [Edge("a", "b"), Edge("x", "y")]
    states: dict[str, NodeState] = {
        "a": "failed",
        "b": "pending",
        "x": "running",
        "y": "pending",
    }

    result = plan(states, edges)

    assert result == Plan((), ("b", "y"), None)


def test_fail_fast_waits_for_running_node_then_fails():
    edges = [Edge("a", "b"), Edge("x", "y")]
    states: dict[str, NodeState] = {
        "a": "failed",
        "b": "pending",
        "x": "running",
        "y": "pending",
    }
    apply(states, plan(states, edges))

    while_running = plan(states, edges)
    states["x"] = "completed"
    after_running = plan(states, edges)

    assert while_running == Plan((), (), None)
    assert after_running == Plan((), (), "failed")


def test_fail_fast_does_not_dispatch_a_ready_node():
    edges = [Edge("x", "y")]
    states: dict[str, NodeState] = {"a": "failed", "x": "completed", "y": "pending"}

    assert plan(states, edges) == Plan((), ("y",), "failed")


def test_fail_fast_skips_pending_roots():
    states: dict[str, NodeState] = {"a": "failed", "b": "pending", "c": "queued"}

    assert plan(states, []) == Plan((), ("b",), None)


def test_fail_fast_ignores_on_failure_edges_of_other_nodes():
    # x's handler would run if x failed, but a's unhandled failure stops the job
    edges = [Edge("x", "handler", "on_failure")]
    states: dict[str, NodeState] = {
        "a": "failed",
        "x": "failed",
        "handler": "pending",
    }

    assert plan(states, edges) == Plan((), ("handler",), "failed")


# --- several roots and disconnected parts ----------------------------------------


def test_several_roots_dispatch_together_in_node_order():
    edges = [Edge("r2", "j"), Edge("r1", "j"), Edge("r3", "j")]
    states: dict[str, NodeState] = {
        "r3": "pending",
        "j": "pending",
        "r1": "pending",
        "r2": "pending",
    }

    assert plan(states, edges) == Plan(("r3", "r1", "r2"), (), None)


def test_disconnected_parts_advance_independently():
    edges = [*chain("a1", "a2", "a3"), *chain("b1", "b2")]
    states: dict[str, NodeState] = {
        "a1": "completed",
        "a2": "completed",
        "a3": "pending",
        "b1": "running",
        "b2": "pending",
        "lone": "pending",
    }

    assert plan(states, edges) == Plan(("a3", "lone"), (), None)


def test_disconnected_parts_job_completes_when_all_parts_do():
    edges = [*chain("a1", "a2"), *chain("b1", "b2")]
    states: dict[str, NodeState] = {
        "a1": "completed",
        "a2": "completed",
        "b1": "completed",
        "b2": "running",
    }

    assert plan(states, edges) == Plan((), (), None)
    states["b2"] = "completed"
    assert plan(states, edges) == Plan((), (), "completed")


# --- mixed incoming edge kinds ---------------------------------------------------

MIXED = [
    Edge("ok", "t", "on_success"),
    Edge("bad", "t", "on_failure"),
]


def test_mixed_incoming_dispatches_when_one_succeeded_and_other_failed():
    states: dict[str, NodeState] = {"ok": "completed", "bad": "failed", "t": "pending"}

    assert plan(states, MIXED) == Plan(("t",), (), None)


def test_mixed_incoming_waits_for_the_failure_source():
    states: dict[str, NodeState] = {"ok": "completed", "bad": "running", "t": "pending"}

    assert plan(states, MIXED) == Plan((), (), None)


def test_mixed_incoming_waits_for_the_success_source():
    states: dict[str, NodeState] = {"ok": "running", "bad": "failed", "t": "pending"}

    assert plan(states, MIXED) == Plan((), (), None)


def test_mixed_incoming_skipped_when_both_succeeded():
    states: dict[str, NodeState] = {
        "ok": "completed",
        "bad": "completed",
        "t": "pending",
    }

    assert plan(states, MIXED) == Plan((), ("t",), "completed")


def test_mixed_incoming_skipped_and_job_failed_when_both_failed():
    # "ok" failed with no on_failure edge of its own: an unhandled failure
    states: dict[str, NodeState] = {"ok": "failed", "bad": "failed", "t": "pending"}

    assert plan(states, MIXED) == Plan((), ("t",), "failed")


# --- cancelled nodes -------------------------------------------------------------


def test_cancelled_node_skips_successors_and_fails_job():
    states: dict[str, NodeState] = {"a": "cancelled", "b": "pending"}

    assert plan(states, chain("a", "b")) == Plan((), ("b",), "failed")


def test_cancelled_node_does_not_trigger_its_on_failure_handler():
    edges = [Edge("a", "handler", "on_failure")]
    states: dict[str, NodeState] = {"a": "cancelled", "handler": "pending"}

    assert plan(states, edges) == Plan((), ("handler",), "failed")


def test_cancelled_node_waits_for_running_nodes():
    states: dict[str, NodeState] = {
        "a": "cancelled",
        "b": "running",
        "c": "pending",
    }

    assert plan(states, []) == Plan((), ("c",), None)


def test_all_cancelled_fails_job():
    states: dict[str, NodeState] = {"a": "cancelled", "b": "cancelled"}

    assert plan(states, chain("a", "b")) == Plan((), (), "failed")


# --- property: random DAGs run to the end ----------------------------------------

KINDS: tuple[EdgeKind, ...] = ("normal", "on_success", "on_failure")
SATISFYING: dict[EdgeKind, NodeState] = {
    "normal": "completed",
    "on_success": "completed",
    "on_failure": "failed",
}


def random_dag(rng: random.Random) -> tuple[list[str], list[Edge]]:
    nodes = [f"n{i}" for i in range(rng.randint(1, 14))]
    topo = nodes[:]
    rng.shuffle(topo)
    density = rng.choice((0.1, 0.3, 0.6))
    edges = [
        Edge(topo[i], topo[j], rng.choice(KINDS))
        for i in range(len(topo))
        for j in range(i + 1, len(topo))
        if rng.random() < density
    ]
    rng.shuffle(edges)
    return nodes, edges


def unhandled(states: dict[str, NodeState], edges: list[Edge]) -> set[str]:
    handlers = {e.source for e in edges if e.kind == "on_failure"}
    return {
        n for n, s in states.items() if s == "cancelled" or (s == "failed" and n not in handlers)
    }


def test_random_dags_run_to_a_consistent_end():
    rng = random.Random(20240611)

    for _ in range(300):
        nodes, edges = random_dag(rng)
        incoming = {n: [e for e in edges if e.target == n] for n in nodes}
        states: dict[str, NodeState] = dict.fromkeys(nodes, "pending")
        dispatched: list[str] = []

        for _step in range(3 * len(nodes) + 3):
            failing_fast = bool(unhandled(states, edges))
            result = plan(states, edges)

            # only pending nodes are planned, never both dispatched and skipped
            assert all(states[n] == "pending" for n in result.dispatch + result.skip)
            assert not set(result.dispatch) & set(result.skip)
            # dispatched only when every input is satisfied, and never twice
            for n in result.dispatch:
                assert all(states[e.source] == SATISFYING[e.kind] for e in incoming[n])
            assert not set(result.dispatch) & set(dispatched)
            assert not (failing_fast and result.dispatch)
            dispatched.extend(result.dispatch)

            apply(states, result)

            if failing_fast:
                assert "pending" not in states.values()
            else:
                for n in result.skip:  # skipped only for an impossible input
                    assert any(
                        states[e.source] in TERMINAL_STATES
                        and states[e.source] != SATISFYING[e.kind]
                        for e in incoming[n]
                    )
                for n, s in states.items():  # nothing ready or doomed is left
                    if s == "pending":
                        assert not all(states[e.source] == SATISFYING[e.kind] for e in incoming[n])
                        assert not any(
                            states[e.source] in TERMINAL_STATES
                            and states[e.source] != SATISFYING[e.kind]
                            for e in incoming[n]
                        )

            busy = {"pending", "queued", "running"} & set(states.values())
            if result.job_status is not None:
                assert not busy
                expected = "failed" if unhandled(states, edges) else "completed"
                assert result.job_status == expected
                break
            assert busy

            active = [n for n, s in states.items() if s in ACTIVE_STATES]
            assert active  # otherwise the job would stall
            for n in rng.sample(active, rng.randint(1, len(active))):
                states[n] = rng.choices(
                    ("completed", "failed", "cancelled", "running"),
                    weights=(60, 30, 3, 7),
                )[0]
        else:
            raise AssertionError(f"job did not finish: {states} {edges}")

        assert all(s in TERMINAL_STATES for s in states.values())
        assert sorted(dispatched) == sorted(
            n for n, s in states.items() if s not in {"pending", "skipped"}
        )


# --- scale -----------------------------------------------------------------------


def test_wide_graph_of_2000_waits_for_every_branch():
    middle, edges = wide(2000)
    states: dict[str, NodeState] = {"root": "pending"}
    states |= dict.fromkeys(middle, "pending")
    states["sink"] = "pending"

    assert plan(states, edges) == Plan(("root",), (), None)
    states["root"] = "completed"
    result = plan(states, edges)
    assert result == Plan(tuple(middle), (), None)
    apply(states, result)
    waiting = 0
    for m in middle:
        states[m] = "completed"
        if plan(states, edges) == Plan((), (), None):
            waiting += 1
    assert waiting == 1999
    assert plan(states, edges) == Plan(("sink",), (), None)
    states["sink"] = "completed"
    assert plan(states, edges) == Plan((), (), "completed")


class CountingStates(Mapping[str, NodeState]):
    """Node states that count how often the walker reads one."""

    def __init__(self, states: dict[str, NodeState]) -> None:
        self.states = states
        self.reads = 0

    def __getitem__(self, node: str) -> NodeState:
        self.reads += 1
        return self.states[node]

    def __iter__(self) -> Iterator[str]:
        return iter(self.states)

    def __len__(self) -> int:
        return len(self.states)


def state_reads_halfway(width: int) -> int:
    """State reads of one plan of a 1→width→1 graph with half the branches done."""
    middle, edges = wide(width)
    states: dict[str, NodeState] = {"root": "completed", "sink": "pending"}
    states |= {m: ("completed" if i % 2 else "running") for i, m in enumerate(middle)}
    counting = CountingStates(states)
    assert plan(counting, edges) == Plan((), (), None)
    return counting.reads


def test_one_plan_reads_each_state_a_bounded_number_of_times():
    # Counted, not timed: a walk that rescans the graph per node grows with width².
    reads = {width: state_reads_halfway(width) for width in (500, 2000)}

    assert reads[2000] <= 4 * reads[500] + 8
    nodes, edges = 2002, 4000
    assert reads[2000] <= 2 * (nodes + edges)
