"""Metrics through the real web app and a real worker: a job moves the web's ``/metrics``
and the worker's exporter by exact amounts; only allowed clients may read them."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from asgiref.sync import async_to_sync
from asgiref.testing import ApplicationCommunicator
from django.conf import settings
from django.contrib.auth.models import User
from django.db import connection
from django.test import Client

from apps.jobs.models import ApiToken, Artifact, Job, JobEvent
from myspinbot.asgi import application
from testkit.graphs import edge, graph, node, wait_for_job, wait_for_node
from testkit.services import CeleryWorker
from tests.ops.scrape import Samples, dashboard_series, free_port, parse, scrape
from tests.support.media import png_bytes

pytestmark = pytest.mark.django_db(transaction=True)

StartWorker = Callable[..., CeleryWorker]
WORKER_TOKEN = "worker-metrics-token-for-tests"


def web_metrics(client: Client) -> Samples:
    response = client.get("/metrics")
    assert response.status_code == 200, response.content[:300]
    assert response["Content-Type"].startswith("text/plain")
    return parse(response.content.decode())


def socket_messages(token: str, job_id: str) -> tuple[int, float, float]:
    """Subscribe to a job on ``/ws/jobs/`` through the ASGI app; return the messages
    received up to ``subscribed`` and the clients gauge while open and after closing."""

    async def scenario() -> tuple[int, float, float]:
        communicator = ApplicationCommunicator(
            application,
            {
                "type": "websocket",
                "path": "/ws/jobs/",
                "query_string": f"token={token}".encode(),
                "headers": [],
                "subprotocols": [],
            },
        )
        await communicator.send_input({"type": "websocket.connect"})
        assert (await communicator.receive_output(2))["type"] == "websocket.accept"
        await communicator.send_input(
            {"type": "websocket.receive", "text": json.dumps(subscribe_message(job_id))}
        )
        received = 0
        while True:
            message = json.loads((await communicator.receive_output(5))["text"])
            received += 1
            if message["type"] == "subscribed":
                break
        while_open = current_gauge("myspinbot_websocket_clients", protocol="jobs")
        await communicator.send_input({"type": "websocket.disconnect", "code": 1000})
        await communicator.wait(2)
        return received, while_open, current_gauge("myspinbot_websocket_clients", protocol="jobs")

    return async_to_sync(scenario)()


class QueryCounter:
    """Counts the statements this thread runs, as the database metrics count them
    (``executemany``: one per parameter set)."""

    def __init__(self) -> None:
        self.count = 0

    def __call__(
        self, execute: Callable[..., Any], sql: str, params: Any, many: bool, context: Any
    ) -> Any:
        self.count += len(params) if many else 1
        return execute(sql, params, many, context)


def subscribe_message(job_id: str) -> dict[str, Any]:
    return {"action": "subscribe", "jobId": job_id, "since": 0}


def current_gauge(name: str, **labels: str) -> float:
    from prometheus_client import REGISTRY

    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_a_real_job_moves_the_web_and_worker_series_by_exact_amounts_that_dashboards_read(
    start_worker: StartWorker,
) -> None:
    # Given a worker exporting metrics (token only: no network is allowed) and a user
    port = free_port()
    start_worker(
        "cpu",
        [settings.CELERY_CPU_QUEUE, settings.CELERY_GPU_QUEUE],  # GPU metrics included
        concurrency=2,
        env={
            "MYSPINBOT_WORKER_METRICS_PORT": str(port),
            "METRICS_ALLOWED_NETWORKS": "192.0.2.0/24",
            "METRICS_TOKEN": WORKER_TOKEN,
        },
    )
    worker_url = f"http://127.0.0.1:{port}/metrics"
    user = User.objects.create_user("metrics-ada", password="pw")
    token = ApiToken.issue(user, "test")[1]
    client = Client(HTTP_AUTHORIZATION=f"Bearer {token}")
    web_before = web_metrics(client)
    worker_before = parse(scrape(worker_url, WORKER_TOKEN))
    nonce = uuid.uuid4().hex
    document = graph(
        [
            node("script", "llm.generate_script", params={"topic": f"otters {nonce}"}),
            node("echo", "debug.echo", params={"nonce": nonce}),
            node("flaky", "debug.fail", params={"times": 1}, retries={"maxAttempts": 2}),
            node(
                "broken",
                "debug.fail",
                params={"permanent": True, "code": "metrics_probe"},
                retries={"maxAttempts": 1},
            ),
            node("handler", "debug.noop", params={"nonce": nonce}),
            node("nap", "debug.sleep", params={"seconds": 1.5}),
        ],
        [
            edge("broken", "handler", "on_failure"),
            *(edge(before, "nap") for before in ("script", "echo", "flaky", "handler")),
        ],
    )

    # When one upload and two jobs go through the API (the second is answered from the
    # cache at once), and a WebSocket client reads the first job's events
    queries = QueryCounter()
    with connection.execute_wrapper(queries):  # what this thread asks the database
        image = png_bytes()
        upload = client.post("/api/uploads", {"file": _named(image, "portrait.png")})
        first = client.post("/api/jobs", {"graph": document}, content_type="application/json")
        assert (upload.status_code, first.status_code) == (201, 201), first.content
        job = Job.objects.get(pk=first.json()["id"])
        wait_for_node(job, "nap", "running")
        running_while_napping = parse(scrape(worker_url, WORKER_TOKEN))
        job = wait_for_job(job, timeout=60)
        cached = client.post(
            "/api/jobs",
            {"graph": graph([node("again", "debug.echo", params={"nonce": nonce})], [])},
            content_type="application/json",
        )
        assert cached.status_code == 201, cached.content
    web_middle = web_metrics(client)
    received, while_open, after_close = socket_messages(token, str(job.pk))
    web_after = web_metrics(client)
    worker_after = parse(scrape(worker_url, WORKER_TOKEN))

    # Then the job completed, and the web process counted what happened in it
    assert job.status == "completed"
    assert Job.objects.get(pk=cached.json()["id"]).status == "completed"
    web = web_after.minus(web_before)
    assert web.value("myspinbot_jobs_submitted_total", template="graph") == 2
    assert web.value("myspinbot_cache_hits_total", service="debug.echo") == 1
    assert web.value("myspinbot_jobs_finished_total", template="graph", status="completed") == 1
    assert web.value("myspinbot_artifact_bytes_stored_total", source="upload") == len(image)
    assert web.value("myspinbot_artifacts_stored_total", source="upload") == 1
    assert web.value("django_http_requests_total_by_method_total", method="POST") == 3
    assert web.value("django_http_responses_total_by_status_total", status="201") == 3
    # each /metrics scrape counts itself: the middle and the last one
    assert web.value("django_http_requests_total_by_method_total", method="GET") == 2
    assert (
        web_middle.minus(web_before).value(
            "django_db_execute_total", alias="default", vendor="postgresql"
        )
        == queries.count
    )
    events = JobEvent.objects.filter(job=job).count()
    assert received == events + 1  # every stored event, then "subscribed"
    assert web.value("myspinbot_websocket_messages_sent_total", protocol="jobs") == events + 1
    assert (while_open, after_close) == (1.0, 0.0)

    # And the worker's exporter summed its processes' counts (it answers only with the
    # token, since no network is allowed)
    with pytest.raises(urllib.error.HTTPError) as refused:
        scrape(worker_url)
    assert refused.value.code == 403
    assert json.loads(refused.value.read())["error"]["code"] == "forbidden"
    assert running_while_napping.value("myspinbot_worker_tasks_running") == 1
    worker = worker_after.minus(worker_before)
    completed = {
        "llm.generate_script": 1,
        "debug.echo": 1,
        "debug.fail": 1,
        "debug.noop": 1,
        "debug.sleep": 1,
    }
    for service, count in completed.items():
        assert (
            worker.value(
                "myspinbot_node_duration_seconds_count", service=service, status="completed"
            )
            == count
        ), service
    assert (
        worker.value(
            "myspinbot_node_duration_seconds_count", service="debug.fail", status="retrying"
        )
        == 1
    )
    assert (
        worker.value("myspinbot_node_duration_seconds_count", service="debug.fail", status="failed")
        == 1
    )
    assert worker.value("myspinbot_queue_wait_seconds_count", queue="cpu") == 7
    assert (
        worker.value("myspinbot_node_retries_total", service="debug.fail", code="debug_transient")
        == 1
    )
    assert (
        worker.value("myspinbot_node_failures_total", service="debug.fail", code="metrics_probe")
        == 1
    )
    assert worker.value("myspinbot_jobs_finished_total", template="graph", status="completed") == 1
    assert (
        worker.value("myspinbot_job_duration_seconds_count", template="graph", status="completed")
        == 1
    )
    stored = Artifact.objects.filter(job=job)
    assert worker.value("myspinbot_artifacts_stored_total", source="node") == stored.count() == 1
    assert worker.value("myspinbot_artifact_bytes_stored_total", source="node") == sum(
        artifact.size_bytes for artifact in stored
    )
    assert worker.value("myspinbot_jobs_submitted_total", template="graph") == 0
    assert worker_after.value("myspinbot_worker_tasks_running") == 0
    # Every node's Celery task, each attempt once
    assert worker.value("myspinbot_worker_tasks_total", state="succeeded") == 7

    # And every series a Grafana dashboard reads is one these endpoints export
    exported = web_after.series_names() | worker_after.series_names()
    for dashboard, used in dashboard_series().items():
        assert used - exported == set(), dashboard
    assert {"myspinbot_gpu_memory_used_bytes", "myspinbot_worker_tasks_running"} <= (
        worker_after.series_names()
    )


def _named(content: bytes, name: str) -> Any:
    from django.core.files.uploadedfile import SimpleUploadedFile

    return SimpleUploadedFile(name, content, content_type="image/png")


def test_metrics_are_refused_to_other_networks_without_the_token(settings: Any) -> None:
    settings.METRICS_ALLOWED_NETWORKS = ["10.1.0.0/16"]
    settings.METRICS_TOKEN = "s3cret-token"

    outsider = Client(REMOTE_ADDR="203.0.113.7")
    wrong = Client(REMOTE_ADDR="203.0.113.7", HTTP_AUTHORIZATION="Bearer nope")
    bearer = Client(REMOTE_ADDR="203.0.113.7", HTTP_AUTHORIZATION="Bearer s3cret-token")
    inside = Client(REMOTE_ADDR="10.1.2.3")

    for refused in (outsider.get("/metrics"), wrong.get("/metrics")):
        assert refused.status_code == 403
        assert refused.json()["error"]["code"] == "forbidden"
        assert set(refused.json()["error"]) == {"code", "message", "details"}
    assert bearer.get("/metrics").status_code == 200
    assert inside.get("/metrics").status_code == 200
    # A token with characters outside ASCII is a wrong token, not a server error.
    for odd in ("Bearer s3cret-tökén", "Bearer \u202es3cret-token", "Bearer \udcff"):
        response = Client(REMOTE_ADDR="203.0.113.7", HTTP_AUTHORIZATION=odd).get("/metrics")
        assert response.status_code == 403, odd
