"""The web UI in Debian's Chromium against the live stack: uvicorn, a real cpu worker
running the real media services, PostgreSQL, Redis and the S3 server.

Every page's console must stay free of errors; screenshots of each page at laptop and
phone size go to var/screenshots/.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.contrib.auth.models import User

from apps.jobs import submission
from apps.jobs.models import Job, NodeRun, Profile
from apps.jobs.samples import make_sample
from myspinbot.celery import app
from testkit.graphs import graph, node, wait_for_job
from testkit.services import CeleryWorker
from tests.web.conftest import LAPTOP, PHONE, Tab, sign_in

pytestmark = pytest.mark.django_db(transaction=True)

NARRATION = "Otters hold hands while they sleep."
QUICK_NODES = ["script", "voice_profile", "speech", "video"]

# Records every state each DAG node takes, from the page's own DOM.
WATCH_NODES = """() => {
  window.__transitions = [];
  for (const el of document.querySelectorAll('#dag [data-node-id]')) {
    el.__original = true;
    new MutationObserver(() => window.__transitions.push([el.dataset.nodeId, el.dataset.state]))
      .observe(el, {attributes: true, attributeFilter: ['data-state']});
  }
  window.__sameDocument = true;
}"""


def node_states(tab: Tab) -> dict[str, str]:
    return dict(
        tab.page.eval_on_selector_all(
            "#dag [data-node-id]", "els => els.map(el => [el.dataset.nodeId, el.dataset.state])"
        )
    )


def consume(worker: CeleryWorker, on: bool) -> None:
    """Stop or resume the worker's consumption of the cpu queue (a job stays queued)."""
    queue = settings.CELERY_CPU_QUEUE
    control = app.control.add_consumer if on else app.control.cancel_consumer
    replies = control(queue, destination=[worker.hostname], reply=True, timeout=5)
    assert len(replies) == 1, replies


def test_make_a_video_watch_it_live_and_cancel_another(
    open_tab: Callable[..., Tab], start_worker: Callable[..., CeleryWorker], tmp_path: Path
) -> None:
    ada = User.objects.create_user("ada", password="ada-secret-pw")
    User.objects.create_user("bob", password="bob-secret-pw")
    portrait, voice, transcript = make_sample(tmp_path / "sample")
    tab = open_tab()

    # Sign in; an empty list says how to start.
    tab.go("/")
    assert tab.page.url == f"{tab.base}/login/?next=/"
    sign_in(tab, "ada", "ada-secret-pw")
    assert tab.page.get_by_role("heading", name="No jobs yet").is_visible()

    # With no worker up, no pipeline can be picked, and each says why.
    tab.page.get_by_role("link", name="New video").first.click()
    tab.page.locator("#pipeline-quick").wait_for()
    assert tab.page.locator("input[name='pipeline']:enabled").count() == 0
    assert tab.page.locator("#pipeline-quick-about").text_content() == (
        "Unavailable: no worker runs lipsync.sync, llm.generate_script, tts.speak, "
        "video.compose, voice.build_profile."
    )

    # New video: the quick pipeline is offered; files are previewed before upload.
    worker = start_worker("cpu", [settings.CELERY_CPU_QUEUE], concurrency=2)
    quick = tab.page.locator("#pipeline-quick")
    # The page asks the workers for 1 s (and keeps the answer 2 s): on a loaded machine a
    # worker that just started can miss it, and the user reloads.
    deadline = time.monotonic() + 30
    while True:
        tab.page.reload()
        quick.wait_for()
        if quick.is_enabled() or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert quick.is_checked()
    assert quick.is_enabled()
    tab.page.set_input_files("#portrait", str(voice))
    assert tab.page.locator("#portrait-status").text_content() == "voice.wav is not an image."
    assert tab.page.locator("#portrait").get_attribute("aria-invalid") == "true"
    assert tab.page.locator("#portrait-preview").is_hidden()
    tab.page.set_input_files("#portrait", str(portrait))
    tab.page.set_input_files("#voice", str(voice))
    assert tab.page.locator("#portrait-preview").is_visible()
    # The portrait is uploaded at once and the server's face check shows on the preview.
    tab.page.locator("#portrait-face").wait_for()
    assert tab.page.locator("#portrait-status").text_content() == "portrait.png: face found"
    # The upload is done: its progress bar goes, the status line says how it went.
    assert tab.page.locator("#portrait-progress").is_hidden()
    box = tab.page.locator("#portrait-face").bounding_box()
    preview = tab.page.locator("#portrait-preview").bounding_box()
    assert box is not None
    assert preview is not None
    assert preview["x"] < box["x"] < box["x"] + box["width"] < preview["x"] + preview["width"]
    assert box["width"] < preview["width"] / 2
    assert tab.page.locator("#voice-preview").is_visible()
    tab.page.fill("#transcript", transcript)
    tab.page.get_by_label("My own narration").check()
    tab.page.fill("#narration", NARRATION)
    tab.page.locator("#advanced summary").click()
    assert tab.page.locator("#param-video-width").get_attribute("max") == "3840"
    assert tab.page.locator("#param-video-preset").evaluate("el => el.tagName") == "SELECT"
    tab.page.fill("#param-video-width", "320")
    tab.page.fill("#param-video-height", "240")
    tab.page.fill("#param-video-fps", "12")

    # Submit while the worker holds off, so the page opens on a job that has not run.
    consume(worker, on=False)
    tab.page.get_by_role("button", name="Start the video").click()
    tab.page.wait_for_url(f"{tab.base}/jobs/*/")
    job = Job.objects.get(owner=ada)
    assert tab.page.url == f"{tab.base}/jobs/{job.pk}/"
    assert job.template == "quick"
    assert job.graph.document["nodes"][4]["params"] == {
        "width": 320,
        "height": 240,
        "fps": 12,
        "captions": True,
    }
    assert job.graph.document["nodes"][0]["params"]["narration"] == NARRATION
    tab.page.wait_for_selector("#dag [data-node-id='video']")
    assert node_states(tab) == {
        "script": "queued",
        "voice_profile": "queued",
        "speech": "pending",
        "lipsync": "pending",
        "video": "pending",
    }
    tab.page.evaluate(WATCH_NODES)

    # The worker goes on: the DAG turns green without a reload.
    consume(worker, on=True)
    tab.page.wait_for_function(
        "[...document.querySelectorAll('#dag [data-node-id]')]"
        ".every(el => el.dataset.state === 'completed')",
        timeout=120_000,
    )
    assert tab.page.evaluate("window.__sameDocument") is True
    assert tab.page.eval_on_selector_all(
        "#dag [data-node-id]", "els => els.every(el => el.__original === true)"
    )
    transitions = tab.page.evaluate("window.__transitions")
    for node_id in QUICK_NODES:
        seen = [state for seen_id, state in transitions if seen_id == node_id]
        assert seen[-1] == "completed", (node_id, transitions)
        assert "running" in seen, (node_id, transitions)
    tab.page.wait_for_function("document.getElementById('job-status').textContent === 'completed'")
    assert tab.page.locator("#cancel-button").is_hidden()
    assert tab.page.locator("#script-text").inner_text() == NARRATION

    # The video plays.
    video = tab.page.locator("#players video[data-node-id='video']")
    video.wait_for()
    tab.page.wait_for_function("document.querySelector('#players video').duration > 0")
    tab.page.evaluate(
        "async () => { const v = document.querySelector('#players video'); "
        "v.muted = true; await v.play(); }"
    )
    tab.page.wait_for_function("document.querySelector('#players video').currentTime > 0")
    speech = NodeRun.objects.get(job=job, node_id="speech").output
    duration = video.evaluate("v => v.duration")
    assert abs(duration - speech["duration_seconds"]) < 0.2
    assert tab.page.locator("#downloads a", has_text="video.mp4").count() == 1
    # The lip-sync step's own clip follows the video, small, showing its first frame
    # (it has no poster): not a second black player as large as the video.
    talking = tab.page.locator("#players figure.step-clip video[data-node-id='lipsync']")
    talking.wait_for()
    tab.page.wait_for_function(
        "document.querySelector(\"#players video[data-node-id='lipsync']\").readyState >= 2"
    )
    assert talking.evaluate("v => v.currentTime") > 0
    talking_box, video_box = talking.bounding_box(), video.bounding_box()
    assert talking_box is not None
    assert video_box is not None
    assert talking_box["y"] > video_box["y"]
    assert talking_box["height"] <= 221 < video_box["height"]
    assert Profile.objects.filter(owner=ada, kind="voice").count() == 1

    # Again with the voice profile just made: no voice sample, no profile step.
    profile = Profile.objects.get(owner=ada)
    tab.go("/profiles/")
    tab.page.get_by_role("link", name="New video with this profile").click()
    tab.page.locator("#pipeline-quick").wait_for()
    assert tab.page.locator("#voice-profile").input_value() == str(profile.pk)
    assert tab.page.locator("#voice").is_hidden()
    tab.page.set_input_files("#portrait", str(portrait))
    tab.page.get_by_label("My own narration").check()
    tab.page.fill("#narration", NARRATION)
    tab.page.locator("#advanced summary").click()
    tab.page.fill("#param-video-width", "160")
    tab.page.fill("#param-video-height", "128")
    tab.page.get_by_role("button", name="Start the video").click()
    tab.page.wait_for_url(f"{tab.base}/jobs/*/")
    reused = Job.objects.exclude(pk=job.pk).get(owner=ada)
    document = reused.graph.document
    assert [n["id"] for n in document["nodes"]] == ["script", "speech", "lipsync", "video"]
    assert document["nodes"][1]["input"] == {"profile_id": str(profile.pk)}
    assert [(e["from"], e["to"]) for e in document["edges"]] == [
        ("script", "speech"),
        ("speech", "lipsync"),
        ("lipsync", "video"),
        ("speech", "video"),
    ]
    tab.page.wait_for_function(
        "document.getElementById('job-status').textContent === 'completed'", timeout=120_000
    )
    assert tab.page.get_by_role("heading", name="Talking portrait (CPU), adapted").is_visible()
    speech = NodeRun.objects.get(job=reused, node_id="speech").output
    assert speech["profile_id"] == str(profile.pk)
    assert Profile.objects.filter(owner=ada).count() == 1

    # A second job, running: the list follows it live while its page cancels it.
    sleeper = submission.submit(
        ada, graph=graph([node("nap", "debug.sleep", params={"seconds": 60})], [])
    )
    wait_for_job(sleeper, statuses=("running",))
    jobs_tab = open_tab(tab.page.context)
    jobs_tab.go("/")
    row = jobs_tab.page.locator(f"tr[data-job-id='{sleeper.pk}']")
    assert row.locator("[data-role='status']").text_content() == "running"
    jobs_tab.page.evaluate("window.__sameDocument = true")
    tab.go(f"/jobs/{sleeper.pk}/")
    tab.page.wait_for_selector("#dag [data-node-id='nap'][data-state='running']")
    tab.page.get_by_role("button", name="Cancel").click()
    tab.page.locator("#confirm-yes").click()
    tab.page.wait_for_function("document.getElementById('job-status').textContent === 'cancelled'")
    tab.page.wait_for_selector("#dag [data-node-id='nap'][data-state='cancelled']")
    assert tab.page.locator("#retry-button").is_visible()
    sleeper.refresh_from_db()
    assert sleeper.status == "cancelled"
    jobs_tab.page.wait_for_function(
        f"document.querySelector(\"tr[data-job-id='{sleeper.pk}'] [data-role='status']\")"
        ".textContent === 'cancelled'"
    )
    assert jobs_tab.page.evaluate("window.__sameDocument") is True
    assert jobs_tab.page.locator("tr.job-row").count() == 3

    # A job submitted elsewhere shows up in the open list.
    broken = submission.submit(
        ada,
        graph=graph([node("oops", "debug.fail", params={"permanent": True, "code": "boom"})], []),
    )
    jobs_tab.page.wait_for_selector(f"tr[data-job-id='{broken.pk}']")
    assert jobs_tab.page.locator("tr.job-row").count() == 4
    assert jobs_tab.page.evaluate("window.__sameDocument") is True
    assert jobs_tab.errors == []
    jobs_tab.page.close()

    # A failed job names the node, its error code and message; Retry runs it again.
    wait_for_job(broken)
    tab.go(f"/jobs/{broken.pk}/")
    tab.page.locator("#job-error p").wait_for()
    assert tab.page.locator("#job-error p").inner_text() == (
        "oops (oops) boom debug.fail failed permanently on attempt 1"
    )
    assert tab.page.locator("#dag [data-node-id='oops']").get_attribute("data-state") == "failed"
    tab.screenshot("job-failed")
    tab.page.get_by_role("button", name="Retry").click()
    tab.page.locator("#confirm-yes").click()
    tab.page.wait_for_function(
        "document.getElementById('job-error').textContent.includes('on attempt 2')"
    )
    assert NodeRun.objects.get(job=broken, node_id="oops").attempt == 2

    # Screenshots of every page, laptop and phone.
    pages = {
        "jobs": ("/", "tr.job-row"),
        "new": ("/new/", "#pipeline-quick"),
        "job": (f"/jobs/{job.pk}/", "#players video"),
        "profiles": ("/profiles/", "li.profile"),
        "system": ("/system/", "tr[data-worker]"),
    }
    for size in (LAPTOP, PHONE):
        tab.page.set_viewport_size(size)
        for name, (path, ready) in pages.items():
            tab.go(path)
            tab.page.wait_for_selector(ready)
            if name == "job":
                tab.page.wait_for_function(
                    "document.querySelector('#players video').readyState >= 2"
                )
            tab.screenshot(name)
    # A user who is not staff sees the worker's kind and work, not its host or memory.
    assert tab.page.locator("tr[data-worker='cpu worker 1']").is_visible()
    assert worker.hostname not in tab.page.content()
    assert "staff only" in tab.page.locator("tr[data-worker]").inner_text()

    # Profiles: delete asks first.
    tab.go("/profiles/")
    tab.page.get_by_role("button", name="Delete").click()
    tab.page.locator("#confirm-yes").click()
    tab.page.get_by_role("heading", name="No profiles yet").wait_for()
    assert Profile.objects.filter(owner=ada).count() == 0

    # Sign out leads back to the sign-in page.
    tab.page.get_by_role("button", name="Sign out").click()
    tab.page.wait_for_url(f"{tab.base}/login/")
    for size in (LAPTOP, PHONE):
        tab.page.set_viewport_size(size)
        tab.go("/login/")
        tab.screenshot("login")
    assert tab.errors == []

    # Bob cannot open Ada's job.
    bobs = open_tab()
    sign_in(bobs, "bob", "bob-secret-pw")
    response = bobs.go(f"/jobs/{job.pk}/")
    assert response.status == 404
    assert bobs.page.get_by_role("heading", name="Not found").is_visible()
    assert video_count(bobs) == 0
    for size in (LAPTOP, PHONE):
        bobs.page.set_viewport_size(size)
        bobs.go(f"/jobs/{job.pk}/")
        bobs.screenshot("not-found")
    # The only console errors are the browser's notes of those 404 answers.
    assert bobs.errors
    assert all("status of 404" in error for error in bobs.errors), bobs.errors


def video_count(tab: Tab) -> Any:
    return tab.page.locator("video").count()
