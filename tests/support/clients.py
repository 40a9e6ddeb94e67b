"""A test client signed in as a user, by an API token of their own."""

from __future__ import annotations

from django.contrib.auth.models import User
from django.test import Client

from apps.jobs.models import ApiToken


def api_client(user: User) -> Client:
    _, token = ApiToken.issue(user, "test")
    return Client(headers={"Authorization": f"Bearer {token}"})
