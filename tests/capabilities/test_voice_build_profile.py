"""voice.build_profile on real audio: synthetic tones and speech from our eSpeak engine."""

from __future__ import annotations

import io
import json
import uuid
import wave
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest

from apps.capabilities.media import audio
from apps.capabilities.media.tts_engines import Voice, sample_voice
from apps.capabilities.registry import get_registry
from apps.capabilities.services.voice_build_profile import handler
from apps.jobs.models import Artifact, Profile
from myspinbot.errors import PermanentError
from tests.support.contexts import ServiceRun, make_service_run

SERVICE = "voice.build_profile"
TRANSCRIPT = "The quick brown fox jumps over the lazy dog, and then it runs away."
MARGIN = round(audio.TRIM_MARGIN_SECONDS * 22050)


def wav(samples: np.ndarray, rate: int) -> bytes:
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes((np.clip(samples, -1, 1) * 32767).astype("<i2").tobytes())
    return buffer.getvalue()


def tone(frequency: float, seconds: float, rate: int = 22050) -> np.ndarray:
    return (0.5 * np.sin(2 * np.pi * frequency * np.arange(round(seconds * rate)) / rate)).astype(
        np.float32
    )


def speech(tmp_path: Path, pitch: int) -> bytes:
    return sample_voice(
        TRANSCRIPT, tmp_path / f"speech-{pitch}.wav", Voice(pitch=pitch)
    ).read_bytes()


def build(
    data: bytes,
    transcript: str = TRANSCRIPT,
    params: dict[str, Any] | None = None,
    content_type: str = "audio/wav",
) -> tuple[dict[str, Any], ServiceRun]:
    run = make_service_run(SERVICE, params or {})
    run.context.inputs = {
        "voice_sample": run.upload(f"sample-{uuid.uuid4().hex[:8]}", data, content_type),
        "transcript": transcript,
    }
    return handler.run(run.context), run


def error_of(
    data: bytes, transcript: str = TRANSCRIPT, content_type: str = "audio/wav"
) -> PermanentError:
    with pytest.raises(PermanentError) as raised:
        build(data, transcript, content_type=content_type)
    return raised.value


# --- declaration -------------------------------------------------------------------


def test_declaration_is_registered() -> None:
    capability = get_registry().get(SERVICE)

    assert (capability.queue, capability.version) == ("cpu", "1")
    assert (capability.cacheable, capability.timeout_seconds, capability.max_attempts) == (
        True,
        600,
        2,
    )
    assert capability.validate_params({"name": "Me", "sample_rate": 24000}) == []
    assert capability.validate_params({"sample_rate": 8000}) != []
    assert capability.validate_params({"colour": "blue"}) != []


# --- building a profile --------------------------------------------------------------


@pytest.mark.django_db
def test_profile_from_a_padded_tone_measures_pitch_rate_and_trims(tmp_path: Path) -> None:
    # Given 1.5 s of a 180 Hz tone between 0.5 s silences, at 22050 Hz
    silence = np.zeros(11025, dtype=np.float32)
    data = wav(np.concatenate([silence, tone(180.0, 1.5), silence]), 22050)

    # When
    output, run = build(data, "one two three", {"name": "Tone"})

    # Then the clip is the tone plus the trim margins, and the rate 3 words / 1.5 s
    assert output["sample_rate"] == 22050
    assert output["duration_seconds"] == round((33075 + 2 * MARGIN) / 22050, 3)
    assert output["transcript_words"] == 3
    # (sound is counted in 20 ms frames: 1.5 s of tone may straddle one frame more)
    assert output["speaking_rate_wps"] == pytest.approx(2.0, abs=0.03)
    assert output["pitch"]["median_hz"] == pytest.approx(180.0, rel=0.05)
    assert output["pitch"]["p05_hz"] == pytest.approx(180.0, rel=0.05)
    assert output["pitch"]["p95_hz"] == pytest.approx(180.0, rel=0.05)

    # and the Profile, reference.wav and profile.json are stored for the job's owner
    profile = Profile.objects.get()
    assert str(profile.pk) == output["profile_id"]
    assert (profile.owner, profile.kind, profile.name) == (run.owner, "voice", "Tone")
    assert (profile.job_id, profile.node_id) == (run.job.pk, "n")
    with wave.open(io.BytesIO(run.read(output["reference"]))) as reference:
        assert (reference.getnchannels(), reference.getsampwidth()) == (1, 2)
        assert reference.getframerate() == 22050
        assert reference.getnframes() == 33075 + 2 * MARGIN
    document = json.loads(run.read(output["profile"]))
    assert document == {
        "kind": "voice",
        "name": "Tone",
        "sample_rate": 22050,
        "duration_seconds": output["duration_seconds"],
        "pitch": output["pitch"],
        "speaking_rate_wps": output["speaking_rate_wps"],
        "transcript_words": 3,
        "transcript": "one two three",
        "reference": output["reference"],
    }
    assert profile.data == {**document, "profile": output["profile"]}
    stored = Artifact.objects.filter(job=run.job).order_by("name")
    assert [(a.name, a.content_type) for a in stored] == [
        ("profile.json", "application/json"),
        ("reference.wav", "audio/wav"),
    ]
    assert run.progress.reports[-1] == (1.0, "voice profile ready")


@pytest.mark.django_db
def test_profile_from_real_speech(tmp_path: Path) -> None:
    output, _ = build(speech(tmp_path, 50))

    assert output["transcript_words"] == 14
    assert 2.0 < output["speaking_rate_wps"] < 5.0  # eSpeak's 175 wpm, pauses left out
    pitch = output["pitch"]
    assert pitch["p05_hz"] < pitch["median_hz"] < pitch["p95_hz"]
    assert 80.0 < pitch["median_hz"] < 130.0  # eSpeak's default male voice


@pytest.mark.django_db
def test_a_lower_voice_gets_a_lower_profile_pitch(tmp_path: Path) -> None:
    low, _ = build(speech(tmp_path, 20))
    high, _ = build(speech(tmp_path, 90))

    assert low["pitch"]["median_hz"] * 1.5 < high["pitch"]["median_hz"]


@pytest.mark.django_db
def test_sample_rate_param_sets_the_reference_rate() -> None:
    output, run = build(wav(tone(120.0, 1.2, rate=44100), 44100), params={"sample_rate": 16000})

    assert output["sample_rate"] == 16000
    assert output["duration_seconds"] == pytest.approx(1.2, abs=0.001)
    assert output["pitch"]["median_hz"] == pytest.approx(120.0, rel=0.05)
    with wave.open(io.BytesIO(run.read(output["reference"]))) as reference:
        assert reference.getframerate() == 16000


@pytest.mark.django_db
def test_an_mp3_upload_is_decoded(tmp_path: Path) -> None:
    path = tmp_path / "sample.mp3"
    with av.open(str(path), "w", format="mp3") as out:
        stream = out.add_stream("libmp3lame", rate=44100, layout="mono")
        pcm = (tone(150.0, 2.0, rate=44100) * 32767).astype(np.int16).reshape(1, -1)
        frame = av.AudioFrame.from_ndarray(pcm, format="s16", layout="mono")
        frame.sample_rate = 44100
        for packet in stream.encode(frame):
            out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)

    output, _ = build(path.read_bytes(), "hello there", content_type="audio/mpeg")

    assert output["duration_seconds"] == pytest.approx(2.0, abs=0.06)
    assert output["pitch"]["median_hz"] == pytest.approx(150.0, rel=0.05)


@pytest.mark.django_db
def test_rerunning_the_node_updates_its_profile() -> None:
    data = wav(tone(150.0, 1.2), 22050)
    first, run = build(data, "one two")

    run.context.inputs["transcript"] = "one two three four"
    second = handler.run(run.context)

    assert second["profile_id"] == first["profile_id"]
    assert Profile.objects.count() == 1
    assert Profile.objects.get().data["transcript_words"] == 4


# --- bad input ---------------------------------------------------------------------


@pytest.mark.django_db
def test_an_upload_that_is_not_audio_is_bad_audio() -> None:
    error = error_of(b"Dear diary, today I recorded nothing.\n" * 30, content_type="text/plain")

    assert error.code == "bad_audio"


@pytest.mark.django_db
def test_silence_is_silent() -> None:
    assert error_of(wav(np.zeros(4410, dtype=np.float32), 22050)).code == "silent"


@pytest.mark.django_db
def test_less_sound_than_the_minimum_is_too_short(settings: Any) -> None:
    settings.MYSPINBOT_MIN_VOICE_SECONDS = 1.0
    silence = np.zeros(22050, dtype=np.float32)

    error = error_of(wav(np.concatenate([silence, tone(200.0, 0.5), silence]), 22050))

    assert error.code == "too_short"
    assert error.details == {"duration_seconds": 0.6, "min_seconds": 1.0}


@pytest.mark.django_db
def test_a_sample_longer_than_the_maximum_is_too_long(settings: Any) -> None:
    settings.MYSPINBOT_MAX_VOICE_SECONDS = 2.0

    error = error_of(wav(tone(200.0, 3.0), 22050))

    assert error.code == "too_long"
    assert error.details == {"duration_seconds": 3.0, "max_seconds": 2.0}


@pytest.mark.django_db
@pytest.mark.parametrize("transcript", ["", "   \n\t", " ... — "])
def test_a_transcript_without_words_is_refused(transcript: str) -> None:
    assert error_of(wav(tone(200.0, 1.5), 22050), transcript).code == "empty_transcript"


@pytest.mark.django_db
def test_noise_without_voice_has_no_pitch() -> None:
    noise = np.random.default_rng(1).standard_normal(2 * 22050).astype(np.float32) * 0.2

    assert error_of(wav(noise, 22050)).code == "no_pitch"


@pytest.mark.django_db
@pytest.mark.parametrize(
    "inputs",
    [{}, {"transcript": "hello"}, {"voice_sample": "sample.wav", "transcript": "hello"}],
    ids=["nothing", "no-sample", "sample-not-a-reference"],
)
def test_missing_inputs_are_refused(inputs: dict[str, Any]) -> None:
    run = make_service_run(SERVICE)
    run.context.inputs = inputs

    with pytest.raises(PermanentError) as raised:
        handler.run(run.context)

    assert raised.value.code == "missing_input"


@pytest.mark.django_db
def test_a_missing_transcript_is_refused() -> None:
    run = make_service_run(SERVICE)
    run.context.inputs = {
        "voice_sample": run.upload("a.wav", wav(tone(200, 1.5), 22050), "audio/wav")
    }

    with pytest.raises(PermanentError) as raised:
        handler.run(run.context)

    assert raised.value.code == "missing_input"
    assert Profile.objects.count() == 0
