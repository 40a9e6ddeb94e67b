"""Turn a portrait, a voice sample and a topic into a narrated video from the shell.

    python manage.py spin --portrait FACE.jpg --voice SAMPLE.wav --ref-text "..." \\
        --topic "..." [--template quick] [--user NAME] [--wait] [--out DIR]
    python manage.py spin --sample --wait        # generated sample inputs, nothing to download

Uploads and submits through the same code as the REST API, as the given user (default
``demo``). With ``--wait`` it shows a progress bar per node, downloads the MP4 and prints
its path as the last line; a failed job exits non-zero naming the failing node.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from django.conf import settings
from django.contrib.auth.models import User
from django.core.management.base import BaseCommand, CommandError, CommandParser

from apps.graphs.planner import UnknownTemplate
from apps.graphs.validation import GraphValidationError
from apps.jobs import submission
from apps.jobs.artifacts import job_artifacts
from apps.jobs.models import Artifact, Job, NodeRun
from apps.jobs.samples import SAMPLE_TOPIC, make_sample
from apps.jobs.submission import ARTIFACT_REF
from apps.jobs.uploads import accept_upload
from myspinbot.errors import Rejected
from myspinbot.storage import get_artifact_store


class Command(BaseCommand):
    help = "Submit a narrated-video job from local files, and optionally wait for the MP4."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--portrait", type=Path, help="a photo of the presenter")
        parser.add_argument("--voice", type=Path, help="a voice sample (wav, mp3, flac, ogg...)")
        parser.add_argument("--ref-text", default="", help="what the voice sample says")
        parser.add_argument("--topic", default="", help="what the video is about")
        parser.add_argument("--narration", default="", help="the exact words to speak instead")
        parser.add_argument("--template", default="quick")
        parser.add_argument("--user", default="demo")
        parser.add_argument("--wait", action="store_true", help="wait and download the video")
        parser.add_argument("--out", type=Path, default=None, help="folder for the MP4")
        parser.add_argument("--width", type=int, help="video width (template default 1280)")
        parser.add_argument("--height", type=int, help="video height (template default 720)")
        parser.add_argument("--fps", type=int, help="frames per second (template default 24)")
        parser.add_argument("--timeout", type=float, default=1800.0)
        parser.add_argument(
            "--sample", action="store_true", help="generate a sample portrait and voice clip"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        user = User.objects.filter(username=options["user"]).first()
        if user is None:
            raise CommandError(f"no user {options['user']!r} (make run creates 'demo')")
        portrait, voice, ref_text = options["portrait"], options["voice"], options["ref_text"]
        topic, narration = options["topic"], options["narration"]
        if options["sample"]:
            portrait, voice, generated_text = make_sample(Path(settings.VAR_DIR) / "sample")
            ref_text = ref_text or generated_text
            topic = topic or SAMPLE_TOPIC
        if portrait is None or voice is None:
            raise CommandError("give --portrait and --voice (or --sample)")
        if not (topic or narration):
            raise CommandError("give --topic or --narration")
        photo = self.upload(user, portrait)
        sample = self.upload(user, voice)
        script = {"narration": narration} if narration else {"topic": topic}
        params: dict[str, dict[str, Any]] = {"script": script}
        video = {key: options[key] for key in ("width", "height", "fps") if options[key]}
        if video:
            params["video"] = video
        try:
            job = submission.submit(
                user,
                template=options["template"],
                params=params,
                inputs={
                    "photos": [{ARTIFACT_REF: str(photo.pk)}],
                    "voice_sample": {ARTIFACT_REF: str(sample.pk)},
                    "transcript": ref_text,
                },
            )
        except (Rejected, GraphValidationError, UnknownTemplate) as error:
            raise CommandError(str(error)) from None
        self.stdout.write(f"job {job.pk}")
        if not options["wait"]:
            return
        job = self.watch(job, options["timeout"])
        if job.status != Job.Status.COMPLETED:
            raise CommandError(failure_summary(job))
        out = options["out"] or Path(settings.VAR_DIR) / "out"
        path = download_video(job, out)
        self.stdout.write(str(path))

    def upload(self, user: User, path: Path) -> Artifact:
        if not path.is_file():
            raise CommandError(f"{path} is not a file")
        try:
            with path.open("rb") as handle:
                return accept_upload(user, handle, path.stat().st_size, path.name)
        except Rejected as error:
            raise CommandError(f"{path}: {error.message}") from None

    def watch(self, job: Job, timeout: float) -> Job:
        """Progress bars per node until the job finishes (polling the database)."""
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

        deadline = time.monotonic() + timeout
        with Progress(
            TextColumn("{task.description:<28}"),
            BarColumn(),
            TextColumn("{task.percentage:>5.1f}%  {task.fields[state]:<10}"),
            TimeElapsedColumn(),
            console=None,
            transient=False,
        ) as bars:
            tasks: dict[str, Any] = {}
            while True:
                job.refresh_from_db()
                for run in NodeRun.objects.filter(job=job).order_by("id"):
                    if run.node_id not in tasks:
                        tasks[run.node_id] = bars.add_task(run.node_id, total=1.0, state="")
                    done = 1.0 if run.status == NodeRun.Status.COMPLETED else run.progress
                    bars.update(tasks[run.node_id], completed=done, state=run.status)
                if job.is_finished:
                    return job
                if time.monotonic() > deadline:
                    raise CommandError(f"job {job.pk} still {job.status} after {timeout:g}s")
                time.sleep(0.25)


def failure_summary(job: Job) -> str:
    failed = NodeRun.objects.filter(job=job, status=NodeRun.Status.FAILED).first()
    if failed is None:
        return f"job {job.pk} ended {job.status}"
    error = failed.error or {}
    return (
        f"job {job.pk} {job.status}: node {failed.node_id} ({failed.service}) failed: "
        f"[{error.get('code', '?')}] {error.get('message', '')}"
    )


def download_video(job: Job, folder: Path) -> Path:
    """Save the job's MP4 into ``folder`` and return its path."""
    # The finished video is the one of a node nothing else consumes (the lip-sync clip
    # before it is an MP4 too).
    sources = {edge["from"] for edge in job.graph.document.get("edges", [])}
    videos = [a for a in job_artifacts(job.pk) if a.content_type == "video/mp4"]
    final = [a for a in videos if a.node_id not in sources]
    video = (final or videos)[-1] if videos else None
    if video is None:
        raise CommandError(f"job {job.pk} completed without a video")
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / f"{job.pk}.mp4"
    with get_artifact_store().open(video.key) as source, target.open("wb") as sink:
        while chunk := source.read(1024 * 1024):
            sink.write(chunk)
    return target.resolve()
