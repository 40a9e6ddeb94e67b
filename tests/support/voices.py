"""Voice profiles built by the real ``voice.build_profile`` from eSpeak NG speech."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

from apps.capabilities.media.tts_engines import Voice, sample_voice
from apps.capabilities.services.voice_build_profile import handler as build_profile
from testkit.contexts import make_service_run

TRANSCRIPT = "The quick brown fox jumps over the lazy dog, and then it runs away."


def voice_profile(tmp_path: Path, espeak_pitch: int = 40) -> dict[str, Any]:
    """A real voice.build_profile output, from eSpeak speech at ``espeak_pitch`` (0-100)
    of :data:`TRANSCRIPT`."""
    sample = sample_voice(TRANSCRIPT, tmp_path / f"v{espeak_pitch}.wav", Voice(pitch=espeak_pitch))
    run = make_service_run("voice.build_profile")
    run.context.inputs = {
        "voice_sample": run.upload(
            f"v-{uuid.uuid4().hex[:8]}.wav", sample.read_bytes(), "audio/wav"
        ),
        "transcript": TRANSCRIPT,
    }
    return build_profile.run(run.context)
