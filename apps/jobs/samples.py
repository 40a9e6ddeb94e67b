"""The sample inputs: a real portrait and a spoken voice clip made here (nothing is
downloaded), for ``manage.py spin --sample`` and for ``POST /api/train`` with the
original system's empty body.

The portrait is scikit-image's ``astronaut`` (Eileen Collins, NASA, public domain), which
ships inside the scikit-image wheel; the voice clip is :data:`SAMPLE_TEXT` spoken by
eSpeak NG. Both are made once per process folder and uploaded as the caller's own
uploads, once per caller: a caller's earlier sample upload with the same bytes is used
again.
"""

from __future__ import annotations

import hashlib
import threading
from pathlib import Path
from typing import Any

from django.conf import settings
from django.contrib.auth.models import User

from apps.jobs.models import Artifact
from apps.jobs.uploads import accept_upload

SAMPLE_TEXT = (
    "Hello! This is a short sample of my voice, recorded so that the narrator "
    "of my videos sounds a little more like me."
)
SAMPLE_TOPIC = "why otters hold hands while they sleep"
SAMPLE_TEMPLATE = "quick"
PORTRAIT_NAME = "sample-portrait.png"
VOICE_NAME = "sample-voice.wav"
# What a response says the default job ran on.
DESCRIPTION = {
    "template": SAMPLE_TEMPLATE,
    "topic": SAMPLE_TOPIC,
    "portrait": "scikit-image's astronaut photograph (Eileen Collins, NASA, public domain)",
    "voice_sample": "a clip of eSpeak NG speaking the transcript",
    "transcript": SAMPLE_TEXT,
}

_lock = threading.Lock()


def make_sample(folder: Path) -> tuple[Path, Path, str]:
    """Write the sample portrait and voice clip into ``folder`` (when they are not there
    yet) and return their paths and the clip's transcript."""
    folder.mkdir(parents=True, exist_ok=True)
    portrait, voice = folder / "portrait.png", folder / "voice.wav"
    with _lock:
        if not portrait.is_file():
            from PIL import Image
            from skimage import data

            Image.fromarray(data.astronaut()).save(portrait)
        if not voice.is_file():
            from apps.capabilities.media.tts_engines import sample_voice

            sample_voice(SAMPLE_TEXT, voice)
    return portrait, voice, SAMPLE_TEXT


def sample_inputs(owner: User) -> dict[str, Any]:
    """The ``quick`` template's inputs on the samples, as ``owner``'s uploads:
    ``{"photos": [{"artifact"}], "voice_sample": {"artifact"}, "transcript"}``.

    Raises ``Rejected`` as an upload does (the caller's storage quota is full)."""
    portrait, voice, transcript = make_sample(Path(settings.VAR_DIR) / "sample")
    photo = _uploaded(owner, portrait, PORTRAIT_NAME)
    clip = _uploaded(owner, voice, VOICE_NAME)
    return {
        "photos": [{"artifact": str(photo.pk)}],
        "voice_sample": {"artifact": str(clip.pk)},
        "transcript": transcript,
    }


def _uploaded(owner: User, path: Path, name: str) -> Artifact:
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    earlier = Artifact.objects.filter(
        owner=owner, job__isnull=True, name=name, sha256=digest
    ).first()
    if earlier is not None:
        return earlier
    with path.open("rb") as handle:
        return accept_upload(owner, handle, path.stat().st_size, name)
