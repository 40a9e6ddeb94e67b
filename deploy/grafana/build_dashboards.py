#!/usr/bin/env python3
"""Writes the Grafana dashboards in ``deploy/grafana/dashboards/`` from the panels below.

    python3 deploy/grafana/build_dashboards.py

Edit the panels here, not the JSON: a test checks that the committed JSON is what this
script writes, and that every series a query names is one the project exports.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

DASHBOARDS_DIR = Path(__file__).resolve().parent / "dashboards"
DATASOURCE = {"type": "prometheus", "uid": "prometheus"}

# (title, unit, [(query, legend)]) per panel; panels fill a 2-column grid.
Panel = tuple[str, str, list[tuple[str, str]]]


def quantile(q: float, series: str, by: str, window: str = "5m") -> str:
    labels = f"le, {by}" if by else "le"
    return f"histogram_quantile({q}, sum by ({labels}) (rate({series}_bucket[{window}])))"


DASHBOARDS: dict[str, tuple[str, list[Panel]]] = {
    "jobs-queues": (
        "MySpinBot · Jobs & queues",
        [
            (
                "Jobs submitted per minute",
                "short",
                [
                    (
                        "sum by (template) (rate(myspinbot_jobs_submitted_total[5m])) * 60",
                        "{{template}}",
                    )
                ],
            ),
            (
                "Jobs finished per minute",
                "short",
                [("sum by (status) (rate(myspinbot_jobs_finished_total[5m])) * 60", "{{status}}")],
            ),
            (
                "Job duration p50 / p95",
                "s",
                [
                    (
                        quantile(0.5, "myspinbot_job_duration_seconds", "template", "15m"),
                        "p50 {{template}}",
                    ),
                    (
                        quantile(0.95, "myspinbot_job_duration_seconds", "template", "15m"),
                        "p95 {{template}}",
                    ),
                ],
            ),
            (
                "Queue wait p95 (dispatch → start)",
                "s",
                [(quantile(0.95, "myspinbot_queue_wait_seconds", "queue"), "{{queue}}")],
            ),
            (
                "Node duration p95 by service",
                "s",
                [(quantile(0.95, "myspinbot_node_duration_seconds", "service"), "{{service}}")],
            ),
            (
                "Nodes finished per minute",
                "short",
                [
                    (
                        "sum by (service, status) "
                        "(rate(myspinbot_node_duration_seconds_count[5m])) * 60",
                        "{{service}} {{status}}",
                    )
                ],
            ),
            (
                "Retries and failures (last hour)",
                "short",
                [
                    (
                        "sum by (service, code) (increase(myspinbot_node_retries_total[1h]))",
                        "retry {{service}} {{code}}",
                    ),
                    (
                        "sum by (service, code) (increase(myspinbot_node_failures_total[1h]))",
                        "failed {{service}} {{code}}",
                    ),
                ],
            ),
            (
                "Cache hits (last hour)",
                "short",
                [("sum by (service) (increase(myspinbot_cache_hits_total[1h]))", "{{service}}")],
            ),
            (
                "Artifact bytes stored per second",
                "Bps",
                [
                    (
                        "sum by (source) (rate(myspinbot_artifact_bytes_stored_total[5m]))",
                        "{{source}}",
                    )
                ],
            ),
            (
                "Nodes running now",
                "short",
                [("sum(myspinbot_worker_tasks_running)", "running")],
            ),
        ],
    ),
    "workers-gpus": (
        "MySpinBot · Workers & GPUs",
        [
            (
                "Tasks running per worker",
                "short",
                [("sum by (job, instance) (myspinbot_worker_tasks_running)", "{{instance}}")],
            ),
            (
                "Tasks finished per minute",
                "short",
                [
                    (
                        "sum by (job, state) (rate(myspinbot_worker_tasks_total[5m])) * 60",
                        "{{job}} {{state}}",
                    )
                ],
            ),
            (
                "GPU memory used",
                "bytes",
                [
                    ("myspinbot_gpu_memory_used_bytes", "{{instance}} gpu{{device}} used"),
                    ("myspinbot_gpu_memory_total_bytes", "{{instance}} gpu{{device}} total"),
                ],
            ),
            (
                "GPU memory used (share)",
                "percentunit",
                [
                    (
                        "myspinbot_gpu_memory_used_bytes / myspinbot_gpu_memory_total_bytes",
                        "{{instance}} gpu{{device}}",
                    )
                ],
            ),
            (
                "GPU busy",
                "percentunit",
                [("myspinbot_gpu_utilization_ratio", "{{instance}} gpu{{device}}")],
            ),
            (
                "Models loaded",
                "short",
                [("sum by (instance) (myspinbot_models_loaded)", "{{instance}}")],
            ),
            (
                "Model load time p95",
                "s",
                [(quantile(0.95, "myspinbot_model_load_seconds", "model", "1h"), "{{model}}")],
            ),
            (
                "LoRA training steps per second",
                "short",
                [
                    (
                        "sum by (instance) (rate(myspinbot_lora_training_steps_total[1m]))",
                        "{{instance}} (1m rate)",
                    ),
                    ("myspinbot_lora_training_steps_per_second", "{{instance}} (last report)"),
                ],
            ),
        ],
    ),
    "websockets": (
        "MySpinBot · WebSockets",
        [
            (
                "Clients connected",
                "short",
                [("sum by (protocol) (myspinbot_websocket_clients)", "{{protocol}}")],
            ),
            (
                "Messages sent per second",
                "short",
                [
                    (
                        "sum by (protocol) (rate(myspinbot_websocket_messages_sent_total[5m]))",
                        "{{protocol}}",
                    )
                ],
            ),
        ],
    ),
    "http": (
        "MySpinBot · HTTP & database",
        [
            (
                "Requests per second by method",
                "reqps",
                [
                    (
                        "sum by (method) (rate(django_http_requests_total_by_method_total[5m]))",
                        "{{method}}",
                    )
                ],
            ),
            (
                "Responses per second by status",
                "reqps",
                [
                    (
                        "sum by (status) (rate(django_http_responses_total_by_status_total[5m]))",
                        "{{status}}",
                    )
                ],
            ),
            (
                "Request latency p50 / p95 by view",
                "s",
                [
                    (
                        quantile(
                            0.5, "django_http_requests_latency_seconds_by_view_method", "view"
                        ),
                        "p50 {{view}}",
                    ),
                    (
                        quantile(
                            0.95, "django_http_requests_latency_seconds_by_view_method", "view"
                        ),
                        "p95 {{view}}",
                    ),
                ],
            ),
            (
                "Exceptions per second by type",
                "short",
                [
                    (
                        "sum by (type) (rate(django_http_exceptions_total_by_type_total[5m]))",
                        "{{type}}",
                    )
                ],
            ),
            (
                "Database queries per second",
                "short",
                [("sum by (job) (rate(django_db_execute_total[5m]))", "{{job}}")],
            ),
            (
                "Database query time p95",
                "s",
                [(quantile(0.95, "django_db_query_duration_seconds", "job"), "{{job}}")],
            ),
            (
                "Database errors and new connections per second",
                "short",
                [
                    ("sum by (job) (rate(django_db_errors_total[5m]))", "errors {{job}}"),
                    (
                        "sum by (job) (rate(django_db_new_connections_total[5m]))",
                        "connections {{job}}",
                    ),
                ],
            ),
        ],
    ),
}


def panel(index: int, title: str, unit: str, targets: list[tuple[str, str]]) -> dict[str, Any]:
    return {
        "id": index + 1,
        "type": "timeseries",
        "title": title,
        "datasource": DATASOURCE,
        "gridPos": {"h": 8, "w": 12, "x": 12 * (index % 2), "y": 8 * (index // 2)},
        "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
        "options": {"legend": {"displayMode": "list", "placement": "bottom"}},
        "targets": [
            {
                "refId": chr(ord("A") + number),
                "datasource": DATASOURCE,
                "expr": expr,
                "legendFormat": legend,
            }
            for number, (expr, legend) in enumerate(targets)
        ],
    }


def dashboard(uid: str, title: str, panels: list[Panel]) -> dict[str, Any]:
    return {
        "uid": f"myspinbot-{uid}",
        "title": title,
        "tags": ["myspinbot"],
        "timezone": "utc",
        "schemaVersion": 39,
        "version": 1,
        "editable": False,
        "refresh": "30s",
        "time": {"from": "now-6h", "to": "now"},
        "panels": [panel(index, *spec) for index, spec in enumerate(panels)],
    }


def rendered() -> dict[str, str]:
    """File name → JSON text of every dashboard."""
    return {
        f"{uid}.json": json.dumps(dashboard(uid, title, panels), indent=2) + "\n"
        for uid, (title, panels) in DASHBOARDS.items()
    }


def main() -> None:
    DASHBOARDS_DIR.mkdir(exist_ok=True)
    for name, text in rendered().items():
        (DASHBOARDS_DIR / name).write_text(text)
        print(f"wrote {DASHBOARDS_DIR / name}")


if __name__ == "__main__":
    main()
