"""SIGKILL workers while they run nodes that write artifacts: every job completes, no node
completes twice, and what killed attempts stored is removed (rows and objects)."""

from __future__ import annotations

import random
import time
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from django.conf import settings
from django.contrib.auth.models import User

from apps.capabilities.registry import get_registry
from apps.jobs import engine
from apps.jobs.models import Artifact, Job, JobEvent, NodeRun
from myspinbot.storage import get_artifact_store
from testkit.graphs import edge, graph, node, wait_for_job, wait_for_node
from testkit.services import CeleryWorker
from tests.faults.conftest import FAST_RECOVERY
from tests.faults.stack import Stack

pytestmark = pytest.mark.django_db(transaction=True)

CAPABILITIES = FAST_RECOVERY["MYSPINBOT_CAPABILITY_DIRS"]


@pytest.fixture
def test_services(settings: Any) -> Iterator[None]:
    settings.MYSPINBOT_CAPABILITY_DIRS = [CAPABILITIES]
    get_registry.cache_clear()
    yield
    get_registry.cache_clear()


def stored_keys(job: Job) -> list[str]:
    return get_artifact_store().keys(f"jobs/{job.pk}/")


def assert_artifacts_are_exactly_the_outputs(job: Job) -> None:
    """Every recorded artifact is one a completed node returned, every object in the store
    under the job is recorded, and nothing else is there."""
    referenced = set()
    for output in NodeRun.objects.filter(job=job).values_list("output", flat=True):
        for value in (output or {}).values():
            if isinstance(value, dict) and "artifact" in value:
                referenced.add(value["artifact"])
    recorded = dict(Artifact.objects.filter(job=job).values_list("pk", "key"))
    assert {str(pk) for pk in recorded} == referenced
    # Superseded objects are deleted just after the completion commits: allow a moment.
    deadline = time.monotonic() + 10
    while stored_keys(job) != sorted(recorded.values()) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert stored_keys(job) == sorted(recorded.values())


def test_a_killed_attempts_artifact_is_removed_when_the_node_completes(
    start_worker: Callable[..., CeleryWorker], test_services: None
) -> None:
    fast = {**FAST_RECOVERY, "MYSPINBOT_HEARTBEAT_TIMEOUT": "3"}
    user = User.objects.create_user("ada")
    doomed = start_worker("doomed", [settings.CELERY_CPU_QUEUE], env=fast)
    job = engine.submit_job(
        user, graph([node("a", "testing.artifacts", params={"seconds": 4})], [])
    )
    wait_for_node(job, "a", "running")
    deadline = time.monotonic() + 30
    while not Artifact.objects.filter(job=job).exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    first = Artifact.objects.get(job=job)
    assert first.key == f"jobs/{job.pk}/a/1/first.txt"

    doomed.kill()
    start_worker("rescuer", [settings.CELERY_CPU_QUEUE], env=fast)
    job = wait_for_job(job, timeout=90)

    assert job.status == "completed"
    run = NodeRun.objects.get(job=job)
    assert (run.attempt, run.lost_attempts) == (2, 1)
    assert sorted(Artifact.objects.filter(job=job).values_list("key", flat=True)) == [
        f"jobs/{job.pk}/a/2/first.txt",
        f"jobs/{job.pk}/a/2/second.bin",
    ]
    assert_artifacts_are_exactly_the_outputs(job)


@pytest.mark.slow
def test_fifty_jobs_complete_while_a_worker_is_killed_again_and_again(
    stack: Stack, api_for: Callable[[User], Any], test_services: None
) -> None:
    # Each kill costs the nodes it held one lost attempt; allow more than the default 3
    # so a node hit by several kills in a row is not failed by this test's own violence.
    stack.env["MYSPINBOT_MAX_LOST_ATTEMPTS"] = "20"
    stack.start_web()
    api = api_for(User.objects.create_user("ada"))
    cpu = [settings.CELERY_CPU_QUEUE]
    stack.start_worker("steady", cpu, concurrency=2)
    victim = stack.start_worker("victim", cpu, concurrency=2)

    def document(index: int) -> dict[str, Any]:
        nodes = [
            node(name, "testing.artifacts", params={"seconds": 0.4, "tag": f"{index}{name}"})
            for name in ("a", "b", "c")
        ]
        return graph(nodes, [edge("a", "b"), edge("a", "c")])

    job_ids = [api.submit(document(index)) for index in range(50)]
    rng = random.Random(9)
    kills = 0
    while kills < 6 and Job.objects.filter(pk__in=job_ids).exclude(status__in=Job.FINISHED):
        time.sleep(rng.uniform(2.0, 4.0))
        victim.kill()
        kills += 1
        victim = stack.start_worker("victim", cpu, concurrency=2)
    statuses = api.wait_finished(job_ids, timeout=300)

    assert Counter(statuses.values()) == {"completed": 50}
    jobs = list(Job.objects.filter(pk__in=job_ids))
    lost = sum(NodeRun.objects.filter(job__in=jobs).values_list("lost_attempts", flat=True))
    resumed = JobEvent.objects.filter(
        job__in=jobs, type="node.retrying", payload__reason="worker_lost"
    ).count()
    assert lost == resumed
    assert lost >= 1, "no kill hit a running node; the test proved nothing"
    for job in jobs:
        completed = Counter(
            JobEvent.objects.filter(job=job, type="node.completed").values_list(
                "node_id", flat=True
            )
        )
        assert completed == {"a": 1, "b": 1, "c": 1}
        assert_artifacts_are_exactly_the_outputs(job)


def test_an_attempt_superseded_while_it_writes_records_nothing_and_leaves_no_object(
    test_services: None,
) -> None:
    from apps.jobs.artifacts import NodeArtifacts
    from apps.jobs.execution import claim
    from myspinbot.errors import Cancelled

    user = User.objects.create_user("ada")
    job = engine.submit_job(user, graph([node("a", "testing.artifacts")], []))
    assert claim(str(job.pk), "a", 1, "zombie") is not None
    store = get_artifact_store()
    late = NodeArtifacts(store, job_id=str(job.pk), node_id="a", attempt=1, owner_id=user.pk)
    # The sweeper gave up on attempt 1 (its heartbeat stopped) and queued attempt 2.
    NodeRun.objects.filter(job=job, node_id="a").update(status="queued", attempt=2)

    with pytest.raises(Cancelled):
        late.save("first.txt", b"written by a worker presumed dead", "text/plain")

    assert Artifact.objects.filter(job=job).count() == 0
    assert stored_keys(job) == []
    assert JobEvent.objects.filter(job=job, type="artifact.stored").count() == 0
