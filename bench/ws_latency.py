"""WebSocket delivery latency: from a job event's commit to its receipt by subscribed
clients of a real uvicorn server, with 1 and with 100 subscribers.

    .venv/bin/python bench/ws_latency.py [--events 200] [--interval 0.02] [--subscribers 1 100]

For each subscriber count: a fresh job, N ``websockets`` clients subscribed to it on
``/ws/jobs/`` (token auth), then this process commits ``--events`` ``node.progress``
events one transaction each, ``--interval`` seconds apart, through
``apps.jobs.events.emit`` (so through ``apps.jobs.live``, as workers publish). The commit
time is taken by an ``on_commit`` hook registered before the one that publishes, i.e.
right after PostgreSQL acknowledged the COMMIT; the receive time when the client has
the decoded message. Both are ``time.perf_counter()`` of this process (the emitter runs
in a thread, the clients on an asyncio loop). Latency is counted per (client, event)
after ``--warmup`` events. Every client must receive every seq exactly once and in
order; a skipped, duplicated or reordered seq fails the run (exit 1).

The bench uses its own PostgreSQL database and Redis database (``BENCH_WS_*`` below),
created and migrated on first use, so it never touches ``make run`` or ``make test``.
``BENCH_WS_SETTINGS`` names another settings module (default ``myspinbot.settings.test``)
to compare channel-layer configurations; the server subprocess uses it too.
Goal on the development machine: p50 <= 5 ms and p99 <= 25 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shlex
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # run as a script: make the project importable
    sys.path.insert(0, str(REPO))

from bench import common  # noqa: E402

DATABASE_URL = os.environ.get(
    "BENCH_WS_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/myspinbot_bench_ws"
)
REDIS_URL = os.environ.get("BENCH_WS_REDIS_URL", "redis://127.0.0.1:6379/10")

GOAL_P50_MS = 5.0
GOAL_P99_MS = 25.0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=200, help="measured events per round")
    parser.add_argument("--warmup", type=int, default=20, help="events sent before measuring")
    parser.add_argument("--interval", type=float, default=0.02, help="seconds between commits")
    parser.add_argument("--subscribers", type=int, nargs="+", default=[1, 100])
    parser.add_argument(
        "--deflate",
        choices=["on", "off"],
        default="off",
        help="the server's permessage-deflate (off, as the Procfile runs it; on compresses "
        "every frame once per socket)",
    )
    return parser.parse_args(argv)


def configure_environment() -> None:
    # One user holds every subscriber's socket here: lift the per-user cap (server too).
    os.environ.setdefault("MYSPINBOT_WS_MAX_PER_USER", "10000")
    common.configure_environment(
        database_url=DATABASE_URL,
        redis_url=REDIS_URL,
        settings=os.environ.get("BENCH_WS_SETTINGS", "myspinbot.settings.test"),
    )


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class Server:
    """``uvicorn myspinbot.asgi:application`` in its own process group."""

    def __init__(self, log_path: Path, deflate: bool) -> None:
        self.port = free_port()
        self.log_path = log_path
        self.deflate = deflate
        self.process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Server:
        command = [sys.executable, "-m", "uvicorn", "myspinbot.asgi:application"]
        command += ["--host", "127.0.0.1", "--port", str(self.port)]
        command += ["--log-level", "warning", "--no-access-log"]
        command += ["--ws-per-message-deflate", "true" if self.deflate else "false"]
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                command,
                cwd=REPO,
                env=dict(os.environ),
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return self
            except OSError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"uvicorn did not start: {self.log_path}") from None
                time.sleep(0.1)

    def __exit__(self, *exc: object) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)


@dataclass
class Round:
    subscribers: int
    latencies_ms: list[float] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def percentile(self, q: float) -> float:
        ordered = sorted(self.latencies_ms)
        return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def make_job(user: Any) -> Any:
    from apps.graphs.models import Graph
    from apps.jobs.models import Job

    graph = Graph.objects.create(document={}, node_count=0)
    return Job.objects.create(owner=user, graph=graph, status="running")


def produce(job_id: Any, count: int, interval: float, commit_times: dict[int, float]) -> None:
    """Commit ``count`` events, one per transaction; note each one's commit time."""
    from django.db import connection, transaction

    from apps.jobs.events import Event, emit

    try:
        for index in range(count):
            started = time.perf_counter()
            with transaction.atomic():
                seq: list[int] = []
                # Registered before emit()'s publishing hook, so it runs first.
                transaction.on_commit(
                    lambda seq=seq: commit_times.__setitem__(seq[0], time.perf_counter())
                )
                (row,) = emit(job_id, [Event("node.progress", "n0", {"i": index})])
                seq.append(row.seq)
            time.sleep(max(0.0, interval - (time.perf_counter() - started)))
    finally:
        connection.close()


async def run_round(
    url: str, token: str, job_id: str, total: int, args: argparse.Namespace, subscribers: int
) -> Round:
    from websockets.asyncio.client import connect

    result = Round(subscribers)
    headers = {"Authorization": f"Bearer {token}"}
    clients = []
    for _ in range(subscribers):
        client = await connect(url, additional_headers=headers, max_queue=None)
        await client.send(json.dumps({"action": "subscribe", "jobId": job_id, "since": 0}))
        clients.append(client)
    for client in clients:
        while json.loads(await client.recv())["type"] != "subscribed":
            pass

    received: list[list[tuple[int, float]]] = [[] for _ in clients]

    async def read(index: int, client: Any) -> None:
        while True:
            message = json.loads(await client.recv())
            if message["type"] == "event":
                received[index].append((message["seq"], time.perf_counter()))
                if message["seq"] >= total:
                    return

    commit_times: dict[int, float] = {}
    producer = threading.Thread(
        target=produce, args=(job_id, total, args.interval, commit_times), daemon=True
    )
    readers = [asyncio.create_task(read(i, c)) for i, c in enumerate(clients)]
    producer.start()
    deadline = total * args.interval + 30
    _, pending = await asyncio.wait(readers, timeout=deadline)
    for task in pending:
        task.cancel()
    await asyncio.to_thread(producer.join)
    for client in clients:
        await client.close()

    for index, seen in enumerate(received):
        seqs = [seq for seq, _ in seen]
        if seqs != list(range(1, total + 1)):
            missing = sorted(set(range(1, total + 1)) - set(seqs))
            result.problems.append(
                f"client {index}: {len(seqs)} events, missing {missing[:10]}, "
                f"in order {seqs == sorted(seqs)}, duplicates {len(seqs) - len(set(seqs))}"
            )
        for seq, at in seen:
            if seq > args.warmup and seq in commit_times:
                result.latencies_ms.append((at - commit_times[seq]) * 1000)
    return result


def report(rounds: list[Round], args: argparse.Namespace, command: str) -> None:
    print()
    print(
        f"WebSocket latency, commit -> client receipt ({args.events} events, "
        f"{args.interval * 1000:.0f} ms apart, after {args.warmup} warm-up events, "
        f"permessage-deflate {args.deflate})"
    )
    print(
        f"{'subscribers':>11}  {'samples':>7}  {'p50 ms':>7}  {'p99 ms':>7}  {'max ms':>7}  "
        f"{'mean ms':>7}  {'goal':>4}  complete"
    )
    for one in rounds:
        if not one.latencies_ms:
            print(f"{one.subscribers:>11}  no samples")
            continue
        p50, p99 = one.percentile(50), one.percentile(99)
        met = p50 <= GOAL_P50_MS and p99 <= GOAL_P99_MS
        print(
            f"{one.subscribers:>11}  {len(one.latencies_ms):>7}  {p50:>7.2f}  {p99:>7.2f}  "
            f"{max(one.latencies_ms):>7.2f}  {statistics.fmean(one.latencies_ms):>7.2f}  "
            f"{'yes' if met else 'NO':>4}  {'yes' if not one.problems else 'NO'}"
        )
        for problem in one.problems:
            print(f"    {problem}")
    print(f"goal: p50 <= {GOAL_P50_MS:g} ms, p99 <= {GOAL_P99_MS:g} ms, no event skipped")
    print(f"rerun: {command}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    command = shlex.join([".venv/bin/python", "bench/ws_latency.py", *(argv or sys.argv[1:])])
    configure_environment()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    common.ensure_database(DATABASE_URL)
    import django

    django.setup()
    from asgiref.sync import async_to_sync
    from channels.layers import get_channel_layer
    from django.contrib.auth import get_user_model
    from django.core.management import call_command

    from apps.jobs.models import ApiToken, Job

    call_command("migrate", interactive=False, verbosity=0)
    async_to_sync(get_channel_layer().flush)()
    user, _ = get_user_model().objects.get_or_create(username="bench-ws")
    Job.objects.filter(owner=user).delete()
    token = ApiToken.issue(user, "bench")[1]
    work = Path(tempfile.mkdtemp(prefix="myspinbot-bench-ws-"))
    rounds: list[Round] = []
    try:
        with Server(work / "uvicorn.log", deflate=args.deflate == "on") as server:
            url = f"ws://127.0.0.1:{server.port}/ws/jobs/"
            for subscribers in args.subscribers:
                job = make_job(user)
                print(f"{subscribers} subscriber(s)...", file=sys.stderr)
                rounds.append(
                    asyncio.run(
                        run_round(
                            url, token, str(job.pk), args.warmup + args.events, args, subscribers
                        )
                    )
                )
    finally:
        Job.objects.filter(owner=user).delete()
        ApiToken.objects.filter(user=user).delete()
    report(rounds, args, command)
    if any(one.problems for one in rounds):
        print(f"server log: {work / 'uvicorn.log'}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
