"""Failed sign-ins are throttled per address and per user name, in the real Redis."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import redis
from django.conf import settings as django_settings
from django.contrib.auth.models import User
from django.test import Client

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def clean_counts() -> Iterator[None]:
    client = redis.Redis.from_url(str(django_settings.REDIS_URL))

    def clear() -> None:
        for key in client.scan_iter("myspinbot:signin:*"):
            client.delete(key)

    clear()
    yield
    clear()
    client.close()


def test_after_the_allowed_failures_sign_in_is_refused_until_the_window_ends(
    settings: Any,
) -> None:
    settings.MYSPINBOT_SIGNIN_MAX_FAILURES = 3
    settings.MYSPINBOT_SIGNIN_WINDOW_SECONDS = 60
    User.objects.create_user("ada", password="right-pw-123", is_staff=True)
    attacker = Client(REMOTE_ADDR="203.0.113.5")

    for _ in range(3):
        wrong = attacker.post("/login/", {"username": "ada", "password": "guess"})
        assert wrong.status_code == 200  # the form again, with its error
    refused = attacker.post("/login/", {"username": "ada", "password": "right-pw-123"})
    assert refused.status_code == 429
    assert 0 < int(refused["Retry-After"]) <= 60
    assert "_auth_user_id" not in attacker.session
    admin = attacker.post("/admin/login/", {"username": "ada", "password": "right-pw-123"})
    assert admin.status_code == 429
    # The name is throttled from any address too; another name from elsewhere is not.
    elsewhere = Client(REMOTE_ADDR="198.51.100.7")
    assert elsewhere.post("/login/", {"username": "ADA ", "password": "x"}).status_code == 429
    User.objects.create_user("bob", password="bob-pw-1234")
    bob = elsewhere.post("/login/", {"username": "bob", "password": "bob-pw-1234"})
    assert bob.status_code == 302


def test_a_successful_sign_in_clears_the_names_count(settings: Any) -> None:
    settings.MYSPINBOT_SIGNIN_MAX_FAILURES = 3
    User.objects.create_user("ada", password="right-pw-123")
    for address in ("203.0.113.5", "203.0.113.6"):
        client = Client(REMOTE_ADDR=address)
        for _ in range(2):
            client.post("/login/", {"username": "ada", "password": "guess"})
        assert (
            client.post("/login/", {"username": "ada", "password": "right-pw-123"}).status_code
            == 302
        )
