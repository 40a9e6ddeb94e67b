"""How many SQL statements the hot paths cost, pinned so that they cannot creep back up
(counted, not timed: the figure does not depend on the machine)."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from django.contrib.auth.models import User
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from apps.jobs.models import ApiToken
from testkit.graphs import chain
from tests.support.clients import api_client

pytestmark = pytest.mark.django_db(transaction=True)


def statements(captured: CaptureQueriesContext) -> list[str]:
    return [query["sql"].split(" ", 1)[0] for query in captured.captured_queries]


def test_a_graph_submission_costs_one_transaction_of_ten_statements_and_three_reads_for_the_answer(
    ada: User,
) -> None:
    # given a signed-in client that has used its token this minute already
    client = api_client(ada)
    body = json.dumps({"graph": chain("debug.noop", "debug.noop", "debug.noop")})
    assert client.get("/api/jobs").status_code == 200
    # when it submits a three-node chain
    with CaptureQueriesContext(connection) as captured:
        response = client.post("/api/jobs", data=body, content_type="application/json")
    # then: the token lookup; one transaction (lock the user, both rate counts, the
    # storage sum, graph, job, runs, the cache lookup for the first node, its dispatch,
    # the job's event counter and the events); the dispatch marked sent; the response.
    assert response.status_code == 201, response.content
    assert statements(captured) == [
        "SELECT",  # token
        "BEGIN",
        "SELECT",  # user row lock
        "SELECT",  # jobs in flight and this minute
        "SELECT",  # storage used
        "INSERT",  # graph
        "INSERT",  # job
        "INSERT",  # runs
        "SELECT",  # cached result of n0
        "UPDATE",  # n0 queued
        "UPDATE",  # job event counter, progress
        "INSERT",  # events
        "COMMIT",
        "UPDATE",  # n0 sent
        "SELECT",  # response: artifacts
        "SELECT",  # reused artifacts
        "SELECT",  # runs
    ]


def test_a_token_records_its_use_at_most_once_a_minute(ada: User) -> None:
    # given a token that has not been used yet
    record, token = ApiToken.issue(ada, "test")
    client = Client(headers={"Authorization": f"Bearer {token}"})

    # when it is used twice within the minute, then once more a minute later
    # (a request clears the connection's query log: read each capture at once)
    with CaptureQueriesContext(connection) as captured:
        assert client.get("/api/jobs").status_code == 200
    first = statements(captured)
    used = ApiToken.objects.get(pk=record.pk).last_used_at
    with CaptureQueriesContext(connection) as captured:
        assert client.get("/api/jobs").status_code == 200
    second = statements(captured)
    unchanged = ApiToken.objects.get(pk=record.pk).last_used_at
    a_minute_ago = timezone.now() - timedelta(seconds=61)
    ApiToken.objects.filter(pk=record.pk).update(last_used_at=a_minute_ago)
    assert client.get("/api/jobs").status_code == 200

    # then only the first and the third use write it
    assert used is not None
    assert unchanged == used
    assert first == ["SELECT", "UPDATE", *second[1:]]
    assert "UPDATE" not in second
    assert ApiToken.objects.get(pk=record.pk).last_used_at > a_minute_ago + timedelta(seconds=60)


def test_completing_a_chain_node_counts_its_successor_down_in_a_fixed_number_of_statements(
    ada: User,
) -> None:
    # given a four-node chain whose second node runs
    from apps.jobs import engine
    from apps.jobs.execution import claim, complete

    job = engine.submit_job(ada, chain("debug.noop", "debug.noop", "debug.noop", "debug.noop"))
    for node_id in ("n0", "n1"):
        claimed = claim(str(job.pk), node_id, 1, "inline")
        assert claimed is not None
        if node_id == "n0":
            complete(claimed.run, 1, {"node": node_id})
    # when it completes
    with CaptureQueriesContext(connection) as captured:
        complete(claimed.run, 1, {"node": "n1"})
    # then: no read of the other nodes' states and no plan of the graph: lock the job,
    # complete the run, count the successor down (it reaches 0), look up its cached
    # result, queue it, the job's event counter and progress, the events; after commit
    # the dispatch is marked sent.
    assert statements(captured) == [
        "BEGIN",
        "SELECT",  # job row lock
        "WITH",  # n1 completed, fenced by attempt
        "UPDATE",  # n2 waiting - 1 RETURNING
        "SELECT",  # cached result of n2
        "UPDATE",  # n2 queued
        "UPDATE",  # job event counter, progress
        "INSERT",  # events
        "COMMIT",
        "UPDATE",  # n2 sent
    ]


def test_completing_a_middle_node_of_a_wide_fan_out_reads_no_other_node(ada: User) -> None:
    # given a 1 -> 50 -> 1 job whose root has completed and whose middle nodes run
    from apps.jobs import engine
    from apps.jobs.execution import claim, complete
    from testkit.graphs import edge, graph, node

    middle = [node(f"m{i}", input={"i": i}) for i in range(50)]
    job = engine.submit_job(
        ada,
        graph(
            [node("root"), *middle, node("join")],
            [edge("root", m["id"]) for m in middle] + [edge(m["id"], "join") for m in middle],
        ),
    )
    root = claim(str(job.pk), "root", 1, "inline")
    assert root is not None
    complete(root.run, 1, {"node": "root"})
    claimed = claim(str(job.pk), "m0", 1, "inline")
    assert claimed is not None
    # when one of the 50 completes (the join still waits for 49)
    with CaptureQueriesContext(connection) as captured:
        complete(claimed.run, 1, {"node": "m0"})
    # then the statements do not depend on the width: the join's counter goes down,
    # nothing is released, and one existence check finds the job still running.
    assert statements(captured) == [
        "BEGIN",
        "SELECT",  # job row lock
        "WITH",  # m0 completed, fenced by attempt
        "UPDATE",  # join waiting - 1 RETURNING (49: not released)
        "SELECT",  # is any node still queued or running?
        "UPDATE",  # job event counter, progress
        "INSERT",  # events
        "COMMIT",
    ]
