"""Submission latency: ``POST /api/jobs`` answered by a real uvicorn server, with one
client and with many at once, optionally against an older checkout in the same run.

    .venv/bin/python bench/submit.py [--requests 100] [--clients 1 20] [--repeat 2]
                                     [--baseline PATH]

Each client is a user of its own with an API token and a keep-alive connection; it
posts a 3-node chain of ``debug.noop`` (a fresh nonce per job, so the cache lookup
finds nothing) as fast as answers come back. The time is from sending the request to
reading the whole answer. No worker runs: the messages stay on the bench's own queues
and are purged, and the jobs are deleted after each measurement.

``--baseline PATH`` also serves a second checkout (``git worktree add`` or ``git archive``
of another commit) from the same interpreter, database and Redis, and measures the two
in turn, round after round, so the ratio is taken under the same load. Own database
(``myspinbot_bench_submit``, ``BENCH_SUBMIT_DATABASE_URL``) and Redis DB 11
(``BENCH_SUBMIT_REDIS_URL``). Goals (issue "engine speed"): p50 <= 30 ms with one client,
p99 <= 150 ms with 20. Exit 1 when a submission is not a 201.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # run as a script: make the project importable
    sys.path.insert(0, str(REPO))

from bench import common  # noqa: E402

DATABASE_URL = os.environ.get(
    "BENCH_SUBMIT_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/myspinbot_bench_submit"
)
REDIS_URL = os.environ.get("BENCH_SUBMIT_REDIS_URL", "redis://127.0.0.1:6379/11")
CPU_QUEUE, GPU_QUEUE = "bench-submit-cpu", "bench-submit-gpu"
ONE_CLIENT_P50_GOAL_MS = 30.0
MANY_CLIENTS_P99_GOAL_MS = 150.0
MANY_CLIENTS = 20


class BenchError(Exception):
    """A submission was refused or failed."""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=100, help="submissions per client")
    parser.add_argument("--clients", type=int, nargs="+", default=[1, MANY_CLIENTS])
    parser.add_argument("--repeat", type=int, default=2, help="rounds (each side once a round)")
    parser.add_argument("--baseline", type=Path, default=None, help="an older checkout")
    return parser.parse_args(argv)


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def measure(port: int, tokens: list[str], requests: int) -> list[float]:
    """Seconds per submission, every client posting ``requests`` jobs at once."""
    from bench.soak import HttpClient
    from bench.walker import chain_graph

    def client_loop(token: str) -> list[float]:
        client = HttpClient(port, token)
        times = []
        for _ in range(requests):
            document = chain_graph(3, uuid.uuid4().hex)
            started = time.perf_counter()
            status, body = client.post("/api/jobs", {"graph": document})
            times.append(time.perf_counter() - started)
            if status != 201:
                raise BenchError(f"submission answered {status}: {body}")
        return times

    with ThreadPoolExecutor(max_workers=len(tokens)) as pool:
        return [t for times in pool.map(client_loop, tokens) for t in times]


def clean_up(users: list[Any]) -> None:
    from apps.jobs.models import Job
    from bench.walker import delete_jobs

    delete_jobs(list(Job.objects.filter(owner__in=users).values_list("pk", flat=True)))
    common.purge_queues(CPU_QUEUE, GPU_QUEUE)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="myspinbot-submit-"))
    common.configure_environment(
        database_url=DATABASE_URL,
        redis_url=REDIS_URL,
        artifact_root=work / "artifacts",
        extra={
            "MYSPINBOT_DEBUG_SERVICES": "true",
            "CELERY_CPU_QUEUE": CPU_QUEUE,
            "CELERY_GPU_QUEUE": GPU_QUEUE,
            "MYSPINBOT_MAX_JOBS_IN_FLIGHT": "1000000",
            "MYSPINBOT_SUBMISSIONS_PER_MINUTE": "1000000",
            "LOG_LEVEL": "WARNING",
        },
    )
    common.ensure_database(DATABASE_URL)
    import django

    django.setup()
    from django.contrib.auth import get_user_model
    from django.core.management import call_command

    from apps.jobs.models import ApiToken
    from testkit.services import AsgiServer

    call_command("migrate", interactive=False, verbosity=0)
    most = max(args.clients)
    users = [get_user_model().objects.get_or_create(username=f"submit{i}")[0] for i in range(most)]
    ApiToken.objects.filter(user__in=users).delete()
    tokens = [ApiToken.issue(user, "bench")[1] for user in users]
    clean_up(users)
    sides = {"this checkout": REPO}
    if args.baseline is not None:
        sides["baseline"] = args.baseline.resolve()
    servers = {
        name: AsgiServer(env=dict(os.environ), log_path=work / f"web-{index}.log", cwd=path)
        for index, (name, path) in enumerate(sides.items())
    }
    samples: dict[tuple[str, int], list[float]] = {}
    try:
        for server in servers.values():
            server.start()
            measure(server.port, tokens[:2], 10)  # warm-up: imports, pool, plan caches
        clean_up(users)
        for round_index in range(args.repeat):
            order = list(servers.items())
            if round_index % 2:
                order.reverse()
            for clients in args.clients:
                for name, server in order:
                    print(f"round {round_index + 1}: {name}, {clients} client(s)", file=sys.stderr)
                    times = measure(server.port, tokens[:clients], args.requests)
                    samples.setdefault((name, clients), []).extend(times)
                    clean_up(users)
    except BenchError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    finally:
        for server in servers.values():
            server.stop()
        clean_up(users)
    report(samples, args)
    return 0


def report(samples: dict[tuple[str, int], list[float]], args: argparse.Namespace) -> None:
    print(
        f"POST /api/jobs (3-node chain), {args.requests} per client per round, "
        f"{args.repeat} round(s), 1 uvicorn process per side"
    )
    print(f"{'side':<15} {'clients':>7} {'samples':>8} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8}")
    figures: dict[tuple[str, int], tuple[float, float]] = {}
    for (name, clients), times in sorted(
        samples.items(), key=lambda item: (item[0][1], item[0][0])
    ):
        ms = [t * 1000.0 for t in times]
        p50, p99 = statistics.median(ms), percentile(ms, 0.99)
        figures[(name, clients)] = (p50, p99)
        print(f"{name:<15} {clients:>7} {len(ms):>8} {p50:>8.1f} {p99:>8.1f} {max(ms):>8.1f}")
    for clients in args.clients:
        if ("baseline", clients) in figures:
            this, base = figures[("this checkout", clients)], figures[("baseline", clients)]
            print(
                f"ratio this/baseline, {clients} client(s): p50 {this[0] / base[0]:.2f}, "
                f"p99 {this[1] / base[1]:.2f}"
            )
    if ("this checkout", 1) in figures:
        p50 = figures[("this checkout", 1)][0]
        verdict = "PASS" if p50 <= ONE_CLIENT_P50_GOAL_MS else "FAIL"
        print(f"goal: p50 <= {ONE_CLIENT_P50_GOAL_MS:g} ms with 1 client: {p50:.1f}  {verdict}")
    if ("this checkout", MANY_CLIENTS) in figures:
        p99 = figures[("this checkout", MANY_CLIENTS)][1]
        verdict = "PASS" if p99 <= MANY_CLIENTS_P99_GOAL_MS else "FAIL"
        print(
            f"goal: p99 <= {MANY_CLIENTS_P99_GOAL_MS:g} ms with {MANY_CLIENTS} clients: "
            f"{p99:.1f}  {verdict}"
        )
    print("rerun: .venv/bin/python bench/submit.py " + " ".join(sys.argv[1:]))


if __name__ == "__main__":
    sys.exit(main())
