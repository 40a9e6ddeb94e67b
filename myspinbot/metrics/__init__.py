"""Prometheus metrics, one module per concern: what they are and the calls that record them
(``recording``), WebSocket counting (``websocket``), who may read them and the web
process's ``/metrics`` (``access``), GPU readings (``gpu``) and each worker's exporter
and signals (``worker``). Code that records imports this package and calls
``metrics.job_submitted(job)`` and its siblings.

Each process counts what happens in it and Prometheus adds the processes up:

* The web process serves ``/metrics`` (:func:`~myspinbot.metrics.access.metrics_view`):
  HTTP and database metrics from django-prometheus, plus the domain metrics it records
  itself (jobs submitted,
  cache hits found at submission, uploads stored, WebSocket clients and messages).
* Each Celery worker serves its own metrics on ``MYSPINBOT_WORKER_METRICS_PORT``
  (:func:`~myspinbot.metrics.worker.start_worker_exporter`). Prefork children write their
  values to files in
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

from myspinbot.metrics.recording import (
    artifact_stored,
    cache_hit,
    job_finished,
    job_submitted,
    node_completed,
    node_failed,
    node_retried,
    node_started,
    observe_lora_steps,
    observe_model_load,
    set_models_loaded,
)

__all__ = [
    "artifact_stored",
    "cache_hit",
    "job_finished",
    "job_submitted",
    "node_completed",
    "node_failed",
    "node_retried",
    "node_started",
    "observe_lora_steps",
    "observe_model_load",
    "set_models_loaded",
]
