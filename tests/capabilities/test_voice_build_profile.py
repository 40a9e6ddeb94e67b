"""voice.build_profile on real audio: speech from our Piper and eSpeak engines, and bad
clips (clipped, short, silent, tones, noise) built here with numpy."""

from __future__ import annotations

import io
import json
import uuid
import wave
from functools import cache
from pathlib import Path
from typing import Any

import av
import numpy as np
import pyloudnorm
import pytest
from scipy.signal import resample_poly

from apps.capabilities.media import audio
from apps.capabilities.media.tts_engines import Voice, get_engine, sample_voice
from apps.capabilities.registry import get_registry
from apps.capabilities.services.voice_build_profile import handler
from apps.jobs.models import Artifact, Profile
from myspinbot.errors import PermanentError
from testkit.contexts import ServiceRun, make_service_run
from testkit.wav import pcm16_wav

SERVICE = "voice.build_profile"
TRANSCRIPT = "The quick brown fox jumps over the lazy dog, and then it runs away."
RATE = 22050


def wav(samples: np.ndarray, rate: int = RATE) -> bytes:
    return pcm16_wav(samples, rate)


def samples_of(data: bytes) -> np.ndarray:
    with wave.open(io.BytesIO(data)) as read:
        pcm = np.frombuffer(read.readframes(read.getnframes()), dtype="<i2")
    return (pcm / 32768.0).astype(np.float32)


def tone(frequency: float, seconds: float, rate: int = RATE) -> np.ndarray:
    return (0.5 * np.sin(2 * np.pi * frequency * np.arange(round(seconds * rate)) / rate)).astype(
        np.float32
    )


def silence(seconds: float) -> np.ndarray:
    return np.zeros(round(seconds * RATE), dtype=np.float32)


@cache
def _piper(text: str) -> np.ndarray:
    samples, rate = get_engine("piper").synthesize(text, Voice())
    assert rate == RATE
    return samples


def piper(text: str = TRANSCRIPT) -> np.ndarray:
    """The project's neural voice saying ``text`` (about 3.9 s for the transcript)."""
    return _piper(text).copy()


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


def refused(data: bytes) -> PermanentError:
    """The refusal of ``data``, checking that nothing was stored for it."""
    error = error_of(data)
    assert Profile.objects.count() == 0
    assert Artifact.objects.filter(name__in=["reference.wav", "profile.json"]).count() == 0
    return error


def measured_lufs(samples: np.ndarray) -> float:
    return float(pyloudnorm.Meter(RATE).integrated_loudness(samples.astype(np.float64)))


def measured_dbtp(samples: np.ndarray) -> float:
    return float(20 * np.log10(np.max(np.abs(resample_poly(samples.astype(np.float64), 4, 1)))))


# --- declaration -------------------------------------------------------------------


def test_declaration_is_registered() -> None:
    capability = get_registry().get(SERVICE)

    assert (capability.queue, capability.version) == ("cpu", "4")
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
def test_profile_from_padded_speech_measures_pitch_rate_levels_and_trims() -> None:
    # Given the neural voice between 0.5 s silences, at 22050 Hz
    spoken = piper()
    data = wav(np.concatenate([silence(0.5), spoken, silence(0.5)]))

    # When
    output, run = build(data, params={"name": "Joe"})

    # Then the clip is the trimmed upload: the padding is gone but for the trim margins
    clip = audio.trim_silence(samples_of(data), RATE)
    assert clip.size <= spoken.size + 2 * round(audio.TRIM_MARGIN_SECONDS * RATE)
    assert output["sample_rate"] == RATE
    assert output["duration_seconds"] == round(clip.size / RATE, 3)
    assert output["transcript_words"] == 14
    assert output["speaking_rate_wps"] == pytest.approx(
        14 / audio.sound_seconds(clip, RATE), abs=0.01
    )
    pitch = output["pitch"]
    assert pitch["p05_hz"] < pitch["median_hz"] < pitch["p95_hz"]
    assert 70.0 < pitch["median_hz"] < 160.0  # the neural male voice

    # and reference.wav is levelled to -16 LUFS under -1 dBTP (measured here)
    with wave.open(io.BytesIO(run.read(output["reference"]))) as reference:
        assert (reference.getnchannels(), reference.getsampwidth()) == (1, 2)
        assert reference.getframerate() == RATE
        assert reference.getnframes() == clip.size
    levelled = samples_of(run.read(output["reference"]))
    assert measured_lufs(levelled) == pytest.approx(-16.0, abs=0.5)
    assert measured_dbtp(levelled) <= -1.0
    assert output["loudness_lufs"] == pytest.approx(measured_lufs(levelled), abs=0.05)

    # and the Profile, reference.wav and profile.json are stored for the job's owner
    profile = Profile.objects.get()
    assert str(profile.pk) == output["profile_id"]
    assert (profile.owner, profile.kind, profile.name) == (run.owner, "voice", "Joe")
    assert (profile.job_id, profile.node_id) == (run.job.pk, "n")
    document = json.loads(run.read(output["profile"]))
    assert document == {
        "kind": "voice",
        "name": "Joe",
        "sample_rate": RATE,
        "duration_seconds": output["duration_seconds"],
        "loudness_lufs": output["loudness_lufs"],
        "pitch": output["pitch"],
        "speaking_rate_wps": output["speaking_rate_wps"],
        "transcript_words": 14,
        "timbre": output["timbre"],
        "transcript": TRANSCRIPT,
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
def test_profile_stores_the_speakers_long_term_envelope() -> None:
    output, run = build(wav(piper()))

    described = output["timbre"]
    assert described["method"] == "world-cheaptrick-mel40"
    assert len(described["grid_hz"]) == len(described["envelope_db"]) == 40
    assert (described["grid_hz"][0], described["grid_hz"][-1]) == (100.0, 7600.0)
    assert sum(described["envelope_db"]) == pytest.approx(0.0, abs=0.05)
    # voiced 5 ms frames: most of the 3.9 s of speech
    assert 300 < described["voiced_frames"] < 780
    # and it is kept with the profile, for tts.speak to conform to
    assert Profile.objects.get().data["timbre"] == described
    assert json.loads(run.read(output["profile"]))["timbre"] == described


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
    at_22050, _ = build(wav(piper()))
    output, run = build(wav(piper()), params={"sample_rate": 16000})

    assert output["sample_rate"] == 16000
    assert output["duration_seconds"] == pytest.approx(at_22050["duration_seconds"], abs=0.02)
    assert output["pitch"]["median_hz"] == pytest.approx(at_22050["pitch"]["median_hz"], rel=0.05)
    with wave.open(io.BytesIO(run.read(output["reference"]))) as reference:
        assert reference.getframerate() == 16000


@pytest.mark.django_db
def test_an_mp3_upload_is_decoded(tmp_path: Path) -> None:
    spoken = piper()
    path = tmp_path / "sample.mp3"
    with av.open(str(path), "w", format="mp3") as out:
        stream = out.add_stream("libmp3lame", rate=RATE, layout="mono")
        pcm = (spoken * 32767).astype(np.int16).reshape(1, -1)
        frame = av.AudioFrame.from_ndarray(pcm, format="s16", layout="mono")
        frame.sample_rate = RATE
        for packet in stream.encode(frame):
            out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    as_wav, _ = build(wav(spoken))

    output, _ = build(path.read_bytes(), content_type="audio/mpeg")

    assert output["duration_seconds"] == pytest.approx(as_wav["duration_seconds"], abs=0.06)
    assert output["pitch"]["median_hz"] == pytest.approx(as_wav["pitch"]["median_hz"], rel=0.05)


@pytest.mark.django_db
def test_rerunning_the_node_updates_its_profile() -> None:
    first, run = build(wav(piper()))

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
def test_silence_is_voice_silent() -> None:
    error = refused(wav(silence(4.0)))

    assert error.code == "voice_silent"
    assert error.message == "the voice sample is silent"


@pytest.mark.django_db
def test_less_speech_than_the_minimum_is_voice_too_short(settings: Any) -> None:
    # Given "Hello there." (under a second of speech) between 1 s silences
    settings.MYSPINBOT_MIN_VOICE_SECONDS = 3.0
    spoken = piper("Hello there.")
    data = wav(np.concatenate([silence(1.0), spoken, silence(1.0)]))
    seconds = audio.trim_silence(samples_of(data), RATE).size / RATE
    assert seconds < 1.0

    error = refused(data)

    assert error.code == "voice_too_short"
    assert error.message == (
        f"the voice sample holds {seconds:.1f} s of speech once silence is trimmed; "
        "at least 3 s are needed"
    )
    assert error.details == {"duration_seconds": round(seconds, 3), "min_seconds": 3.0}


@pytest.mark.django_db
def test_two_words_in_five_seconds_of_silence_are_voice_silent() -> None:
    data = wav(np.concatenate([piper("Hello."), silence(5.0), piper("Goodbye.")]))

    error = refused(data)

    assert error.code == "voice_silent"
    active = error.details["active_fraction"]
    assert active < handler.MIN_ACTIVE_FRACTION
    assert error.message == (
        f"the voice sample is mostly silence: {active:.0%} of it is sound, at least 30% is needed"
    )


@pytest.mark.django_db
def test_speech_recorded_too_loud_is_voice_clipped() -> None:
    # Given the neural voice at 4 times its level, so its crests are cut flat at full scale
    loud = np.clip(piper() * 4, -1.0, 1.0)
    fraction = float(np.mean(np.abs(samples_of(wav(loud))) >= handler.FULL_SCALE))
    assert fraction > handler.MAX_CLIPPED_FRACTION

    error = refused(wav(loud))

    assert error.code == "voice_clipped"
    assert error.details == {"clipped_fraction": round(fraction, 4), "max_clipped_fraction": 0.005}
    assert error.message == (
        f"the voice sample is clipped ({fraction:.1%} of its samples at full scale): "
        "record it again with the input level lower"
    )


@pytest.mark.django_db
def test_one_flat_crest_of_three_samples_is_voice_clipped() -> None:
    # Given clean speech but for 3 consecutive full-scale samples (one clipped crest)
    spoken = piper()
    spoken[RATE : RATE + 3] = 1.0

    assert refused(wav(spoken)).code == "voice_clipped"


@pytest.mark.django_db
def test_clean_speech_touching_full_scale_once_is_not_clipped() -> None:
    # The neural voice is normalised to peak at full scale, at single samples only
    spoken = piper()
    assert np.max(np.abs(spoken)) >= handler.FULL_SCALE

    output, _ = build(wav(spoken))

    assert output["transcript_words"] == 14


@pytest.mark.django_db
def test_a_steady_tone_is_voice_not_speech() -> None:
    # A 200 Hz sine is voiced, but its pitch never moves
    error = refused(wav(tone(200.0, 4.0)))

    assert error.code == "voice_not_speech"
    assert error.details["pitch_span_semitones"] == 0.0
    assert error.details["voiced_fraction"] > 0.9
    assert error.message == (
        "the voice sample does not sound like speech: its pitch moves over 0.0 semitones "
        "(speech: at least 1.5)"
    )


@pytest.mark.django_db
def test_white_noise_is_voice_not_speech() -> None:
    noise = np.random.default_rng(1).standard_normal(4 * RATE).astype(np.float32) * 0.2

    error = refused(wav(noise))

    assert error.code == "voice_not_speech"
    assert error.details["voiced_fraction"] == 0.0
    assert error.details["spectral_flatness"] == pytest.approx(0.56, abs=0.03)
    flatness = error.details["spectral_flatness"]
    assert error.message == (
        "the voice sample does not sound like speech: 0% of it is voiced (speech: at least "
        f"20%); its spectrum is noise-like (flatness {flatness:.2f}, speech: at most 0.3)"
    )


@pytest.mark.django_db
def test_a_sample_longer_than_the_maximum_is_too_long(settings: Any) -> None:
    settings.MYSPINBOT_MAX_VOICE_SECONDS = 2.0

    error = error_of(wav(tone(200.0, 3.0)))

    assert error.code == "too_long"
    assert error.details == {"duration_seconds": 3.0, "max_seconds": 2.0}


@pytest.mark.django_db
@pytest.mark.parametrize("transcript", ["", "   \n\t", " ... — "])
def test_a_transcript_without_words_is_refused(transcript: str) -> None:
    assert error_of(wav(tone(200.0, 1.5)), transcript).code == "empty_transcript"


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
    run.context.inputs = {"voice_sample": run.upload("a.wav", wav(tone(200, 1.5)), "audio/wav")}

    with pytest.raises(PermanentError) as raised:
        handler.run(run.context)

    assert raised.value.code == "missing_input"
    assert Profile.objects.count() == 0
