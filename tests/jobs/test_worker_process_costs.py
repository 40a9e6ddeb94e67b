"""What a node costs a worker process beyond its handler, counted (not timed): the
artifact store's boto3 client is built once per process, not per node; one heartbeat
thread serves every node the process runs; a scratch folder is made only for a handler
that asks for one."""

from __future__ import annotations

import tempfile
import threading
from pathlib import Path
from typing import Any

import boto3
import pytest
from django.contrib.auth.models import User

from apps.capabilities.context import NodeContext, made_workdir
from apps.jobs import engine, execution
from apps.jobs.models import NodeRun
from testkit.graphs import chain
from testkit.spies import Counting

pytestmark = pytest.mark.django_db(transaction=True)


def run_queued_nodes_in_process(job_id: str) -> int:
    """Play the worker: execute each queued node here until none is left."""
    executed = 0
    while queued := list(NodeRun.objects.filter(job_id=job_id, status="queued")):
        for run in queued:
            execution.execute(job_id, run.node_id, run.attempt, "inline")
            executed += 1
    return executed


def test_several_nodes_build_one_store_client_one_heartbeat_thread_and_no_scratch_folder(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # given a five-node chain and counters on boto3 clients, thread starts and mkdtemp
    clients, folders = Counting(boto3.client), Counting(tempfile.mkdtemp)
    monkeypatch.setattr(boto3, "client", clients)
    monkeypatch.setattr(tempfile, "mkdtemp", folders)
    started: list[str] = []
    real_start = threading.Thread.start

    def start(thread: threading.Thread) -> None:
        started.append(thread.name)
        real_start(thread)

    monkeypatch.setattr(threading.Thread, "start", start)
    job = engine.submit_job(User.objects.create_user("ada"), chain(*["debug.echo"] * 5))

    # when this process runs all five nodes
    executed = run_queued_nodes_in_process(str(job.pk))

    # then the job completed, and the process built one S3 client (the store's; its link
    # signer is the same client here), started each of its threads at most once (none if
    # an earlier test of this process started them already) and made no folder
    job.refresh_from_db()
    assert (executed, job.status) == (5, "completed")
    assert clients.calls == 1
    # (the event publisher's thread is also one per process)
    assert len(started) == len(set(started)), started
    assert set(started) <= {"heartbeats", "myspinbot-live-publisher"}, started
    assert [t.name for t in threading.enumerate()].count("heartbeats") == 1
    assert folders.calls == 0
    assert execution.heartbeats.running == {}  # every attempt left the heartbeat


def bare_context(**fields: Any) -> NodeContext:
    return NodeContext(
        job_id="j",
        node_id="n",
        attempt=1,
        params={},
        inputs={},
        store=None,
        progress_callback=lambda fraction, message: None,
        cancelled_callback=lambda: False,
        **fields,
    )


def test_a_scratch_folder_is_made_on_first_use_only_and_once() -> None:
    made: list[Path] = []

    def make() -> Path:
        made.append(Path(tempfile.mkdtemp(prefix="scratch-test-")))
        return made[-1]

    context = bare_context(workdir=make)
    repr(context)  # logging a context does not make its folder either
    assert made_workdir(context) is None
    assert made == []
    first = context.workdir
    assert first is not None
    assert first.is_dir()
    assert context.workdir == first
    assert made == [first]
    assert made_workdir(context) == first
    first.rmdir()


def test_the_heartbeat_thread_beats_each_running_attempt_and_stops_with_it(
    settings: Any,
) -> None:
    settings.MYSPINBOT_HEARTBEAT_TIMEOUT = 0.3  # a beat every 0.1 s
    job = engine.submit_job(User.objects.create_user("ada"), chain("debug.sleep", "debug.sleep"))
    claimed = execution.claim(str(job.pk), "n0", 1, "test")
    assert claimed is not None
    run = claimed.run
    NodeRun.objects.filter(pk=run.pk).update(heartbeat_at=None)

    execution.heartbeats.add(run.pk, 1)
    try:
        deadline = 0
        while NodeRun.objects.get(pk=run.pk).heartbeat_at is None and deadline < 100:
            threading.Event().wait(0.05)
            deadline += 1
        assert NodeRun.objects.get(pk=run.pk).heartbeat_at is not None
    finally:
        execution.heartbeats.remove(run.pk)
    threading.Event().wait(0.2)  # a beat in flight finishes
    NodeRun.objects.filter(pk=run.pk).update(heartbeat_at=None)
    threading.Event().wait(0.35)  # three intervals: no beat for a removed attempt
    assert NodeRun.objects.get(pk=run.pk).heartbeat_at is None


def test_a_context_without_a_workdir_has_none() -> None:
    context = bare_context()
    assert context.workdir is None
