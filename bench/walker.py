"""Engine overhead benchmark: graphs of ``debug.noop`` through the whole engine against
raw Celery canvases of a no-op task, on the same broker and the same workers.

    .venv/bin/python bench/walker.py [--repeat 3] [--workers 1] [--concurrency 2]
    .venv/bin/python bench/walker.py --broker amqp://guest:guest@127.0.0.1:5672/myspinbot-bench

Scenarios (each measured ``--repeat`` times after one smaller warm-up; medians printed):

* chain:  ``--chain`` nodes in a line (engine graph) vs ``chain(whoami.si(), ...)``.
* fanout: 1 -> ``--fanout`` -> 1 (engine graph) vs
  ``chain(whoami.si(), chord([whoami.si(), ...], whoami.si()))``.

Engine wall time runs from ``submit_job`` until the Job row is finished (polled every
20 ms); raw wall time from ``apply_async`` until ``.get()`` returns. The raw no-op is
``myspinbot.whoami`` (it returns a small dict through the Redis result backend, which
chains and chords need anyway). Exits 0 whatever the goals say; 1 on a failed or
timed-out job or a setup error.

The bench uses its own PostgreSQL database, Redis database and queue names (see the
``BENCH_*`` environment variables below) so it never touches ``make run`` or ``make test``.
``--broker`` sends the tasks through another broker (a RabbitMQ vhost on this machine is
created, and the server started, if missing); results stay on the bench's Redis database.
"""

from __future__ import annotations

import argparse
import os
import shlex
import signal
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # run as a script: make the project importable
    sys.path.insert(0, str(REPO))

from bench import common  # noqa: E402

DATABASE_URL, REDIS_URL = common.DATABASE_URL, common.REDIS_URL
CPU_QUEUE = os.environ.get("BENCH_CPU_QUEUE", "bench-cpu")
GPU_QUEUE = os.environ.get("BENCH_GPU_QUEUE", "bench-gpu")

CHAIN_GOAL_RATIO = 2.0
FANOUT_GOAL_NODES_PER_S = 300.0
POLL_INTERVAL = 0.02


class BenchError(Exception):
    """A measurement could not be taken (job failed, timed out, worker did not start)."""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=3, help="measurements per scenario (median)")
    parser.add_argument("--chain", type=int, default=100, help="nodes in the chain scenario")
    parser.add_argument("--fanout", type=int, default=200, help="middle nodes of 1->N->1")
    parser.add_argument("--workers", type=int, default=1, help="celery worker processes")
    parser.add_argument("--concurrency", type=int, default=2, help="pool size of each worker")
    parser.add_argument("--timeout", type=float, default=180.0, help="seconds per measurement")
    parser.add_argument(
        "--settings",
        default="local",
        help="myspinbot.settings.<name>, or a dotted module path; default local, which "
        "configures the database like production (CONN_MAX_AGE=60) where test uses "
        "CONN_MAX_AGE=0",
    )
    parser.add_argument(
        "--broker",
        default=REDIS_URL,
        help="Celery broker URL (redis://... or amqp://...); default the bench's Redis",
    )
    parser.add_argument(
        "--only", choices=["engine", "raw"], default=None, help="measure one side only"
    )
    parser.add_argument(
        "--keep-logs", action="store_true", help="keep the worker logs and print where they are"
    )
    return parser.parse_args(argv)


# --- Environment, set before Django starts so this process and the workers agree ----


def configure_environment(settings: str, artifact_root: Path, broker: str) -> None:
    common.configure_environment(
        database_url=DATABASE_URL,
        redis_url=REDIS_URL,
        settings=settings if "." in settings else f"myspinbot.settings.{settings}",
        artifact_root=artifact_root,
        extra={
            "MYSPINBOT_DEBUG_SERVICES": "true",
            "CELERY_CPU_QUEUE": CPU_QUEUE,
            "CELERY_GPU_QUEUE": GPU_QUEUE,
            # ``local`` reads CELERY_BROKER_URL, ``test`` its TEST_ twin: set both.
            "CELERY_BROKER_URL": broker,
            "TEST_BROKER_URL": broker,
        },
    )


# --- Graphs -----------------------------------------------------------------------------


def _node(node_id: str, nonce: str, index: int) -> dict[str, Any]:
    # debug.noop is cacheable: a fresh nonce per run keeps every node from reusing an
    # earlier run's output.
    return {"id": node_id, "service": "debug.noop", "params": {"i": index, "run": nonce}}


def _graph(nodes: list[dict[str, Any]], edges: list[tuple[str, str]]) -> dict[str, Any]:
    return {
        "schema": "langgraph.v1",
        "workflowId": "bench",
        "nodes": nodes,
        "edges": [{"from": a, "to": b, "kind": "normal"} for a, b in edges],
    }


def chain_graph(length: int, nonce: str) -> dict[str, Any]:
    nodes = [_node(f"n{i}", nonce, i) for i in range(length)]
    return _graph(nodes, [(f"n{i}", f"n{i + 1}") for i in range(length - 1)])


def fanout_graph(width: int, nonce: str) -> dict[str, Any]:
    middle = [_node(f"m{i}", nonce, i + 1) for i in range(width)]
    nodes = [_node("src", nonce, 0), *middle, _node("dst", nonce, width + 1)]
    edges = [("src", n["id"]) for n in middle] + [(n["id"], "dst") for n in middle]
    return _graph(nodes, edges)


# --- One measurement per side ---------------------------------------------------------------


@dataclass
class Breakdown:
    """Medians over a job's nodes, from NodeRun timestamps (ms)."""

    queue_wait: float  # dispatched_at -> started_at: commit, send, broker, pickup, claim
    running: float  # started_at -> finished_at: predecessors, handler, heartbeat thread
    submit: float  # Job.created_at -> first dispatched_at (validation happens before)


def run_engine(user: Any, document: dict[str, Any], timeout: float) -> tuple[float, Breakdown]:
    from apps.jobs.engine import submit_job
    from apps.jobs.models import Job, NodeRun

    start = time.perf_counter()
    job = submit_job(user, document, template="bench")
    deadline = start + timeout
    while True:
        status = Job.objects.filter(pk=job.pk).values_list("status", flat=True).get()
        if status in Job.FINISHED:
            elapsed = time.perf_counter() - start
            break
        if time.perf_counter() > deadline:
            counts: dict[str, int] = {}
            for run_status in NodeRun.objects.filter(job=job).values_list("status", flat=True):
                counts[run_status] = counts.get(run_status, 0) + 1
            raise BenchError(f"job {job.pk} still {status} after {timeout:g}s: {counts}")
        time.sleep(POLL_INTERVAL)
    if status != Job.Status.COMPLETED:
        job.refresh_from_db()
        raise BenchError(f"job {job.pk} ended {status}: {job.error}")
    runs = list(
        NodeRun.objects.filter(job=job).values("dispatched_at", "started_at", "finished_at")
    )
    job.refresh_from_db()
    first_dispatch = min(r["dispatched_at"] for r in runs)
    breakdown = Breakdown(
        queue_wait=statistics.median(_ms(r["started_at"] - r["dispatched_at"]) for r in runs),
        running=statistics.median(_ms(r["finished_at"] - r["started_at"]) for r in runs),
        submit=_ms(first_dispatch - job.created_at),
    )
    delete_jobs([job.pk])
    return elapsed, breakdown


def _ms(delta: Any) -> float:
    return float(delta.total_seconds() * 1000.0)


def delete_jobs(job_ids: list[Any]) -> None:
    from apps.graphs.models import Graph
    from apps.jobs.models import Job

    graph_ids = list(Job.objects.filter(pk__in=job_ids).values_list("graph_id", flat=True))
    Job.objects.filter(pk__in=job_ids).delete()
    Graph.objects.filter(pk__in=graph_ids).delete()


def raw_chain(length: int) -> Any:
    from celery import chain

    from myspinbot.celery import whoami

    return chain(*(whoami.si() for _ in range(length)))


def raw_fanout(width: int) -> Any:
    from celery import chain, chord

    from myspinbot.celery import whoami

    return chain(whoami.si(), chord([whoami.si() for _ in range(width)], whoami.si()))


def run_raw(canvas: Any, timeout: float) -> float:
    start = time.perf_counter()
    result = canvas.apply_async()
    try:
        result.get(timeout=timeout, interval=POLL_INTERVAL)
    except Exception as error:
        message = f"raw canvas failed or timed out: {type(error).__name__}: {error}"
        raise BenchError(message) from error
    return time.perf_counter() - start


# --- Orchestration ----------------------------------------------------------------------


@dataclass
class Scenario:
    name: str
    nodes: int
    engine_document: Callable[[str], dict[str, Any]]
    raw_canvas: Callable[[], Any]
    engine: list[float] = field(default_factory=list)
    raw: list[float] = field(default_factory=list)
    breakdowns: list[Breakdown] = field(default_factory=list)


def measure(scenario: Scenario, user: Any, args: argparse.Namespace, record: bool) -> None:
    if args.only != "raw":
        document = scenario.engine_document(uuid.uuid4().hex)
        elapsed, breakdown = run_engine(user, document, args.timeout)
        if record:
            scenario.engine.append(elapsed)
            scenario.breakdowns.append(breakdown)
        _progress(f"{scenario.name:7s} engine {elapsed * 1000:9.1f} ms")
    if args.only != "engine":
        elapsed = run_raw(scenario.raw_canvas(), args.timeout)
        if record:
            scenario.raw.append(elapsed)
        _progress(f"{scenario.name:7s} raw    {elapsed * 1000:9.1f} ms")


def _progress(message: str) -> None:
    print(f"  {message}", file=sys.stderr, flush=True)


def _median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def _redacted(url: str) -> str:
    """``url`` without its password."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    if parts.password is None:
        return url
    return url.replace(f":{parts.password}@", ":***@", 1)


def report(scenarios: list[Scenario], args: argparse.Namespace, command: str) -> None:
    print()
    print(
        f"{args.workers} worker(s) x --concurrency={args.concurrency} on queue {CPU_QUEUE}, "
        f"broker {_redacted(args.broker)}, settings {args.settings}, median of {args.repeat}; "
        f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs "
        "(other processes skew the figures)"
    )
    header = (
        f"{'scenario':<16} {'nodes':>5} {'engine ms':>10} {'raw ms':>10} {'engine ms/node':>15} "
        f"{'raw ms/node':>12} {'engine/raw':>11} {'engine nodes/s':>15} {'raw nodes/s':>12}"
    )
    print(header)
    print("-" * len(header))

    def cell(value: float | None, width: int, fmt: str) -> str:
        return f"{value:{width}{fmt}}" if value is not None else f"{'-':>{width}}"

    for s in scenarios:
        engine, raw = _median(s.engine), _median(s.raw)
        ratio = engine / raw if engine is not None and raw is not None else None
        print(
            f"{s.name:<16} {s.nodes:>5} "
            f"{cell(engine and engine * 1000, 10, '.1f')} {cell(raw and raw * 1000, 10, '.1f')} "
            f"{cell(engine and engine * 1000 / s.nodes, 15, '.2f')} "
            f"{cell(raw and raw * 1000 / s.nodes, 12, '.2f')} {cell(ratio, 11, '.2f')} "
            f"{cell(engine and s.nodes / engine, 15, '.1f')} "
            f"{cell(raw and s.nodes / raw, 12, '.1f')}"
        )
    print()
    print("engine per-node timestamps (median over nodes, median over runs):")
    for s in scenarios:
        if s.breakdowns:
            queued = _median([b.queue_wait for b in s.breakdowns])
            running = _median([b.running for b in s.breakdowns])
            submit = _median([b.submit for b in s.breakdowns])
            print(
                f"  {s.name:<16} queued->started {queued:7.2f} ms   started->finished "
                f"{running:7.2f} ms   job created->first dispatch {submit:7.2f} ms"
            )
    print()
    chain_s, fan_s = scenarios
    chain_engine, chain_raw = _median(chain_s.engine), _median(chain_s.raw)
    if chain_engine is not None and chain_raw is not None:
        ratio = chain_engine / chain_raw
        verdict = "PASS" if ratio <= CHAIN_GOAL_RATIO else "FAIL"
        print(f"goal: chain engine/raw <= {CHAIN_GOAL_RATIO:.1f}:   {ratio:6.2f}  {verdict}")
    fan_engine = _median(fan_s.engine)
    if fan_engine is not None:
        rate = fan_s.nodes / fan_engine
        verdict = "PASS" if rate >= FANOUT_GOAL_NODES_PER_S else "FAIL"
        print(f"goal: fan-out >= {FANOUT_GOAL_NODES_PER_S:.0f} nodes/s:  {rate:6.1f}  {verdict}")
    print()
    print(f"rerun: {command}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    command = shlex.join([".venv/bin/python", "bench/walker.py", *(argv or sys.argv[1:])])
    work = Path(tempfile.mkdtemp(prefix="myspinbot-bench-"))
    configure_environment(args.settings, work / "artifacts", args.broker)
    if args.broker.startswith(("amqp://", "amqps://")):
        from myspinbot.devservices import ensure_rabbitmq

        ensure_rabbitmq(args.broker, int(os.environ.get("CELERY_CONSUMER_TIMEOUT", "21600")))
    # SIGTERM ends the run like Ctrl-C does, so the workers are stopped.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    common.ensure_database(DATABASE_URL)
    import django

    django.setup()
    from django.contrib.auth import get_user_model
    from django.core.management import call_command

    from apps.jobs.models import Job

    call_command("migrate", interactive=False, verbosity=0)
    user, _ = get_user_model().objects.get_or_create(username="bench")
    delete_jobs(list(Job.objects.filter(owner=user).values_list("pk", flat=True)))
    common.purge_queues(CPU_QUEUE, GPU_QUEUE)

    scenarios = [
        Scenario(
            f"chain {args.chain}",
            args.chain,
            lambda nonce: chain_graph(args.chain, nonce),
            lambda: raw_chain(args.chain),
        ),
        Scenario(
            f"fanout 1-{args.fanout}-1",
            args.fanout + 2,
            lambda nonce: fanout_graph(args.fanout, nonce),
            lambda: raw_fanout(args.fanout),
        ),
    ]
    warmups = [
        Scenario("warmup", 10, lambda n: chain_graph(10, n), lambda: raw_chain(10)),
        Scenario("warmup", 22, lambda n: fanout_graph(20, n), lambda: raw_fanout(20)),
    ]
    try:
        with common.running_workers(args.workers, args.concurrency, [CPU_QUEUE], work):
            print(
                f"workers up ({args.workers} x concurrency {args.concurrency}); warming up",
                file=sys.stderr,
            )
            for scenario in warmups:
                measure(scenario, user, args, record=False)
            for index in range(args.repeat):
                print(f"run {index + 1}/{args.repeat}", file=sys.stderr)
                for scenario in scenarios:
                    measure(scenario, user, args, record=True)
    except BenchError as error:
        print(f"bench error: {error}", file=sys.stderr)
        print(f"worker logs: {work}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted; workers stopped", file=sys.stderr)
        return 130
    finally:
        delete_jobs(list(Job.objects.filter(owner=user).values_list("pk", flat=True)))
        common.purge_queues(CPU_QUEUE, GPU_QUEUE)
    report(scenarios, args, command)
    if args.keep_logs:
        print(f"worker logs: {work}")
    else:
        import shutil

        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
