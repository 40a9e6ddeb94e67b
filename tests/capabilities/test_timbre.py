"""The timbre description and map (media.timbre), on made envelopes and real speech."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.signal import butter, sosfilt

from apps.capabilities.media import timbre
from apps.capabilities.media.tts_engines import Voice, get_engine

RATE = 22050
BINS = 1025
HZ = np.linspace(0.0, RATE / 2, BINS)
TEXT = "The quick brown fox jumps over the lazy dog, and then it runs away."


def formants(scale: float = 1.0, tilt_db: float = 0.0) -> np.ndarray:
    """A per-bin dB envelope with three formant-like peaks at 500, 1500 and 2500 Hz times
    ``scale``, and ``tilt_db`` per octave above 1 kHz."""
    db = sum(
        20.0 * np.exp(-0.5 * ((HZ - centre * scale) / (120.0 * scale)) ** 2)
        for centre in (500.0, 1500.0, 2500.0)
    )
    return np.asarray(db + tilt_db * np.log2(np.maximum(HZ, 50.0) / 1000.0))


def described(envelope_db: np.ndarray) -> timbre.Timbre:
    return timbre.Timbre(tuple(float(v) for v in timbre.on_grid(envelope_db, RATE)), 1000)


def test_the_same_envelope_maps_onto_itself_unchanged() -> None:
    source = formants()

    mapping = timbre.TimbreMap.between(source, RATE, described(source), 1.0, 1.0)

    assert mapping.fitted_warp == 1.0
    assert mapping.warp == 1.0
    assert np.max(np.abs(mapping.correction_db)) < 1e-9
    assert mapping.distance_before_db == pytest.approx(0.0, abs=1e-9)


@pytest.mark.parametrize("scale", [0.88, 1.12])
def test_the_fitted_warp_is_the_formant_scale_even_with_a_tilt(scale: float) -> None:
    # Given a speaker whose formants sit `scale` times higher and who is 3 dB/oct darker
    target = described(formants(scale, tilt_db=-3.0))

    mapping = timbre.TimbreMap.between(formants(), RATE, target, 1.0, 1.0)

    assert mapping.fitted_warp == pytest.approx(scale, abs=0.011)
    # and the warp plus the correction land the long-term envelope on the speaker's
    assert mapping.distance_after_db < 0.1 * mapping.distance_before_db


def test_strengths_scale_the_warp_in_log_frequency_and_the_correction() -> None:
    target = described(formants(1.12, tilt_db=-3.0))

    full = timbre.TimbreMap.between(formants(), RATE, target, 1.0, 1.0)
    half = timbre.TimbreMap.between(formants(), RATE, target, 0.5, 0.5)
    none = timbre.TimbreMap.between(formants(), RATE, target, 0.0, 0.0)

    assert half.warp == pytest.approx(full.fitted_warp**0.5)
    assert (none.warp, max(np.abs(none.correction_db))) == (1.0, 0.0)
    assert none.distance_after_db == pytest.approx(none.distance_before_db)
    assert full.distance_after_db < half.distance_after_db < none.distance_after_db


def test_corrections_are_bounded() -> None:
    target = described(formants(tilt_db=-30.0))

    mapping = timbre.TimbreMap.between(formants(), RATE, target, 1.0, 0.0)

    assert max(np.abs(mapping.correction_db)) == timbre.MAX_CORRECTION_DB


def test_apply_warps_a_frame_peak_and_adds_the_correction() -> None:
    # A frame with one peak at 1000 Hz; a map that warps by 1.1 and adds 6 dB everywhere
    frame = 10 ** (formants()[None, :] / 10)
    mapping = timbre.TimbreMap(1.1, (6.0,) * timbre.GRID_BANDS, 1.1, 0.0, 0.0)

    moved = 10 * np.log10(mapping.apply(frame, RATE))

    original_peak = HZ[np.argmax(formants()[HZ < 1000])]
    moved_peak = HZ[np.argmax(moved[0][HZ < 1000])]
    assert moved_peak == pytest.approx(original_peak * 1.1, abs=HZ[1])
    assert moved[0].max() == pytest.approx(formants().max() + 6.0, abs=0.1)


def test_a_darker_speaker_describes_less_high_frequency_energy() -> None:
    speech, rate = get_engine("piper").synthesize(TEXT, Voice())
    dark = sosfilt(butter(2, 1500, fs=rate, output="sos"), speech).astype(np.float32)

    plain_timbre = timbre.describe(speech, rate)
    dark_timbre = timbre.describe(dark, rate)

    assert plain_timbre is not None
    assert dark_timbre is not None
    high = timbre.GRID_HZ > 4000
    low = timbre.GRID_HZ < 1000
    contrast = []
    for voice in (plain_timbre, dark_timbre):
        envelope = np.asarray(voice.envelope_db)
        contrast.append(float(envelope[high].mean() - envelope[low].mean()))
    # (a 2nd-order low-pass at 1.5 kHz is 17-27 dB down over 4-7.6 kHz)
    assert contrast[0] - contrast[1] > 12.0
    for described_timbre in (plain_timbre, dark_timbre):
        assert len(described_timbre.envelope_db) == timbre.GRID_BANDS
        assert np.mean(described_timbre.envelope_db) == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize(
    "data",
    [
        None,
        {},
        {"method": "something-else", "envelope_db": [0.0] * timbre.GRID_BANDS},
        {"method": timbre.METHOD, "envelope_db": [0.0] * 3},
        {"method": timbre.METHOD, "envelope_db": ["x"] * timbre.GRID_BANDS},
    ],
)
def test_a_missing_or_foreign_description_is_none(data: object) -> None:
    assert timbre.Timbre.from_json(data) is None


def test_a_description_round_trips_through_json() -> None:
    original = described(formants(1.05))

    restored = timbre.Timbre.from_json(original.to_json())

    assert restored is not None
    assert restored.voiced_frames == 1000
    assert np.allclose(restored.envelope_db, original.envelope_db, atol=0.005)
