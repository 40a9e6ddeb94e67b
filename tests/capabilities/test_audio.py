"""The shared audio helpers and TTS engines, on real signals and real decoders."""

from __future__ import annotations

import io
import wave
from pathlib import Path

import av
import numpy as np
import pytest

from apps.capabilities.media import audio
from apps.capabilities.media.tts_engines import (
    EngineUnavailable,
    UnknownVoice,
    Voice,
    available_engines,
    get_engine,
    sample_voice,
)
from myspinbot.errors import PermanentError

RATE = 22050


def tone(frequency: float, seconds: float, rate: int = RATE, amplitude: float = 0.5) -> np.ndarray:
    t = np.arange(round(seconds * rate)) / rate
    return (amplitude * np.sin(2 * np.pi * frequency * t)).astype(np.float32)


def vibrato(base: float, depth: float, seconds: float, rate: int = RATE) -> np.ndarray:
    """A harmonic-rich voice-like signal: 8 harmonics whose F0 swings ±depth at 5 Hz."""
    t = np.arange(round(seconds * rate)) / rate
    f0 = base * (1 + depth * np.sin(2 * np.pi * 5 * t))
    phase = 2 * np.pi * np.cumsum(f0) / rate
    signal = sum(np.sin(k * phase) / k for k in range(1, 9))
    return (0.3 * signal).astype(np.float32)


def encode(path: Path, samples: np.ndarray, rate: int, codec: str, container_format: str) -> Path:
    """Encode mono float samples with PyAV's encoders (as a user's phone app would)."""
    with av.open(str(path), "w", format=container_format) as out:
        stream = out.add_stream(codec, rate=rate, layout="mono")
        frame_size = stream.codec_context.frame_size or 1024
        pcm = (samples * 32767).astype(np.int16)
        fmt = stream.codec_context.format.name
        for start in range(0, pcm.size, frame_size):
            chunk = pcm[start : start + frame_size]
            frame = av.AudioFrame.from_ndarray(chunk.reshape(1, -1), format="s16", layout="mono")
            frame.sample_rate = rate
            frame.pts = start
            for resampled in av.AudioResampler(format=fmt, layout="mono", rate=rate).resample(
                frame
            ):
                for packet in stream.encode(resampled):
                    out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return path


# --- Pitch -----------------------------------------------------------------------------


@pytest.mark.parametrize("frequency", [120.0, 180.0])
def test_pitch_of_a_pure_tone_is_within_5_percent(frequency: float) -> None:
    stats = audio.measure_pitch(tone(frequency, 2.0), RATE)

    assert stats is not None
    assert stats.median_hz == pytest.approx(frequency, rel=0.05)
    assert stats.p05_hz == pytest.approx(frequency, rel=0.05)
    assert stats.p95_hz == pytest.approx(frequency, rel=0.05)
    # 2 s analysed in 10 ms steps; Praat leaves out half a 3-period window at each end.
    assert stats.voiced_seconds == pytest.approx(1.96, abs=0.02)


def test_pitch_of_a_harmonic_vibrato_gives_its_median_and_range() -> None:
    stats = audio.measure_pitch(vibrato(150.0, 0.06, 2.0), RATE)

    assert stats is not None
    assert stats.median_hz == pytest.approx(150.0, rel=0.05)
    # A sinusoidal ±6 % swing: the 5th/95th percentiles sit near ±5.9 %.
    assert stats.p05_hz == pytest.approx(150.0 * (1 - 0.059), rel=0.02)
    assert stats.p95_hz == pytest.approx(150.0 * (1 + 0.059), rel=0.02)


def test_noise_and_silence_have_no_pitch() -> None:
    noise = (np.random.default_rng(0).standard_normal(2 * RATE) * 0.2).astype(np.float32)

    assert audio.measure_pitch(noise, RATE) is None
    assert audio.measure_pitch(np.zeros(RATE, dtype=np.float32), RATE) is None


def test_world_resynthesis_moves_a_voice_onto_a_target_pitch() -> None:
    source = vibrato(120.0, 0.05, 1.5)
    f0 = audio.world_f0(source, RATE)
    target = audio.PitchStats(median_hz=200.0, p05_hz=180.0, p95_hz=220.0, voiced_seconds=1.0)

    mapping = audio.PitchMap.between(f0, target)
    moved = audio.resynthesize(source, RATE, f0, mapping.apply(f0))

    assert moved.shape == source.shape
    assert mapping.source_median_hz == pytest.approx(120.0, rel=0.02)
    stats = audio.measure_pitch(moved, RATE)
    assert stats is not None
    assert stats.median_hz == pytest.approx(200.0, rel=0.05)


def test_pitch_map_moves_the_median_and_scales_the_range_in_log_frequency() -> None:
    mapping = audio.PitchMap(source_median_hz=100.0, target_median_hz=200.0, range_scale=0.5)

    mapped = mapping.apply(np.array([0.0, 100.0, 400.0, 25.0]))

    np.testing.assert_allclose(mapped, [0.0, 200.0, 400.0, 100.0])


# --- Reading, writing, trimming -------------------------------------------------------


def test_wav_round_trip_keeps_rate_length_and_samples(tmp_path: Path) -> None:
    samples = tone(440.0, 0.5)

    path = audio.write_wav(tmp_path / "a.wav", samples, RATE)

    with wave.open(str(path)) as read:
        assert (read.getnchannels(), read.getsampwidth(), read.getframerate()) == (1, 2, RATE)
        assert read.getnframes() == samples.size
    assert audio.duration_of(path) == pytest.approx(0.5, abs=1e-6)
    decoded = audio.decode_audio(path, RATE)
    assert decoded.size == samples.size
    assert np.abs(decoded - samples).max() < 1.5 / 32767


def test_decode_resamples_stereo_to_mono_at_the_asked_rate(tmp_path: Path) -> None:
    left = (tone(200.0, 1.0, rate=44100) * 32767).astype(np.int16)
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(2)
        out.setsampwidth(2)
        out.setframerate(44100)
        out.writeframes(np.stack([left, left], axis=1).tobytes())
    path = tmp_path / "stereo.wav"
    path.write_bytes(buffer.getvalue())

    decoded = audio.decode_audio(path, 16000)

    assert decoded.dtype == np.float32
    assert decoded.size == pytest.approx(16000, abs=32)
    stats = audio.measure_pitch(decoded, 16000)
    assert stats is not None
    assert stats.median_hz == pytest.approx(200.0, rel=0.05)


@pytest.mark.parametrize(
    ("suffix", "codec", "container_format", "rate"),
    [
        ("mp3", "libmp3lame", "mp3", 44100),
        ("ogg", "libopus", "ogg", 48000),
        ("flac", "flac", "flac", 44100),
        ("m4a", "aac", "ipod", 44100),
    ],
)
def test_compressed_formats_decode_to_the_same_pitch(
    tmp_path: Path, suffix: str, codec: str, container_format: str, rate: int
) -> None:
    samples = tone(180.0, 1.5, rate=rate)
    path = encode(tmp_path / f"tone.{suffix}", samples, rate, codec, container_format)

    decoded = audio.decode_audio(path, RATE)

    # Encoders add up to a few tens of ms of priming/padding.
    assert decoded.size / RATE == pytest.approx(1.5, abs=0.06)
    declared = audio.duration_of(path)
    assert declared is not None
    assert declared == pytest.approx(1.5, abs=0.1)
    stats = audio.measure_pitch(decoded, RATE)
    assert stats is not None
    assert stats.median_hz == pytest.approx(180.0, rel=0.05)


@pytest.mark.parametrize(
    "data",
    [b"this is a transcript, not a recording\n" * 20, b"", b"\x89PNG\r\n\x1a\n" + bytes(200)],
    ids=["text", "empty", "png-ish"],
)
def test_what_is_not_audio_is_bad_audio(tmp_path: Path, data: bytes) -> None:
    path = tmp_path / "upload.bin"
    path.write_bytes(data)

    with pytest.raises(PermanentError) as raised:
        audio.decode_audio(path, RATE)

    assert raised.value.code == "bad_audio"


def test_decoding_stops_past_max_seconds(tmp_path: Path) -> None:
    path = audio.write_wav(tmp_path / "long.wav", tone(200.0, 3.0), RATE)

    with pytest.raises(PermanentError) as raised:
        audio.decode_audio(path, RATE, max_seconds=2.0)

    assert raised.value.code == "too_long"
    assert raised.value.details == {"max_seconds": 2.0}


def test_trim_silence_keeps_the_sound_and_a_margin_on_each_side() -> None:
    silence = np.zeros(RATE // 2, dtype=np.float32)  # 25 frames of 20 ms
    samples = np.concatenate([silence, tone(200.0, 1.0), silence])

    trimmed = audio.trim_silence(samples, RATE)

    margin = round(audio.TRIM_MARGIN_SECONDS * RATE)
    assert trimmed.size == RATE + 2 * margin
    np.testing.assert_array_equal(trimmed, samples[RATE // 2 - margin : RATE // 2 + RATE + margin])


def test_trim_silence_of_silence_is_empty_and_sound_seconds_skip_pauses() -> None:
    gap = np.zeros(RATE, dtype=np.float32)
    speech_like = np.concatenate([tone(200.0, 0.6), gap, tone(150.0, 0.4)])

    assert audio.trim_silence(np.zeros(RATE, dtype=np.float32), RATE).size == 0
    assert audio.sound_seconds(speech_like, RATE) == pytest.approx(1.0, abs=0.02)


def test_count_words() -> None:
    assert audio.count_words("Don't stop — it's 3 o'clock!") == 5
    assert audio.count_words("  ... —  ") == 0


# --- TTS engines ---------------------------------------------------------------------


def test_espeak_is_available_and_speaks_at_its_rate() -> None:
    assert available_engines() == ["espeak", "piper"]

    samples, rate = get_engine("espeak").synthesize("Hello there, world.", Voice())

    assert rate == 22050
    assert samples.dtype == np.float32
    assert 0.5 < samples.size / rate < 3.0
    assert 0.1 < float(np.abs(samples).max()) <= 1.0


def test_espeak_pitch_setting_changes_the_measured_pitch() -> None:
    engine = get_engine("espeak")
    text = "The quick brown fox jumps over the lazy dog."

    low = audio.measure_pitch(*engine.synthesize(text, Voice(pitch=20)))
    high = audio.measure_pitch(*engine.synthesize(text, Voice(pitch=90)))

    assert low is not None
    assert high is not None
    assert low.median_hz * 1.5 < high.median_hz


def test_espeak_speaks_faster_at_a_higher_rate() -> None:
    engine = get_engine("espeak")
    text = "We walked along the river for an hour, talking about nothing at all."

    slow, _ = engine.synthesize(text, Voice(rate_wpm=120))
    fast, _ = engine.synthesize(text, Voice(rate_wpm=240))

    assert fast.size / slow.size == pytest.approx(0.5, abs=0.1)


def test_unknown_engine_and_voice_are_refused() -> None:
    with pytest.raises(EngineUnavailable):
        get_engine("festival")
    with pytest.raises(UnknownVoice):
        get_engine("espeak").synthesize("hello", Voice(name="xx-nope"))


def test_sample_voice_writes_speech(tmp_path: Path) -> None:
    path = sample_voice("A short sample of my voice.", tmp_path / "voice.wav")

    with wave.open(str(path)) as read:
        assert (read.getnchannels(), read.getframerate()) == (1, 22050)
        seconds = read.getnframes() / read.getframerate()
    assert 1.0 < seconds < 4.0
