"""/healthz and /readyz against real services; the down cases stop a real server."""

from __future__ import annotations

from pathlib import Path

import pytest
from django.test import Client, override_settings

from myspinbot.storage import get_artifact_store
from testkit.services import RedisServer, S3Server
from tests.conftest import make_s3_store, s3_settings

pytestmark = pytest.mark.django_db


def test_healthz_answers_while_the_process_runs(client: Client) -> None:
    response = client.get("/healthz")

    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_readyz_is_200_with_every_check_green(client: Client) -> None:
    response = client.get("/readyz")

    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok"
    assert sorted(body["checks"]) == ["database", "redis", "storage"]
    assert [body["checks"][name]["ok"] for name in ("database", "redis", "storage")] == [True] * 3


def test_readyz_names_redis_when_it_is_stopped(client: Client) -> None:
    redis_server = RedisServer()
    redis_server.start()
    with override_settings(REDIS_URL=redis_server.url):
        assert client.get("/readyz").status_code == 200

        redis_server.stop()
        response = client.get("/readyz")

    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "unavailable"
    assert body["down"] == ["redis"]
    assert body["checks"]["redis"]["ok"] is False
    assert "Connection" in body["checks"]["redis"]["error"]


def test_readyz_names_storage_when_the_s3_server_is_stopped(client: Client, tmp_path: Path) -> None:
    server = S3Server(data_dir=tmp_path)
    server.start()
    make_s3_store(server, "ready-bucket")
    with override_settings(**s3_settings(server, "ready-bucket")):
        get_artifact_store.cache_clear()
        assert client.get("/readyz").status_code == 200

        server.stop()
        response = client.get("/readyz")

    assert response.status_code == 503
    assert response.json()["down"] == ["storage"]
    assert "S3 endpoint unreachable" in response.json()["checks"]["storage"]["error"]


def test_readyz_names_storage_when_the_local_folder_is_not_writable(
    client: Client, tmp_path: Path
) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the artifact folder should be")
    with override_settings(S3_BUCKET="", ARTIFACT_ROOT=blocker):
        get_artifact_store.cache_clear()
        response = client.get("/readyz")

    assert response.status_code == 503
    assert response.json()["down"] == ["storage"]


def test_readyz_tells_outsiders_only_the_status_and_runs_its_checks_once_in_a_while() -> None:
    """Anyone outside the metrics network gets the status and what is down, never the
    checks' error text (hosts, users); a flood of such calls runs the checks (opens
    connections) once per PUBLIC_CACHE_SECONDS. Staff and the metrics network see all."""
    from django.contrib.auth.models import User

    from myspinbot import health

    runs = []
    real = health.run_checks

    def counted() -> dict[str, dict[str, object]]:
        runs.append(1)
        return real()

    outsider = Client(REMOTE_ADDR="203.0.113.7")
    health._public = None
    original, health.run_checks = health.run_checks, counted
    try:
        answers = [outsider.get("/readyz") for _ in range(25)]
        assert len(runs) == 1
        assert {a.status_code for a in answers} == {200}
        assert answers[0].json() == {"status": "ok"}
        staff = User.objects.create_user("op", password="pw", is_staff=True)
        operator = Client(REMOTE_ADDR="203.0.113.7")
        operator.force_login(staff)
        detailed = operator.get("/readyz").json()
        assert sorted(detailed["checks"]) == ["database", "redis", "storage"]
        assert len(runs) == 2  # staff get a fresh run
    finally:
        health.run_checks = original
        health._public = None

    redis_server = RedisServer()
    redis_server.start()
    with override_settings(REDIS_URL=redis_server.url):
        redis_server.stop()
        down = outsider.get("/readyz")
        inside = Client().get("/readyz")  # 127.0.0.1: the metrics network
    health._public = None
    assert down.status_code == 503
    assert down.json() == {"status": "unavailable", "down": ["redis"]}
    assert "redis" not in str(down.json().get("checks", ""))
    assert inside.status_code == 503
    assert "Connection" in inside.json()["checks"]["redis"]["error"]


def test_on_rabbitmq_readyz_checks_the_broker_and_names_it_when_it_is_away(
    client: Client, rabbitmq_url: str
) -> None:
    from myspinbot.devservices import free_port

    with override_settings(CELERY_BROKER_URL=rabbitmq_url):
        up = client.get("/readyz")
    nobody = f"amqp://guest:guest@127.0.0.1:{free_port()}/myspinbot-test"
    with override_settings(CELERY_BROKER_URL=nobody):
        down = client.get("/readyz")

    assert up.status_code == 200
    assert sorted(up.json()["checks"]) == ["broker", "database", "redis", "storage"]
    assert down.status_code == 503
    assert down.json()["down"] == ["broker"]
