"""A valid upload with a hostile file name is stored under a key the server makes; the
name is kept for display only, without folders or control characters."""

from __future__ import annotations

import re

import pytest
from django.contrib.auth.models import User
from django.test import Client

from apps.jobs.models import ApiToken, Artifact
from myspinbot.storage import get_artifact_store
from tests.security.corpus import BOUNDARY
from tests.support.media import png_bytes

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize(
    ("disposition", "shown"),
    [
        ('filename="../../../etc/passwd.png"', "passwd.png"),
        ('filename="..\\\\..\\\\boot.png"', "boot.png"),
        ('filename="a\x00b.png"', "ab.png"),
        ("filename*=UTF-8''a%00b.png", "ab.png"),
        ("filename*=UTF-8''%2e%2e%2f%2e%2e%2fx.png", "x.png"),
        ('filename="/etc/shadow"', "shadow"),
        # bidi override: shown as "photo.exe.png" reversed would read "photo.gnp.exe"
        ("filename*=UTF-8''photo%E2%80%AEgnp.exe", "photognp.exe"),
        ("filename*=UTF-8''a%E2%80%8Bb%E2%81%A6c%EF%BB%BF.png", "abc.png"),  # zero-width, isolate
        ("filename*=UTF-8''line%E2%80%A8break.png", "linebreak.png"),
        ("filename*=UTF-8''e%CC%81.png", "\u00e9.png"),  # NFC: one é
    ],
)
def test_a_hostile_name_never_becomes_a_key(disposition: str, shown: str) -> None:
    user = User.objects.create_user("ada")
    _, token = ApiToken.issue(user)
    head = (
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; {disposition}\r\n'
        "Content-Type: image/png\r\n\r\n"
    )
    body = head.encode() + png_bytes() + f"\r\n--{BOUNDARY}--\r\n".encode()

    response = Client(headers={"Authorization": f"Bearer {token}"}).generic(
        "POST", "/api/uploads", body, content_type=f"multipart/form-data; boundary={BOUNDARY}"
    )

    assert response.status_code == 201, response.content
    artifact = Artifact.objects.get(pk=response.json()["id"])
    assert artifact.name == shown
    assert re.fullmatch(rf"uploads/{user.pk}/[0-9a-f]{{32}}\.png", artifact.key)
    get_artifact_store().delete(artifact.key)
