"""Wall time of a ``quick`` job (script → voice profile ∥ speech → composed MP4) under a real
worker, broken down by node, and the composition speed as a multiple of real time.

    .venv/bin/python bench/quick.py [--seconds 30] [--width 1280 --height 720 --fps 24]

The narration is written to last about ``--seconds`` when spoken (the actual length is
measured from the speech node's output). Goal: composition ≥ 5× real time on this machine.
Uses its own database and Redis database; artifacts go to a temporary folder.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import tempfile
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # run as a script: make the project importable
    sys.path.insert(0, str(REPO))

from bench import common  # noqa: E402

DATABASE_URL, REDIS_URL = common.DATABASE_URL, common.REDIS_URL
CPU_QUEUE, GPU_QUEUE = "bench-cpu", "bench-gpu"
COMPOSE_GOAL = 5.0
WORDS_PER_SECOND = 3.7  # what the sample voice profile speaks at, measured

SENTENCES = [
    "Otters are among the most playful animals on the planet.",
    "Sea otters float on their backs and often hold hands while they sleep,",
    "so that the current does not carry them apart.",
    "They keep a favourite stone in a pouch of loose skin under each forearm,",
    "and use it to crack open shellfish on their chests.",
    "Their fur is the densest of any animal,",
    "with up to a million hairs in a single square inch,",
    "which keeps them warm without any blubber at all.",
    "A group of resting otters is called a raft,",
    "and some rafts hold more than a thousand animals.",
]


def narration(seconds: float) -> str:
    words_needed = int(seconds * WORDS_PER_SECOND)
    words: list[str] = []
    while len(words) < words_needed:
        for sentence in SENTENCES:
            words.extend(sentence.split())
    text = " ".join(words[:words_needed])
    return text.rstrip(",") + "."


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--height", type=int, default=720)
    parser.add_argument("--fps", type=int, default=24)
    parser.add_argument("--timeout", type=float, default=900.0)
    args = parser.parse_args(argv)
    command = shlex.join([".venv/bin/python", "bench/quick.py", *(argv or sys.argv[1:])])
    work = Path(tempfile.mkdtemp(prefix="myspinbot-quick-"))
    common.configure_environment(
        database_url=DATABASE_URL,
        redis_url=REDIS_URL,
        artifact_root=work / "artifacts",
        extra={"CELERY_CPU_QUEUE": CPU_QUEUE, "CELERY_GPU_QUEUE": GPU_QUEUE},
    )
    common.ensure_database(DATABASE_URL)
    import django

    django.setup()
    from django.contrib.auth.models import User
    from django.core.management import call_command

    from apps.jobs import submission
    from apps.jobs.models import Job, NodeRun
    from apps.jobs.samples import make_sample
    from apps.jobs.uploads import accept_upload

    call_command("migrate", interactive=False, verbosity=0)
    common.purge_queues(CPU_QUEUE, GPU_QUEUE)
    # A new user per run: results are reused per owner, and this run must compute them.
    user = User.objects.create_user(f"bench-quick-{uuid.uuid4().hex[:8]}")
    portrait, voice, transcript = make_sample(work / "sample")
    with portrait.open("rb") as handle:
        photo = accept_upload(user, handle, portrait.stat().st_size, portrait.name)
    with voice.open("rb") as handle:
        sample = accept_upload(user, handle, voice.stat().st_size, voice.name)

    with common.running_workers(1, 2, [CPU_QUEUE], work):
        started = time.perf_counter()
        job = submission.submit(
            user,
            template="quick",
            params={
                "script": {"narration": narration(args.seconds)},
                "video": {"width": args.width, "height": args.height, "fps": args.fps},
            },
            inputs={
                "photos": [{"artifact": str(photo.pk)}],
                "voice_sample": {"artifact": str(sample.pk)},
                "transcript": transcript,
            },
        )
        while True:
            job.refresh_from_db()
            if job.is_finished or time.perf_counter() - started > args.timeout:
                break
            time.sleep(0.1)
        wall = time.perf_counter() - started
    if job.status != Job.Status.COMPLETED:
        failed = NodeRun.objects.filter(job=job, status="failed").values("node_id", "error")
        print(f"job {job.pk} ended {job.status}: {list(failed)}", file=sys.stderr)
        return 1
    runs = {run.node_id: run for run in NodeRun.objects.filter(job=job)}
    audio_seconds = float(runs["speech"].output["duration_seconds"])
    print(
        f"quick job, {audio_seconds:.1f} s of narration at {args.width}x{args.height} "
        f"{args.fps} fps, 1 worker x concurrency 2"
    )
    print(f"{'node':<16}{'seconds':>10}")
    for node_id in ("script", "voice_profile", "speech", "video"):
        run = runs[node_id]
        assert run.started_at is not None
        assert run.finished_at is not None
        print(f"{node_id:<16}{(run.finished_at - run.started_at).total_seconds():>10.2f}")
    print(f"{'job wall time':<16}{wall:>10.2f}")
    compose = runs["video"].finished_at - runs["video"].started_at  # type: ignore[operator]
    speed = audio_seconds / compose.total_seconds()
    verdict = "PASS" if speed >= COMPOSE_GOAL else "FAIL"
    print(f"composition speed: {speed:.1f}x real time (goal >= {COMPOSE_GOAL:g}x)  {verdict}")
    print(f"rerun: {command}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
