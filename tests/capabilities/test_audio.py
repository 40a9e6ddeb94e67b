"""The shared audio helpers and TTS engines, on real signals and real decoders."""

from __future__ import annotations

import io
import wave
from pathlib import Path

import av
import numpy as np
import pyloudnorm
import pytest
from scipy.signal import resample_poly

from apps.capabilities.media import audio
from apps.capabilities.media.tts_engines import (
    EngineUnavailable,
    EspeakEngine,
    PiperEngine,
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


@pytest.mark.parametrize("factor", [0.8, 1.25])
def test_world_time_stretch_changes_the_length_and_keeps_the_pitch(factor: float) -> None:
    source = vibrato(150.0, 0.05, 1.5)
    frames = audio.world_analyse(source, RATE)

    stretched = audio.stretch_frames(frames, factor)
    out = audio.world_synthesize(stretched, stretched.f0)

    assert out.size == round(source.size * factor)
    assert stretched.f0.size == round(frames.f0.size * factor)
    stats = audio.measure_pitch(out, RATE)
    assert stats is not None
    assert stats.median_hz == pytest.approx(150.0, rel=0.03)


def test_world_synthesis_every_2_5_ms_follows_the_5_ms_analysis() -> None:
    # Given a vibrato voice analysed every 5 ms and moved up
    source = vibrato(120.0, 0.05, 1.5)
    frames = audio.world_analyse(source, RATE)
    moved = frames.f0 * 1.5

    # When it is synthesized at the analysis's frame rate and at twice it
    coarse = audio.world_synthesize(frames, moved)
    fine = audio.world_synthesize(frames, moved, every=2)

    # Then both are the clip's length, at the moved pitch, over the same range (no
    # octave-low frames), and the finer one is the same sound, not a copy
    assert fine.shape == coarse.shape == source.shape
    for out in (coarse, fine):
        stats = audio.measure_pitch(out, RATE)
        assert stats is not None
        assert stats.median_hz == pytest.approx(180.0, rel=0.03)
        assert stats.p05_hz > 0.8 * 180.0
    spectrum = np.abs(np.fft.rfft(coarse)), np.abs(np.fft.rfft(fine))
    assert np.corrcoef(*spectrum)[0, 1] > 0.9
    assert not np.allclose(coarse, fine, atol=1e-3)


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


# --- Loudness ------------------------------------------------------------------------


def measured_lufs(samples: np.ndarray, rate: int = RATE) -> float:
    """BS.1770-4 integrated loudness, measured here with pyloudnorm (one block of the
    clip's own length when it is shorter than the 0.4 s gating block)."""
    meter = pyloudnorm.Meter(rate, block_size=min(0.4, samples.size / rate))
    return float(meter.integrated_loudness(samples.astype(np.float64)))


def measured_dbtp(samples: np.ndarray) -> float:
    """True peak (dBTP): the largest magnitude of the signal oversampled 4 times."""
    return float(20 * np.log10(np.max(np.abs(resample_poly(samples.astype(np.float64), 4, 1)))))


CLICK_EVERY = RATE // 3


def clicks_over_hum(seconds: float) -> np.ndarray:
    """A quiet 500 Hz hum with a full-scale click every 1/3 s: at -16 LUFS the clicks
    would be far above 0 dBFS, so only a limiter can hold them to the ceiling."""
    signal = tone(500.0, seconds, amplitude=0.02)
    signal[CLICK_EVERY // 2 :: CLICK_EVERY] = 0.99
    return signal


LOUD_CLIPPING = np.clip(1.5 * vibrato(150.0, 0.06, 3.0) / 0.3 * 0.7, -1.0, 1.0)
CASES = {
    "loud-clipping": LOUD_CLIPPING.astype(np.float32),
    "quiet": (vibrato(150.0, 0.06, 3.0) * 0.02).astype(np.float32),
    "peaks-need-limiting": clicks_over_hum(3.0),
    "short": tone(440.0, 0.2, amplitude=0.3),
}


@pytest.mark.parametrize("name", list(CASES))
def test_loudness_is_normalised_to_minus_16_lufs_under_minus_1_dbtp(name: str) -> None:
    # Given a signal far from the target (or shorter than a gating block)
    samples = CASES[name]

    # When
    levelled, loudness = audio.normalize_loudness(samples, RATE)

    # Then, measured independently, it is at -16 LUFS with no true peak over -1 dBTP
    assert levelled.dtype == np.float32
    assert levelled.shape == samples.shape
    assert np.isfinite(levelled).all()
    assert measured_lufs(levelled) == pytest.approx(-16.0, abs=0.5)
    assert measured_dbtp(levelled) <= -1.0
    # and the reported figures are those measurements
    assert loudness.lufs == pytest.approx(measured_lufs(levelled), abs=0.01)
    assert loudness.true_peak_dbtp == pytest.approx(measured_dbtp(levelled), abs=0.01)
    assert loudness.limited is (name == "peaks-need-limiting")


def test_the_loud_input_really_clipped_and_needed_limiting_to_be_smooth() -> None:
    # The inputs are what they claim: one at full scale, one whose gain alone breaks -1 dBTP
    assert np.max(np.abs(CASES["loud-clipping"])) == 1.0
    assert measured_lufs(CASES["loud-clipping"]) > -10.0
    peaky = CASES["peaks-need-limiting"]
    gain = 10 ** ((-16.0 - measured_lufs(peaky)) / 20)
    assert measured_dbtp(peaky * gain) > 0.0

    levelled, loudness = audio.normalize_loudness(peaky, RATE)

    # the limiter only dips around the clicks: 30 ms away from them the hum has the full gain
    far = np.ones(peaky.size, dtype=bool)
    for click in range(CLICK_EVERY // 2, peaky.size, CLICK_EVERY):
        far[max(0, click - round(0.03 * RATE)) : click + round(0.03 * RATE)] = False
    far &= np.abs(peaky) > 0.01
    ratios = levelled[far] / peaky[far]
    np.testing.assert_allclose(ratios, 10 ** (loudness.gain_db / 20), rtol=1e-4)
    # and the gain ramps down to each click over the 5 ms look-ahead instead of jumping
    # (no hard clipping: the clicks are the only samples near the peak, no flat runs)
    near_peak = np.flatnonzero(np.abs(levelled) >= np.abs(levelled).max() * 0.99)
    assert near_peak.tolist() == list(range(CLICK_EVERY // 2, peaky.size, CLICK_EVERY))
    click = CLICK_EVERY // 2 + CLICK_EVERY
    ahead = round(audio.LIMITER_LOOKAHEAD_SECONDS * RATE)
    index = np.arange(click - 2 * ahead, click)
    index = index[np.abs(peaky[index]) > 0.01]
    gain = levelled[index] / peaky[index]
    full, at_click = 10 ** (loudness.gain_db / 20), levelled[click] / peaky[click]
    np.testing.assert_allclose(gain[index < click - ahead], full, rtol=1e-4)
    per_sample = np.diff(gain) / np.diff(index)
    assert (per_sample <= 1e-4).all()  # only ever down towards the click
    assert -per_sample.min() <= (full - at_click) / ahead * 1.01  # in even steps


@pytest.mark.parametrize("samples", [np.zeros(RATE, dtype=np.float32), np.zeros(0, np.float32)])
def test_silence_and_empty_signals_are_left_as_they_are(samples: np.ndarray) -> None:
    levelled, loudness = audio.normalize_loudness(samples, RATE)

    np.testing.assert_array_equal(levelled, samples)
    assert loudness == audio.Loudness(lufs=None, true_peak_dbtp=None, gain_db=0.0, limited=False)


def test_a_signal_below_the_absolute_gate_is_silent_not_nan() -> None:
    # -90 dBFS noise: every BS.1770 block is under the -70 LUFS gate
    hiss = (np.random.default_rng(0).standard_normal(RATE) * 3e-5).astype(np.float32)

    levelled, loudness = audio.normalize_loudness(hiss, RATE)

    np.testing.assert_array_equal(levelled, hiss)
    assert loudness.lufs is None
    assert loudness.true_peak_dbtp is not None
    assert np.isfinite(loudness.true_peak_dbtp)


# --- TTS engines ---------------------------------------------------------------------


def test_finding_the_installed_engines_loads_none_of_them() -> None:
    """A worker's report lists its engines at once: nothing is loaded to say so."""
    piper, espeak = PiperEngine(), EspeakEngine()

    assert piper.installed()
    assert espeak.installed()
    assert piper._voice is None
    assert espeak._lib is None


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
