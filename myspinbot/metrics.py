"""Prometheus metrics: what they are, the calls that record them, and where they are served.

Each process counts what happens in it and Prometheus adds the processes up:

* The web process serves ``/metrics`` (:func:`metrics_view`): HTTP and database metrics
  from django-prometheus, plus the domain metrics it records itself (jobs submitted,
  cache hits found at submission, uploads stored, WebSocket clients and messages).
* Each Celery worker serves its own metrics on ``MYSPINBOT_WORKER_METRICS_PORT``
  (:func:`start_worker_exporter`). Prefork children write their values to files in
  ``PROMETHEUS_MULTIPROC_DIR`` (prometheus_client's multiprocess mode, switched on by
  ``myspinbot.celery`` before anything imports prometheus_client) and the worker's main
  process adds them up at scrape time. A worker that consumes the GPU queue also reports
  GPU memory per device, read at scrape time through NVML (or torch, where torch is
  already loaded in the serving process). The cpu worker never imports torch.

Both endpoints answer only clients from ``METRICS_ALLOWED_NETWORKS`` or with
``Authorization: Bearer <METRICS_TOKEN>``; anyone else gets 403 in the API's error shape.

The recording functions are meant to be one-line calls at the place where the event
happens. Called inside a transaction, they count when it commits (a rolled-back
transaction counts nothing); outside one, at once.
"""

from __future__ import annotations

import glob
import hmac
import ipaddress
import json
import logging
import os
import shutil
import sys
import threading
from collections.abc import Awaitable, Callable, Iterable, Iterator, MutableMapping
from datetime import datetime
from functools import partial
from typing import Any, Protocol
from wsgiref.simple_server import WSGIServer, make_server

from celery import signals
from django.conf import settings
from django.db import transaction
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.utils import timezone
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import ThreadingWSGIServer, _SilentHandler, make_wsgi_app

logger = logging.getLogger(__name__)

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
GPU_FAMILIES = {
    "myspinbot_gpu_memory_used_bytes": "GPU memory in use on the device (all processes).",
    "myspinbot_gpu_memory_total_bytes": "GPU memory of the device.",
    "myspinbot_gpu_utilization_ratio": "Fraction of time the device was busy (NVML only).",
}


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


# --- WebSockets: an ASGI wrapper counts clients and messages -----------------------------

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


def websocket_protocol(path: str) -> str:
    """The label of a WebSocket route: ``jobs`` (/ws/jobs/), ``legacy`` (/ws) or ``other``."""
    if path.startswith("/ws/jobs"):
        return "jobs"
    return "legacy" if path.rstrip("/") == "/ws" else "other"


class WebSocketMetrics:
    """Wraps the WebSocket ASGI app: a client counts from its accept until it closes or
    disconnects; every ``websocket.send`` counts one message."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "websocket":
            await self.app(scope, receive, send)
            return
        protocol = websocket_protocol(str(scope.get("path", "")))
        clients, messages = WEBSOCKET_CLIENTS.labels(protocol), WEBSOCKET_MESSAGES.labels(protocol)
        open_ = False

        async def counting_send(message: Message) -> None:
            nonlocal open_
            kind = message.get("type")
            if kind == "websocket.send":
                messages.inc()
            elif kind == "websocket.accept" and not open_:
                open_ = True
                clients.inc()
            elif kind == "websocket.close" and open_:
                open_ = False
                clients.dec()
            await send(message)

        try:
            await self.app(scope, receive, counting_send)
        finally:
            if open_:
                clients.dec()


# --- Who may read metrics -----------------------------------------------------------------


def allowed(remote_addr: str | None, authorization: str | None) -> bool:
    """True for a client in ``METRICS_ALLOWED_NETWORKS`` or one presenting the token."""
    token = settings.METRICS_TOKEN
    if token and authorization:
        scheme, _, presented = authorization.partition(" ")
        if scheme.lower() == "bearer" and hmac.compare_digest(presented.strip(), token):
            return True
    try:
        address = ipaddress.ip_address((remote_addr or "").strip())
    except ValueError:
        return False
    return any(
        address in ipaddress.ip_network(network, strict=False)
        for network in settings.METRICS_ALLOWED_NETWORKS
    )


FORBIDDEN = {
    "error": {
        "code": "forbidden",
        "message": "metrics are served to METRICS_ALLOWED_NETWORKS or with the METRICS_TOKEN",
        "details": {},
    }
}


def process_registry() -> CollectorRegistry:
    """What this process exports: all processes' files in multiprocess mode, else its own."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return registry
    return REGISTRY


def metrics_view(request: HttpRequest) -> HttpResponse:
    """``GET /metrics`` of the web process, in Prometheus text format."""
    if not allowed(request.META.get("REMOTE_ADDR"), request.headers.get("Authorization")):
        return JsonResponse(FORBIDDEN, status=403)
    return HttpResponse(generate_latest(process_registry()), content_type=CONTENT_TYPE_LATEST)


# --- GPU memory, read at scrape time -----------------------------------------------------


def visible_devices(value: str | None, count: int) -> list[str]:
    """NVML device selectors (index or UUID) a process may use, from
    ``CUDA_VISIBLE_DEVICES`` (``None``: all ``count`` devices; CUDA stops at the first
    invalid entry, and so does this)."""
    if value is None:
        return [str(index) for index in range(count)]
    chosen: list[str] = []
    for item in (part.strip() for part in value.split(",")):
        if item.isdigit() and int(item) < count:
            chosen.append(str(int(item)))
        elif item.startswith(("GPU-", "MIG-")):
            chosen.append(item)
        else:
            break
    return chosen


class GpuCollector:
    """GPU memory used/total (and utilization) per device, read when Prometheus scrapes.

    NVML (``nvidia-ml-py``) first: it reads the driver without creating a CUDA context,
    so the prefork main process can call it safely. Else torch, only if this process has
    already imported it and initialized CUDA (a solo-pool GPU worker). Else no samples:
    the families are still exported, empty, so dashboards and checks see the names.
    """

    def __init__(self) -> None:
        self._nvml: Any = None
        self._nvml_tried = False
        self._lock = threading.Lock()

    def _load_nvml(self) -> Any:
        with self._lock:
            if not self._nvml_tried:
                self._nvml_tried = True
                try:
                    import pynvml

                    pynvml.nvmlInit()
                    self._nvml = pynvml
                except Exception as error:  # no driver, no library, no device
                    logger.info("NVML unavailable, GPU metrics from torch or none: %s", error)
            return self._nvml

    def readings(self) -> list[tuple[str, str, float, float, float | None]]:
        """``(device, uuid, used bytes, total bytes, utilization or None)`` per device."""
        nvml = self._load_nvml()
        if nvml is not None:
            found = []
            selectors = visible_devices(
                os.environ.get("CUDA_VISIBLE_DEVICES"), nvml.nvmlDeviceGetCount()
            )
            for selector in selectors:
                if selector.isdigit():
                    handle = nvml.nvmlDeviceGetHandleByIndex(int(selector))
                else:
                    handle = nvml.nvmlDeviceGetHandleByUUID(selector)
                memory = nvml.nvmlDeviceGetMemoryInfo(handle)
                uuid = nvml.nvmlDeviceGetUUID(handle)
                busy = nvml.nvmlDeviceGetUtilizationRates(handle).gpu / 100.0
                index = str(nvml.nvmlDeviceGetIndex(handle))
                found.append((index, str(uuid), float(memory.used), float(memory.total), busy))
            return found
        torch = sys.modules.get("torch")
        if torch is not None and torch.cuda.is_available() and torch.cuda.is_initialized():
            found = []
            for ordinal in range(torch.cuda.device_count()):
                free, total = torch.cuda.mem_get_info(ordinal)
                uuid = str(getattr(torch.cuda.get_device_properties(ordinal), "uuid", ""))
                found.append((str(ordinal), uuid, float(total - free), float(total), None))
            return found
        return []

    def collect(self) -> Iterator[Metric]:
        families = {
            name: GaugeMetricFamily(name, text, labels=["device", "uuid"])
            for name, text in GPU_FAMILIES.items()
        }
        for device, uuid, used, total, busy in self.readings():
            families["myspinbot_gpu_memory_used_bytes"].add_metric([device, uuid], used)
            families["myspinbot_gpu_memory_total_bytes"].add_metric([device, uuid], total)
            if busy is not None:
                families["myspinbot_gpu_utilization_ratio"].add_metric([device, uuid], busy)
        yield from families.values()


# --- The worker's exporter -------------------------------------------------------------------


def reap_dead_processes(path: str) -> list[int]:
    """Drop the live-gauge files of processes that are gone (a pool child killed without
    running its exit hooks), so their tasks and models no longer count. Returns their pids."""
    dead = set()
    for name in glob.glob(os.path.join(path, "gauge_live*_*.db")):
        pid = int(name.rsplit("_", 1)[1].removesuffix(".db"))
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            dead.add(pid)
        except PermissionError:  # alive, someone else's
            pass
    for pid in dead:
        multiprocess.mark_process_dead(pid, path)
    return sorted(dead)


class WorkerCollector(multiprocess.MultiProcessCollector):
    """The sum over this worker's processes, after forgetting dead children."""

    def collect(self) -> Iterable[Metric]:
        reap_dead_processes(self._path)
        return super().collect()


def worker_registry(gpu: bool, path: str | None = None) -> CollectorRegistry:
    """This worker's processes (files in ``path``, default ``PROMETHEUS_MULTIPROC_DIR``),
    plus the GPUs when ``gpu``."""
    registry = CollectorRegistry()
    WorkerCollector(registry, path=path)
    if gpu:
        registry.register(GpuCollector())
    return registry


def guarded(app: Callable[..., Iterable[bytes]]) -> Callable[..., Iterable[bytes]]:
    """The WSGI metrics app behind :func:`allowed`."""

    def guarded_app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if not allowed(environ.get("REMOTE_ADDR"), environ.get("HTTP_AUTHORIZATION")):
            start_response("403 Forbidden", [("Content-Type", "application/json")])
            return [json.dumps(FORBIDDEN).encode()]
        return app(environ, start_response)

    return guarded_app


class WorkerExporter:
    """An HTTP server thread in the worker's main process serving ``/metrics``."""

    def __init__(self, address: str, port: int, registry: CollectorRegistry) -> None:
        self.server: WSGIServer = make_server(
            address,
            port,
            guarded(make_wsgi_app(registry)),
            ThreadingWSGIServer,
            handler_class=_SilentHandler,
        )
        self.port = self.server.server_port
        self.thread = threading.Thread(
            target=self.server.serve_forever, name="metrics-exporter", daemon=True
        )

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


_exporter: WorkerExporter | None = None


def start_worker_exporter(consumed_queues: Iterable[str]) -> WorkerExporter | None:
    """Serve this worker's metrics on ``MYSPINBOT_WORKER_METRICS_PORT`` (0: not at all).
    GPU metrics are added when the worker consumes the GPU queue. A port already taken
    stops the worker (``SystemExit``: Celery would only log an exception raised in a
    signal handler), since two workers must not share one."""
    global _exporter
    port = settings.MYSPINBOT_WORKER_METRICS_PORT
    if not port:
        return None
    if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        raise RuntimeError(
            "worker metrics need PROMETHEUS_MULTIPROC_DIR, which myspinbot.celery sets when "
            "MYSPINBOT_WORKER_METRICS_PORT is in the environment at start-up"
        )
    gpu = settings.CELERY_GPU_QUEUE in set(consumed_queues)
    try:
        _exporter = WorkerExporter(
            settings.MYSPINBOT_WORKER_METRICS_ADDR, port, worker_registry(gpu)
        )
    except OSError as error:
        message = (
            f"cannot serve worker metrics on {settings.MYSPINBOT_WORKER_METRICS_ADDR}:{port} "
            f"(MYSPINBOT_WORKER_METRICS_PORT): {error}"
        )
        logger.critical(message)
        raise SystemExit(message) from error
    _exporter.start()
    logger.info(
        "worker metrics on http://%s:%s/metrics%s",
        settings.MYSPINBOT_WORKER_METRICS_ADDR,
        port,
        " with GPU metrics" if gpu else "",
    )
    return _exporter


@signals.worker_init.connect
def _on_worker_init(sender: Any = None, **_: Any) -> None:
    queues = sender.app.amqp.queues.consume_from if sender is not None else {}
    start_worker_exporter(queue.name for queue in queues.values())


@signals.worker_shutdown.connect
def _on_worker_shutdown(**_: Any) -> None:
    if _exporter is not None:
        _exporter.stop()
    path = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if path and os.environ.get("MYSPINBOT_METRICS_DIR_CREATED") == path:
        shutil.rmtree(path, ignore_errors=True)


@signals.worker_process_shutdown.connect
def _on_child_exit(**_: Any) -> None:
    path = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if path:
        multiprocess.mark_process_dead(os.getpid(), path)


@signals.task_prerun.connect
def _on_task_start(**_: Any) -> None:
    TASKS_RUNNING.inc()


@signals.task_postrun.connect
def _on_task_end(state: str | None = None, **_: Any) -> None:
    TASKS_RUNNING.dec()
    TASKS_FINISHED.labels(TASK_STATES.get(state or "", "other")).inc()


TASK_STATES = {
    "SUCCESS": "succeeded",
    "FAILURE": "failed",
    "RETRY": "retried",
    "REJECTED": "rejected",
    "REVOKED": "revoked",
    "IGNORED": "ignored",
}
