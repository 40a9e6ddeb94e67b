"""Successor readiness by the ``NodeRun.waiting`` counter: a completion takes one off each
successor's counter, and the one that brings it to 0 releases the successor."""

from __future__ import annotations

import threading

import pytest
from django.contrib.auth.models import User
from django.db import connection

from apps.jobs import engine
from apps.jobs.execution import claim, complete, fail
from apps.jobs.models import Job, JobEvent, NodeRun
from myspinbot.errors import PermanentError
from testkit.graphs import assert_gap_free, edge, graph, node, run_to_end, states

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def user() -> User:
    return User.objects.create_user("ada", password="pw")


def fan(width: int, service: str = "debug.echo") -> dict[str, object]:
    """1 -> ``width`` -> 1, each middle node given its own input so none shares a cache key."""
    middle = [node(f"m{i}", service, input={"i": i}) for i in range(width)]
    return graph(
        [node("root", service), *middle, node("join", service)],
        [edge("root", m["id"]) for m in middle] + [edge(m["id"], "join") for m in middle],
    )


def waiting(job: Job) -> dict[str, int]:
    return dict(NodeRun.objects.filter(job=job).values_list("node_id", "waiting"))


def test_a_job_starts_with_each_node_waiting_for_its_incoming_edges(user: User) -> None:
    job = engine.submit_job(user, fan(3))

    assert waiting(job) == {"root": 0, "m0": 1, "m1": 1, "m2": 1, "join": 3}
    assert states(job)["root"] == "queued"


def test_the_join_of_a_fan_out_is_queued_once_by_the_last_of_its_predecessors(user: User) -> None:
    # given a 1 -> 4 -> 1 job whose root has completed and whose middle nodes run
    job = engine.submit_job(user, fan(4))
    run_to_end_of(job, "root")
    claimed = [claim(str(job.pk), f"m{i}", 1, "inline") for i in range(4)]
    # when three of the four complete, the join is still pending, waiting for one
    for item in claimed[:3]:
        assert item is not None
        complete(item.run, 1, {"node": item.run.node_id})
    assert (states(job)["join"], waiting(job)["join"]) == ("pending", 1)
    # and the fourth releases it
    assert claimed[3] is not None
    complete(claimed[3].run, 1, {"node": "m3"})
    assert (states(job)["join"], waiting(job)["join"]) == ("queued", 0)
    join = NodeRun.objects.get(job=job, node_id="join")
    assert (join.attempt, join.task_id) == (1, f"{job.pk}:join:1")
    assert join.sent_at is not None  # the outbox entry was sent and marked
    run_to_end(job)
    job.refresh_from_db()
    assert (job.status, job.progress) == ("completed", 1.0)
    assert_gap_free(job)


def run_to_end_of(job: Job, node_id: str) -> None:
    claimed = claim(str(job.pk), node_id, 1, "inline")
    assert claimed is not None
    complete(claimed.run, 1, {"node": node_id})


def test_concurrent_completions_on_their_own_connections_queue_the_join_exactly_once(
    user: User,
) -> None:
    # given a 1 -> 200 -> 1 job whose root has completed and whose 200 middle nodes run
    assert connection.vendor == "postgresql"
    job = engine.submit_job(user, fan(200))
    run_to_end_of(job, "root")
    claimed = [claim(str(job.pk), f"m{i}", 1, "inline") for i in range(200)]
    assert all(item is not None for item in claimed)
    errors: list[BaseException] = []
    start = threading.Barrier(8)

    def worker(share: list[object]) -> None:
        try:
            start.wait()
            for item in share:
                complete(item.run, 1, {"node": item.run.node_id})  # type: ignore[attr-defined]
        except BaseException as error:  # pragma: no cover - reported below
            errors.append(error)
        finally:
            connection.close()

    # when eight threads, each on its own database connection, complete them at once
    threads = [threading.Thread(target=worker, args=(claimed[i::8],)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)

    # then the join was queued exactly once, as attempt 1, and the job runs to its end
    assert errors == []
    assert states(job)["join"] == "queued"
    queued = JobEvent.objects.filter(job=job, node_id="join", type="node.queued")
    assert list(queued.values_list("payload", flat=True)) == [{"attempt": 1, "queue": "cpu"}]
    run_to_end(job)
    job.refresh_from_db()
    assert job.status == "completed"
    assert_gap_free(job)


def test_a_node_cached_at_submission_counts_down_its_successors(user: User) -> None:
    # given a job that ran a, and a second job a -> c <- b whose a is cached and b is new
    run_to_end(engine.submit_job(user, graph([node("a")], [])))
    second = engine.submit_job(
        user,
        graph([node("a"), node("b", input={"v": 2}), node("c")], [edge("a", "c"), edge("b", "c")]),
    )
    # then c waits only for b, and b's completion releases it
    assert states(second) == {"a": "completed", "b": "queued", "c": "pending"}
    assert waiting(second)["c"] == 1
    run_to_end_of(second, "b")
    assert states(second)["c"] == "queued"


def test_a_successor_released_by_a_completion_is_answered_from_the_cache(user: User) -> None:
    # given a job that ran x -> y, and a second job x -> y -> z whose x differs
    first = engine.submit_job(user, graph([node("x", input={"v": 1}), node("y")], [edge("x", "y")]))
    run_to_end(first)
    second = engine.submit_job(
        user,
        graph(
            [node("x", input={"v": 2}), node("y"), node("z")],
            [edge("x", "y"), edge("y", "z")],
        ),
    )
    # when x completes with the output the first job's x had
    run_to_end_of(second, "x")
    # then y, whose inputs are now those of the first job's y, is cached, and z is queued
    assert states(second) == {"x": "completed", "y": "completed", "z": "queued"}
    y = NodeRun.objects.get(job=second, node_id="y")
    assert y.cached_from == NodeRun.objects.get(job=first, node_id="y")
    assert y.output == {"node": "y"}
    assert [e.type for e in JobEvent.objects.filter(job=second, node_id="y")] == ["node.cached"]
    run_to_end(second)
    second.refresh_from_db()
    assert (second.status, second.progress) == ("completed", 1.0)
    assert_gap_free(second)


def test_a_retried_job_counts_only_the_predecessors_that_run_again(user: User) -> None:
    # given a -> b -> d <- c where a failed, b and d were skipped and c completed
    job = engine.submit_job(
        user,
        graph(
            [node("a", "debug.echo"), node("b"), node("c"), node("d")],
            [edge("a", "b"), edge("b", "d"), edge("c", "d")],
        ),
    )
    run_to_end(job, {"a": "fail"})
    assert states(job) == {"a": "failed", "b": "skipped", "c": "completed", "d": "skipped"}
    # when it is retried, d waits only for b, and runs once b has completed
    engine.retry_job(job.pk)
    assert waiting(job) == {"a": 0, "b": 1, "c": 0, "d": 1}
    run_to_end(job)
    job.refresh_from_db()
    assert job.status == "completed"
    assert states(job) == dict.fromkeys("abcd", "completed")


def test_a_sibling_completing_after_an_unhandled_failure_ends_the_job_failed(user: User) -> None:
    # given a -> c <- b, both roots running
    job = engine.submit_job(
        user, graph([node("a"), node("b"), node("c")], [edge("a", "c"), edge("b", "c")])
    )
    a = claim(str(job.pk), "a", 1, "inline")
    b = claim(str(job.pk), "b", 1, "inline")
    assert a is not None
    assert b is not None
    # when a fails for good, c is skipped while b still runs
    fail(a.run, 1, PermanentError("boom", "planned failure"))
    job.refresh_from_db()
    assert (job.status, states(job)["c"]) == ("running", "skipped")
    # and once b completes, nothing is released and the job ends failed with a's error
    complete(b.run, 1, {"node": "b"})
    job.refresh_from_db()
    assert states(job) == {"a": "failed", "b": "completed", "c": "skipped"}
    assert (job.status, job.progress) == ("failed", 1.0)
    assert job.error is not None
    assert job.error["node"] == "a"
    assert_gap_free(job)
