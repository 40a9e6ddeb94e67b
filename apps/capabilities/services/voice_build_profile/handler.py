"""voice.build_profile: measure a speaker from a voice sample and keep the result.

check inputs → decode (refusing long files from the header) → refuse clipped audio →
trim silence → refuse a clip too short, mostly silent or not speech → measure pitch,
speaking rate and timbre (``media.timbre``: the long-term spectral envelope) → level
the reference to -16 LUFS → store ``reference.wav``, ``profile.json`` and the
``Profile``. A refused clip stores nothing.

Speaking rate is transcript words per second of *sound*: the 20 ms frames above the
silence threshold of the trimmed clip, so pauses between phrases do not slow it down.
"""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
from django.conf import settings

from apps.capabilities.context import NodeContext
from apps.capabilities.media import audio, timbre
from myspinbot.errors import PermanentError

DEFAULT_SAMPLE_RATE = 22050

# A voice sample is refused (``PermanentError``, nothing stored) when it is:
# - clipped (``voice_clipped``): more than 0.5 % of its samples at full scale, or any run of
#   3 or more consecutive samples there. A loud but clean recording touches full scale
#   at single peaks at most; clipping flattens whole wave crests.
FULL_SCALE = 0.999
MAX_CLIPPED_FRACTION = 0.005
CLIPPED_RUN_SAMPLES = 3
# - too short (``voice_too_short``): less than ``MYSPINBOT_MIN_VOICE_SECONDS`` once leading
#   and trailing silence are trimmed.
# - mostly silent (``voice_silent``): fewer than 30 % of the trimmed clip's 20 ms frames hold
#   sound (``audio.sound_frames``: above -60 dBFS and within 35 dB of the loudest frame).
MIN_ACTIVE_FRACTION = 0.30
# - not speech (``voice_not_speech``): speech is voiced for much of its sound, moves its
#   pitch (intonation), and has a peaked spectrum (harmonics and formants). Measured on
#   the trimmed clip: Praat voicing per second of sound, the 5th-95th percentile F0 span,
#   and the median spectral flatness of the sounding frames. Spoken English measures
#   0.6-0.85 voiced, 3-30 semitones and < 0.01 flatness; a steady tone is voiced with
#   a 0-semitone span, white noise is unvoiced with a flatness near 0.56.
MIN_VOICED_FRACTION = 0.20
MIN_PITCH_SPAN_SEMITONES = 1.5
MAX_SPECTRAL_FLATNESS = 0.30
FLATNESS_FRAME_SECONDS = 0.046


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
    check_not_clipped(samples)

    ctx.progress(0.4, "trimming silence")
    clip = audio.trim_silence(samples, rate)
    pitch = check_voice(clip, rate, min_seconds)
    duration = clip.size / rate

    ctx.progress(0.6, "measuring the speaking rate")
    words = audio.count_words(transcript)
    speaking_rate = words / audio.sound_seconds(clip, rate)
    ctx.progress(0.7, "describing the timbre")
    # (None only if WORLD hears no voicing where Praat did: tts.speak then says so)
    described = timbre.describe(clip, rate)

    ctx.progress(0.8, "storing the profile")
    levelled, loudness = audio.normalize_loudness(clip, rate)
    reference = ctx.artifacts.save(
        "reference.wav", audio.write_wav(workdir / "reference.wav", levelled, rate), "audio/wav"
    )
    measurements: dict[str, Any] = {
        "sample_rate": rate,
        "duration_seconds": round(duration, 3),
        "loudness_lufs": None if loudness.lufs is None else round(loudness.lufs, 2),
        "pitch": pitch.to_json(),
        "speaking_rate_wps": round(speaking_rate, 3),
        "transcript_words": words,
        "timbre": None if described is None else described.to_json(),
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


def check_not_clipped(samples: audio.Samples) -> None:
    """Refuse (``voice_clipped``) a sample with flattened crests; see ``FULL_SCALE``."""
    full = np.abs(samples) >= FULL_SCALE
    fraction = float(np.count_nonzero(full)) / max(1, samples.size)
    run = CLIPPED_RUN_SAMPLES
    runs = np.ones(max(0, full.size - run + 1), dtype=bool)
    for offset in range(run):
        runs &= full[offset : full.size - run + 1 + offset]
    if fraction > MAX_CLIPPED_FRACTION or runs.any():
        raise PermanentError(
            "voice_clipped",
            f"the voice sample is clipped ({fraction:.1%} of its samples at full scale): "
            "record it again with the input level lower",
            details={
                "clipped_fraction": round(fraction, 4),
                "max_clipped_fraction": MAX_CLIPPED_FRACTION,
            },
        )


def check_voice(clip: audio.Samples, rate: int, min_seconds: float) -> audio.PitchStats:
    """The pitch of a trimmed clip, or a refusal when it is too short, mostly silent or
    not speech (see the thresholds above), with the code and the measurement that failed."""
    active = audio.sound_frames(clip, rate)
    if clip.size == 0:
        raise PermanentError(
            "voice_silent",
            "the voice sample is silent",
            details={"active_fraction": 0.0, "min_active_fraction": MIN_ACTIVE_FRACTION},
        )
    duration = clip.size / rate
    if duration < min_seconds:
        raise PermanentError(
            "voice_too_short",
            f"the voice sample holds {duration:.1f} s of speech once silence is trimmed; "
            f"at least {min_seconds:g} s are needed",
            details={"duration_seconds": round(duration, 3), "min_seconds": min_seconds},
        )
    active_fraction = float(np.mean(active))
    if active_fraction < MIN_ACTIVE_FRACTION:
        raise PermanentError(
            "voice_silent",
            f"the voice sample is mostly silence: {active_fraction:.0%} of it is sound, "
            f"at least {MIN_ACTIVE_FRACTION:.0%} is needed",
            details={
                "active_fraction": round(active_fraction, 3),
                "min_active_fraction": MIN_ACTIVE_FRACTION,
            },
        )
    pitch = audio.measure_pitch(clip, rate)
    voiced = 0.0 if pitch is None else pitch.voiced_seconds / audio.sound_seconds(clip, rate)
    span = 0.0 if pitch is None else 12 * math.log2(pitch.p95_hz / pitch.p05_hz)
    flatness = spectral_flatness(clip, rate, active)
    measured = {
        "voiced_fraction": round(voiced, 3),
        "pitch_span_semitones": round(span, 2),
        "spectral_flatness": round(flatness, 3),
    }
    reasons = []
    if voiced < MIN_VOICED_FRACTION:
        reasons.append(f"{voiced:.0%} of it is voiced (speech: at least {MIN_VOICED_FRACTION:.0%})")
    if voiced > 0 and span < MIN_PITCH_SPAN_SEMITONES:
        reasons.append(
            f"its pitch moves over {span:.1f} semitones (speech: at least "
            f"{MIN_PITCH_SPAN_SEMITONES:g})"
        )
    if flatness > MAX_SPECTRAL_FLATNESS:
        reasons.append(
            f"its spectrum is noise-like (flatness {flatness:.2f}, speech: at most "
            f"{MAX_SPECTRAL_FLATNESS:g})"
        )
    if reasons:
        raise PermanentError(
            "voice_not_speech",
            "the voice sample does not sound like speech: " + "; ".join(reasons),
            details=measured,
        )
    assert pitch is not None, "a clip without voiced frames is refused above"
    return pitch


def spectral_flatness(
    clip: audio.Samples, rate: int, active: np.ndarray[Any, np.dtype[np.bool_]]
) -> float:
    """Median Wiener entropy (geometric over arithmetic mean of the power spectrum) of
    the Hann-windowed ``FLATNESS_FRAME_SECONDS`` frames that start in a sounding 20 ms
    frame: near 0 for tones and voiced speech, about 0.56 for white noise."""
    size = round(FLATNESS_FRAME_SECONDS * rate)
    hop = round(audio.FRAME_SECONDS * rate)
    starts = [i * hop for i in np.flatnonzero(active) if i * hop + size <= clip.size]
    if not starts:
        return 0.0
    frames = np.stack([clip[start : start + size] for start in starts]).astype(np.float64)
    power = np.abs(np.fft.rfft(frames * np.hanning(size), axis=1)) ** 2 + 1e-20
    flatness = np.exp(np.mean(np.log(power), axis=1)) / np.mean(power, axis=1)
    return float(np.median(flatness))
