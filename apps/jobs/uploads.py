"""Accepting user uploads: the kind is sniffed from the bytes (the client's content
type and file name are not trusted), checked against the limits in settings, images
are decoded to prove they are images (and not decompression bombs), and audio is
probed to prove it is allowed, bounded audio (a sniffed ``RIFF....WAVE`` can be 20
bytes of nothing, and an ``ID3`` tag can front an SDP description that FFmpeg would
open as RTP streams): see :mod:`apps.capabilities.media.probe`."""

from __future__ import annotations

import re
import shutil
import tempfile
import unicodedata
import uuid
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import filetype
from django.conf import settings
from django.contrib.auth.models import User
from django.db import transaction

from apps.capabilities.media import probe
from apps.jobs import quotas
from apps.jobs.models import Artifact
from myspinbot import metrics
from myspinbot.errors import PermanentError, Rejected
from myspinbot.storage import get_artifact_store

SNIFF_BYTES = 8192


@dataclass(frozen=True)
class Sniffed:
    kind: str
    content_type: str
    extension: str


def sniff(head: bytes) -> Sniffed:
    """The accepted kind of a file from its first bytes, or ``Rejected`` (415)."""
    guess = filetype.guess(head)
    if guess is not None:
        for kind, rules in settings.MYSPINBOT_UPLOAD_KINDS.items():
            if guess.mime in rules["types"]:
                return Sniffed(kind, guess.mime, guess.extension)
    allowed = sorted(
        t for rules in settings.MYSPINBOT_UPLOAD_KINDS.values() for t in rules["types"]
    )
    found = guess.mime if guess is not None else "unrecognised bytes"
    raise Rejected(
        415, "unsupported_media_type", f"{found} is not accepted; allowed: {', '.join(allowed)}"
    )


def _check_image(stream: IO[bytes]) -> None:
    from PIL import Image

    stream.seek(0)
    limit = settings.MYSPINBOT_MAX_IMAGE_PIXELS
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with probe.open_image(stream) as image:
                width, height = image.size
                if width * height > limit:
                    raise Rejected(
                        413, "image_too_large", f"image is {width}x{height}; at most {limit} pixels"
                    )
                image.verify()
    except Rejected:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise Rejected(413, "image_too_large", f"image has more than {limit} pixels") from None
    except Exception as error:
        raise Rejected(422, "corrupt_file", f"image cannot be decoded: {error}") from None
    finally:
        stream.seek(0)


# What the probe's refusals are called at the API: (status, code).
AUDIO_REFUSALS = {
    "bad_audio": (422, "corrupt_file"),
    "unsupported_audio": (415, "unsupported_media_type"),
    "audio_too_long": (413, "audio_too_long"),
    "media_timeout": (422, "media_timeout"),
}


def _check_audio(stream: IO[bytes], content_type: str) -> None:
    """Probe the audio from a file of our own naming, its demuxer forced by the sniffed
    type (the client's file name never reaches FFmpeg)."""
    stream.seek(0)
    try:
        with tempfile.TemporaryDirectory(prefix="msb-probe-") as folder:
            path = Path(folder) / "upload"
            with path.open("wb") as copy:
                shutil.copyfileobj(stream, copy, 1024 * 1024)
            probe.probe_audio(path, content_type)
    except PermanentError as error:
        status, code = AUDIO_REFUSALS[error.code]
        raise Rejected(status, code, error.message[:300], error.details) from None
    finally:
        stream.seek(0)


def clean_name(name: str) -> str:
    """A display name without folders, control or format characters (never used as a
    key): no bidi overrides or isolates that would show ``gpj.exe`` as ``exe.jpg``, no
    zero-width characters that make two names look alike, no line separators."""
    base = re.split(r"[\\/]", unicodedata.normalize("NFC", name or ""))[-1]
    base = "".join(
        char for char in base if unicodedata.category(char) not in ("Cc", "Cf", "Zl", "Zp")
    ).strip()
    return base[:200] or "upload"


def accept_upload(owner: User, stream: IO[bytes], size: int, name: str) -> Artifact:
    """Check and store an uploaded file as the owner's artifact.

    Nothing is stored unless every check passes; if recording the artifact fails
    after the bytes were stored, the object is deleted again.
    """
    stream.seek(0)
    sniffed = sniff(stream.read(SNIFF_BYTES))
    stream.seek(0)
    limit = settings.MYSPINBOT_UPLOAD_KINDS[sniffed.kind]["max_bytes"]
    if size > limit:
        raise Rejected(
            413, "too_large", f"{sniffed.kind} uploads are limited to {limit} bytes; got {size}"
        )
    if size == 0:
        raise Rejected(422, "empty_file", "the file is empty")
    if sniffed.kind == "image":
        _check_image(stream)
    elif sniffed.kind == "audio":
        _check_audio(stream, sniffed.content_type)
    # (checked before the bytes are stored, and again under the user's lock before the
    # row is written: a concurrent upload may have taken the room meanwhile)
    quotas.check_upload(owner, size)
    store = get_artifact_store()
    key = f"{quotas.UPLOAD_PREFIX}{owner.pk}/{uuid.uuid4().hex}.{sniffed.extension}"
    stored = store.save_file(key, stream, sniffed.content_type)
    try:
        with transaction.atomic():
            quotas.lock_user(owner)
            quotas.check_upload(owner, stored.size_bytes)
            metrics.artifact_stored("upload", stored.size_bytes)
            return Artifact.objects.create(
                owner=owner,
                name=clean_name(name),
                bucket=stored.bucket,
                key=stored.key,
                size_bytes=stored.size_bytes,
                sha256=stored.sha256,
                content_type=stored.content_type,
            )
    except BaseException:
        store.delete(key)
        raise
