"""Settings modules load (or refuse to) in a fresh interpreter, as a process would start."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from testkit.services import REPO

PRODUCTION_ENV = {
    "SECRET_KEY": "x" * 50,
    "ALLOWED_HOSTS": "spin.example.org",
    "DATABASE_URL": "postgres://app:pw@db.internal:5432/myspinbot",
}


def load_settings(module: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    clean = {
        k: v for k, v in os.environ.items() if k not in PRODUCTION_ENV and not k.startswith("S3_")
    }
    code = (
        "import django; django.setup(); from django.conf import settings; "
        "print(settings.DATABASES['default']['ENGINE'])"
    )
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO,
        env={**clean, "DJANGO_SETTINGS_MODULE": module, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_production_starts_with_its_secrets() -> None:
    result = load_settings("myspinbot.settings.production", PRODUCTION_ENV)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "django_prometheus.db.backends.postgresql"


@pytest.mark.parametrize("missing", sorted(PRODUCTION_ENV))
def test_production_refuses_to_start_without(missing: str) -> None:
    env = {k: v for k, v in PRODUCTION_ENV.items() if k != missing}
    result = load_settings("myspinbot.settings.production", env)
    assert result.returncode == 1
    assert f"ImproperlyConfigured: {missing} must be set" in result.stderr


def test_production_refuses_a_short_secret_key() -> None:
    result = load_settings(
        "myspinbot.settings.production", {**PRODUCTION_ENV, "SECRET_KEY": "short"}
    )
    assert result.returncode == 1
    assert "SECRET_KEY must be at least 32 characters in production" in result.stderr


def test_local_defaults_to_sqlite_under_var() -> None:
    result = load_settings("myspinbot.settings.local", {"DATABASE_URL": ""})
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "django_prometheus.db.backends.sqlite3"


def test_visibility_timeout_must_exceed_the_task_time_limit() -> None:
    result = load_settings(
        "myspinbot.settings.local",
        {"CELERY_TASK_TIME_LIMIT": "8000", "CELERY_VISIBILITY_TIMEOUT": "7200"},
    )
    assert result.returncode == 1
    assert (
        "CELERY_VISIBILITY_TIMEOUT (7200s) must exceed CELERY_TASK_TIME_LIMIT (8000s)"
        in result.stderr
    )


def test_a_bad_value_stops_start_up_naming_the_variable() -> None:
    result = load_settings("myspinbot.settings.local", {"REDIS_TIMEOUT_SECONDS": "soon"})
    assert result.returncode == 1
    assert "REDIS_TIMEOUT_SECONDS='soon' is not a number" in result.stderr
