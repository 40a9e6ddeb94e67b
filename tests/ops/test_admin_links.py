"""The admin index links the operators' tools."""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib.auth.models import User
from django.test import Client

pytestmark = pytest.mark.django_db


def test_the_admin_index_links_flower_and_the_metrics(settings: Any) -> None:
    settings.FLOWER_URL = "https://flower.spin.example.com/"
    admin = User.objects.create_superuser("root", password="pw")
    client = Client()
    client.force_login(admin)

    page = client.get("/admin/").content.decode()

    assert (
        '<a href="https://flower.spin.example.com/" target="_blank" rel="noopener">Flower</a>'
        in page
    )
    assert '<a href="/metrics">Metrics</a>' in page
    assert 'id="recent-actions-module"' in page  # the stock sidebar is still there
