"""The GPU pipeline's states in Debian's Chromium: a lora_video job's LoRA samples and
keyframe arriving as previews and its animated clip playing, and a LoRA profile with its
sample image. The artifacts are stored as lora.train, image.keyframe and video.animate
store them (real PNGs, and an H.264 clip written by video.animate's own writer); no GPU
worker runs here, so the job's steps stay queued (the lora_video flow through a worker is
covered in tests/gpu_tasks and, for the page's reuse graph, in test_pages.py).

Console errors fail the test; screenshots at laptop and phone size go to var/screenshots/.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth.models import User
from PIL import Image

from apps.capabilities.services.gpu_frames import write_clip
from apps.graphs.planner import load_templates
from apps.jobs import engine
from apps.jobs.models import Job, Profile
from tests.web.conftest import LAPTOP, PHONE, Tab, sign_in
from tests.web.test_pages import lora_profile, png_bytes, stored

pytestmark = pytest.mark.django_db(transaction=True)


def lora_video_job(owner: User, profile: Profile, tmp_path: Path) -> Job:
    """A lora_video job reusing ``profile`` (nothing consumes its queues) with what its
    GPU steps store."""
    document = json.loads(json.dumps(load_templates()["lora_video"].graph))
    nodes = {n["id"]: n for n in document["nodes"]}
    nodes["script"]["params"]["topic"] = "otters"
    nodes["train_lora"]["params"] = {"profile_id": str(profile.pk)}
    nodes["train_lora"].pop("input")
    sample = stored(owner, "voice.wav", b"RIFF", "audio/wav")
    nodes["voice_profile"]["input"] = {"voice_sample": {"artifact": str(sample.pk)}}
    nodes["voice_profile"]["input"]["transcript"] = "Hello."
    document["metadata"]["template"] = "lora_video"
    job = engine.submit_job(owner, document)
    for step in (2, 4):
        stored(
            owner,
            f"sample-{step:06d}.png",
            png_bytes(40 * step),
            "image/png",
            job=job,
            node_id="train_lora",
        )
    stored(owner, "keyframe.png", png_bytes(200), "image/png", job=job, node_id="keyframe")
    frames = [Image.new("RGB", (64, 64), (20 * i, 80, 160)) for i in range(8)]
    stored(owner, "frame-0000.png", png_bytes(10), "image/png", job=job, node_id="animate")
    clip = write_clip(frames, 4, tmp_path / "clip.mp4").read_bytes()
    stored(owner, "clip.mp4", clip, "video/mp4", job=job, node_id="animate")
    return job


def test_lora_previews_the_clip_and_a_lora_profile(
    open_tab: Callable[..., Tab], tmp_path: Path
) -> None:
    ada = User.objects.create_user("ada", password="ada-secret-pw")
    profile = lora_profile(ada)
    job = lora_video_job(ada, profile, tmp_path)
    tab = open_tab()
    sign_in(tab, "ada", "ada-secret-pw")

    for size in (LAPTOP, PHONE):
        tab.page.set_viewport_size(size)
        tab.go(f"/jobs/{job.pk}/")
        tab.page.wait_for_function(
            "document.querySelector('#players video')?.duration > 0"
            " && [...document.querySelectorAll('#previews img')].every(i => i.naturalWidth > 0)"
        )
        groups: Any = tab.page.eval_on_selector_all(
            "#previews .preview-group",
            "gs => gs.map(g => [g.dataset.nodeId, g.querySelector('h3').textContent,"
            " [...g.querySelectorAll('figcaption')].map(c => c.textContent)])",
        )
        assert groups == [
            [
                "train_lora",
                "Train the identity LoRA: samples",
                ["Sample at step 2", "Sample at step 4"],
            ],
            ["keyframe", "Render the keyframe", ["keyframe.png"]],
        ]
        assert tab.page.locator("#players video").count() == 1
        assert tab.page.locator("#players figcaption").inner_text() == (
            "clip.mp4 · Animate the keyframe (no face to lip-sync)"
        )
        duration = tab.page.evaluate("document.querySelector('#players video').duration")
        assert duration == pytest.approx(2.0, abs=0.3)  # 8 frames at 4 fps
        # The frames stay downloads; the clip plays.
        assert "frame-0000.png" in tab.page.locator("#downloads").inner_text()
        tab.page.wait_for_function("document.querySelector('#players video').readyState >= 2")
        tab.screenshot("job-lora")

        tab.go("/profiles/")
        sample = tab.page.locator(f"li[data-profile-id='{profile.pk}'] img.sample")
        tab.page.wait_for_function(
            "document.querySelector('img.sample')?.complete"
            " && document.querySelector('img.sample').naturalWidth === 8"
        )
        assert sample.get_attribute("alt") == "Sample image the LoRA rendered"
        tab.screenshot("profiles-lora")

    tab.page.get_by_role("link", name="New video with this profile").click()
    tab.page.wait_for_url(f"{tab.base}/new/?profile={profile.pk}")
    assert tab.page.locator("#lora-profile").input_value() == str(profile.pk)
    tab.page.locator("#pipeline-lora_video").wait_for(state="attached")
    assert tab.errors == []
