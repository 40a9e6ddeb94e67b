"""The quick pipeline end to end under real workers, driven by `manage.py spin`."""

from __future__ import annotations

from collections.abc import Callable
from io import StringIO
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest
from django.contrib.auth.models import User
from django.core.management import CommandError, call_command

from apps.jobs.models import Artifact, Job, NodeRun, Profile
from testkit.services import CeleryWorker

pytestmark = pytest.mark.django_db(transaction=True)


def test_spin_sample_makes_a_narrated_mp4(
    start_worker: Callable[..., CeleryWorker], tmp_path: Path, settings: Any
) -> None:
    settings.VAR_DIR = tmp_path
    User.objects.create_user("demo")
    start_worker("cpu", [settings.CELERY_CPU_QUEUE], concurrency=2)
    out = StringIO()

    call_command(
        "spin",
        "--sample",
        "--wait",
        "--narration",
        "Otters hold hands while they sleep. They keep a favourite stone for cracking shells.",
        "--width",
        "320",
        "--height",
        "240",
        "--fps",
        "12",
        "--out",
        str(tmp_path / "out"),
        stdout=out,
    )

    lines = out.getvalue().strip().splitlines()
    path = Path(lines[-1])
    assert path.parent == (tmp_path / "out").resolve()
    job = Job.objects.get()
    assert lines[0] == f"job {job.pk}"
    assert job.status == "completed"
    speech = NodeRun.objects.get(job=job, node_id="speech").output
    with av.open(str(path)) as container:
        kinds = [(s.type, s.codec_context.name) for s in container.streams]
        assert sorted(kinds) == [("audio", "aac"), ("video", "h264")]
        assert container.streams.video[0].average_rate == 12
        duration = float(container.duration) / av.time_base
        frames = [frame.to_ndarray(format="gray") for frame in container.decode(video=0)]
    assert abs(duration - speech["duration_seconds"]) <= 0.03 * speech["duration_seconds"]
    assert abs(len(frames) - round(speech["duration_seconds"] * 12)) <= 1
    assert min(float(np.mean(frame)) for frame in frames) > 10  # no black frames
    assert Profile.objects.filter(job=job, kind="voice").count() == 1
    # The talking clip and the framed, captioned video made from it; spin saved the latter.
    videos = Artifact.objects.filter(job=job, content_type="video/mp4")
    assert sorted(videos.values_list("node_id", flat=True)) == ["lipsync", "video"]
    assert NodeRun.objects.get(job=job, node_id="lipsync").output["backend"] == "face-mesh"


def test_spin_without_inputs_says_what_is_missing() -> None:
    User.objects.create_user("demo")

    with pytest.raises(CommandError, match="give --portrait and --voice"):
        call_command("spin", "--topic", "otters", stdout=StringIO())


def test_spin_again_on_the_same_files_is_answered_from_the_cache_and_returns_the_video(
    start_worker: Callable[..., CeleryWorker], tmp_path: Path, settings: Any
) -> None:
    from apps.jobs.samples import make_sample

    User.objects.create_user("demo")
    start_worker("cpu", [settings.CELERY_CPU_QUEUE], concurrency=2)
    portrait, voice, text = make_sample(tmp_path / "inputs")
    arguments = [
        *("--portrait", str(portrait), "--voice", str(voice), "--ref-text", text),
        *("--narration", "Otters hold hands while they sleep."),
        *("--width", "320", "--height", "240", "--fps", "12", "--wait"),
        *("--out", str(tmp_path / "out")),
    ]
    call_command("spin", *arguments, stdout=StringIO())
    first = Job.objects.get()

    out = StringIO()
    call_command("spin", *arguments, stdout=out)

    second = Job.objects.exclude(pk=first.pk).get()
    runs = NodeRun.objects.filter(job=second)
    assert second.status == "completed"
    assert {run.node_id: run.cached_from_id is not None for run in runs} == {
        run.node_id: True for run in runs
    }
    path = Path(out.getvalue().strip().splitlines()[-1])
    assert path == (tmp_path / "out" / f"{second.pk}.mp4").resolve()
    assert path.read_bytes() == (tmp_path / "out" / f"{first.pk}.mp4").read_bytes()
    assert Artifact.objects.filter(job=second).count() == 0  # listed from the first, not copied
