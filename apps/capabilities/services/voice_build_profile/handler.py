"""voice.build_profile: measure a speaker from a voice sample and keep the result.

check inputs → decode (refusing long files from the header) → trim silence → measure
pitch and speaking rate → store ``reference.wav``, ``profile.json`` and the ``Profile``.

Speaking rate is transcript words per second of *sound*: the 20 ms frames above the
silence threshold of the trimmed clip, so pauses between phrases do not slow it down.
"""

from __future__ import annotations

import json
from typing import Any

from django.conf import settings

from apps.capabilities.context import NodeContext
from apps.capabilities.media import audio
from myspinbot.errors import PermanentError

DEFAULT_SAMPLE_RATE = 22050


def run(ctx: NodeContext) -> dict[str, Any]:
    """Build (or, on a rerun of the node, update) the voice profile; see the module doc."""
    sample_ref, transcript = check_inputs(ctx.inputs)
    rate = int(ctx.params.get("sample_rate", DEFAULT_SAMPLE_RATE))
    min_seconds = float(settings.MYSPINBOT_MIN_VOICE_SECONDS)
    max_seconds = float(settings.MYSPINBOT_MAX_VOICE_SECONDS)
    workdir = ctx.workdir
    assert workdir is not None, "the worker gives every attempt a workdir"

    ctx.progress(0.0, "reading the voice sample")
    path = ctx.artifacts.fetch(sample_ref, workdir, "voice-sample")
    declared = audio.duration_of(path)
    if declared is not None and declared > max_seconds:
        raise PermanentError(
            "too_long",
            f"the voice sample lasts {declared:.1f} s; at most {max_seconds:g} s are accepted",
            details={"duration_seconds": round(declared, 3), "max_seconds": max_seconds},
        )
    samples = audio.decode_audio(path, rate, max_seconds=max_seconds)

    ctx.progress(0.4, "trimming silence")
    clip = audio.trim_silence(samples, rate)
    if clip.size == 0:
        raise PermanentError("silent", "the voice sample is silent")
    duration = clip.size / rate
    if duration < min_seconds:
        raise PermanentError(
            "too_short",
            f"the voice sample holds {duration:.2f} s of sound; at least {min_seconds:g} s "
            "are needed",
            details={"duration_seconds": round(duration, 3), "min_seconds": min_seconds},
        )

    ctx.progress(0.6, "measuring pitch and speaking rate")
    pitch = audio.measure_pitch(clip, rate)
    if pitch is None:
        raise PermanentError("no_pitch", "no voiced speech was found in the voice sample")
    words = audio.count_words(transcript)
    speaking_rate = words / audio.sound_seconds(clip, rate)

    ctx.progress(0.8, "storing the profile")
    reference = ctx.artifacts.save(
        "reference.wav", audio.write_wav(workdir / "reference.wav", clip, rate), "audio/wav"
    )
    measurements: dict[str, Any] = {
        "sample_rate": rate,
        "duration_seconds": round(duration, 3),
        "pitch": pitch.to_json(),
        "speaking_rate_wps": round(speaking_rate, 3),
        "transcript_words": words,
    }
    name = str(ctx.params.get("name", "")).strip()
    document = {
        "kind": "voice",
        "name": name,
        **measurements,
        "transcript": transcript,
        "reference": reference,
    }
    profile_ref = ctx.artifacts.save(
        "profile.json", json.dumps(document, indent=2).encode(), "application/json"
    )
    assert ctx.profiles is not None
    profile_id = ctx.profiles.save("voice", name, {**document, "profile": profile_ref})
    ctx.progress(1.0, "voice profile ready")
    return {
        "profile_id": profile_id,
        "reference": reference,
        "profile": profile_ref,
        **measurements,
    }


def check_inputs(inputs: dict[str, Any]) -> tuple[dict[str, Any], str]:
    """The sample's artifact reference and the transcript, or a ``PermanentError``."""
    sample = inputs.get("voice_sample")
    if not isinstance(sample, dict) or "artifact" not in sample:
        raise PermanentError("missing_input", "the voice_sample input (an upload) is missing")
    transcript = inputs.get("transcript")
    if not isinstance(transcript, str):
        raise PermanentError("missing_input", "the transcript input (text) is missing")
    if audio.count_words(transcript) == 0:
        raise PermanentError("empty_transcript", "the transcript has no words")
    return sample, transcript.strip()
