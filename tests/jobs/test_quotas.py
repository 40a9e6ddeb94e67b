"""Per-user quotas and the uploads a user can list, delete and that expire, against the
real API, PostgreSQL and the S3 server."""

from __future__ import annotations

import io
import json
from datetime import timedelta
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.core.management import call_command
from django.test import Client
from django.utils import timezone

from apps.jobs import engine, quotas
from apps.jobs.models import Artifact, Job, NodeRun, Profile
from myspinbot.storage import get_artifact_store
from testkit.graphs import chain, graph, node, run_to_end
from tests.support.clients import api_client
from tests.support.media import png_bytes, wav_bytes
from tests.support.stored import stored_result

pytestmark = pytest.mark.django_db


def upload(client: Client, data: bytes, name: str = "p.png") -> Any:
    from django.core.files.uploadedfile import SimpleUploadedFile

    return client.post("/api/uploads", {"file": SimpleUploadedFile(name, data)})


def error_code(response: Any) -> str:
    return str(response.json()["error"]["code"])


def stored_keys(user: User) -> list[str]:
    return get_artifact_store().keys(f"uploads/{user.pk}/")


def keyframes(count: int) -> dict[str, Any]:
    return graph(
        [node(f"k{i}", "image.keyframe", params={"prompt": "a"}) for i in range(count)], []
    )


# --- Storage ---


def test_an_upload_past_the_storage_quota_is_413_and_stores_nothing(
    ada: User, settings: Any
) -> None:
    client = api_client(ada)
    first = png_bytes()
    settings.MYSPINBOT_QUOTA_STORAGE_BYTES = len(first) + 10
    assert upload(client, first).status_code == 201

    response = upload(client, png_bytes(color=(1, 2, 3)))

    assert response.status_code == 413
    assert error_code(response) == "storage_quota_exceeded"
    assert Artifact.objects.filter(owner=ada).count() == 1
    assert len(stored_keys(ada)) == 1


def test_storage_counts_job_results_and_a_full_store_refuses_new_jobs(
    ada: User, bob: User, settings: Any
) -> None:
    job = engine.submit_job(ada, chain("debug.noop"))
    stored_result(job, b"x" * 500)
    run_to_end(job)
    settings.MYSPINBOT_QUOTA_STORAGE_BYTES = 500

    refused = api_client(ada).post(
        "/api/jobs",
        data=json.dumps({"graph": chain("debug.noop")}),
        content_type="application/json",
    )

    assert refused.status_code == 409
    assert error_code(refused) == "storage_quota_exceeded"
    assert Job.objects.filter(owner=ada).count() == 1
    # another user's storage is their own
    assert engine.submit_job(bob, chain("debug.noop")).pk
    # deleting the job makes room again
    assert api_client(ada).delete(f"/api/jobs/{job.pk}").status_code == 204
    assert quotas.storage_used(ada) == 0
    assert engine.submit_job(ada, chain("debug.noop")).pk


# --- GPU ---


def test_a_job_with_more_gpu_nodes_than_allowed_is_422(ada: User, settings: Any) -> None:
    settings.MYSPINBOT_MAX_GPU_NODES_PER_JOB = 2
    client = api_client(ada)

    response = client.post(
        "/api/jobs", data=json.dumps({"graph": keyframes(3)}), content_type="application/json"
    )

    assert response.status_code == 422
    assert error_code(response) == "too_many_gpu_nodes"
    assert not Job.objects.filter(owner=ada).exists()
    assert engine.submit_job(ada, keyframes(2)).pk


def test_gpu_seconds_of_the_last_day_are_a_quota(ada: User, bob: User, settings: Any) -> None:
    settings.MYSPINBOT_QUOTA_GPU_SECONDS_PER_DAY = 3600
    used = engine.submit_job(ada, keyframes(1))
    old = engine.submit_job(ada, keyframes(1))
    now = timezone.now()
    NodeRun.objects.filter(job=used).update(
        started_at=now - timedelta(hours=3), finished_at=now - timedelta(hours=2)
    )
    # a run from two days ago no longer counts
    NodeRun.objects.filter(job=old).update(
        started_at=now - timedelta(days=2), finished_at=now - timedelta(days=2, hours=-5)
    )
    assert quotas.gpu_seconds_used(ada)[0] == pytest.approx(3600, abs=1)
    client = api_client(ada)

    refused = client.post(
        "/api/jobs", data=json.dumps({"graph": keyframes(1)}), content_type="application/json"
    )

    assert refused.status_code == 429
    assert error_code(refused) == "gpu_quota_exceeded"
    # the window frees the oldest run's time 21 hours from now
    assert 20 * 3600 < int(refused.headers["Retry-After"]) <= 21 * 3600 + 5
    # CPU-only work is not held back, and bob has his own budget
    assert engine.submit_job(ada, chain("debug.noop")).pk
    assert engine.submit_job(bob, keyframes(1)).pk


def test_a_running_gpu_node_counts_up_to_now(ada: User) -> None:
    job = engine.submit_job(ada, keyframes(1))
    NodeRun.objects.filter(job=job).update(started_at=timezone.now() - timedelta(minutes=10))

    seconds, oldest = quotas.gpu_seconds_used(ada)

    assert 599 < seconds < 660
    assert oldest is not None


# --- Listing, deleting, expiring uploads ---


def test_uploads_are_listed_with_storage_and_only_to_their_owner(ada: User, bob: User) -> None:
    client = api_client(ada)
    image = upload(client, png_bytes()).json()
    voice = upload(client, wav_bytes(), "voice.wav").json()

    body = client.get("/api/uploads").json()

    assert [item["id"] for item in body["uploads"]] == [voice["id"], image["id"]]
    assert body["uploads"][0]["name"] == "voice.wav"
    assert body["uploads"][0]["expires_at"] is not None
    assert body["storage"]["used_bytes"] == image["size_bytes"] + voice["size_bytes"]
    assert body["storage"]["uploads_bytes"] == body["storage"]["used_bytes"]
    assert body["pagination"]["total"] == 2
    assert api_client(bob).get("/api/uploads").json()["uploads"] == []
    assert Client().get("/api/uploads").status_code == 401


def test_an_upload_in_use_cannot_be_deleted_and_a_free_one_is_gone_with_its_bytes(
    ada: User, bob: User, django_capture_on_commit_callbacks: Any
) -> None:
    client = api_client(ada)
    image = upload(client, png_bytes()).json()
    job = engine.submit_job(ada, graph([node("x", input={"face": {"artifact": image["id"]}})], []))

    assert api_client(bob).delete(f"/api/uploads/{image['id']}").status_code == 404
    busy = client.delete(f"/api/uploads/{image['id']}")
    assert busy.status_code == 409
    assert error_code(busy) == "upload_in_use"
    assert str(job.pk) in busy.json()["error"]["message"]
    listed = client.get("/api/uploads").json()["uploads"][0]
    assert listed["in_use_by"] == [f"job:{job.pk}"]
    assert listed["expires_at"] is None

    run_to_end(job)
    with django_capture_on_commit_callbacks(execute=True):
        assert client.delete(f"/api/uploads/{image['id']}").status_code == 204

    assert not Artifact.objects.filter(pk=image["id"]).exists()
    assert stored_keys(ada) == []
    assert client.delete(f"/api/uploads/{image['id']}").status_code == 404


def test_a_job_result_is_not_an_upload_to_delete(ada: User) -> None:
    job = engine.submit_job(ada, chain("debug.noop"))
    result = stored_result(job, b"r")

    assert api_client(ada).delete(f"/api/uploads/{result.pk}").status_code == 404
    assert Artifact.objects.filter(pk=result.pk).exists()


def test_unused_uploads_expire_and_used_or_held_ones_stay(
    ada: User, settings: Any, django_capture_on_commit_callbacks: Any
) -> None:
    settings.MYSPINBOT_UPLOAD_EXPIRE_DAYS = 30
    client = api_client(ada)
    ids = {
        name: upload(client, png_bytes(color=color)).json()["id"]
        for name, color in (
            ("never_used", (1, 1, 1)),
            ("used_long_ago", (2, 2, 2)),
            ("used_lately", (3, 3, 3)),
            ("in_a_profile", (4, 4, 4)),
            ("new", (5, 5, 5)),
        )
    }
    now = timezone.now()
    old = [ids[name] for name in ids if name != "new"]
    Artifact.objects.filter(pk__in=old).update(created_at=now - timedelta(days=60))
    for name, age in (("used_long_ago", 45), ("used_lately", 2)):
        job = engine.submit_job(ada, graph([node("x", input={"f": {"artifact": ids[name]}})], []))
        run_to_end(job)
        Job.objects.filter(pk=job.pk).update(created_at=now - timedelta(days=age))
    Profile.objects.create(
        owner=ada, kind="voice", data={"clip": {"artifact": ids["in_a_profile"]}}
    )

    out = io.StringIO()
    with django_capture_on_commit_callbacks(execute=True):
        call_command("expire_uploads", stdout=out)

    gone = {"never_used", "used_long_ago"}
    assert f"expired {len(gone)} uploads" in out.getvalue()
    left = set(Artifact.objects.filter(owner=ada).values_list("pk", flat=True))
    assert {str(pk) for pk in left} == {ids[n] for n in ids if n not in gone}
    assert len(stored_keys(ada)) == len(ids) - len(gone)


def test_expiry_can_be_turned_off(ada: User, settings: Any) -> None:
    settings.MYSPINBOT_UPLOAD_EXPIRE_DAYS = 0
    image = upload(api_client(ada), png_bytes()).json()
    Artifact.objects.filter(pk=image["id"]).update(created_at=timezone.now() - timedelta(days=3650))

    assert quotas.expire_uploads() == []
    assert Artifact.objects.filter(pk=image["id"]).exists()


@pytest.mark.django_db(transaction=True)
def test_two_uploads_racing_for_the_last_room_store_one(ada: User, settings: Any) -> None:
    """The upload that checked while another was still being written checks again under
    the user's lock, after that one committed: it is refused and its bytes deleted."""
    import threading

    from django.db import connection, transaction

    data = png_bytes()
    settings.MYSPINBOT_QUOTA_STORAGE_BYTES = len(data) * 3 // 2  # room for one, not two
    answers: list[Any] = []
    client = api_client(ada)

    def second_upload() -> None:
        try:
            answers.append(upload(client, data, "second.png"))
        finally:
            connection.close()

    with transaction.atomic():
        quotas.lock_user(ada)  # the first upload, holding the lock, not yet committed
        Artifact.objects.create(
            owner=ada,
            name="first",
            bucket="b",
            key="uploads/first.png",
            size_bytes=len(data),
            sha256="0" * 64,
            content_type="image/png",
        )
        racing = threading.Thread(target=second_upload)
        racing.start()
        deadline = timezone.now() + timedelta(seconds=20)
        while len(stored_keys(ada)) < 1 and timezone.now() < deadline:  # past its first check
            racing.join(0.05)
        assert len(stored_keys(ada)) == 1
    racing.join(20)

    assert [answer.status_code for answer in answers] == [413]
    assert error_code(answers[0]) == "storage_quota_exceeded"
    assert list(Artifact.objects.filter(owner=ada).values_list("name", flat=True)) == ["first"]
    assert stored_keys(ada) == []
