"""Each Celery worker's exporter, and the worker signals that count tasks and clean up."""

from __future__ import annotations

import glob
import json
import logging
import os
import shutil
import threading
from collections.abc import Callable, Iterable
from typing import Any
from wsgiref.simple_server import WSGIServer, make_server

from celery import signals
from django.conf import settings
from prometheus_client import (
    CollectorRegistry,
    multiprocess,
)
from prometheus_client.core import Metric
from prometheus_client.exposition import ThreadingWSGIServer, _SilentHandler, make_wsgi_app

from myspinbot.metrics.access import FORBIDDEN, allowed
from myspinbot.metrics.gpu import GpuCollector
from myspinbot.metrics.recording import TASKS_FINISHED, TASKS_RUNNING

logger = logging.getLogger(__name__)


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
