"""A speaker's timbre, described compactly and carried onto another voice with WORLD.

A voice's timbre is described by its *long-term envelope*: the mean, over the voiced
frames, of WORLD's CheapTrick spectral envelope in dB, sampled on a mel-spaced grid
(:data:`GRID_HZ`, 100-7600 Hz, so that every sample rate a profile accepts covers it)
and shifted to a zero mean (the level is the loudness normaliser's business, not the
timbre's). It holds the speaker's vocal-tract length (where the formant regions sit on
average), spectral tilt (breathy or pressed, dark or bright) and recording channel.

:class:`TimbreMap` moves a synthetic voice toward a described speaker, frame by frame
inside the same WORLD resynthesis that moves the pitch:

1. a frequency warp ``envelope'(f) = envelope(f / warp)``: the warp is the one that best
   lines the synthetic long-term envelope up with the speaker's (tilt left out, that
   is step 2's), so formants move the way a longer or shorter vocal tract moves them;
2. then the remaining difference of the long-term envelopes (speaker's minus warped
   synthetic's, at most ``MAX_CORRECTION_DB`` either way) is added to every frame.

Each step is scaled by a strength in 0..1 (0 changes nothing, 1 lands the long-term
envelope on the speaker's). Pure numpy on top of :mod:`audio`'s WORLD helpers: no
Django, no torch.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from apps.capabilities.media import audio

Floats = npt.NDArray[np.float64]

GRID_BANDS = 40
GRID_LOW_HZ, GRID_HIGH_HZ = 100.0, 7600.0
# How the description in a profile was made; a profile with another method is not used.
METHOD = "world-cheaptrick-mel40"
# The warps tried (1 keeps the formants where they are; 1.2 is about an adult male
# vocal tract against a child's or a female's 0.8-0.85 ratio the other way).
WARP_CANDIDATES = np.round(np.arange(0.80, 1.2501, 0.01), 2)
# The correction never boosts or cuts a band by more than this: past it, a reference
# recorded through a narrow channel would have the synthetic voice's noise floor
# raised into hiss.
MAX_CORRECTION_DB = 15.0
_TINY = 1e-16


def _mel(hz: Floats | float) -> Any:
    return 2595.0 * np.log10(1.0 + np.asarray(hz) / 700.0)


def _hz(mel: Floats) -> Floats:
    return np.asarray(700.0 * (10.0 ** (mel / 2595.0) - 1.0))


GRID_HZ: Floats = _hz(np.linspace(_mel(GRID_LOW_HZ), _mel(GRID_HIGH_HZ), GRID_BANDS))
_GRID_MEL: Floats = np.asarray(_mel(GRID_HZ))


@dataclass(frozen=True)
class Timbre:
    """A long-term envelope: dB at :data:`GRID_HZ`, zero mean, over ``voiced_frames``."""

    envelope_db: tuple[float, ...]
    voiced_frames: int

    def to_json(self) -> dict[str, Any]:
        return {
            "method": METHOD,
            "grid_hz": [round(float(hz), 1) for hz in GRID_HZ],
            "envelope_db": [round(value, 2) for value in self.envelope_db],
            "voiced_frames": self.voiced_frames,
        }

    @classmethod
    def from_json(cls, data: Any) -> Timbre | None:
        """The description stored by :meth:`to_json`; ``None`` when ``data`` is missing or
        was made another way (a profile built before timbre was described)."""
        if not isinstance(data, dict) or data.get("method") != METHOD:
            return None
        values = data.get("envelope_db")
        if not isinstance(values, list) or len(values) != GRID_BANDS:
            return None
        try:
            envelope = tuple(float(value) for value in values)
        except (TypeError, ValueError):
            return None
        if not all(math.isfinite(value) for value in envelope):
            return None
        return cls(envelope, int(data.get("voiced_frames", 0)))


def long_term_envelope(frames: Sequence[audio.WorldFrames]) -> Floats | None:
    """Mean dB envelope (one value per FFT bin) over the voiced frames of ``frames``, all
    at one sample rate; ``None`` when fewer than ``MIN_VOICED_FRAMES`` are voiced."""
    voiced = [f.envelope[f.f0 > 0] for f in frames if f.f0.size]
    rows = np.concatenate(voiced) if voiced else np.zeros((0, 1))
    if rows.shape[0] < audio.MIN_VOICED_FRAMES:
        return None
    return np.asarray(np.mean(10.0 * np.log10(rows + _TINY), axis=0))


def on_grid(envelope_db: Floats, sample_rate: int, warp: float = 1.0) -> Floats:
    """A per-bin dB envelope at :data:`GRID_HZ`, after warping by ``warp``, zero mean."""
    values = np.interp(GRID_HZ / warp, _bin_hz(envelope_db.size, sample_rate), envelope_db)
    return np.asarray(values - values.mean())


def describe(samples: audio.Samples, sample_rate: int) -> Timbre | None:
    """The long-term envelope of a speaker's clip (``None`` when it is hardly voiced)."""
    f0 = audio.world_f0(samples, sample_rate)
    x = np.ascontiguousarray(samples, dtype=np.float64)
    envelope = audio.world_envelope(x, f0, sample_rate)
    empty = np.zeros((0, 1))
    frames = audio.WorldFrames(f0, envelope, empty, sample_rate, samples.size)
    mean = long_term_envelope([frames])
    if mean is None:
        return None
    grid = on_grid(mean, sample_rate)
    return Timbre(tuple(float(v) for v in grid), int(np.count_nonzero(f0 > 0)))


@dataclass(frozen=True)
class TimbreMap:
    """Warp then correct every frame's envelope (see the module doc)."""

    warp: float  # applied, after its strength
    correction_db: tuple[float, ...]  # at GRID_HZ, after its strength
    fitted_warp: float  # the warp that best lines the envelopes up
    distance_before_db: float  # RMS of (speaker - synthetic) long-term envelopes
    distance_after_db: float  # the same once mapped

    @classmethod
    def between(
        cls,
        source_db: Floats,
        sample_rate: int,
        target: Timbre,
        strength: float,
        warp_strength: float,
    ) -> TimbreMap:
        """The map from a source long-term envelope (per bin, :func:`long_term_envelope`)
        to ``target``. ``strength`` scales the correction and ``warp_strength`` the warp
        (in log frequency), both 0..1."""
        wanted = np.asarray(target.envelope_db)
        # the warp is fitted on the shape left once a straight line in mel is taken out of
        # the difference: tilt is the correction's to fix, not the warp's
        basis = np.stack([np.ones_like(_GRID_MEL), _GRID_MEL - _GRID_MEL.mean()], axis=1)

        def misfit(warp: float) -> float:
            residual = wanted - on_grid(source_db, sample_rate, warp)
            fitted, *_ = np.linalg.lstsq(basis, residual, rcond=None)
            return float(np.mean((residual - basis @ fitted) ** 2))

        fitted_warp = float(min(WARP_CANDIDATES, key=misfit))
        warp = fitted_warp**warp_strength
        difference = wanted - on_grid(source_db, sample_rate, warp)
        correction = np.clip(strength * difference, -MAX_CORRECTION_DB, MAX_CORRECTION_DB)
        before = wanted - on_grid(source_db, sample_rate)
        after = difference - correction
        return cls(
            warp=warp,
            correction_db=tuple(float(v) for v in correction),
            fitted_warp=fitted_warp,
            distance_before_db=float(np.sqrt(np.mean((before - before.mean()) ** 2))),
            distance_after_db=float(np.sqrt(np.mean((after - after.mean()) ** 2))),
        )

    def apply(self, envelope: Floats, sample_rate: int) -> Floats:
        """``envelope`` (WORLD power envelope, frames × bins) warped and corrected."""
        bins = envelope.shape[1]
        log = 10.0 * np.log10(envelope + _TINY)
        if self.warp != 1.0:
            # bin k takes the value at frequency f_k / warp (held at Nyquist)
            source = np.minimum(np.arange(bins) / self.warp, bins - 1.0)
            low = np.floor(source).astype(int)
            high = np.minimum(low + 1, bins - 1)
            weight = source - low
            log = log[:, low] * (1.0 - weight) + log[:, high] * weight
        correction = np.interp(_bin_hz(bins, sample_rate), GRID_HZ, np.asarray(self.correction_db))
        return np.asarray(10.0 ** ((log + correction) / 10.0))

    def to_json(self) -> dict[str, Any]:
        return {
            "warp": round(self.warp, 3),
            "fitted_warp": round(self.fitted_warp, 3),
            "distance_before_db": round(self.distance_before_db, 2),
            "distance_after_db": round(self.distance_after_db, 2),
        }


def _bin_hz(bins: int, sample_rate: int) -> Floats:
    return np.linspace(0.0, sample_rate / 2.0, bins)
