"""The metrics and the one-line calls that record them.

The engine, execution, caching, artifact and upload code calls the domain functions;
GPU workers call the model-cache and LoRA ones. Called inside a transaction, they count
when it commits (a rolled-back transaction counts nothing); outside one, at once.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from functools import partial
from typing import Protocol

from django.db import transaction
from django.utils import timezone
from prometheus_client import (
    Counter,
    Gauge,
    Histogram,
)

INF = float("inf")
# Seconds; jobs and nodes run from milliseconds (debug services) to hours (LoRA training).
DURATION_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, INF)
QUEUE_WAIT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, INF)
MODEL_LOAD_BUCKETS = (0.1, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 300, 600, INF)

# --- Domain metrics (web process and workers) ---------------------------------------

JOBS_SUBMITTED = Counter(
    "myspinbot_jobs_submitted",
    "Jobs stored, by template ('graph': posted as a graph).",
    ["template"],
)
JOBS_FINISHED = Counter(
    "myspinbot_jobs_finished", "Jobs that reached a final status.", ["template", "status"]
)
JOB_DURATION = Histogram(
    "myspinbot_job_duration_seconds",
    "Seconds from a job's creation to its final status.",
    ["template", "status"],
    buckets=DURATION_BUCKETS,
)
NODE_DURATION = Histogram(
    "myspinbot_node_duration_seconds",
    "Seconds from a node attempt's start to its outcome (completed, failed, retrying).",
    ["service", "status"],
    buckets=DURATION_BUCKETS,
)
QUEUE_WAIT = Histogram(
    "myspinbot_queue_wait_seconds",
    "Seconds from a node's dispatch to a worker starting it (retry backoff included).",
    ["queue"],
    buckets=QUEUE_WAIT_BUCKETS,
)
NODE_RETRIES = Counter(
    "myspinbot_node_retries",
    "Node attempts that will run again, by error code.",
    ["service", "code"],
)
NODE_FAILURES = Counter(
    "myspinbot_node_failures", "Nodes that failed for good, by error code.", ["service", "code"]
)
CACHE_HITS = Counter(
    "myspinbot_cache_hits", "Nodes answered from an earlier run's stored outputs.", ["service"]
)
WEBSOCKET_CLIENTS = Gauge(
    "myspinbot_websocket_clients",
    "WebSocket connections open now.",
    ["protocol"],
    multiprocess_mode="livesum",
)
WEBSOCKET_MESSAGES = Counter(
    "myspinbot_websocket_messages_sent", "Messages sent to WebSocket clients.", ["protocol"]
)
ARTIFACTS_STORED = Counter(
    "myspinbot_artifacts_stored", "Artifacts written to the artifact store.", ["source"]
)
ARTIFACT_BYTES = Counter(
    "myspinbot_artifact_bytes_stored", "Bytes written to the artifact store.", ["source"]
)

# --- Worker metrics ---------------------------------------------------------------------

TASKS_RUNNING = Gauge(
    "myspinbot_worker_tasks_running",
    "Celery tasks executing now in this worker.",
    multiprocess_mode="livesum",
)
TASKS_FINISHED = Counter(
    "myspinbot_worker_tasks",
    "Celery tasks this worker finished, by Celery state (succeeded, failed, retried...).",
    ["state"],
)
MODEL_LOAD = Histogram(
    "myspinbot_model_load_seconds",
    "Seconds to load a model into a worker, by model.",
    ["model"],
    buckets=MODEL_LOAD_BUCKETS,
)
MODELS_LOADED = Gauge(
    "myspinbot_models_loaded",
    "Models held in memory by this worker's processes.",
    multiprocess_mode="livesum",
)
LORA_STEPS = Counter("myspinbot_lora_training_steps", "LoRA training steps done.")
LORA_SECONDS = Counter("myspinbot_lora_training_seconds", "Seconds spent in LoRA training steps.")
LORA_STEPS_PER_SECOND = Gauge(
    "myspinbot_lora_training_steps_per_second",
    "Training speed of the most recent LoRA training report.",
    multiprocess_mode="livemostrecent",
)


class _Run(Protocol):
    service: str
    queue: str
    dispatched_at: datetime | None
    started_at: datetime | None


class _Job(Protocol):
    template: str
    status: str
    created_at: datetime
    finished_at: datetime | None


def _after_commit(record: Callable[[], None]) -> None:
    transaction.on_commit(record)


def _seconds(start: datetime | None, end: datetime | None = None) -> float | None:
    if start is None:
        return None
    return max(0.0, ((end or timezone.now()) - start).total_seconds())


def _template(job: _Job) -> str:
    return job.template or "graph"


# --- Recording: the engine, execution, caching and artifact code calls these -----------


def job_submitted(job: _Job) -> None:
    """A job was stored (``engine.create_job``)."""
    _after_commit(JOBS_SUBMITTED.labels(_template(job)).inc)


def job_finished(job: _Job) -> None:
    """A job reached its final status (completed, failed or cancelled)."""
    labels = (_template(job), str(job.status))
    duration = _seconds(job.created_at, job.finished_at)

    def record() -> None:
        JOBS_FINISHED.labels(*labels).inc()
        if duration is not None:
            JOB_DURATION.labels(*labels).observe(duration)

    _after_commit(record)


def node_started(run: _Run) -> None:
    """A worker claimed a node attempt: observe how long it waited in its queue."""
    wait = _seconds(run.dispatched_at, run.started_at)
    if wait is not None:
        _after_commit(partial(QUEUE_WAIT.labels(run.queue).observe, wait))


def _node_ended(run: _Run, status: str) -> None:
    duration = _seconds(run.started_at)
    if duration is not None:
        _after_commit(partial(NODE_DURATION.labels(run.service, status).observe, duration))


def node_completed(run: _Run) -> None:
    """A node attempt finished with an output."""
    _node_ended(run, "completed")


def node_retried(run: _Run, code: str) -> None:
    """A node attempt ended with error ``code`` and the node will run again."""
    _node_ended(run, "retrying")
    _after_commit(NODE_RETRIES.labels(run.service, code).inc)


def node_failed(run: _Run, code: str) -> None:
    """A node failed for good with error ``code``."""
    _node_ended(run, "failed")
    _after_commit(NODE_FAILURES.labels(run.service, code).inc)


def cache_hit(service: str) -> None:
    """A node of ``service`` reused an earlier run's outputs instead of running."""
    _after_commit(CACHE_HITS.labels(service).inc)


def artifact_stored(source: str, size_bytes: int) -> None:
    """``size_bytes`` were written to the artifact store (``source``: node or upload)."""

    def record() -> None:
        ARTIFACTS_STORED.labels(source).inc()
        ARTIFACT_BYTES.labels(source).inc(size_bytes)

    _after_commit(record)


# --- Recording: GPU workers (model cache, LoRA training) call these ----------------------


def observe_model_load(model_id: str, seconds: float) -> None:
    """A worker loaded ``model_id`` (from disk or hub cache into memory) in ``seconds``."""
    MODEL_LOAD.labels(model_id).observe(seconds)


def set_models_loaded(count: int) -> None:
    """This process now holds ``count`` models in memory (call after each load/evict)."""
    MODELS_LOADED.set(count)


def observe_lora_steps(steps: int, seconds: float) -> None:
    """LoRA training did ``steps`` optimizer steps in ``seconds`` (report every few steps).

    Adds to the step and time counters (``rate()`` of the steps counter is the training
    speed over any window) and sets the most recent steps/s gauge.
    """
    if steps < 0 or seconds <= 0:
        raise ValueError(f"bad LoRA progress report: {steps} steps in {seconds} s")
    LORA_STEPS.inc(steps)
    LORA_SECONDS.inc(seconds)
    LORA_STEPS_PER_SECOND.set(steps / seconds)
