"""Two users the API tests act as and against."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import User


@pytest.fixture
def ada() -> User:
    return User.objects.create_user("ada", password="pw-ada-123")


@pytest.fixture
def bob() -> User:
    return User.objects.create_user("bob", password="pw-bob-123")
