"""The engine's state changes against the real database, without workers.

Messages are sent to the real broker; no worker consumes them here."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import User

from apps.graphs.models import Graph
from apps.graphs.validation import GraphValidationError
from apps.jobs import engine
from apps.jobs.execution import claim, complete, fail
from apps.jobs.models import Job, JobEvent, NodeRun
from myspinbot.errors import TransientError
from testkit.graphs import (
    assert_gap_free,
    chain,
    edge,
    event_types,
    graph,
    node,
    run_to_end,
    states,
)

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def user() -> User:
    return User.objects.create_user("ada", password="pw")


def test_submit_stores_graph_job_and_runs_and_queues_the_roots(user: User) -> None:
    job = engine.submit_job(user, graph([node("a"), node("b"), node("c")], [edge("a", "c")]))

    assert states(job) == {"a": "queued", "b": "queued", "c": "pending"}
    assert event_types(job) == ["job.queued", "node.queued", "node.queued"]
    run = NodeRun.objects.get(job=job, node_id="a")
    assert (run.attempt, run.task_id, run.queue) == (1, f"{job.pk}:a:1", "cpu")
    assert job.graph.node_count == 3


def test_an_invalid_graph_stores_nothing(user: User) -> None:
    with pytest.raises(GraphValidationError) as error:
        engine.submit_job(user, graph([node("a"), node("b")], [edge("a", "b"), edge("b", "a")]))

    assert [issue.rule for issue in error.value.issues] == ["cycle"]
    assert (Graph.objects.count(), Job.objects.count(), NodeRun.objects.count()) == (0, 0, 0)


def test_a_chain_runs_in_order_and_completes_with_gap_free_events(user: User) -> None:
    job = engine.submit_job(user, chain("debug.noop", "debug.noop", "debug.noop"))

    run_to_end(job)

    job.refresh_from_db()
    assert (job.status, job.progress) == ("completed", 1.0)
    assert event_types(job, "n1") == ["node.queued", "node.started", "node.completed"]
    assert event_types(job)[0:2] == ["job.queued", "node.queued"]
    assert event_types(job)[-1] == "job.completed"
    assert_gap_free(job)


def test_a_permanent_failure_fails_the_job_and_skips_downstream(user: User) -> None:
    job = engine.submit_job(user, chain("debug.noop", "debug.noop", "debug.noop"))

    run_to_end(job, {"n0": "fail"})

    job.refresh_from_db()
    assert job.status == "failed"
    assert job.error == {"node": "n0", "message": "planned failure", "code": "boom", "details": {}}
    assert states(job) == {"n0": "failed", "n1": "skipped", "n2": "skipped"}


def test_a_transient_failure_is_requeued_as_the_next_attempt(user: User) -> None:
    job = engine.submit_job(user, chain("debug.noop"))
    claimed = claim(str(job.pk), "n0", 1, "inline")
    assert claimed is not None
    run = claimed.run

    fail(run, 1, TransientError("flaky", "try again"))

    run.refresh_from_db()
    assert (run.status, run.attempt, run.task_id) == ("queued", 2, f"{job.pk}:n0:2")
    assert run.error == {"message": "try again", "code": "flaky", "details": {}}
    assert event_types(job, "n0")[-1] == "node.retrying"


def test_a_second_claim_of_the_same_attempt_does_nothing(user: User) -> None:
    job = engine.submit_job(user, chain("debug.noop"))

    first = claim(str(job.pk), "n0", 1, "w1")
    second = claim(str(job.pk), "n0", 1, "w2")

    assert first is not None
    assert second is None
    assert event_types(job, "n0") == ["node.queued", "node.started"]


def test_a_superseded_attempt_cannot_complete(user: User) -> None:
    job = engine.submit_job(user, chain("debug.noop", "debug.noop"))
    claimed = claim(str(job.pk), "n0", 1, "w1")
    assert claimed is not None
    run = claimed.run
    NodeRun.objects.filter(pk=run.pk).update(status="queued", attempt=2)

    complete(run, 1, {"late": True})

    run.refresh_from_db()
    assert (run.status, run.output) == ("queued", None)
    assert states(job)["n1"] == "pending"


def test_cancel_cancels_every_active_node_and_refuses_a_finished_job(user: User) -> None:
    job = engine.submit_job(user, chain("debug.noop", "debug.noop"))
    claim(str(job.pk), "n0", 1, "w1")

    engine.cancel_job(job.pk)

    job.refresh_from_db()
    assert job.status == "cancelled"
    assert states(job) == {"n0": "cancelled", "n1": "cancelled"}
    assert event_types(job)[-1] == "job.cancelled"
    with pytest.raises(engine.JobStateError, match="already cancelled"):
        engine.cancel_job(job.pk)


def test_retry_reruns_failed_and_skipped_nodes_and_keeps_completed_ones(user: User) -> None:
    job = engine.submit_job(user, chain("debug.noop", "debug.noop", "debug.noop"))
    run_to_end(job, {"n1": "fail"})
    job.refresh_from_db()
    assert job.status == "failed"

    engine.retry_job(job.pk)
    run_to_end(job)

    job.refresh_from_db()
    assert job.status == "completed"
    attempts = dict(NodeRun.objects.filter(job=job).values_list("node_id", "attempt"))
    assert attempts == {"n0": 1, "n1": 2, "n2": 1}
    assert_gap_free(job)


def test_a_cacheable_node_with_the_same_inputs_is_reused(user: User) -> None:
    document = graph([node("e", "debug.echo", params={"text": "hi"})], [])
    first = engine.submit_job(user, document)
    run_to_end(first)

    second = engine.submit_job(user, document)

    second.refresh_from_db()
    assert second.status == "completed"
    reused = NodeRun.objects.get(job=second, node_id="e")
    original = NodeRun.objects.get(job=first, node_id="e")
    assert reused.cached_from_id == original.pk
    assert reused.output == original.output
    assert reused.attempt == 0
    assert event_types(second) == ["job.queued", "node.cached", "job.completed"]


def test_the_cache_is_not_shared_between_users(user: User) -> None:
    document = graph([node("e", "debug.echo", params={"text": "hi"})], [])
    run_to_end(engine.submit_job(user, document))
    other = User.objects.create_user("bob", password="pw")

    job = engine.submit_job(other, document)

    assert states(job) == {"e": "queued"}


def test_progress_is_the_weighted_mean_of_node_progress(user: User) -> None:
    job = engine.submit_job(
        user, graph([node("a", progressWeight=3), node("b", progressWeight=1)], [])
    )
    claimed = claim(str(job.pk), "a", 1, "w")
    assert claimed is not None
    run = claimed.run
    complete(run, 1, {})

    job.refresh_from_db()
    assert job.progress == 0.75
    assert JobEvent.objects.filter(job=job, type="node.completed").count() == 1


def test_progress_with_the_largest_weights_stays_finite_and_within_0_and_1(user: User) -> None:
    nodes = [node(f"n{i}", progressWeight=1000) for i in range(500)]
    job = engine.submit_job(user, graph(nodes, []))
    claimed = claim(str(job.pk), "n0", 1, "w")
    assert claimed is not None
    complete(claimed.run, 1, {})

    job.refresh_from_db()
    assert job.progress == 1 / 500
    assert engine.refresh_job_progress(job.pk) == 1 / 500


def test_every_event_the_engine_writes_matches_the_event_schema(user: User) -> None:
    from myspinbot.schemas import schema_validator

    job = engine.submit_job(user, chain("debug.noop", "debug.noop"))
    run_to_end(job)
    validator = schema_validator("job-event")

    events = [event.to_json() for event in JobEvent.objects.filter(job=job)]

    assert len(events) == 9
    assert [list(validator.iter_errors(event)) for event in events] == [[]] * 9
    assert events[-1]["job_status"] == "completed"
    assert events[-1]["job_progress"] == 1.0
