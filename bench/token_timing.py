"""Does the time to refuse a token depend on how much of a real token it gets right?

    .venv/bin/python bench/token_timing.py [--rounds 20000] [--tokens 1000]

Times ``apps.jobs.auth.user_for_token`` (sha256, the indexed lookup in PostgreSQL,
``hmac.compare_digest``) for guesses that share nothing with a real token, share all
but its last character, and share all but its first, interleaved round by round so
drift hits every kind alike, and prints the medians and their ratios. Ratios near
1.00 mean no signal; the figures are wall-clock and noisy on a shared machine, so they
are a bench, not a test (``tests/security/test_tokens.py`` checks the property itself:
only digests are compared).

Uses its own database (``BENCH_DATABASE_URL``, default ``myspinbot_bench``).
"""

from __future__ import annotations

import argparse
import shlex
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # run as a script: make the project importable
    sys.path.insert(0, str(REPO))

from bench import common  # noqa: E402

DATABASE_URL, REDIS_URL = common.DATABASE_URL, common.REDIS_URL


def median_ns(samples: list[int]) -> float:
    return float(statistics.median(samples))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=20000, help="timed calls per kind")
    parser.add_argument("--tokens", type=int, default=1000, help="other tokens in the table")
    args = parser.parse_args()

    common.configure_environment(
        database_url=DATABASE_URL, redis_url=REDIS_URL, settings="myspinbot.settings.test"
    )
    common.ensure_database(DATABASE_URL)
    import django

    django.setup()
    from django.contrib.auth.models import User
    from django.core.management import call_command

    from apps.jobs.auth import user_for_token
    from apps.jobs.models import ApiToken

    call_command("migrate", verbosity=0)
    user, _ = User.objects.get_or_create(username="bench-token-timing")
    ApiToken.objects.filter(user=user).delete()
    ApiToken.objects.bulk_create(
        ApiToken(user=user, token_hash=ApiToken.hash(ApiToken.generate()))
        for _ in range(args.tokens)
    )
    _, token = ApiToken.issue(user, "bench")
    flip = {"A": "B"}.get(token[-1], "A")
    guesses = {
        "nothing right": lambda: ApiToken.generate(),
        "all but last": lambda: token[:-1] + flip,
        "all but first": lambda: ApiToken.PREFIX + ("B" if token[4] != "B" else "C") + token[5:],
    }

    def timed(call: object, value: str) -> int:
        started = time.perf_counter_ns()
        call(value)  # type: ignore[operator]
        return time.perf_counter_ns() - started

    lookup: dict[str, list[int]] = {name: [] for name in guesses}
    for _ in range(200):  # warm up connections, caches and the index
        for make in guesses.values():
            user_for_token(make())
    for _ in range(args.rounds):
        for name, make in guesses.items():
            lookup[name].append(timed(user_for_token, make()))

    base = median_ns(lookup["nothing right"])
    print(f"user_for_token, {args.rounds} calls per kind, {args.tokens + 1} tokens stored")
    for name, samples in lookup.items():
        value = median_ns(samples)
        print(f"  {name:<14} median {value / 1000:8.1f} us   ratio {value / base:5.3f}")
    ApiToken.objects.filter(user=user).delete()
    rerun = ".venv/bin/python bench/token_timing.py " + shlex.join(sys.argv[1:])
    print(f"rerun: {rerun.strip()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
