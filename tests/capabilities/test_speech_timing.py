"""Forced alignment, mouth track and loudness on real Piper speech and the real
PocketSphinx model."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
from scipy.io import wavfile
from scipy.signal import resample_poly

from apps.capabilities.media.audio import write_wav
from apps.capabilities.media.speech_timing import (
    CHANNELS,
    Alignment,
    AlignmentError,
    Phone,
    align,
    loudness_envelope,
    mouth_track,
    normalise_words,
)
from apps.capabilities.media.tts_engines import PiperEngine, Voice

SENTENCE = "Maybe the big blue balloon will float over the moon."
WORDS = ["maybe", "the", "big", "blue", "balloon", "will", "float", "over", "the", "moon"]
PAD_SECONDS = 0.5
FPS = 25.0
OPEN, SPREAD, CLOSE, TEETH = range(4)


class Speech:
    def __init__(self, path: Path, samples: np.ndarray, rate: int) -> None:
        self.path, self.samples, self.rate = path, samples, rate
        self.duration = samples.size / rate


@pytest.fixture(scope="module")
def speech(tmp_path_factory: pytest.TempPathFactory) -> Speech:
    """The sentence spoken by the project's Piper voice, with 0.5 s of silence each side."""
    samples, rate = PiperEngine().synthesize(SENTENCE, Voice())
    pad = np.zeros(round(PAD_SECONDS * rate), dtype=np.float32)
    padded = np.concatenate([pad, samples, pad])
    path = write_wav(tmp_path_factory.mktemp("timing") / "sentence.wav", padded, rate)
    return Speech(path, padded, rate)


@pytest.fixture(scope="module")
def alignment(speech: Speech) -> Alignment:
    return align(speech.path, SENTENCE)


def centre_frame(phone: Phone) -> int:
    return round((phone.start + phone.end) / 2 * FPS)


# --- align ------------------------------------------------------------------------------


def test_words_come_back_in_order_with_monotonic_times_inside_the_clip(
    speech: Speech, alignment: Alignment
) -> None:
    assert [word.text for word in alignment.words] == WORDS
    assert alignment.skipped == ()
    for word in alignment.words:
        assert 0.0 <= word.start < word.end <= speech.duration
    for earlier, later in zip(alignment.words, alignment.words[1:], strict=False):
        assert earlier.end <= later.start
    for earlier, later in zip(alignment.phones, alignment.phones[1:], strict=False):
        assert earlier.start < later.start
        assert earlier.end <= later.start + 1e-9


def test_words_lie_inside_the_speech_not_the_padding(speech: Speech, alignment: Alignment) -> None:
    speech_start, speech_end = PAD_SECONDS - 0.05, speech.duration - PAD_SECONDS + 0.05
    balloon = next(word for word in alignment.words if word.text == "balloon")
    assert speech_start < balloon.start < balloon.end < speech_end
    assert alignment.words[0].start >= speech_start
    assert alignment.words[-1].end <= speech_end
    # the padding is silence in the phones too
    assert alignment.phones[0].label == "SIL"
    assert alignment.phones[0].end >= PAD_SECONDS - 0.05
    assert alignment.phones[-1].label == "SIL"


def test_phones_are_arpabet_without_stress(alignment: Alignment) -> None:
    balloon = next(word for word in alignment.words if word.text == "balloon")
    inside = [p.label for p in alignment.phones if balloon.start <= p.start < balloon.end]
    assert inside == ["B", "AH", "L", "UW", "N"]
    assert sum(p.label in {"P", "B", "M"} for p in alignment.phones) == 6


def test_any_rate_stereo_float_wav_gives_the_same_words(speech: Speech, tmp_path: Path) -> None:
    stereo = np.stack([speech.samples, speech.samples], axis=1).astype(np.float32)
    path = tmp_path / "stereo-float.wav"
    wavfile.write(path, 44_100, _resample(stereo, speech.rate, 44_100))

    result = align(path, SENTENCE)

    assert [word.text for word in result.words] == WORDS


def _resample(samples: np.ndarray, rate: int, target: int) -> np.ndarray:
    return resample_poly(samples, target, rate, axis=0).astype(np.float32)


def test_unknown_words_are_skipped_and_reported(speech: Speech) -> None:
    result = align(speech.path, "Maybe the big blue zorgblatt balloon will float over the moon!")

    assert [word.text for word in result.words] == WORDS
    assert result.skipped == ("zorgblatt",)


def test_silence_does_not_align(tmp_path: Path) -> None:
    path = write_wav(tmp_path / "silence.wav", np.zeros(32_000, dtype=np.float32), 16_000)

    with pytest.raises(AlignmentError, match="does not match"):
        align(path, SENTENCE)


def test_text_without_a_known_word_does_not_align(speech: Speech) -> None:
    with pytest.raises(AlignmentError, match="no word"):
        align(speech.path, "?! ...")
    with pytest.raises(AlignmentError, match="no word"):
        align(speech.path, "zorgblatt qwxyzzy")


def test_alignment_runs_faster_than_real_time(speech: Speech) -> None:
    align(speech.path, SENTENCE)  # the decoder is built once per process; not timed
    started = time.perf_counter()
    align(speech.path, SENTENCE)
    elapsed = time.perf_counter() - started

    speed = speech.duration / elapsed
    print(f"alignment speed: {speed:.1f}x real time ({speech.duration:.2f} s in {elapsed:.3f} s)")
    assert speed >= 1.0


def test_normalise_words_drops_punctuation_and_keeps_inner_apostrophes() -> None:
    assert normalise_words("Isn't it -- well, 'great'? Co-op!") == [
        "isn't",
        "it",
        "well",
        "great",
        "co",
        "op",
    ]


# --- mouth_track ----------------------------------------------------------------------


def test_mouth_track_has_one_row_per_frame_and_four_channels(
    speech: Speech, alignment: Alignment
) -> None:
    track = mouth_track(alignment.phones, FPS, speech.duration)

    assert CHANNELS == ("open", "spread", "close", "teeth")
    assert track.shape == (int(np.ceil(speech.duration * FPS)), 4)
    assert track.dtype == np.float32
    assert np.isfinite(track).all()
    assert track[:, [OPEN, CLOSE, TEETH]].min() >= 0.0
    assert track[:, [OPEN, CLOSE, TEETH]].max() <= 1.0
    assert track[:, SPREAD].min() >= -1.0
    assert track[:, SPREAD].max() <= 1.0


def test_lips_close_on_every_bilabial(speech: Speech, alignment: Alignment) -> None:
    track = mouth_track(alignment.phones, FPS, speech.duration)
    bilabials = [p for p in alignment.phones if p.label in {"P", "B", "M"}]

    closes = [float(track[centre_frame(p), CLOSE]) for p in bilabials]

    assert len(closes) == 6
    assert min(closes) >= 0.8, closes


def test_lower_lip_meets_the_teeth_on_f_and_v(speech: Speech, alignment: Alignment) -> None:
    track = mouth_track(alignment.phones, FPS, speech.duration)
    labiodentals = [p for p in alignment.phones if p.label in {"F", "V"}]

    teeth = [float(track[centre_frame(p), TEETH]) for p in labiodentals]

    assert len(teeth) == 2  # Float, oVer
    assert min(teeth) >= 0.6, teeth


def test_mouth_rests_in_the_padded_silence(speech: Speech, alignment: Alignment) -> None:
    track = mouth_track(alignment.phones, FPS, speech.duration)
    lead = int(PAD_SECONDS * FPS) - 1  # frames wholly before the speech
    tail = int(np.ceil((speech.duration - PAD_SECONDS) * FPS)) + 1

    assert track[:lead, OPEN].max() <= 0.1
    assert track[tail:, OPEN].max() <= 0.1


def test_mouth_opens_on_vowels(speech: Speech, alignment: Alignment) -> None:
    track = mouth_track(alignment.phones, FPS, speech.duration)
    vowels = [p for p in alignment.phones if p.label in {"AA", "AE", "AH", "AY", "EY", "OW"}]

    opens = [float(track[centre_frame(p), OPEN]) for p in vowels]

    assert max(opens) >= 0.4, opens
    assert float(np.median(opens)) >= 0.2, opens


def test_mouth_moves_without_snapping(speech: Speech, alignment: Alignment) -> None:
    track = mouth_track(alignment.phones, FPS, speech.duration)

    steps = np.abs(np.diff(track, axis=0)).max(axis=0)

    assert steps.max() <= 0.35, dict(zip(CHANNELS, steps.round(3), strict=True))


def test_fast_speech_still_closes_the_lips_smoothly(tmp_path: Path) -> None:
    text = "Bob met my mom by the pub, a map, a bomb."
    samples, rate = PiperEngine().synthesize(text, Voice(rate_wpm=260))
    pad = np.zeros(rate // 2, dtype=np.float32)
    padded = np.concatenate([pad, samples, pad])
    result = align(write_wav(tmp_path / "fast.wav", padded, rate), text)

    track = mouth_track(result.phones, FPS, padded.size / rate)

    bilabials = [p for p in result.phones if p.label in {"P", "B", "M"}]
    assert len(bilabials) == 13
    assert min(float(track[centre_frame(p), CLOSE]) for p in bilabials) >= 0.8
    assert np.abs(np.diff(track, axis=0)).max() <= 0.35


def test_no_phones_is_a_resting_mouth() -> None:
    track = mouth_track((), FPS, 1.0)

    assert track.shape == (25, 4)
    np.testing.assert_allclose(track, np.tile([0.0, 0.0, 0.5, 0.0], (25, 1)))


def test_time_between_phones_is_a_pause() -> None:
    track = mouth_track((Phone("AA", 0.0, 0.3), Phone("AA", 4.0, 4.3)), FPS, 4.3)

    assert np.isfinite(track).all()
    assert track[10:95, OPEN].max() <= 0.1


def test_a_long_pause_between_words_closes_the_jaw() -> None:
    phones = (
        Phone("AA", 0.0, 0.3),
        Phone("SIL", 0.3, 0.8),
        Phone("AA", 0.8, 1.1),
    )

    track = mouth_track(phones, FPS, 1.1)

    assert track[8:20, OPEN].max() <= 0.1  # 0.32 .. 0.76 s
    assert track[round(0.15 * FPS), OPEN] >= 0.5  # the jaw takes time to open after rest
    assert np.abs(np.diff(track, axis=0)).max() <= 0.35


# --- loudness_envelope -----------------------------------------------------------------


def test_loudness_is_zero_in_silence_and_one_at_the_peak(speech: Speech) -> None:
    envelope = loudness_envelope(speech.samples, speech.rate, FPS)

    assert envelope.shape == (int(np.ceil(speech.duration * FPS)),)
    assert envelope.dtype == np.float32
    assert float(envelope.max()) == 1.0
    assert float(envelope[: int(PAD_SECONDS * FPS) - 1].max()) == 0.0
    assert float(envelope[int(np.ceil((speech.duration - PAD_SECONDS) * FPS)) + 1 :].max()) == 0.0


def test_loudness_is_linear_in_decibels() -> None:
    rate = 16_000
    t = np.arange(rate) / rate
    tone = np.sin(2 * np.pi * 440 * t)
    # 1 s at full scale (RMS -3 dBFS), 1 s 30 dB quieter, 1 s of -80 dBFS hiss-level tone
    samples = np.concatenate([tone, tone * 10 ** (-30 / 20), tone * 10 ** (-77 / 20)]).astype(
        np.float32
    )

    envelope = loudness_envelope(samples, rate, 10.0)

    assert envelope.shape == (30,)
    np.testing.assert_allclose(envelope[:10], 1.0, atol=1e-4)
    np.testing.assert_allclose(envelope[10:20], 27 / 57, atol=1e-3)  # (-33 + 60) / (-3 + 60)
    np.testing.assert_array_equal(envelope[20:], 0.0)


def test_loudness_of_integer_stereo_pcm_matches_float_mono() -> None:
    rate = 8_000
    mono = (0.25 * np.sin(2 * np.pi * 200 * np.arange(rate) / rate)) * np.linspace(0, 1, rate)
    stereo = np.round(np.stack([mono, mono], axis=1) * 32768).astype(np.int16)

    np.testing.assert_allclose(
        loudness_envelope(stereo, rate, FPS),
        loudness_envelope(mono.astype(np.float32), rate, FPS),
        atol=1e-3,
    )


def test_all_silent_clip_has_zero_loudness() -> None:
    envelope = loudness_envelope(np.zeros(16_000, dtype=np.float32), 16_000, FPS)

    np.testing.assert_array_equal(envelope, np.zeros(25, dtype=np.float32))
