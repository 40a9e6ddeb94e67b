"""The pages as the server renders them (Django's test client, real PostgreSQL and
Redis): who may see what, the jobs list's filter and pages, profiles, the system page
and the static files the pages load."""

from __future__ import annotations

import io
import json
import re
import subprocess
import uuid
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.test import Client

from apps.graphs.models import Graph
from apps.jobs.artifacts import artifact_ref
from apps.jobs.models import Artifact, Job, Profile

pytestmark = pytest.mark.django_db


@pytest.fixture
def ada() -> User:
    return User.objects.create_user("ada", password="pw")


@pytest.fixture
def bob() -> User:
    return User.objects.create_user("bob", password="pw")


def signed_in(user: User) -> Client:
    client = Client()
    client.force_login(user)
    return client


def make_job(owner: User, status: str = "queued", template: str = "quick", **extra: Any) -> Job:
    document = {"schema": "langgraph.v1", "nodes": [], "edges": [], "metadata": {}}
    graph = Graph.objects.create(document=document, node_count=0)
    return Job.objects.create(owner=owner, graph=graph, template=template, status=status, **extra)


def job_ids(html: str) -> list[str]:
    return re.findall(r'data-job-id="([0-9a-f-]+)"', html)


@pytest.mark.parametrize("path", ["/", "/new/", "/profiles/", "/system/"])
def test_every_page_needs_a_session(path: str) -> None:
    response = Client().get(path)

    assert response.status_code == 302
    assert response["Location"] == f"/login/?next={path}"


def test_sign_in_and_out(ada: User) -> None:
    client = Client()
    page = client.get("/login/")
    assert page.status_code == 200
    assert b'<label for="id_username">Username</label>' in page.content

    wrong = client.post("/login/", {"username": "ada", "password": "nope"})
    assert wrong.status_code == 200
    assert b'role="alert"' in wrong.content

    right = client.post("/login/", {"username": "ada", "password": "pw"})
    assert right.status_code == 302
    assert right["Location"] == "/"
    assert client.get("/").status_code == 200

    out = client.post("/logout/")
    assert out.status_code == 302
    assert out["Location"] == "/login/"
    assert client.get("/").status_code == 302


def test_jobs_are_the_users_own_newest_first(ada: User, bob: User) -> None:
    first = make_job(ada)
    second = make_job(ada, status="completed")
    make_job(bob)

    html = signed_in(ada).get("/").content.decode()

    assert job_ids(html) == [str(second.pk), str(first.pk)]
    assert "Talking portrait (CPU)" in html


def test_jobs_filter_by_status_and_page(ada: User) -> None:
    jobs = [make_job(ada, status="failed" if i % 2 else "completed") for i in range(45)]
    client = signed_in(ada)

    failed = client.get("/?status=failed").content.decode()
    assert job_ids(failed) == [str(j.pk) for j in reversed(jobs) if j.status == "failed"][:20]
    assert "Page 1 of 2" in failed
    page3 = client.get("/?page=3", headers={"HX-Request": "true"})
    assert page3.templates[0].name == "web/_jobs_table.html"
    assert job_ids(page3.content.decode()) == [str(j.pk) for j in reversed(jobs)][40:]
    assert "Page 3 of 3" in page3.content.decode()
    empty = client.get("/?status=cancelled").content.decode()
    assert job_ids(empty) == []
    assert "No cancelled jobs" in empty


def test_a_new_user_sees_an_empty_state(ada: User) -> None:
    html = signed_in(ada).get("/").content.decode()

    assert "No jobs yet" in html
    assert job_ids(html) == []


def test_a_job_page_is_the_owners_only(ada: User, bob: User) -> None:
    job = make_job(ada)

    mine = signed_in(ada).get(f"/jobs/{job.pk}/")
    theirs = signed_in(bob).get(f"/jobs/{job.pk}/")

    assert mine.status_code == 200
    assert f'data-job-id="{job.pk}"' in mine.content.decode()
    assert theirs.status_code == 404
    assert "<h1>Not found</h1>" in theirs.content.decode()
    assert str(job.pk) not in theirs.content.decode()


def test_a_graph_built_from_a_template_is_named_after_it(ada: User) -> None:
    job = make_job(ada, template="")
    job.graph.document = {**job.graph.document, "metadata": {"template": "quick"}}
    job.graph.save()
    custom = make_job(ada, template="")

    client = signed_in(ada)
    assert (
        "<h1>Talking portrait (CPU), adapted</h1>"
        in client.get(f"/jobs/{job.pk}/").content.decode()
    )
    assert "<h1>Custom graph</h1>" in client.get(f"/jobs/{custom.pk}/").content.decode()
    assert "Talking portrait (CPU), adapted" in client.get("/").content.decode()


def voice_profile(owner: User) -> Profile:
    clip = Artifact.objects.create(
        owner=owner,
        name="reference.wav",
        bucket="b",
        key=f"k/{owner.pk}/reference.wav",
        size_bytes=10,
        sha256="0" * 64,
        content_type="audio/wav",
    )
    data = {
        "pitch": {"median_hz": 120.0, "p05_hz": 90.0, "p95_hz": 160.0},
        "speaking_rate_wps": 2.5,
        "duration_seconds": 12.0,
        "reference": {"artifact": str(clip.pk), "content_type": "audio/wav"},
        "profile": {"artifact": "x", "content_type": "application/json"},
    }
    return Profile.objects.create(owner=owner, kind="voice", name="mine", data=data)


def test_profiles_list_play_and_delete_only_ones_own(ada: User, bob: User) -> None:
    profile = voice_profile(ada)
    clip = profile.data["reference"]["artifact"]

    html = signed_in(ada).get("/profiles/").content.decode()
    assert f'src="/api/artifacts/{clip}/download"' in html
    assert f'href="/new/?profile={profile.pk}"' in html
    assert "120 Hz" in html
    assert "No profiles yet" in signed_in(bob).get("/profiles/").content.decode()

    assert signed_in(ada).get(f"/profiles/{profile.pk}/delete/").status_code == 405
    assert signed_in(bob).post(f"/profiles/{profile.pk}/delete/").status_code == 404
    assert Profile.objects.filter(pk=profile.pk).exists()
    deleted = signed_in(ada).post(f"/profiles/{profile.pk}/delete/")
    assert deleted.status_code == 302
    assert deleted["Location"] == "/profiles/"
    assert not Profile.objects.filter(pk=profile.pk).exists()


def test_new_video_offers_only_the_users_voice_profiles(ada: User, bob: User) -> None:
    mine = voice_profile(ada)
    theirs = voice_profile(bob)

    html = signed_in(ada).get(f"/new/?profile={mine.pk}").content.decode()

    assert f'<option value="{mine.pk}" selected>' in html
    assert str(theirs.pk) not in html
    assert '"quick": {"schema": "langgraph.v1"' in html


def test_system_page_without_workers(ada: User, settings: Any) -> None:
    settings.FLOWER_URL = "http://flower.example:5555/"
    from apps.capabilities import manifest

    manifest._cache.update(at=0.0, workers=None)

    html = signed_in(ada).get("/system/").content.decode()

    assert "No worker is online" in html
    assert f'<dd data-queue="{settings.CELERY_CPU_QUEUE}">' in html
    assert 'href="http://flower.example:5555/"' in html
    assert 'href="/api/docs"' in html
    assert "Django admin" not in html
    ada.is_staff = True
    ada.save()
    assert 'href="/admin/"' in signed_in(ada).get("/system/").content.decode()


@pytest.mark.parametrize(
    ("path", "content_type"),
    [
        ("/static/vendor/htmx/htmx.min.js", "text/javascript"),
        ("/static/vendor/dagre/dagre.esm.js", "text/javascript"),
        ("/static/web/job.js", "text/javascript"),
        ("/static/web/site.css", "text/css"),
    ],
)
def test_static_files_are_served(path: str, content_type: str) -> None:
    response = Client().get(path)

    assert response.status_code == 200
    assert response["Content-Type"].split(";")[0] == content_type


def stored(owner: User, name: str, data: bytes, content_type: str, **extra: Any) -> Artifact:
    """An artifact whose bytes are really in the artifact store (the test S3 server)."""
    from myspinbot.storage import get_artifact_store

    key = f"test/{owner.pk}/{uuid.uuid4().hex}/{name}"
    saved = get_artifact_store().save_bytes(key, data, content_type)
    return Artifact.objects.create(
        owner=owner,
        name=name,
        bucket=saved.bucket,
        key=saved.key,
        size_bytes=saved.size_bytes,
        sha256=saved.sha256,
        content_type=content_type,
        **extra,
    )


def png_bytes(shade: int) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), (shade, 120, 200)).save(buffer, format="PNG")
    return buffer.getvalue()


def lora_profile(owner: User, *, weights: bool = True) -> Profile:
    """A LoRA profile the way lora.train stores one: the weights, lora.json and the
    sample images it rendered during training, in step order."""
    job = make_job(owner, status="completed", template="lora_video")
    node = {"job": job, "node_id": "train_lora"}
    samples = [
        artifact_ref(stored(owner, f"sample-{step:06d}.png", png_bytes(step), "image/png", **node))
        for step in (2, 4)
    ]
    data: dict[str, Any] = {
        "kind": "lora",
        "name": "studio",
        "base_model": {"id": "stable-diffusion-v1-5", "sha256": "a" * 64},
        "trigger": "adx",
        "steps": 4,
        "rank": 8,
        "alpha": 8,
        "photos": 5,
        "final_loss": 0.123456,
        "samples": samples,
        "metadata": artifact_ref(stored(owner, "lora.json", b"{}", "application/json", **node)),
    }
    if weights:
        weights_file = stored(
            owner, "pytorch_lora_weights.safetensors", b"w" * 16, "application/octet-stream", **node
        )
        data["lora"] = artifact_ref(weights_file)
    return Profile.objects.create(
        owner=owner, kind="lora", name="studio", job=job, node_id="train_lora", data=data
    )


def test_a_lora_profile_shows_its_newest_sample_and_offers_a_new_video(
    ada: User, bob: User
) -> None:
    profile = lora_profile(ada)
    older, newest = (ref["artifact"] for ref in profile.data["samples"])
    weights = profile.data["lora"]["artifact"]
    client = signed_in(ada)

    html = client.get("/profiles/").content.decode()

    assert "<h2>Identity LoRA: studio</h2>" in html
    assert f'<img class="sample" src="/api/artifacts/{newest}/download"' in html
    assert 'alt="Sample image the LoRA rendered"' in html
    assert f"/api/artifacts/{older}/download" not in html
    assert f"/api/artifacts/{weights}/download" not in html
    assert "<dt>Trigger word</dt><dd><code>adx</code></dd>" in html
    assert "<dt>Training steps</dt><dd>4</dd>" in html
    assert "<dt>Final loss</dt><dd>0.1235</dd>" in html
    assert f'href="/new/?profile={profile.pk}"' in html
    # The sample the page shows is the stored image itself, and only its owner's.
    download = client.get(f"/api/artifacts/{newest}/download")
    assert download.status_code == 200
    assert download["Content-Type"] == "image/png"
    assert b"".join(download.streaming_content) == png_bytes(4)  # type: ignore[attr-defined]
    assert signed_in(bob).get(f"/api/artifacts/{newest}/download").status_code == 404
    assert "No profiles yet" in signed_in(bob).get("/profiles/").content.decode()


def test_a_lora_profile_without_weights_is_not_offered_for_reuse(ada: User) -> None:
    broken = lora_profile(ada, weights=False)

    listing = signed_in(ada).get("/profiles/").content.decode()
    form = signed_in(ada).get(f"/new/?profile={broken.pk}").content.decode()

    assert f'href="/new/?profile={broken.pk}"' not in listing
    assert "No LoRA weights stored; it cannot be reused." in listing
    assert f'<option value="{broken.pk}"' not in form
    assert 'id="lora-profile"' not in form


def test_a_lora_profile_is_deleted_by_its_owner_only(ada: User, bob: User) -> None:
    profile = lora_profile(ada)

    assert signed_in(bob).post(f"/profiles/{profile.pk}/delete/").status_code == 404
    assert Profile.objects.filter(pk=profile.pk).exists()
    deleted = signed_in(ada).post(f"/profiles/{profile.pk}/delete/")
    assert deleted.status_code == 302
    assert deleted["Location"] == "/profiles/"
    assert not Profile.objects.filter(pk=profile.pk).exists()
    # The job that trained it and the sample images stay.
    assert Artifact.objects.filter(job=profile.job, name="sample-000004.png").count() == 1


def page_data(html: str) -> dict[str, Any]:
    found = re.search(r'<script id="page-data" type="application/json">(.*?)</script>', html)
    assert found is not None
    data: dict[str, Any] = json.loads(found.group(1))
    return data


def test_new_video_with_a_lora_profile_preselects_it(ada: User, bob: User) -> None:
    mine = lora_profile(ada)
    voice = voice_profile(ada)
    theirs = lora_profile(bob)

    html = signed_in(ada).get(f"/new/?profile={mine.pk}").content.decode()

    assert '<select id="lora-profile" name="lora_profile">' in html
    assert f'<option value="{mine.pk}" selected>studio (adx) · ' in html
    assert f'<option value="{voice.pk}" >' in html
    assert str(theirs.pk) not in html
    data = page_data(html)
    assert (data["profile"], data["profileKind"]) == (str(mine.pk), "lora")
    assert data["photos"] == {"min": 5, "max": 60}
    lora_nodes = [n for n in data["graphs"]["lora_video"]["nodes"] if n["service"] == "lora.train"]
    assert [n["id"] for n in lora_nodes] == ["train_lora"]
    assert 'id="photos" name="photos" type="file" multiple' in html
    # Someone else's profile id selects nothing.
    other = page_data(signed_in(ada).get(f"/new/?profile={theirs.pk}").content.decode())
    assert other["profileKind"] == ""


REUSE_JS = Path(__file__).resolve().parents[2] / "apps" / "web" / "static" / "web" / "reuse.js"


def page_graph(template: dict[str, Any], name: str, *args: Any) -> dict[str, Any]:
    """What the New video page posts when profiles are reused: reuse.js's own
    ``withProfiles`` run under Node (the module has no DOM)."""
    script = (
        f"import {{ withProfiles }} from {json.dumps(REUSE_JS.as_uri())};"
        "const [template, name, ...rest] = JSON.parse(process.argv[1]);"
        "process.stdout.write(JSON.stringify(withProfiles(template, name, ...rest)));"
    )
    done = subprocess.run(
        ["node", "--input-type=module", "-e", script, json.dumps([template, name, *args])],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    body: dict[str, Any] = json.loads(done.stdout)
    return body


def test_a_lora_video_reusing_a_lora_and_a_voice_profile_trains_nothing(ada: User) -> None:
    """The graph the page builds for lora_video with a LoRA profile and a voice profile
    chosen: the API accepts it, and its lora.train step hands on the profile's LoRA
    without training (no photos, no model load)."""
    lora = lora_profile(ada)
    voice = voice_profile(ada)
    client = signed_in(ada)
    template = page_data(client.get(f"/new/?profile={lora.pk}").content.decode())["graphs"][
        "lora_video"
    ]
    params = {"script": {"topic": "otters"}, "train_lora": {"steps": 9}, "keyframe": {"steps": 3}}

    body = page_graph(template, "lora_video", params, {}, str(voice.pk), str(lora.pk))
    created = client.post("/api/jobs", body, content_type="application/json")

    assert created.status_code == 201, created.content
    job = Job.objects.get(pk=created.json()["id"])
    document = job.graph.document
    nodes = {n["id"]: n for n in document["nodes"]}
    assert sorted(nodes) == [
        "animate",
        "keyframe",
        "lipsync",
        "script",
        "speech",
        "train_lora",
        "video",
        "video_motion",
    ]
    assert nodes["train_lora"]["params"] == {"profile_id": str(lora.pk)}
    assert nodes["train_lora"]["input"] == {}
    assert nodes["speech"]["input"] == {"profile_id": str(voice.pk)}
    assert nodes["keyframe"]["params"] == {"steps": 3}
    assert document["metadata"]["loraProfile"] == str(lora.pk)
    assert "Identity LoRA video (GPU), adapted" in client.get(f"/jobs/{job.pk}/").content.decode()

    from apps.capabilities.context import NodeContext
    from apps.capabilities.services.lora_train import handler
    from apps.jobs.profiles import NodeProfiles
    from myspinbot.storage import get_artifact_store
    from testkit.contexts import Progress

    progress = Progress()
    context = NodeContext(
        job_id=str(job.pk),
        node_id="train_lora",
        attempt=1,
        params=nodes["train_lora"]["params"],
        inputs={},
        store=get_artifact_store(),
        progress_callback=progress.report,
        cancelled_callback=progress.cancelled,
        owner_id=job.owner_id,
        profiles=NodeProfiles(
            job_id=str(job.pk), node_id="train_lora", attempt=1, owner_id=job.owner_id
        ),
    )
    output = handler.run(context)

    assert output["reused"] is True
    assert output["profile_id"] == str(lora.pk)
    assert output["lora"] == lora.data["lora"]
    assert output["trigger"] == "adx"
    assert progress.reports == [(1.0, f"reusing LoRA profile {lora.pk}; nothing to train")]


def test_a_lora_video_with_new_photos_keeps_the_template(ada: User) -> None:
    """Without a LoRA profile the page posts the template itself; with only a voice
    profile, the graph keeps lora.train with the photos input the page uploads."""
    voice = voice_profile(ada)
    client = signed_in(ada)
    template = page_data(client.get("/new/").content.decode())["graphs"]["lora_video"]
    photos = [{"artifact": str(uuid.uuid4())} for _ in range(5)]

    body = page_graph(template, "lora_video", {}, {"photos": photos}, str(voice.pk), "")

    nodes = {n["id"]: n for n in body["graph"]["nodes"]}
    assert nodes["train_lora"]["input"] == {"photos": photos}
    assert nodes["train_lora"]["params"] == {}
    assert "voice_profile" not in nodes
    assert "loraProfile" not in body["graph"]["metadata"]
