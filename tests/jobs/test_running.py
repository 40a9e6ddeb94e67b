"""Jobs through real Celery worker processes, real PostgreSQL and real Redis."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.contrib.auth.models import User

from apps.capabilities.registry import get_registry
from apps.jobs import engine
from apps.jobs.models import Job, JobEvent, NodeRun
from myspinbot.celery import app
from testkit.graphs import (
    assert_gap_free,
    chain,
    edge,
    event_types,
    graph,
    node,
    states,
    wait_for_job,
    wait_for_node,
)
from testkit.services import CeleryWorker

pytestmark = pytest.mark.django_db(transaction=True)

StartWorker = Callable[..., CeleryWorker]
TEST_CAPABILITIES = Path(__file__).resolve().parent.parent / "support" / "capabilities"


@pytest.fixture
def user() -> User:
    return User.objects.create_user("ada", password="pw")


def test_a_five_node_chain_passes_outputs_along_its_edges(
    user: User, start_worker: StartWorker
) -> None:
    start_worker("cpu", [settings.CELERY_CPU_QUEUE], concurrency=2)
    nodes = [node(f"n{i}", "debug.echo", params={"step": i}) for i in range(5)]
    edges = [edge(f"n{i}", f"n{i + 1}") for i in range(4)]

    job = wait_for_job(engine.submit_job(user, graph(nodes, edges)))

    assert job.status == "completed"
    outputs = {run.node_id: run.output for run in NodeRun.objects.filter(job=job)}
    assert outputs["n0"] == {"params": {"step": 0}, "inputs": {}}
    assert outputs["n1"] == {"params": {"step": 1}, "inputs": {"n0": outputs["n0"]}}
    assert outputs["n4"]["inputs"] == {"n3": outputs["n3"]}
    assert_gap_free(job)


def test_a_diamond_joins_both_branches(user: User, start_worker: StartWorker) -> None:
    start_worker("cpu", [settings.CELERY_CPU_QUEUE], concurrency=2)
    document = graph(
        [
            node("top", "debug.echo", params={"v": 1}),
            node("left", "debug.echo"),
            node("right", "debug.echo"),
            node("join", "debug.echo"),
        ],
        [edge("top", "left"), edge("top", "right"), edge("left", "join"), edge("right", "join")],
    )

    job = wait_for_job(engine.submit_job(user, document))

    assert job.status == "completed"
    join = NodeRun.objects.get(job=job, node_id="join")
    assert sorted(join.output["inputs"]) == ["left", "right"]
    assert event_types(job).count("node.started") == 4
    assert_gap_free(job)


def test_a_node_of_a_gpu_service_runs_on_the_gpu_worker(
    user: User, start_worker: StartWorker, settings: Any
) -> None:
    extra = {"MYSPINBOT_CAPABILITY_DIRS": str(TEST_CAPABILITIES)}
    settings.MYSPINBOT_CAPABILITY_DIRS = [str(TEST_CAPABILITIES)]
    get_registry.cache_clear()
    cpu = start_worker("cpu", [settings.CELERY_CPU_QUEUE], env=extra)
    gpu = start_worker("gpu", [settings.CELERY_GPU_QUEUE], env=extra)
    document = graph([node("c", "debug.echo"), node("g", "testing.gpu_echo")], [edge("c", "g")])

    job = wait_for_job(engine.submit_job(user, document))

    assert job.status == "completed"
    workers = dict(NodeRun.objects.filter(job=job).values_list("node_id", "worker"))
    assert workers == {"c": cpu.hostname, "g": gpu.hostname}
    assert NodeRun.objects.get(job=job, node_id="g").queue == "gpu"
    get_registry.cache_clear()


def test_transient_failures_retry_until_success(user: User, start_worker: StartWorker) -> None:
    start_worker("cpu", [settings.CELERY_CPU_QUEUE])
    document = graph(
        [
            node("f", "debug.fail", params={"times": 2}, retries={"maxAttempts": 3}),
            node("after", "debug.noop"),
        ],
        [edge("f", "after")],
    )

    job = wait_for_job(engine.submit_job(user, document), timeout=60)

    assert job.status == "completed"
    run = NodeRun.objects.get(job=job, node_id="f")
    assert (run.attempt, run.output) == (3, {"attempt": 3})
    assert event_types(job, "f") == [
        "node.queued",
        "node.started",
        "node.retrying",
        "node.started",
        "node.retrying",
        "node.started",
        "node.completed",
    ]
    assert_gap_free(job)


def test_running_out_of_attempts_fails_the_job_and_skips_downstream(
    user: User, start_worker: StartWorker
) -> None:
    start_worker("cpu", [settings.CELERY_CPU_QUEUE])
    document = graph(
        [
            node("f", "debug.fail", params={"times": 2}, retries={"maxAttempts": 2}),
            node("b", "debug.noop"),
            node("c", "debug.noop"),
        ],
        [edge("f", "b"), edge("b", "c")],
    )

    job = wait_for_job(engine.submit_job(user, document), timeout=60)

    assert job.status == "failed"
    assert states(job) == {"f": "failed", "b": "skipped", "c": "skipped"}
    failed = NodeRun.objects.get(job=job, node_id="f")
    assert (failed.attempt, failed.error["code"]) == (2, "debug_transient")


def test_an_on_failure_branch_runs_and_the_job_completes(
    user: User, start_worker: StartWorker
) -> None:
    start_worker("cpu", [settings.CELERY_CPU_QUEUE])
    document = graph(
        [
            node("f", "debug.fail", params={"permanent": True, "code": "bad_input"}),
            node("happy", "debug.noop"),
            node("rescue", "debug.echo"),
        ],
        [edge("f", "happy", "on_success"), edge("f", "rescue", "on_failure")],
    )

    job = wait_for_job(engine.submit_job(user, document))

    assert job.status == "completed"
    assert states(job) == {"f": "failed", "happy": "skipped", "rescue": "completed"}
    rescue = NodeRun.objects.get(job=job, node_id="rescue")
    assert rescue.output["inputs"]["f"]["error"]["code"] == "bad_input"
    assert NodeRun.objects.get(job=job, node_id="f").attempt == 1


def test_the_same_message_delivered_twice_runs_the_handler_once(
    user: User, start_worker: StartWorker
) -> None:
    job = engine.submit_job(user, chain("debug.sleep"))
    run = NodeRun.objects.get(job=job)
    engine.send_runs([run])  # a second copy of the message already sent on submit

    start_worker("cpu", [settings.CELERY_CPU_QUEUE], concurrency=2)
    job = wait_for_job(job)

    assert job.status == "completed"
    assert event_types(job, "n0") == ["node.queued", "node.started", "node.completed"]
    assert JobEvent.objects.filter(job=job, type="node.started").count() == 1


def test_a_killed_worker_is_recovered_by_heartbeat_not_visibility_timeout(
    user: User, start_worker: StartWorker
) -> None:
    fast = {"MYSPINBOT_HEARTBEAT_TIMEOUT": "3", "MYSPINBOT_SWEEP_INTERVAL": "0.5"}
    first = start_worker("doomed", [settings.CELERY_CPU_QUEUE], env=fast)
    job = engine.submit_job(
        user, graph([node("s", "debug.sleep", params={"seconds": 20}), node("t")], [edge("s", "t")])
    )
    wait_for_node(job, "s", "running")

    first.kill()  # SIGKILL to the whole process group: main process and pool child
    killed_at = time.monotonic()
    start_worker("rescuer", [settings.CELERY_CPU_QUEUE], env=fast)
    run = wait_for_node(job, "s", "running", timeout=30)
    while run.attempt < 2:
        time.sleep(0.1)
        run.refresh_from_db()
    rerun_after = time.monotonic() - killed_at

    assert rerun_after < 3 + 15
    assert settings.CELERY_VISIBILITY_TIMEOUT > 3600
    job = wait_for_job(job, timeout=60)
    assert job.status == "completed"
    run.refresh_from_db()
    assert (run.attempt, run.lost_attempts) == (2, 1)
    assert event_types(job, "s") == [
        "node.queued",
        "node.started",
        "node.retrying",
        "node.started",
        "node.completed",
    ]


def test_cancel_stops_a_running_handler_and_nothing_after_it_runs(
    user: User, start_worker: StartWorker
) -> None:
    start_worker("cpu", [settings.CELERY_CPU_QUEUE])
    job = engine.submit_job(
        user, graph([node("s", "debug.sleep", params={"seconds": 30}), node("t")], [edge("s", "t")])
    )
    wait_for_node(job, "s", "running")

    started = time.monotonic()
    engine.cancel_job(job.pk)
    job.refresh_from_db()
    assert job.status == "cancelled"
    deadline = time.monotonic() + 5
    run = NodeRun.objects.get(job=job, node_id="s")
    while run.finished_at is None and time.monotonic() < deadline:
        time.sleep(0.05)
        run.refresh_from_db()

    assert run.finished_at is not None, "the handler did not stop within 5 s"
    assert time.monotonic() - started < 5
    assert states(job) == {"s": "cancelled", "t": "cancelled"}
    assert "node.started" not in event_types(job, "t")


def test_two_hundred_jobs_with_two_workers_all_complete(
    user: User, start_worker: StartWorker
) -> None:
    start_worker("cpu-a", [settings.CELERY_CPU_QUEUE], concurrency=2)
    start_worker("cpu-b", [settings.CELERY_CPU_QUEUE], concurrency=2)

    def document(i: int) -> dict[str, object]:  # distinct params: no reuse between jobs
        nodes = [node(name, params={"job": i}) for name in ("a", "b", "c")]
        return graph(nodes, [edge("a", "b"), edge("a", "c")])

    jobs = [engine.submit_job(user, document(i)) for i in range(200)]
    deadline = time.monotonic() + 120
    while Job.objects.exclude(status__in=Job.FINISHED).exists() and time.monotonic() < deadline:
        time.sleep(0.25)

    assert Job.objects.filter(pk__in=[job.pk for job in jobs], status="completed").count() == 200
    assert NodeRun.objects.exclude(status__in=NodeRun.TERMINAL).count() == 0
    assert NodeRun.objects.filter(status="completed").count() == 600
    assert JobEvent.objects.filter(type="node.started").count() == 600


def test_a_cacheable_node_runs_once_for_the_same_inputs(
    user: User, start_worker: StartWorker
) -> None:
    start_worker("cpu", [settings.CELERY_CPU_QUEUE])
    document = graph([node("e", "debug.echo", params={"topic": "otters"})], [])

    first = wait_for_job(engine.submit_job(user, document))
    second = wait_for_job(engine.submit_job(user, document))

    assert (first.status, second.status) == ("completed", "completed")
    assert JobEvent.objects.filter(type="node.started").count() == 1
    assert event_types(second) == ["job.queued", "node.cached", "job.completed"]


def test_inspect_ping_reaches_the_workers(start_worker: StartWorker) -> None:
    worker = start_worker("cpu", [settings.CELERY_CPU_QUEUE])

    replies = app.control.ping(destination=[worker.hostname], timeout=2)

    assert replies == [{worker.hostname: {"ok": "pong"}}]


def test_a_node_past_its_time_limit_fails_with_timeout(
    user: User, start_worker: StartWorker, settings: Any
) -> None:
    extra = {"MYSPINBOT_CAPABILITY_DIRS": str(TEST_CAPABILITIES)}
    settings.MYSPINBOT_CAPABILITY_DIRS = [str(TEST_CAPABILITIES)]
    get_registry.cache_clear()
    start_worker("cpu", [settings.CELERY_CPU_QUEUE], env=extra)
    document = graph(
        [node("slow", "testing.slow", params={"seconds": 10}), node("after")],
        [edge("slow", "after")],
    )

    job = wait_for_job(engine.submit_job(user, document), timeout=30)

    get_registry.cache_clear()
    assert job.status == "failed"
    run = NodeRun.objects.get(job=job, node_id="slow")
    assert run.error is not None
    assert (run.error["code"], run.attempt) == ("timeout", 1)
    assert states(job) == {"slow": "failed", "after": "skipped"}


def test_a_handler_that_ignores_a_cancel_is_terminated_after_the_grace_period(
    user: User, start_worker: StartWorker, settings: Any
) -> None:
    extra = {
        "MYSPINBOT_CAPABILITY_DIRS": str(TEST_CAPABILITIES),
        "MYSPINBOT_CANCEL_GRACE": "1",
        "MYSPINBOT_SWEEP_INTERVAL": "0.5",
    }
    settings.MYSPINBOT_CAPABILITY_DIRS = [str(TEST_CAPABILITIES)]
    get_registry.cache_clear()
    worker = start_worker("cpu", [settings.CELERY_CPU_QUEUE], env=extra)
    stubborn = engine.submit_job(
        user, graph([node("s", "testing.stubborn", params={"seconds": 120})], [])
    )
    wait_for_node(stubborn, "s", "running")

    engine.cancel_job(stubborn.pk)
    deadline = time.monotonic() + 15
    run = NodeRun.objects.get(job=stubborn)
    while run.finished_at is None and time.monotonic() < deadline:
        time.sleep(0.1)
        run.refresh_from_db()
    after = wait_for_job(engine.submit_job(user, chain("debug.sleep")), timeout=30)

    get_registry.cache_clear()
    assert run.finished_at is not None, "the sweeper did not terminate the handler"
    assert after.status == "completed"  # the worker's pool replaced the killed process
    assert worker.log_path is not None
    assert "terminated" in worker.log_path.read_text().lower()
