"""Every REST route: success, its documented errors, and isolation between users."""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext

from apps.graphs.models import Graph
from apps.jobs import engine, samples
from apps.jobs.models import ApiToken, Artifact, Job, JobEvent, NodeRun
from myspinbot.storage import get_artifact_store
from testkit.graphs import chain, edge, graph, node, run_to_end
from tests.support.clients import api_client
from tests.support.listener import Listener, listening
from tests.support.media import flac_silence, jpeg_bytes, png_bytes, wav_bytes, wav_with_codec
from tests.support.stored import stored_result

pytestmark = pytest.mark.django_db


@pytest.fixture
def as_ada(ada: User) -> Client:
    return api_client(ada)


@pytest.fixture
def as_bob(bob: User) -> Client:
    return api_client(bob)


def post_json(client: Client, path: str, body: Any) -> Any:
    return client.post(path, data=json.dumps(body), content_type="application/json")


def error_of(response: Any) -> dict[str, Any]:
    body = response.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"code", "message", "details"}
    return dict(body["error"])


# --- Authentication ---


def test_every_route_needs_authentication(client: Client) -> None:
    job_id = uuid.uuid4()
    for method, path in [
        ("get", "/api/jobs"),
        ("post", "/api/jobs"),
        ("get", f"/api/jobs/{job_id}"),
        ("get", f"/api/jobs/{job_id}/events"),
        ("post", f"/api/jobs/{job_id}/cancel"),
        ("post", f"/api/jobs/{job_id}/retry"),
        ("delete", f"/api/jobs/{job_id}"),
        ("get", "/api/templates"),
        ("get", "/api/capabilities"),
        ("post", "/api/uploads"),
        ("get", f"/api/artifacts/{job_id}"),
        ("get", f"/api/artifacts/{job_id}/download"),
        ("post", "/api/train"),
        ("get", f"/api/status/{job_id}"),
        ("post", "/api/infinitetalk"),
    ]:
        response = getattr(client, method)(path)
        assert response.status_code == 401, (method, path)
        assert error_of(response)["code"] == "unauthenticated"


def test_a_revoked_or_unknown_token_is_refused(ada: User) -> None:
    record, token = ApiToken.issue(ada)
    assert Client(headers={"Authorization": f"Bearer {token}"}).get("/api/jobs").status_code == 200
    record.revoked_at = record.created_at
    record.save()

    assert Client(headers={"Authorization": f"Bearer {token}"}).get("/api/jobs").status_code == 401
    assert Client(headers={"Authorization": "Bearer msb_nope"}).get("/api/jobs").status_code == 401


def test_tokens_are_stored_hashed(ada: User) -> None:
    record, token = ApiToken.issue(ada)

    assert token.startswith("msb_")
    assert token not in record.token_hash
    assert record.token_hash == ApiToken.hash(token)


def test_a_session_works_and_csrf_is_checked_on_writes(ada: User) -> None:
    browser = Client(enforce_csrf_checks=True)
    browser.login(username="ada", password="pw-ada-123")

    assert browser.get("/api/jobs").status_code == 200
    refused = post_json(browser, "/api/jobs", {"graph": chain("debug.noop")})
    assert refused.status_code == 403
    assert error_of(refused)["code"] == "forbidden"
    # No credentials at all: 401, as docs/authorization.md says, not a CSRF complaint.
    for path in ("/api/jobs", "/api/uploads"):
        anonymous = post_json(Client(enforce_csrf_checks=True), path, {})
        assert anonymous.status_code == 401, path
        assert error_of(anonymous)["code"] == "unauthenticated"


def test_createapitoken_prints_a_working_token_last() -> None:
    from io import StringIO

    from django.core.management import call_command

    out = StringIO()
    call_command("createapitoken", "cli-user", "--create-user", stdout=out, stderr=StringIO())

    token = out.getvalue().strip().splitlines()[-1]
    assert Client(headers={"Authorization": f"Bearer {token}"}).get("/api/jobs").status_code == 200


# --- POST /api/jobs ---


def test_submit_a_graph(as_ada: Client, ada: User) -> None:
    response = post_json(as_ada, "/api/jobs", {"graph": chain("debug.noop", "debug.noop")})

    assert response.status_code == 201
    body = response.json()
    assert body["status"] == "queued"
    assert body["jobId"] == body["id"]
    assert [n["status"] for n in body["graph"]["nodes"]] == ["ready", "pending"]
    assert Job.objects.get(pk=body["id"]).owner == ada


def test_submit_a_template_with_params_and_uploaded_inputs(as_ada: Client) -> None:
    photo = as_ada.post("/api/uploads", {"file": _file("me.png", png_bytes())}).json()

    response = post_json(
        as_ada,
        "/api/jobs",
        {
            "template": "train_and_render",
            "params": {"script": {"topic": "otters"}},
            "inputs": {"photos": [{"artifact": photo["id"]}]},
        },
    )

    assert response.status_code == 201
    nodes = {n["id"]: n for n in response.json()["graph"]["nodes"]}
    assert nodes["script"]["params"]["topic"] == "otters"
    assert nodes["train_lora"]["input"]["photos"][0]["sha256"] == photo["sha256"]
    assert response.json()["template"] == "train_and_render"


@pytest.mark.parametrize(
    ("body", "code", "fragment"),
    [
        (
            {"graph": graph([node("a"), node("b")], [edge("a", "b"), edge("b", "a")])},
            "invalid_graph",
            "cycle",
        ),
        ({"graph": graph([node("a", "no.such")], [])}, "invalid_graph", "unknown_service"),
        (
            {"graph": graph([node("s", "debug.sleep", params={"seconds": -1})], [])},
            "invalid_graph",
            "invalid_params",
        ),
        (
            {
                "graph": graph(
                    [
                        node("kf", "image.keyframe", params={"width": 32, "height": 32}),
                        node("compose", "video.compose"),
                    ],
                    [edge("kf", "compose")],
                )
            },
            "invalid_graph",
            "contract_mismatch",
        ),
        (
            {"graph": graph([node("f", "debug.fail", retries={"maxAttempts": 20})], [])},
            "invalid_graph",
            "node 'f' asks for 20 attempts; service 'debug.fail' allows at most 3",
        ),
        (
            {"graph": graph([node("a", progressWeight=1e308)], [])},
            "invalid_graph",
            "1e+308 is greater than the maximum of 1000",
        ),
        ({"template": "nope"}, "unknown_template", "unknown template"),
        ({"template": "train_and_render"}, "invalid_graph", "missing_input"),
        ({}, "invalid_request", "either 'template' or 'graph'"),
        ({"template": "capabilities", "graph": chain("debug.noop")}, "invalid_request", "not both"),
        ({"graph": "a string"}, "invalid_request", "graph"),
    ],
)
def test_invalid_submissions_are_422_and_store_nothing(
    as_ada: Client, body: dict[str, Any], code: str, fragment: str
) -> None:
    response = post_json(as_ada, "/api/jobs", body)

    assert response.status_code == 422
    error = error_of(response)
    assert error["code"] == code
    assert fragment in json.dumps(error)
    assert (Job.objects.count(), Graph.objects.count(), NodeRun.objects.count()) == (0, 0, 0)


def test_graph_errors_name_the_node_and_rule(as_ada: Client) -> None:
    body = {"graph": graph([node("a"), node("a")], [edge("a", "zz")])}

    issues = error_of(post_json(as_ada, "/api/jobs", body))["details"]["issues"]

    assert {(i["rule"], i["node"]) for i in issues} >= {("duplicate_node_id", "a")}
    assert any(i["rule"] == "unknown_node" and i["edge"] == 0 for i in issues)


def test_malformed_json_is_400(as_ada: Client) -> None:
    response = as_ada.post("/api/jobs", data="{not json", content_type="application/json")

    assert response.status_code == 400
    assert error_of(response)["code"] == "bad_request"


def test_someone_elses_upload_cannot_be_an_input(as_ada: Client, as_bob: Client) -> None:
    photo = as_bob.post("/api/uploads", {"file": _file("b.png", png_bytes())}).json()

    response = post_json(
        as_ada,
        "/api/jobs",
        {
            "template": "train_and_render",
            "inputs": {"photos": [{"artifact": photo["id"]}]},
        },
    )

    assert response.status_code == 422
    assert error_of(response)["code"] == "unknown_artifact"
    assert Job.objects.count() == 0


def test_jobs_in_flight_are_limited(as_ada: Client, settings: Any) -> None:
    settings.MYSPINBOT_MAX_JOBS_IN_FLIGHT = 2
    for _ in range(2):
        assert post_json(as_ada, "/api/jobs", {"graph": chain("debug.noop")}).status_code == 201

    response = post_json(as_ada, "/api/jobs", {"graph": chain("debug.noop")})

    assert response.status_code == 429
    assert error_of(response)["code"] == "too_many_jobs"
    assert response["Retry-After"] == "10"
    assert Job.objects.count() == 2


def test_submissions_per_minute_are_limited(as_ada: Client, settings: Any) -> None:
    settings.MYSPINBOT_SUBMISSIONS_PER_MINUTE = 3
    for _ in range(3):
        job_id = post_json(as_ada, "/api/jobs", {"graph": chain("debug.noop")}).json()["id"]
        engine.cancel_job(job_id)

    response = post_json(as_ada, "/api/jobs", {"graph": chain("debug.noop")})

    assert response.status_code == 429
    assert error_of(response)["code"] == "too_many_submissions"
    assert 1 <= int(response["Retry-After"]) <= 60


# --- Reading jobs ---


def test_list_is_newest_first_paginated_and_filtered(as_ada: Client, ada: User, bob: User) -> None:
    ids = [str(engine.submit_job(ada, chain("debug.noop")).pk) for _ in range(3)]
    engine.submit_job(bob, chain("debug.noop"))
    engine.cancel_job(ids[0])

    page = as_ada.get("/api/jobs?limit=2&offset=0").json()
    cancelled = as_ada.get("/api/jobs?status=cancelled").json()
    clamped = as_ada.get("/api/jobs?limit=500").json()

    assert [j["id"] for j in page["jobs"]] == [ids[2], ids[1]]
    assert page["pagination"] == {"limit": 2, "offset": 0, "total": 3}
    assert [j["id"] for j in cancelled["jobs"]] == [ids[0]]
    assert clamped["pagination"]["limit"] == 100
    assert as_ada.get("/api/jobs?limit=0").json()["pagination"]["limit"] == 1
    assert as_ada.get("/api/jobs?status=bogus").status_code == 422


def test_get_job_shows_live_node_states(as_ada: Client, ada: User) -> None:
    job = engine.submit_job(ada, chain("debug.noop", "debug.noop"))
    run_to_end(job)

    body = as_ada.get(f"/api/jobs/{job.pk}").json()

    assert body["status"] == "completed"
    assert body["progress"] == 1.0
    assert [n["status"] for n in body["graph"]["nodes"]] == ["completed", "completed"]
    assert body["graph"]["nodes"][0]["output"] == {"node": "n0"}
    assert body["graph"]["nodes"][0]["retries"] == {"attempt": 1, "maxAttempts": 3}
    assert body["finishedAt"] is not None


def test_events_after_since_in_order(as_ada: Client, ada: User) -> None:
    job = engine.submit_job(ada, chain("debug.noop"))
    run_to_end(job)

    everything = as_ada.get(f"/api/jobs/{job.pk}/events").json()
    later = as_ada.get(f"/api/jobs/{job.pk}/events?since=2").json()

    seqs = [e["seq"] for e in everything["events"]]
    assert seqs == list(range(1, everything["lastSeq"] + 1))
    assert [e["seq"] for e in later["events"]] == seqs[2:]
    assert everything["events"][-1]["type"] == "job.completed"
    assert as_ada.get(f"/api/jobs/{job.pk}/events?since=-1").status_code == 422


# --- Cancel, retry, delete ---


def test_cancel_is_202_then_409(as_ada: Client, ada: User) -> None:
    job = engine.submit_job(ada, chain("debug.noop"))

    first = as_ada.post(f"/api/jobs/{job.pk}/cancel")
    second = as_ada.post(f"/api/jobs/{job.pk}/cancel")

    assert (first.status_code, first.json()["status"]) == (202, "cancelled")
    assert second.status_code == 409
    assert error_of(second)["code"] == "job_finished"


def test_retry_reruns_a_cancelled_job_and_refuses_a_running_one(as_ada: Client, ada: User) -> None:
    job = engine.submit_job(ada, chain("debug.noop"))
    running = as_ada.post(f"/api/jobs/{job.pk}/retry")
    engine.cancel_job(job.pk)

    retried = as_ada.post(f"/api/jobs/{job.pk}/retry")

    assert running.status_code == 409
    assert error_of(running)["code"] == "not_retryable"
    assert (retried.status_code, retried.json()["status"]) == (202, "queued")
    assert NodeRun.objects.get(job=job).attempt == 2


def test_delete_removes_a_finished_job_its_events_and_unshared_artifacts(
    as_ada: Client, ada: User
) -> None:
    job = engine.submit_job(ada, chain("debug.noop"))
    store = get_artifact_store()
    stored = store.save_bytes(f"jobs/{job.pk}/out.txt", b"result", "text/plain")
    artifact = Artifact.objects.create(
        owner=ada,
        job=job,
        bucket=stored.bucket,
        key=stored.key,
        size_bytes=6,
        sha256=stored.sha256,
        content_type="text/plain",
    )
    running = as_ada.delete(f"/api/jobs/{job.pk}")
    run_to_end(job)

    response = as_ada.delete(f"/api/jobs/{job.pk}")

    assert running.status_code == 409
    assert response.status_code == 204
    assert not Job.objects.filter(pk=job.pk).exists()
    assert not JobEvent.objects.filter(job_id=job.pk).exists()
    assert not Artifact.objects.filter(pk=artifact.pk).exists()
    assert Graph.objects.count() == 0


def test_delete_keeps_an_artifact_another_job_refers_to(as_ada: Client, ada: User) -> None:
    job = engine.submit_job(ada, chain("debug.noop"))
    stored = get_artifact_store().save_bytes(
        f"jobs/{job.pk}/lora.bin", b"w", "application/octet-stream"
    )
    artifact = Artifact.objects.create(
        owner=ada,
        job=job,
        bucket=stored.bucket,
        key=stored.key,
        size_bytes=1,
        sha256=stored.sha256,
        content_type="application/octet-stream",
    )
    run_to_end(job)
    other = engine.submit_job(
        ada, graph([node("x", input={"lora": {"artifact": str(artifact.pk)}})], [])
    )
    assert other.pk

    assert as_ada.delete(f"/api/jobs/{job.pk}").status_code == 204

    assert Artifact.objects.filter(pk=artifact.pk).exists()
    assert get_artifact_store().exists(stored.key)


def test_deleting_a_job_reads_no_graph_document_whatever_the_owner_has_stored(
    as_ada: Client, ada: User
) -> None:
    """What keeps an artifact alive is found by index (``JobInput``): the statements a
    delete runs do not grow with the owner's other jobs, and none reads a document."""

    def statements_to_delete() -> tuple[list[str], list[str]]:
        job = engine.submit_job(ada, chain("debug.noop"))
        stored_result(job, b"r")
        run_to_end(job)
        with CaptureQueriesContext(connection) as captured:
            assert as_ada.delete(f"/api/jobs/{job.pk}").status_code == 204
        # Less the token's own bookkeeping (``last_used_at``, written once a minute).
        sql = [q["sql"] for q in captured.captured_queries if "jobs_apitoken" not in q["sql"]]
        # A document read is the job's own when it selects that row by id (not "NOT id =").
        own = re.compile(
            rf'(?<!NOT \()"(jobs_job|graphs_graph)"\."id" = \'({job.pk.hex}|{job.graph_id.hex})\''
        )
        foreign_documents = [s for s in sql if '"document"' in s and not own.search(s)]
        return sql, foreign_documents

    engine.submit_job(ada, chain("debug.noop"))
    few, _ = statements_to_delete()
    for _ in range(5):
        engine.submit_job(ada, chain("debug.noop"))
    many, foreign_documents = statements_to_delete()

    assert len(many) == len(few)
    assert foreign_documents == []


# --- Uploads and artifacts ---


def _file(name: str, data: bytes, content_type: str = "application/octet-stream") -> Any:
    from django.core.files.uploadedfile import SimpleUploadedFile

    return SimpleUploadedFile(name, data, content_type=content_type)


@pytest.mark.parametrize(
    ("name", "data", "expected"),
    [
        ("p.png", png_bytes(), "image/png"),
        ("p.jpg", jpeg_bytes(), "image/jpeg"),
        ("voice.wav", wav_bytes(), "audio/x-wav"),
        ("lying.txt", png_bytes(), "image/png"),
    ],
)
def test_upload_sniffs_the_type_from_the_bytes(
    as_ada: Client, name: str, data: bytes, expected: str
) -> None:
    response = as_ada.post("/api/uploads", {"file": _file(name, data, "text/plain")})

    assert response.status_code == 201
    body = response.json()
    assert body["content_type"] == expected
    assert body["size_bytes"] == len(data)
    import hashlib

    assert body["sha256"] == hashlib.sha256(data).hexdigest()


def test_an_uploaded_portrait_says_where_its_face_is_or_why_it_cannot_speak(
    as_ada: Client,
) -> None:
    import io

    from PIL import Image
    from skimage import data

    def upload(image: Image.Image, fmt: str = "JPEG") -> dict[str, Any]:
        buffer = io.BytesIO()
        image.save(buffer, format=fmt)
        response = as_ada.post("/api/uploads", {"file": _file("p.jpg", buffer.getvalue())})
        assert response.status_code == 201
        return dict(response.json()["face"])

    photo = Image.fromarray(data.astronaut())
    # A big photo is checked on a scaled copy; the box is in the photo's own pixels.
    face = upload(photo.resize((3072, 3072)))
    assert (face["found"], face["code"], face["faces"]) == (True, "face_found", 1)
    assert (face["width"], face["height"]) == (3072, 3072)
    left, top, right, bottom = face["box"]
    assert 1000 < left < right < 1700
    assert 380 < top < bottom < 1100
    small = upload(photo.resize((256, 256)))
    assert (small["found"], small["code"]) == (False, "face_too_small")
    assert small["message"].startswith("face too small (")
    assert small["message"].endswith("need 64)")
    wall = upload(Image.new("RGB", (640, 480), (200, 180, 150)), "PNG")
    assert (wall["found"], wall["code"], wall["message"]) == (
        False,
        "no_face",
        "no face found in the image",
    )
    pair = Image.new("RGB", (1024, 512))
    pair.paste(photo, (0, 0))
    pair.paste(photo.resize((384, 384)), (600, 64))
    assert upload(pair)["message"] == "several faces (2): the largest is used"
    from tests.support.portraits import turned

    away = upload(Image.fromarray(turned(data.astronaut(), 55)), "PNG")
    assert (away["found"], away["code"]) == (False, "face_turned_away")
    assert away["message"] == "face turned away: the portrait must look at the camera"
    voice = as_ada.post("/api/uploads", {"file": _file("v.wav", wav_bytes())}).json()
    assert voice["face"] is None


@pytest.mark.parametrize(
    ("data", "status", "code"),
    [
        (b"just some text that is not media", 415, "unsupported_media_type"),
        (b"%PDF-1.4\n" + b"x" * 100, 415, "unsupported_media_type"),
        (png_bytes()[:40], 422, "corrupt_file"),
    ],
)
def test_bad_uploads_are_refused_and_nothing_is_stored(
    as_ada: Client, data: bytes, status: int, code: str
) -> None:
    response = as_ada.post("/api/uploads", {"file": _file("x.png", data, "image/png")})

    assert response.status_code == status
    assert error_of(response)["code"] == code
    assert Artifact.objects.count() == 0


listener = pytest.fixture(listening, name="listener")


def test_an_sdp_description_sniffed_as_mp3_is_refused_quickly_and_calls_nobody(
    as_ada: Client, listener: Listener
) -> None:
    # An empty ID3 tag makes the bytes sniff as audio/mpeg; FFmpeg left to probe them
    # finds the "c=IN IP" line and opens an RTP session to the address they name.
    sdp = (
        "v=0\r\no=- 0 0 IN IP4 127.0.0.1\r\ns=voice\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
        f"m=audio {listener.port} RTP/AVP 0\r\n"
    ).encode()
    data = b"ID3\x04\x00\x00\x00\x00\x00\x00" + sdp
    started = time.monotonic()

    response = as_ada.post("/api/uploads", {"file": _file("voice.mp3", data)})

    assert time.monotonic() - started < 5
    assert response.status_code == 422
    assert error_of(response)["code"] == "corrupt_file"
    assert listener.connections == 0
    assert Artifact.objects.count() == 0


@pytest.mark.parametrize(
    ("make", "status", "code"),
    [
        (lambda: flac_silence(3 * 3600), 413, "audio_too_long"),
        (lambda: flac_silence(3 * 3600, declared=False), 413, "audio_too_long"),
        (lambda: wav_with_codec("adpcm_ms"), 415, "unsupported_media_type"),
    ],
    ids=["flac-3h", "flac-3h-undeclared", "adpcm-wav"],
)
def test_audio_past_the_bounds_or_off_the_list_is_refused(
    as_ada: Client, make: Callable[[], bytes], status: int, code: str
) -> None:
    response = as_ada.post("/api/uploads", {"file": _file("voice.flac", make())})

    assert response.status_code == status
    assert error_of(response)["code"] == code
    assert Artifact.objects.count() == 0


def test_a_browser_recording_in_webm_is_accepted(as_ada: Client, tmp_path: Any) -> None:
    import av
    import numpy as np

    path = tmp_path / "voice.webm"
    with av.open(str(path), "w", format="webm") as out:
        stream = out.add_stream("libopus", rate=48000, layout="mono")
        samples = (np.sin(np.arange(48000) / 20) * 8000).astype(np.int16)[None, :]
        frame = av.AudioFrame.from_ndarray(samples, format="s16", layout="mono")
        frame.rate = 48000
        for packet in [*stream.encode(frame), *stream.encode(None)]:
            out.mux(packet)

    response = as_ada.post("/api/uploads", {"file": _file("voice.webm", path.read_bytes())})

    assert response.status_code == 201
    assert response.json()["content_type"] == "video/webm"


def test_an_oversized_upload_is_413(as_ada: Client, settings: Any) -> None:
    settings.MYSPINBOT_UPLOAD_KINDS = {
        **settings.MYSPINBOT_UPLOAD_KINDS,
        "image": {"types": ["image/png"], "max_bytes": 50},
    }

    response = as_ada.post("/api/uploads", {"file": _file("big.png", png_bytes(64, 64))})

    assert response.status_code == 413
    assert error_of(response)["code"] == "too_large"
    assert Artifact.objects.count() == 0


def test_a_decompression_bomb_is_413(as_ada: Client, settings: Any) -> None:
    settings.MYSPINBOT_MAX_IMAGE_PIXELS = 100

    response = as_ada.post("/api/uploads", {"file": _file("bomb.png", png_bytes(64, 64))})

    assert response.status_code == 413
    assert error_of(response)["code"] == "image_too_large"


def test_a_missing_file_part_is_422(as_ada: Client) -> None:
    response = as_ada.post("/api/uploads", {"other": _file("x.png", png_bytes())})

    assert response.status_code == 422
    assert error_of(response)["code"] == "invalid_request"


def test_artifact_metadata_url_and_download(as_ada: Client) -> None:
    data = wav_bytes()
    uploaded = as_ada.post("/api/uploads", {"file": _file("voice.wav", data)}).json()

    meta = as_ada.get(f"/api/artifacts/{uploaded['id']}").json()
    download = as_ada.get(f"/api/artifacts/{uploaded['id']}/download")

    assert meta["sha256"] == uploaded["sha256"]
    assert meta["name"] == "voice.wav"
    assert meta["url"].startswith("http://127.0.0.1:")  # presigned on the test S3 server
    import urllib.request

    with urllib.request.urlopen(meta["url"], timeout=10) as response:
        assert response.read() == data
    assert download.status_code == 200
    assert b"".join(download.streaming_content) == data  # type: ignore[attr-defined]


# --- Isolation ---


def test_another_users_objects_are_404_everywhere(
    as_ada: Client, bob: User, as_bob: Client
) -> None:
    job = engine.submit_job(bob, chain("debug.noop"))
    upload = as_bob.post("/api/uploads", {"file": _file("b.png", png_bytes())}).json()

    for method, path in [
        ("get", f"/api/jobs/{job.pk}"),
        ("get", f"/api/jobs/{job.pk}/events"),
        ("post", f"/api/jobs/{job.pk}/cancel"),
        ("post", f"/api/jobs/{job.pk}/retry"),
        ("delete", f"/api/jobs/{job.pk}"),
        ("get", f"/api/status/{job.pk}"),
        ("get", f"/api/artifacts/{upload['id']}"),
        ("get", f"/api/artifacts/{upload['id']}/download"),
    ]:
        response = getattr(as_ada, method)(path)
        assert response.status_code == 404, (method, path)
        assert error_of(response)["code"] == "not_found"
    assert as_ada.get("/api/jobs").json()["pagination"]["total"] == 0
    job.refresh_from_db()
    assert job.status == "queued"


# --- Templates and capabilities ---


def test_templates_list_nodes_param_schemas_and_availability(as_ada: Client) -> None:
    templates = {t["name"]: t for t in as_ada.get("/api/templates").json()["templates"]}

    assert sorted(templates) == [
        "capabilities",
        "lora_video",
        "narrated_video",
        "quick",
        "talking_head",
        "train_and_render",
    ]
    video = templates["narrated_video"]
    assert video["requiredInputs"] == ["photos", "transcript", "voice_sample"]
    lipsync = next(n for n in video["nodes"] if n["id"] == "lipsync")
    assert (lipsync["service"], lipsync["queue"]) == ("lipsync.sync", "cpu")
    assert lipsync["paramsSchema"]["properties"]["fps"]["minimum"] == 10
    train = next(n for n in templates["lora_video"]["nodes"] if n["id"] == "train_lora")
    assert (train["service"], train["queue"]) == ("lora.train", "gpu")
    assert train["paramsSchema"]["properties"]["steps"]["minimum"] == 1
    assert video["available"] is False
    assert video["unavailableReason"] == (
        "no worker runs lipsync.sync, llm.generate_script, tts.speak, video.compose, "
        "voice.build_profile"
    )
    talking = templates["talking_head"]
    assert [n["service"] for n in talking["nodes"]][-2:] == ["lipsync.gpu", "video.upscale"]
    # ... and its models, none fetched here, each with the command that fetches it.
    assert talking["unavailableReason"] == (
        "no worker runs lipsync.gpu, llm.generate_script, tts.speak, video.upscale, "
        "voice.build_profile: "
        + "; ".join(
            f"model {name} is missing: run python manage.py models fetch {name}"
            for name in ("sd-vae-ft-mse", "musetalk-v1.5", "whisper-tiny", "realesrgan-x4plus")
        )
    )


def test_capabilities_answers_quickly_when_no_worker_is_up(as_ada: Client) -> None:
    import time

    started = time.monotonic()
    body = as_ada.get("/api/capabilities").json()

    assert time.monotonic() - started < 5
    assert body["workers"] == []
    assert body["note"] == "no worker answered within 1s"
    assert {s["id"] for s in body["services"]} >= {"debug.noop", "debug.sleep"}
    assert all(s["available"] is False for s in body["services"])


def test_capabilities_in_the_originals_shape(as_ada: Client) -> None:
    body = as_ada.get("/api/capabilities?shape=original").json()

    # The original's combined manifest allows no other key; no worker is up here.
    assert set(body) == {"generatedAt", "capabilities", "sources"}
    assert body["capabilities"] == []
    assert body["sources"] == {
        "control": {"plane": "node", "number": 0},
        "worker": {"plane": "python", "number": 0},
    }
    assert as_ada.get("/api/capabilities?shape=nope").status_code == 422


# --- The original system's routes ---


def test_compat_train_and_status(as_ada: Client) -> None:
    created = post_json(as_ada, "/api/train", {"prompt": "otters"})
    job_id = created.json()["jobId"]

    status = as_ada.get(f"/api/status/{job_id}")
    detail = as_ada.get(f"/api/jobs/{job_id}").json()

    assert created.status_code == 201
    assert status.json() == {"jobId": job_id, "status": "queued", "progress": 0.0}
    assert {"jobId", "status", "progress", "graph", "createdAt", "updatedAt"} <= set(detail)
    assert detail["template"] == "train_and_render"
    nodes = {node["id"]: node for node in detail["graph"]["nodes"]}
    assert nodes["script"]["params"]["topic"] == "otters"
    assert nodes["train_lora"]["input"] == {"photos": []}


def test_compat_train_takes_the_photos_and_leaves_their_count_to_lora_train(
    as_ada: Client,
) -> None:
    photos = [
        as_ada.post("/api/uploads", {"file": _file(f"{n}.png", png_bytes())}).json()
        for n in range(2)
    ]

    created = post_json(
        as_ada,
        "/api/train",
        {"topic": "otters", "photos": [{"artifact": photo["id"]} for photo in photos]},
    )

    # Two photos are too few for the LoRA (5 to 60), but that is lora.train's check when it
    # runs: the job is accepted, and fails at train_lora with bad_input.
    assert created.status_code == 201
    job = Job.objects.get(pk=created.json()["jobId"])
    nodes = {node["id"]: node for node in job.graph.document["nodes"]}
    assert [p["sha256"] for p in nodes["train_lora"]["input"]["photos"]] == [
        photo["sha256"] for photo in photos
    ]


@pytest.mark.parametrize("body", [{"topic": "  "}, {"prompt": ""}, {"prompt": "", "photos": []}])
def test_compat_train_without_a_topic_is_422(as_ada: Client, body: dict[str, Any]) -> None:
    response = post_json(as_ada, "/api/train", body)

    assert response.status_code == 422
    assert error_of(response) == {
        "code": "invalid_request",
        "message": "topic (or prompt) is required: what the video is about",
        "details": {},
    }
    assert Job.objects.count() == 0


@pytest.mark.parametrize("raw", ["", "{}", '{"photos": []}'])
def test_compat_train_with_the_originals_empty_body_runs_quick_on_the_samples(
    as_ada: Client, ada: User, raw: str
) -> None:
    first = as_ada.post("/api/train", raw, content_type="application/json")
    again = as_ada.post("/api/train", raw, content_type="application/json")

    assert first.status_code == 201, first.content
    assert first.json()["defaults"] == samples.DESCRIPTION
    assert first.json()["defaults"]["template"] == "quick"
    jobs = [Job.objects.get(pk=r.json()["jobId"]) for r in (first, again)]
    assert [job.template for job in jobs] == ["quick", "quick"]
    nodes = {node["id"]: node for node in jobs[0].graph.document["nodes"]}
    assert nodes["script"]["params"]["topic"] == samples.SAMPLE_TOPIC
    assert nodes["voice_profile"]["input"]["transcript"] == samples.SAMPLE_TEXT
    uploads = Artifact.objects.filter(owner=ada, job__isnull=True).order_by("name")
    # Made and uploaded once; the second job reuses the caller's sample uploads.
    assert [(a.name, a.content_type) for a in uploads] == [
        ("sample-portrait.png", "image/png"),
        ("sample-voice.wav", "audio/x-wav"),
    ]
    assert nodes["lipsync"]["input"]["photos"][0]["sha256"] == uploads[0].sha256
    assert nodes["voice_profile"]["input"]["voice_sample"]["sha256"] == uploads[1].sha256
    again_nodes = {node["id"]: node for node in jobs[1].graph.document["nodes"]}
    assert again_nodes["lipsync"]["input"] == nodes["lipsync"]["input"]


def test_compat_infinitetalk_uploads_both_files_and_starts_a_video_job(as_ada: Client) -> None:
    response = as_ada.post(
        "/api/infinitetalk",
        {
            "image_file": _file("me.jpg", jpeg_bytes()),
            "audio_file": _file("me.wav", wav_bytes()),
            "data": json.dumps({"prompt": "otters", "refText": "Hello there."}),
        },
    )

    assert response.status_code == 201
    job = Job.objects.get(pk=response.json()["jobId"])
    assert job.template == "quick"
    assert job.graph.document["metadata"]["lipsync"] == (
        "CPU face-mesh backend (lipsync.sync): no worker offers a GPU lip-sync backend"
    )
    assert job.graph.document["nodes"][3]["service"] == "lipsync.sync"
    nodes = {n["id"]: n for n in job.graph.document["nodes"]}
    assert nodes["voice_profile"]["input"]["transcript"] == "Hello there."
    assert nodes["voice_profile"]["input"]["voice_sample"]["content_type"] == "audio/x-wav"
    assert nodes["script"]["params"]["topic"] == "otters"
    assert Artifact.objects.count() == 2


def test_compat_infinitetalk_with_swapped_files_stores_nothing(as_ada: Client) -> None:
    response = as_ada.post(
        "/api/infinitetalk",
        {
            "image_file": _file("me.wav", wav_bytes()),
            "audio_file": _file("me.jpg", jpeg_bytes()),
            "data": json.dumps({"prompt": "otters", "refText": "Hi"}),
        },
    )

    assert response.status_code == 415
    assert (Artifact.objects.count(), Job.objects.count()) == (0, 0)


def test_compat_infinitetalk_with_bad_data_is_422(as_ada: Client) -> None:
    response = as_ada.post(
        "/api/infinitetalk",
        {
            "image_file": _file("me.jpg", jpeg_bytes()),
            "audio_file": _file("me.wav", wav_bytes()),
            "data": "{broken",
        },
    )

    assert response.status_code == 422
    assert (Artifact.objects.count(), Job.objects.count()) == (0, 0)


def test_an_admin_creates_a_token_shown_once_and_revokes_it(ada: User) -> None:
    staff = User.objects.create_superuser("root", password="pw-root-123")
    browser = Client()
    browser.force_login(staff)

    added = browser.post("/admin/jobs/apitoken/add/", {"user": ada.pk, "name": "ci"})
    # The message with the token's clear text is kept server side, not in a cookie.
    assert "messages" not in added.cookies
    response = browser.get(added["Location"])

    shown = [str(m) for m in response.context["messages"]]
    token = shown[0].rsplit(": ", 1)[1]
    assert all(token not in morsel.value for morsel in browser.cookies.values())
    assert Client(headers={"Authorization": f"Bearer {token}"}).get("/api/jobs").status_code == 200
    record = ApiToken.objects.get(name="ci")
    assert record.token_hash == ApiToken.hash(token)
    browser.post(
        "/admin/jobs/apitoken/",
        {"action": "revoke", "_selected_action": [record.pk]},
    )
    assert Client(headers={"Authorization": f"Bearer {token}"}).get("/api/jobs").status_code == 401


# --- A job answered from the cache ---


def _run_storing(job: Job, content: bytes) -> dict[str, Any]:
    """Play a worker that stores ``video.mp4`` for the job's one queued node and returns
    its reference as the output."""
    from apps.jobs.artifacts import NodeArtifacts
    from apps.jobs.execution import claim, complete

    run = NodeRun.objects.get(job=job, status="queued")
    claimed = claim(str(job.pk), run.node_id, run.attempt, "inline")
    assert claimed is not None
    artifacts = NodeArtifacts(
        get_artifact_store(),
        job_id=str(job.pk),
        node_id=run.node_id,
        attempt=run.attempt,
        owner_id=job.owner_id,
    )
    ref = artifacts.save("video.mp4", content, "video/mp4")
    complete(claimed.run, run.attempt, {"video": ref})
    return ref


def _downloaded(client: Client, artifact_id: str) -> bytes:
    response = client.get(f"/api/artifacts/{artifact_id}/download")
    assert response.status_code == 200
    return b"".join(response.streaming_content)  # type: ignore[attr-defined]


def test_a_cached_node_gives_its_job_the_results_of_the_run_it_reused(
    as_ada: Client, ada: User
) -> None:
    made = engine.submit_job(ada, graph([node("render", "debug.echo", params={"n": 1})], []))
    ref = _run_storing(made, b"the video")

    reused = engine.submit_job(ada, graph([node("film", "debug.echo", params={"n": 1})], []))

    assert NodeRun.objects.get(job=reused).cached_from_id is not None
    detail = as_ada.get(f"/api/jobs/{reused.pk}").json()
    assert detail["status"] == "completed"
    assert [(a["id"], a["name"], a["node_id"], a["job_id"]) for a in detail["artifacts"]] == [
        (ref["artifact"], "video.mp4", "film", str(reused.pk))
    ]
    assert _downloaded(as_ada, ref["artifact"]) == b"the video"
    assert Artifact.objects.count() == 1  # listed, not copied


def test_deleting_either_job_of_a_cache_hit_keeps_the_other_whole(
    as_ada: Client, ada: User, django_capture_on_commit_callbacks: Any
) -> None:
    document = graph([node("render", "debug.echo", params={"n": 2})], [])
    made = engine.submit_job(ada, document)
    ref = _run_storing(made, b"shared bytes")
    first = engine.submit_job(ada, document)
    second = engine.submit_job(ada, document)
    key = Artifact.objects.get(pk=ref["artifact"]).key

    with django_capture_on_commit_callbacks(execute=True):
        assert as_ada.delete(f"/api/jobs/{made.pk}").status_code == 204
        assert as_ada.delete(f"/api/jobs/{first.pk}").status_code == 204

    listed = as_ada.get(f"/api/jobs/{second.pk}").json()["artifacts"]
    assert [a["id"] for a in listed] == [ref["artifact"]]
    assert _downloaded(as_ada, ref["artifact"]) == b"shared bytes"
    third = engine.submit_job(ada, document)  # the cache still answers from the survivor
    assert [a["id"] for a in as_ada.get(f"/api/jobs/{third.pk}").json()["artifacts"]] == [
        ref["artifact"]
    ]

    assert as_ada.delete(f"/api/jobs/{third.pk}").status_code == 204
    with django_capture_on_commit_callbacks(execute=True):
        assert as_ada.delete(f"/api/jobs/{second.pk}").status_code == 204

    assert not Artifact.objects.filter(pk=ref["artifact"]).exists()
    assert not get_artifact_store().exists(key)


def test_delete_keeps_what_a_profile_holds(
    as_ada: Client, ada: User, django_capture_on_commit_callbacks: Any
) -> None:
    from apps.jobs.models import Profile

    job = engine.submit_job(ada, graph([node("voice", "debug.echo", params={"n": 3})], []))
    ref = _run_storing(job, b"reference clip")
    Profile.objects.create(owner=ada, kind="voice", job=job, node_id="voice", data={"clip": ref})

    with django_capture_on_commit_callbacks(execute=True):
        assert as_ada.delete(f"/api/jobs/{job.pk}").status_code == 204

    assert _downloaded(as_ada, ref["artifact"]) == b"reference clip"
