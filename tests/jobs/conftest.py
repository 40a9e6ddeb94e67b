"""Two users the API tests act as and against, and the ASGI app under a real server."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.contrib.auth.models import User

from testkit.services import AsgiServer


@pytest.fixture
def ada() -> User:
    return User.objects.create_user("ada", password="pw-ada-123")


@pytest.fixture
def bob() -> User:
    return User.objects.create_user("bob", password="pw-bob-123")


@pytest.fixture
def web(worker_env: dict[str, str], tmp_path: Path) -> Iterator[AsgiServer]:
    """A uvicorn server of the ASGI app on this test database."""
    env = {**worker_env, "DJANGO_SETTINGS_MODULE": os.environ["DJANGO_SETTINGS_MODULE"]}
    server = AsgiServer(env=env, log_path=tmp_path / "uvicorn.log")
    server.start(timeout=30)
    try:
        yield server
    finally:
        server.stop()
