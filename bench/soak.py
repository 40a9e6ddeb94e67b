"""Soak: many jobs of the original system's three pipeline shapes through the REST API,
watched live by WebSocket clients, on real workers, with what the run leaves behind.

    .venv/bin/python bench/soak.py [--jobs 1000] [--clients 20] [--ws-clients 100]
                                   [--sleep 0.05] [--cpu-workers 2] [--cpu-concurrency 2]
                                   [--gpu-workers 1] [--chain 50] [--repeat 3]

What one run does:

* Starts a private Redis-compatible server (unless ``--redis-url``), so its memory figure
  is this run's alone, ``--cpu-workers`` ``cpu`` workers (``--cpu-concurrency`` each),
  ``--gpu-workers`` ``gpu`` workers (one task at a time) and the ASGI server (uvicorn),
  all real processes, on its own PostgreSQL database (``BENCH_SOAK_DATABASE_URL`` or
  ``--database-url``).
* ``--clients`` HTTP clients, one user each, submit ``--jobs`` jobs between them with
  ``POST /api/jobs`` as fast as answers come back (keep-alive connections). Jobs cycle
  through the shapes of ``apps/graphs/pipelines/{capabilities,train_and_render,
  narrated_video}.json`` (2, 6 and 6 nodes) with every service replaced by a ``debug.*``
  stand-in on the same queue: LoRA training and keyframes sleep ``--sleep`` seconds and
  the other GPU steps (animation, lip-sync) echo, with the ``debug.sleep``/``debug.echo``
  handlers declared on the ``gpu`` queue (``bench/capabilities``); CPU steps echo; and
  every node carries a per-job nonce so nothing is answered from the result cache.
* ``--ws-clients`` WebSocket clients (``/ws/jobs/``, token auth) subscribe with
  ``since: 0`` to the jobs as they are created (job *i* goes to client *i* mod N, which
  holds the token of the job's owner) and must receive every event of each job, in
  order, none twice, up to ``job.completed``.
* Then, on the same workers and broker: a ``--chain``-node chain of ``debug.noop``
  through the engine against a raw Celery chain of as many no-op tasks (as
  ``bench/walker.py`` does), ``--repeat`` times, for the per-node overhead.
* Reports submit latency (p50/p99), jobs/s, per-node overhead, peak RSS of the web
  process and each worker (process tree: main process and pool children), database rows
  and Redis memory and keys afterwards, and what should have been cleaned but was not
  (unfinished runs, queued messages, unacknowledged messages).

The per-user limits (``MYSPINBOT_MAX_JOBS_IN_FLIGHT``, ``MYSPINBOT_SUBMISSIONS_PER_MINUTE``)
are raised for the run: they would otherwise turn most of 1,000 submissions into 429s.
Exit status 1 when a job does not complete, a submission fails, or a WebSocket client
misses, repeats or reorders an event; 0 otherwise, whatever the goals say.
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import itertools
import json
import os
import shlex
import signal
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # run as a script: make the project importable
    sys.path.insert(0, str(REPO))

from bench import common  # noqa: E402
from testkit.soak_graphs import SHAPES, load_shapes, service_queues, soak_graph  # noqa: E402

DATABASE_URL = os.environ.get(
    "BENCH_SOAK_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/myspinbot_bench_soak"
)
REDIS_URL = os.environ.get("BENCH_SOAK_REDIS_URL")  # unset: a private embedded server
CPU_QUEUE = os.environ.get("BENCH_CPU_QUEUE", "soak-cpu")
GPU_QUEUE = os.environ.get("BENCH_GPU_QUEUE", "soak-gpu")
TERMINAL = {"job.completed", "job.failed", "job.cancelled"}

STOP = threading.Event()  # set on SIGTERM/Ctrl-C: the clients stop submitting
GOAL_P99_SUBMIT_MS = 100.0
GOAL_OVERHEAD_RATIO = 2.0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=1000, help="jobs submitted in all")
    parser.add_argument("--clients", type=int, default=20, help="concurrent HTTP clients (users)")
    parser.add_argument("--ws-clients", type=int, default=100, help="WebSocket clients")
    parser.add_argument("--sleep", type=float, default=0.05, help="seconds per debug.sleep node")
    parser.add_argument("--cpu-workers", type=int, default=2)
    parser.add_argument("--cpu-concurrency", type=int, default=2)
    parser.add_argument("--gpu-workers", type=int, default=1)
    parser.add_argument("--chain", type=int, default=50, help="nodes of the overhead chain")
    parser.add_argument("--repeat", type=int, default=3, help="overhead measurements (median)")
    parser.add_argument("--timeout", type=float, default=3600.0, help="seconds for all jobs")
    parser.add_argument("--database-url", default=DATABASE_URL)
    parser.add_argument(
        "--redis-url", default=REDIS_URL, help="use this Redis (default: a private one)"
    )
    parser.add_argument("--keep-jobs", action="store_true", help="leave the soak's jobs")
    return parser.parse_args(argv)


# --- HTTP clients -----------------------------------------------------------------------


@dataclass
class Submitted:
    index: int
    job_id: str | None
    status: int
    seconds: float
    error: str = ""


class HttpClient:
    """One user's keep-alive connection to the API."""

    def __init__(self, port: int, token: str) -> None:
        self.port, self.token = port, token
        self.connection: http.client.HTTPConnection | None = None

    def post(self, path: str, body: dict[str, Any]) -> tuple[int, Any]:
        data = json.dumps(body).encode()
        headers = {"Authorization": f"Bearer {self.token}", "Content-Type": "application/json"}
        for attempt in (1, 2):  # a keep-alive connection the server closed: reconnect once
            if self.connection is None:
                self.connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
            try:
                self.connection.request("POST", path, body=data, headers=headers)
                answer = self.connection.getresponse()
                raw = answer.read()
                return answer.status, json.loads(raw) if raw else None
            except (http.client.HTTPException, ConnectionError):
                self.connection.close()
                self.connection = None
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")


# --- WebSocket clients ------------------------------------------------------------------


class WsClient:
    """Subscribes to jobs as they are handed over; keeps every seq received per job.

    Like any client of ``/ws/jobs/``, it reconnects when its socket drops (a starved
    client misses the server's pings and is closed with 4408) and subscribes again with
    ``since`` = the last seq it holds; reconnects are counted and reported."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.queue: asyncio.Queue[str | None] = asyncio.Queue()
        self.seqs: dict[str, list[int]] = {}
        self.last_type: dict[str, str] = {}
        self.finished: set[str] = set()
        self.no_more = False
        self.done = asyncio.Event()
        self.errors: list[str] = []
        self.connections = 0
        self.drops: Counter[str] = Counter()

    def _check_done(self) -> None:
        if self.no_more and self.finished >= set(self.seqs):
            self.done.set()

    async def run(self) -> None:
        import websockets

        while not self.done.is_set():
            try:
                async with websockets.connect(self.url, open_timeout=60, max_queue=None) as socket:
                    self.connections += 1
                    for job_id, seqs in list(self.seqs.items()):
                        if job_id not in self.finished:
                            await self._subscribe(socket, job_id, seqs[-1] if seqs else 0)
                    tasks = [
                        asyncio.create_task(self._read(socket)),
                        asyncio.create_task(self._feed(socket)),
                        asyncio.create_task(self.done.wait()),
                    ]
                    finished, _ = await asyncio.wait(
                        {tasks[0], tasks[2]}, return_when=asyncio.FIRST_COMPLETED
                    )
                    for task in tasks:
                        task.cancel()
                    if tasks[0] in finished and tasks[0].exception() is not None:
                        raise tasks[0].exception()  # type: ignore[misc]
            except (OSError, TimeoutError, websockets.WebSocketException) as error:
                reason = getattr(getattr(error, "rcvd", None), "code", None) or type(error).__name__
                self.drops[str(reason)] += 1
                await asyncio.sleep(0.5)

    @staticmethod
    async def _subscribe(socket: Any, job_id: str, since: int) -> None:
        await socket.send(json.dumps({"action": "subscribe", "jobId": job_id, "since": since}))

    async def _feed(self, socket: Any) -> None:
        while True:
            job_id = await self.queue.get()
            if job_id is None:
                self.no_more = True
                self._check_done()
                return
            self.seqs[job_id] = []  # a drop before the send: the reconnect subscribes it
            await self._subscribe(socket, job_id, 0)

    async def _read(self, socket: Any) -> None:
        async for raw in socket:
            message = json.loads(raw)
            kind = message["type"]
            if kind == "event":
                job_id = message["jobId"]
                self.seqs[job_id].append(message["seq"])
                self.last_type[job_id] = message["event"]
                if message["event"] in TERMINAL:
                    self.finished.add(job_id)
                    self._check_done()
            elif kind == "ping":
                await socket.send('{"action": "pong"}')
            elif kind == "error":
                self.errors.append(json.dumps(message))


class WsFleet:
    """``count`` WebSocket clients on one event loop in a thread of their own."""

    def __init__(self, ws_base: str, tokens: list[str], count: int) -> None:
        self.loop = asyncio.new_event_loop()
        self.clients = [
            WsClient(f"{ws_base}/ws/jobs/?token={tokens[i % len(tokens)]}") for i in range(count)
        ]
        self.thread = threading.Thread(target=self._run, name="ws-fleet", daemon=True)
        self.finished = threading.Event()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_until_complete(asyncio.gather(*(c.run() for c in self.clients)))
        self.finished.set()

    def start(self) -> None:
        self.thread.start()

    def hand_over(self, index: int, job_id: str) -> None:
        client = self.clients[index % len(self.clients)]
        self.loop.call_soon_threadsafe(client.queue.put_nowait, job_id)

    def close_queues(self) -> None:
        for client in self.clients:
            self.loop.call_soon_threadsafe(client.queue.put_nowait, None)


# --- Resident memory --------------------------------------------------------------------


class RssSampler(threading.Thread):
    """Peak RSS of each watched process tree (a process and its children), every 0.5 s."""

    def __init__(self) -> None:
        super().__init__(name="rss", daemon=True)
        self.watched: dict[str, int] = {}
        self.peak: dict[str, int] = {}
        self.stopped = threading.Event()

    def watch(self, label: str, pid: int) -> None:
        self.watched[label] = pid

    def run(self) -> None:
        import psutil

        while not self.stopped.wait(0.5):
            for label, pid in list(self.watched.items()):
                try:
                    root = psutil.Process(pid)
                    tree = [root, *root.children(recursive=True)]
                    total = sum(p.memory_info().rss for p in tree)
                except psutil.Error:
                    continue
                self.peak[label] = max(self.peak.get(label, 0), total)


# --- Measurements -----------------------------------------------------------------------


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(fraction * (len(ordered) - 1))))
    return ordered[index]


def table_rows() -> dict[str, int]:
    from django.db import connection

    tables = [
        "jobs_job",
        "graphs_graph",
        "graphs_noderun",
        "jobs_jobevent",
        "jobs_artifact",
        "jobs_apitoken",
    ]
    counts = {}
    with connection.cursor() as cursor:
        for table in tables:
            cursor.execute(f"SELECT count(*) FROM {table}")
            counts[table] = int(cursor.fetchone()[0])
    return counts


def redis_report(url: str) -> dict[str, Any]:
    import redis

    client = redis.Redis.from_url(url)
    memory = client.info("memory")
    keys: Counter[str] = Counter()
    for key in client.scan_iter(count=1000):
        name = key.decode(errors="replace")
        if name.startswith("celery-task-meta-"):
            keys["celery-task-meta-* (results)"] += 1
        elif name.startswith("_kombu.binding."):
            keys["_kombu.binding.* (queue bindings)"] += 1
        else:
            keys[name] += 1
    report = {
        "used_memory": int(memory["used_memory"]),
        "used_memory_peak": int(memory["used_memory_peak"]),
        "dbsize": int(client.dbsize()),
        "keys": dict(sorted(keys.items())),
        "queued": {q: int(client.llen(q)) for q in (CPU_QUEUE, GPU_QUEUE)},
        "unacked": int(client.hlen("unacked")),
    }
    client.close()
    return report


def mib(value: float) -> str:
    return f"{value / 1024 / 1024:.1f} MiB"


@dataclass
class Outcome:
    submitted: list[Submitted] = field(default_factory=list)
    submit_started: float = 0.0
    submit_ended: float = 0.0
    all_finished: float = 0.0
    statuses: Counter[str] = field(default_factory=Counter)
    nodes: int = 0


def submit_all(
    args: argparse.Namespace, port: int, tokens: list[str], fleet: WsFleet, outcome: Outcome
) -> None:
    shapes = load_shapes()
    queues = service_queues()
    lock = threading.Lock()

    def client_loop(client_index: int) -> None:
        client = HttpClient(port, tokens[client_index])
        for index in range(client_index, args.jobs, args.clients):
            if STOP.is_set():
                return
            shape = shapes[SHAPES[index % len(SHAPES)]]
            document = soak_graph(shape, uuid.uuid4().hex, args.sleep, queues)
            started = time.perf_counter()
            try:
                status, body = client.post("/api/jobs", {"graph": document})
            except Exception as error:
                elapsed = time.perf_counter() - started
                with lock:
                    outcome.submitted.append(
                        Submitted(index, None, 0, elapsed, f"{type(error).__name__}: {error}")
                    )
                continue
            elapsed = time.perf_counter() - started
            job_id = str(body["id"]) if status == 201 else None
            with lock:
                error = "" if job_id else json.dumps(body)[:300]
                outcome.submitted.append(Submitted(index, job_id, status, elapsed, error))
            if job_id:
                fleet.hand_over(index, job_id)

    outcome.submit_started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=args.clients, thread_name_prefix="client") as pool:
        for future in [pool.submit(client_loop, c) for c in range(args.clients)]:
            future.result()
    outcome.submit_ended = time.perf_counter()
    fleet.close_queues()


def wait_for_jobs(job_ids: list[str], timeout: float, outcome: Outcome) -> None:
    from apps.jobs.models import Job

    deadline = time.perf_counter() + timeout
    while True:
        left = Job.objects.filter(pk__in=job_ids).exclude(status__in=Job.FINISHED).count()
        if left == 0:
            outcome.all_finished = time.perf_counter()
            break
        if time.perf_counter() > deadline:
            raise TimeoutError(f"{left} of {len(job_ids)} jobs unfinished after {timeout:g}s")
        print(f"  {left} jobs unfinished", file=sys.stderr, flush=True)
        time.sleep(2.0)
    rows = Job.objects.filter(pk__in=job_ids).values_list("status", flat=True)
    outcome.statuses = Counter(rows)


def check_websockets(fleet: WsFleet) -> dict[str, Any]:
    """Compare what each client received with the stored events of its jobs."""
    from apps.jobs.models import Job

    stored = dict(
        Job.objects.filter(pk__in=[j for c in fleet.clients for j in c.seqs]).values_list(
            "pk", "event_seq"
        )
    )
    stored = {str(k): int(v) for k, v in stored.items()}
    counts = Counter[str]()
    drops: Counter[str] = Counter()
    for client in fleet.clients:
        counts["clients"] += 1
        counts["errors"] += len(client.errors)
        counts["reconnects"] += max(0, client.connections - 1)
        counts["never connected"] += int(client.connections == 0)
        drops.update(client.drops)
        for job_id, seqs in client.seqs.items():
            counts["subscriptions"] += 1
            counts["events received"] += len(seqs)
            counts["duplicates"] += len(seqs) - len(set(seqs))
            counts["out of order"] += sum(1 for a, b in itertools.pairwise(seqs) if b <= a)
            expected = set(range(1, stored[job_id] + 1))
            counts["missing"] += len(expected - set(seqs))
            counts["ended without job.completed"] += int(
                client.last_type.get(job_id) != "job.completed"
            )
    return {**counts, "drops": dict(drops)}


def measure_overhead(args: argparse.Namespace, user: Any) -> tuple[list[float], list[float]]:
    from bench import walker

    engine_times, raw_times = [], []
    walker.run_engine(user, walker.chain_graph(10, uuid.uuid4().hex), 120)  # warm-up
    walker.run_raw(walker.raw_chain(10), 120)
    for _ in range(args.repeat):
        elapsed, _ = walker.run_engine(user, walker.chain_graph(args.chain, uuid.uuid4().hex), 300)
        engine_times.append(elapsed)
        raw_times.append(walker.run_raw(walker.raw_chain(args.chain), 300))
    return engine_times, raw_times


# --- Main -------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    command = shlex.join([".venv/bin/python", "bench/soak.py", *(argv or sys.argv[1:])])

    def stop(*_: Any) -> None:
        STOP.set()
        sys.exit(143)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    work = Path(tempfile.mkdtemp(prefix="myspinbot-soak-"))
    (work / "cpu").mkdir()
    (work / "gpu").mkdir()
    from testkit.services import AsgiServer, RedisServer

    private_redis = None
    redis_url = args.redis_url
    if redis_url is None:
        private_redis = RedisServer()
        private_redis.start()
        redis_url = private_redis.url
    common.configure_environment(
        database_url=args.database_url,
        redis_url=redis_url,
        settings="myspinbot.settings.local",
        artifact_root=work / "artifacts",
        extra={
            "MYSPINBOT_DEBUG_SERVICES": "true",
            "MYSPINBOT_CAPABILITY_DIRS": str(REPO / "bench" / "capabilities"),
            "CELERY_CPU_QUEUE": CPU_QUEUE,
            "CELERY_GPU_QUEUE": GPU_QUEUE,
            "MYSPINBOT_MAX_JOBS_IN_FLIGHT": "1000000",
            "MYSPINBOT_SUBMISSIONS_PER_MINUTE": "1000000",
            "LOG_LEVEL": "WARNING",
        },
    )
    common.ensure_database(args.database_url)
    import django

    django.setup()
    from django.contrib.auth import get_user_model
    from django.core.management import call_command

    from apps.jobs.models import ApiToken, Job
    from bench.walker import delete_jobs

    call_command("migrate", interactive=False, verbosity=0)
    users = [
        get_user_model().objects.get_or_create(username=f"soak{i}")[0] for i in range(args.clients)
    ]
    delete_jobs(list(Job.objects.filter(owner__in=users).values_list("pk", flat=True)))
    ApiToken.objects.filter(user__in=users).delete()
    tokens = [ApiToken.issue(user, "soak")[1] for user in users]
    common.purge_queues(CPU_QUEUE, GPU_QUEUE)
    rows_before = table_rows()
    redis_before = redis_report(redis_url)

    sampler = RssSampler()
    web = AsgiServer(env=dict(os.environ), log_path=work / "web.log")
    outcome = Outcome()
    failed = False
    try:
        with (
            common.running_workers(
                args.cpu_workers, args.cpu_concurrency, [CPU_QUEUE], work / "cpu"
            ) as cpu_workers,
            common.running_workers(args.gpu_workers, 1, [GPU_QUEUE], work / "gpu") as gpu_workers,
        ):
            web.start()
            assert web.process is not None
            sampler.watch("web (uvicorn)", web.process.pid)
            for i, worker in enumerate(cpu_workers):
                sampler.watch(f"cpu worker {i + 1} (x{args.cpu_concurrency})", worker.process.pid)
            for i, worker in enumerate(gpu_workers):
                sampler.watch(f"gpu worker {i + 1} (x1)", worker.process.pid)
            sampler.start()
            fleet = WsFleet(web.ws, tokens, args.ws_clients)
            fleet.start()
            print(
                f"stack up; submitting {args.jobs} jobs with {args.clients} clients",
                file=sys.stderr,
            )
            submit_all(args, web.port, tokens, fleet, outcome)
            job_ids = [s.job_id for s in outcome.submitted if s.job_id]
            wait_for_jobs(job_ids, args.timeout, outcome)
            if not fleet.finished.wait(120):
                print("WebSocket clients still waiting after 120 s", file=sys.stderr)
            ws_counts = check_websockets(fleet)
            from apps.jobs.models import NodeRun

            outcome.nodes = NodeRun.objects.filter(job_id__in=job_ids).count()
            leftover_runs = NodeRun.objects.filter(job_id__in=job_ids).exclude(
                status__in=NodeRun.TERMINAL
            )
            unfinished_runs = leftover_runs.count()
            print("measuring per-node overhead against a raw Celery chain", file=sys.stderr)
            engine_times, raw_times = measure_overhead(args, users[0])
            time.sleep(1.0)  # let the last acknowledgements land
            redis_after = redis_report(redis_url)
            rows_after = table_rows()
            sampler.stopped.set()
            web.stop()
    finally:
        sampler.stopped.set()
        web.stop()
        if not args.keep_jobs:
            delete_jobs(list(Job.objects.filter(owner__in=users).values_list("pk", flat=True)))
        if private_redis is not None:
            private_redis.stop()

    # --- Report ---
    accepted = [s for s in outcome.submitted if s.job_id]
    refused = [s for s in outcome.submitted if not s.job_id]
    latencies = [s.seconds * 1000 for s in outcome.submitted]
    p50, p99 = percentile(latencies, 0.5), percentile(latencies, 0.99)
    wall = outcome.all_finished - outcome.submit_started
    submit_wall = outcome.submit_ended - outcome.submit_started
    engine_ms = statistics.median(engine_times) * 1000
    raw_ms = statistics.median(raw_times) * 1000
    ratio = engine_ms / raw_ms
    completed = outcome.statuses.get("completed", 0)
    print()
    print(
        f"soak on {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {os.cpu_count()} CPUs, "
        f"load average {os.getloadavg()[0]:.2f} at the end; "
        f"{args.cpu_workers} cpu worker(s) x {args.cpu_concurrency}, {args.gpu_workers} gpu "
        f"worker(s) x 1, 1 uvicorn process, sleep nodes {args.sleep:g} s"
    )
    print(
        f"jobs: {len(outcome.submitted)} submitted by {args.clients} clients, "
        f"{len(accepted)} accepted, {len(refused)} refused; "
        f"{dict(outcome.statuses)}; {outcome.nodes} nodes"
    )
    for s in refused[:5]:
        print(f"  refused #{s.index}: {s.status} {s.error}")
    print(
        f"submit latency: p50 {p50:.1f} ms, p99 {p99:.1f} ms, max {max(latencies):.1f} ms "
        f"(goal p99 <= {GOAL_P99_SUBMIT_MS:.0f} ms: "
        f"{'PASS' if p99 <= GOAL_P99_SUBMIT_MS else 'FAIL'})"
    )
    print(
        f"throughput: {len(accepted) / submit_wall:.1f} submissions/s over {submit_wall:.1f} s; "
        f"{completed / wall:.2f} jobs/s and {outcome.nodes / wall:.1f} nodes/s "
        f"from first submit to last job finished ({wall:.1f} s)"
    )
    print(
        f"per-node overhead, {args.chain}-node chain, median of {args.repeat}: engine "
        f"{engine_ms / args.chain:.2f} ms/node, raw Celery chain {raw_ms / args.chain:.2f} "
        f"ms/node, ratio {ratio:.2f} (goal <= {GOAL_OVERHEAD_RATIO:.1f}: "
        f"{'PASS' if ratio <= GOAL_OVERHEAD_RATIO else 'FAIL'})"
    )
    print("peak RSS (process tree):")
    for label, peak in sampler.peak.items():
        print(f"  {label:<28} {mib(peak)}")
    print(
        f"websocket: {ws_counts.get('clients', 0)} clients, "
        f"{ws_counts.get('subscriptions', 0)} subscriptions, "
        f"{ws_counts.get('events received', 0)} events received; missing "
        f"{ws_counts.get('missing', 0)}, duplicates {ws_counts.get('duplicates', 0)}, "
        f"out of order {ws_counts.get('out of order', 0)}, ended without job.completed "
        f"{ws_counts.get('ended without job.completed', 0)}, errors "
        f"{ws_counts.get('errors', 0)}; {ws_counts.get('reconnects', 0)} reconnects with since "
        f"(socket closes by cause: {ws_counts['drops']})"
    )
    print("database rows after the run (before the soak's jobs are deleted), before -> after:")
    for table, count in rows_after.items():
        print(f"  {table:<16} {rows_before[table]:>8} -> {count:>8}")
    print(
        f"redis: used_memory {mib(redis_before['used_memory'])} before -> "
        f"{mib(redis_after['used_memory'])} after (peak {mib(redis_after['used_memory_peak'])}); "
        f"{redis_after['dbsize']} keys: {redis_after['keys']}"
    )
    leftovers = {
        "unfinished node runs": unfinished_runs,
        "queued messages": sum(redis_after["queued"].values()),
        "unacknowledged messages": redis_after["unacked"],
    }
    print(f"left behind (all should be 0): {leftovers}")
    print()
    print(f"rerun: {command}")
    failed = (
        bool(refused)
        or completed != len(accepted)
        or any(
            ws_counts.get(k, 0)
            for k in (
                "missing",
                "duplicates",
                "out of order",
                "ended without job.completed",
                "errors",
                "never connected",
            )
        )
        or any(leftovers.values())
    )
    if not failed:
        import shutil

        shutil.rmtree(work, ignore_errors=True)
    else:
        print(f"logs: {work}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
