"""Building graphs and waiting for jobs in tests."""

from __future__ import annotations

import time
from typing import Any

from apps.jobs.models import Job, JobEvent, NodeRun


def node(node_id: str, service: str = "debug.noop", **fields: Any) -> dict[str, Any]:
    return {"id": node_id, "service": service, **fields}


def edge(source: str, target: str, kind: str = "normal") -> dict[str, Any]:
    return {"from": source, "to": target, "kind": kind}


def graph(nodes: list[dict[str, Any]], edges: list[dict[str, Any]]) -> dict[str, Any]:
    return {"schema": "langgraph.v1", "workflowId": "test", "nodes": nodes, "edges": edges}


def chain(*services: str) -> dict[str, Any]:
    nodes = [node(f"n{index}", service) for index, service in enumerate(services)]
    edges = [edge(f"n{index}", f"n{index + 1}") for index in range(len(services) - 1)]
    return graph(nodes, edges)


def wait_for_job(job: Job, timeout: float = 60.0, statuses: tuple[str, ...] = Job.FINISHED) -> Job:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job.refresh_from_db()
        if job.status in statuses:
            return job
        time.sleep(0.1)
    runs = {run.node_id: (run.status, run.attempt) for run in NodeRun.objects.filter(job=job)}
    raise AssertionError(f"job {job.pk} still {job.status} after {timeout}s: {runs}")


def wait_for_node(job: Job, node_id: str, status: str, timeout: float = 30.0) -> NodeRun:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run = NodeRun.objects.get(job=job, node_id=node_id)
        if run.status == status:
            return run
        time.sleep(0.05)
    raise AssertionError(f"node {node_id} of {job.pk} never became {status}")


def wait_for_start(job_id: str, node_id: str, attempt: int, timeout: float = 30.0) -> JobEvent:
    """The ``node.started`` event of that attempt of the node, once it is written."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        started = JobEvent.objects.filter(job_id=job_id, node_id=node_id, type="node.started")
        for event in started:
            if event.payload["attempt"] == attempt:
                return event
        time.sleep(0.02)
    raise AssertionError(f"attempt {attempt} of {node_id} of {job_id} not started in {timeout}s")


def states(job: Job) -> dict[str, str]:
    return {run.node_id: run.status for run in NodeRun.objects.filter(job=job)}


def event_types(job: Job, node_id: str | None = None, progress: bool = False) -> list[str]:
    """Event types of a job in order; ``node.progress`` left out unless asked for."""
    events = JobEvent.objects.filter(job=job).order_by("seq")
    if not progress:
        events = events.exclude(type="node.progress")
    if node_id is not None:
        events = events.filter(node_id=node_id)
    return [event.type for event in events]


def assert_gap_free(job: Job) -> None:
    seqs = list(JobEvent.objects.filter(job=job).order_by("seq").values_list("seq", flat=True))
    assert seqs == list(range(1, len(seqs) + 1))
    job.refresh_from_db()
    assert job.event_seq == len(seqs)


def run_to_end(job: Job, outcomes: dict[str, str] | None = None) -> None:
    """Play the worker's part in-process: claim each queued node and complete it with
    ``{"node": <id>}``, or fail it permanently where ``outcomes[node] == "fail"``."""
    from apps.jobs.execution import claim, complete, fail
    from myspinbot.errors import PermanentError

    outcomes = outcomes or {}
    for _ in range(100):
        queued = list(NodeRun.objects.filter(job=job, status="queued"))
        if not queued:
            return
        for run in queued:
            claimed = claim(str(job.pk), run.node_id, run.attempt, "inline")
            assert claimed is not None
            if outcomes.get(run.node_id) == "fail":
                fail(claimed.run, run.attempt, PermanentError("boom", "planned failure"))
            else:
                complete(claimed.run, run.attempt, {"node": run.node_id})
