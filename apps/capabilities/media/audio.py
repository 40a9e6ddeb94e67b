"""Audio in, audio out and what we measure in between.

Decoding goes through PyAV (its bundled ffmpeg reads wav, mp3, flac, ogg, m4a...), pitch
is measured with Praat (parselmouth) and changed with the WORLD vocoder (pyworld), and
loudness is measured to ITU-R BS.1770-4 (pyloudnorm) and levelled to EBU R128. All
samples are float32 mono in [-1, 1]; all rates are in Hz.

Helpers raise :class:`~myspinbot.errors.PermanentError` for input that is not
usable audio (``bad_audio``, ``too_long``), so a service can let them through. Every
file is opened through :mod:`~apps.capabilities.media.probe` (allowed containers and
codecs only, no network, bounded decoding).
"""

from __future__ import annotations

import math
import re
import wave
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from types import ModuleType
from typing import Any

import av
import numpy as np
import numpy.typing as npt

from apps.capabilities.media import probe
from myspinbot.errors import PermanentError

Samples = npt.NDArray[np.float32]

# Energy-based silence detection: 20 ms frames; a frame is sound when its RMS is above
# both an absolute floor (-60 dBFS) and 35 dB below the loudest frame.
FRAME_SECONDS = 0.02
SILENCE_FLOOR_DB = -60.0
SILENCE_BELOW_PEAK_DB = 35.0
# Kept around the sound when trimming, so soft onsets and endings are not cut.
TRIM_MARGIN_SECONDS = 0.05

# Praat pitch analysis: 10 ms steps, 60-600 Hz covers speaking voices low and high.
PITCH_STEP_SECONDS = 0.01
PITCH_FLOOR_HZ = 60.0
PITCH_CEILING_HZ = 600.0
# Fewer voiced frames than this (0.05 s) is no pitch at all, not a measurement.
MIN_VOICED_FRAMES = 5

# WORLD analysis frame period (ms).
WORLD_FRAME_MS = 5.0
# The lowest F0 CheapTrick's window is sized for (WORLD's own default). Its FFT is the
# next power of two above three periods of this floor: at 22,050 and 24,000 Hz, 1,024
# points where the 60 Hz pitch floor would ask for 2,048, which halves the cost of the
# envelope and aperiodicity and the synthesis that reads them. F0 below it (rare in
# speech) still drives synthesis; only the envelope's window stops growing.
ENVELOPE_FLOOR_HZ = 71.0

_WORD = re.compile(r"\w+(?:['’]\w+)*")


# --- Reading and writing -------------------------------------------------------------


def duration_of(path: Path) -> float | None:
    """The duration the container declares for its first audio stream, in seconds.

    Reads only the header, so a long file is refused before it is decoded. ``None`` when
    the container does not say (some streams only know their length once read).
    Raises ``bad_audio`` when the file cannot be opened or has no audio stream, and the
    errors of :func:`~apps.capabilities.media.probe.open_audio` (a container or codec not
    allowed, a header past the bounds).
    """
    with probe.open_audio(path) as opened:
        return opened.info.duration


def decode_audio(path: Path, sample_rate: int, max_seconds: float | None = None) -> Samples:
    """Decode the first audio stream of ``path`` to float32 mono at ``sample_rate``.

    Raises ``bad_audio`` when the file is not decodable audio, ``too_long`` as soon as
    more than ``max_seconds`` have been decoded (whatever the header claimed), and
    ``audio_too_long`` / ``media_timeout`` at the bounds every audio file has
    (:mod:`~apps.capabilities.media.probe`), so at most that much is ever held.
    """
    limit = None if max_seconds is None else math.ceil(max_seconds * sample_rate)
    chunks: list[Samples] = []
    total = 0
    with probe.open_audio(path) as opened:
        resampler = av.AudioResampler(format="flt", layout="mono", rate=sample_rate)
        try:
            for frame in probe.decoded_frames(opened):
                for out in resampler.resample(frame):
                    chunk = out.to_ndarray().reshape(-1).astype(np.float32, copy=False)
                    chunks.append(chunk)
                    total += chunk.size
                if limit is not None and total > limit:
                    raise PermanentError(
                        "too_long",
                        f"the audio is longer than {max_seconds:g} s",
                        details={"max_seconds": max_seconds},
                    )
            for out in resampler.resample(None):
                chunks.append(out.to_ndarray().reshape(-1).astype(np.float32, copy=False))
        except av.FFmpegError as error:
            raise PermanentError("bad_audio", f"cannot decode {path.name}: {error}") from None
    if not chunks:
        raise PermanentError("bad_audio", f"{path.name} holds no audio samples")
    samples = np.concatenate(chunks)
    if limit is not None and samples.size > limit:
        raise PermanentError(
            "too_long",
            f"the audio is longer than {max_seconds:g} s",
            details={"max_seconds": max_seconds},
        )
    return samples


def write_wav(path: Path, samples: Samples, sample_rate: int) -> Path:
    """Write mono 16-bit PCM WAV (samples clipped to [-1, 1])."""
    pcm = np.round(np.clip(samples, -1.0, 1.0) * 32767.0).astype("<i2")
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(sample_rate)
        out.writeframes(pcm.tobytes())
    return path


# --- Silence ---------------------------------------------------------------------------


def frame_rms(samples: Samples, sample_rate: int) -> npt.NDArray[np.float64]:
    """RMS of consecutive ``FRAME_SECONDS`` frames (the last one zero-padded)."""
    size = max(1, round(FRAME_SECONDS * sample_rate))
    count = math.ceil(samples.size / size)
    padded = np.zeros(count * size, dtype=np.float64)
    padded[: samples.size] = samples
    return np.asarray(np.sqrt(np.mean(padded.reshape(count, size) ** 2, axis=1)))


def sound_frames(samples: Samples, sample_rate: int) -> npt.NDArray[np.bool_]:
    """Which ``FRAME_SECONDS`` frames hold sound (see the thresholds above)."""
    rms = frame_rms(samples, sample_rate)
    if rms.size == 0:
        return np.zeros(0, dtype=bool)
    threshold = max(
        10 ** (SILENCE_FLOOR_DB / 20), float(rms.max()) * 10 ** (-SILENCE_BELOW_PEAK_DB / 20)
    )
    return np.asarray(rms > threshold)


def trim_silence(
    samples: Samples, sample_rate: int, margin_seconds: float = TRIM_MARGIN_SECONDS
) -> Samples:
    """Cut leading and trailing silence, keeping ``margin_seconds`` around the sound.

    Returns an empty array when nothing is louder than the silence floor.
    """
    loud = np.flatnonzero(sound_frames(samples, sample_rate))
    if loud.size == 0:
        return samples[:0]
    size = max(1, round(FRAME_SECONDS * sample_rate))
    margin = round(margin_seconds * sample_rate)
    start = max(0, int(loud[0]) * size - margin)
    end = min(samples.size, (int(loud[-1]) + 1) * size + margin)
    return samples[start:end]


def sound_seconds(samples: Samples, sample_rate: int) -> float:
    """Seconds of sound: the frames above the silence threshold, pauses left out."""
    frames = int(np.count_nonzero(sound_frames(samples, sample_rate)))
    return frames * max(1, round(FRAME_SECONDS * sample_rate)) / sample_rate


# --- Speech measurements -------------------------------------------------------------


@dataclass(frozen=True)
class PitchStats:
    """F0 over the voiced frames: median and the 5th and 95th percentiles (Hz)."""

    median_hz: float
    p05_hz: float
    p95_hz: float
    voiced_seconds: float

    def to_json(self) -> dict[str, float]:
        return {
            "median_hz": round(self.median_hz, 2),
            "p05_hz": round(self.p05_hz, 2),
            "p95_hz": round(self.p95_hz, 2),
        }


def measure_pitch(samples: Samples, sample_rate: int) -> PitchStats | None:
    """Praat's autocorrelation pitch (10 ms steps, 60-600 Hz) over the voiced frames.

    ``None`` when fewer than ``MIN_VOICED_FRAMES`` frames are voiced.
    """
    import parselmouth

    sound = parselmouth.Sound(samples.astype(np.float64), sampling_frequency=sample_rate)
    pitch = sound.to_pitch_ac(
        time_step=PITCH_STEP_SECONDS, pitch_floor=PITCH_FLOOR_HZ, pitch_ceiling=PITCH_CEILING_HZ
    )
    f0 = np.asarray(pitch.selected_array["frequency"], dtype=np.float64)
    voiced = f0[f0 > 0]
    if voiced.size < MIN_VOICED_FRAMES:
        return None
    p05, median, p95 = np.percentile(voiced, [5, 50, 95])
    return PitchStats(float(median), float(p05), float(p95), voiced.size * PITCH_STEP_SECONDS)


def count_words(text: str) -> int:
    """Words as a reader counts them: runs of letters/digits, "don't" being one."""
    return len(_WORD.findall(text))


# --- Changing pitch (WORLD) ----------------------------------------------------------


@cache
def pyworld() -> ModuleType:
    """The WORLD bindings, imported on first use (setuptools is pinned below 81 in the
    requirements because pyworld 0.3.5 imports ``pkg_resources`` to read its version)."""
    import warnings

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="pkg_resources is deprecated")
        import pyworld as package
    return package


# DIO's voicing search: 4 filter channels per octave (its default 2) and candidates kept
# within 20 % of each other (default 10 %). With the defaults, DIO drops voicing in short
# voiced stretches (word-final and word-initial consonants): a WORLD resynthesis of the
# neural voice, unchanged otherwise, doubled Whisper tiny.en's word errors on the 20
# bench sentences (6.3 % -> 11.9 %); with these 8.2 %, for 30 % more F0 time (Harvest:
# 13.2 %, at 3.4 times the cost). bench/RESULTS.md "Voice".
DIO_CHANNELS_IN_OCTAVE = 4.0
DIO_ALLOWED_RANGE = 0.2


def world_f0(samples: Samples, sample_rate: int) -> npt.NDArray[np.float64]:
    """WORLD's F0 contour (DIO refined by StoneMask), one value per 5 ms, 0 when unvoiced."""
    world = pyworld()
    x = np.ascontiguousarray(samples, dtype=np.float64)
    f0, times = world.dio(
        x,
        sample_rate,
        f0_floor=PITCH_FLOOR_HZ,
        f0_ceil=PITCH_CEILING_HZ,
        channels_in_octave=DIO_CHANNELS_IN_OCTAVE,
        frame_period=WORLD_FRAME_MS,
        speed=1,
        allowed_range=DIO_ALLOWED_RANGE,
    )
    return np.asarray(world.stonemask(x, f0, times, sample_rate), dtype=np.float64)


@dataclass(frozen=True)
class PitchMap:
    """Moves a pitch distribution onto another in log frequency: the source median goes
    to the target median and distances from it are scaled by ``range_scale``."""

    source_median_hz: float
    target_median_hz: float
    range_scale: float

    @classmethod
    def between(cls, source_f0: npt.NDArray[np.float64], target: PitchStats) -> PitchMap:
        """The map from the voiced values of ``source_f0`` onto ``target``'s statistics.

        The range scale is the ratio of the 5th-95th percentile spans (in log Hz), bounded
        to 0.25-4 so that a near-monotone source is not stretched into noise.
        """
        voiced = source_f0[source_f0 > 0]
        p05, median, p95 = np.percentile(voiced, [5, 50, 95])
        source_span = math.log(p95 / p05)
        target_span = math.log(target.p95_hz / target.p05_hz)
        scale = 1.0 if source_span < 1e-3 else min(4.0, max(0.25, target_span / source_span))
        return cls(float(median), target.median_hz, scale)

    def apply(self, f0: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        voiced = f0 > 0
        mapped = np.zeros_like(f0)
        log_ratio = np.log(f0[voiced] / self.source_median_hz)
        mapped[voiced] = self.target_median_hz * np.exp(log_ratio * self.range_scale)
        return mapped


@dataclass(frozen=True)
class WorldFrames:
    """WORLD's analysis of a clip, one row per ``WORLD_FRAME_MS``: F0 (0 when unvoiced),
    the spectral envelope (power, ``fft_size // 2 + 1`` bins from 0 Hz to Nyquist) and
    the aperiodicity, plus the clip's length in samples."""

    f0: npt.NDArray[np.float64]
    envelope: npt.NDArray[np.float64]
    aperiodicity: npt.NDArray[np.float64]
    sample_rate: int
    length: int


def world_analyse(
    samples: Samples, sample_rate: int, f0: npt.NDArray[np.float64] | None = None
) -> WorldFrames:
    """F0 (:func:`world_f0`, unless given), CheapTrick envelope and D4C aperiodicity."""
    world = pyworld()
    x = np.ascontiguousarray(samples, dtype=np.float64)
    if f0 is None:
        f0 = world_f0(samples, sample_rate)
    times = world_times(f0)
    fft_size = envelope_fft_size(sample_rate)
    envelope = world_envelope(x, f0, sample_rate)
    aperiodicity = world.d4c(x, f0, times, sample_rate, fft_size=fft_size)
    return WorldFrames(f0, envelope, aperiodicity, sample_rate, samples.size)


def world_times(f0: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """The time of each WORLD frame, in seconds."""
    return np.arange(f0.size, dtype=np.float64) * WORLD_FRAME_MS / 1000.0


def envelope_fft_size(sample_rate: int) -> int:
    """CheapTrick's and D4C's FFT size at ``sample_rate`` (see :data:`ENVELOPE_FLOOR_HZ`)."""
    return int(pyworld().get_cheaptrick_fft_size(sample_rate, ENVELOPE_FLOOR_HZ))


def world_envelope(
    x: npt.NDArray[np.float64], f0: npt.NDArray[np.float64], sample_rate: int
) -> npt.NDArray[np.float64]:
    """CheapTrick's spectral envelope of ``x`` (float64) along ``f0``, one row per frame."""
    fft_size = envelope_fft_size(sample_rate)
    return np.asarray(
        pyworld().cheaptrick(x, f0, world_times(f0), sample_rate, fft_size=fft_size),
        dtype=np.float64,
    )


def stretch_frames(frames: WorldFrames, factor: float) -> WorldFrames:
    """``frames`` lasting ``factor`` times as long (above 1: slower speech), pitch and
    timbre kept: each new frame reads the analysis at its time divided by ``factor``,
    F0 from the nearest frame (so voicing stays crisp), the envelope and aperiodicity
    interpolated between the two around it."""
    count = frames.f0.size
    new_count = max(1, round(count * factor))
    position = np.minimum(np.arange(new_count) / factor, count - 1.0)
    low = np.floor(position).astype(int)
    high = np.minimum(low + 1, count - 1)
    weight = (position - low)[:, None]

    def between(rows: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        return np.ascontiguousarray(rows[low] * (1.0 - weight) + rows[high] * weight)

    nearest = np.minimum(np.round(position).astype(int), count - 1)
    return WorldFrames(
        np.ascontiguousarray(frames.f0[nearest]),
        between(frames.envelope),
        between(frames.aperiodicity),
        frames.sample_rate,
        round(frames.length * factor),
    )


def world_synthesize(
    frames: WorldFrames,
    new_f0: npt.NDArray[np.float64],
    envelope: npt.NDArray[np.float64] | None = None,
    every: int = 1,
) -> Samples:
    """The clip resynthesized from ``frames`` following ``new_f0``, with ``envelope``
    in place of the analysed one when given. Same length as the analysed clip.

    With ``every`` above 1 the synthesis runs every ``WORLD_FRAME_MS / every``: F0 held,
    envelope and aperiodicity interpolated between the analysed frames (the analysis
    itself stays at ``WORLD_FRAME_MS``: analysed finer, the envelope and DIO's F0 follow
    the waveform within a pitch period, and a moved pitch then carries a subharmonic)."""
    world = pyworld()
    f0 = np.ascontiguousarray(new_f0, dtype=np.float64)
    spectrum = frames.envelope if envelope is None else np.ascontiguousarray(envelope)
    aperiodicity = frames.aperiodicity
    if every > 1:
        position = np.minimum(np.arange(f0.size * every) / every, f0.size - 1.0)
        low = np.floor(position).astype(int)
        high = np.minimum(low + 1, f0.size - 1)
        weight = (position - low)[:, None]
        f0 = np.ascontiguousarray(f0[low])
        spectrum = np.ascontiguousarray(spectrum[low] * (1.0 - weight) + spectrum[high] * weight)
        aperiodicity = np.ascontiguousarray(
            aperiodicity[low] * (1.0 - weight) + aperiodicity[high] * weight
        )
    y = world.synthesize(
        f0, spectrum, aperiodicity, frames.sample_rate, frame_period=WORLD_FRAME_MS / every
    )
    out = np.zeros(frames.length, dtype=np.float32)
    n = min(frames.length, y.size)
    out[:n] = y[:n]
    return out


def resynthesize(
    samples: Samples,
    sample_rate: int,
    f0: npt.NDArray[np.float64],
    new_f0: npt.NDArray[np.float64],
) -> Samples:
    """Resynthesize ``samples`` with WORLD, keeping its spectral envelope and aperiodicity
    (so the voice's timbre and timing) but following ``new_f0``. Same length as input."""
    return world_synthesize(world_analyse(samples, sample_rate, f0), new_f0)


# --- Loudness (EBU R128) ---------------------------------------------------------------

# EBU R128 broadcast/streaming target for spoken word: -16 LUFS integrated (ITU-R BS.1770-4
# K-weighted, gated), with true peaks held at or below -1 dBTP so that a lossy encoder's
# overshoot does not clip.
TARGET_LUFS = -16.0
TRUE_PEAK_CEILING_DBTP = -1.0
# True peak is estimated on the signal oversampled 4x (BS.1770-4 annex 2).
TRUE_PEAK_OVERSAMPLING = 4
# One BS.1770 gating block; a shorter clip is measured as a single block of its own length.
LOUDNESS_BLOCK_SECONDS = 0.4
# The limiter starts lowering the gain this long before a peak (so the gain ramps down
# smoothly instead of jumping), holds it this long after, then ramps back up as it came.
LIMITER_LOOKAHEAD_SECONDS = 0.005
LIMITER_HOLD_SECONDS = 0.02
# Each limiter round lowers what the last one left over the ceiling (the gain curve itself
# moves inter-sample peaks a little).
LIMITER_ROUNDS = 3
# Limiting lowers the loudness a little, so gain and limiter are re-run (at most this many
# times) until the loudness is within the tolerance of the target.
LOUDNESS_PASSES = 8
LOUDNESS_TOLERANCE_LU = 0.05


@dataclass(frozen=True)
class Loudness:
    """What :func:`normalize_loudness` measured on its output.

    ``lufs`` is ``None`` when the signal is silent (below BS.1770's -70 LUFS absolute
    gate) or empty; ``true_peak_dbtp`` is ``None`` when every sample is zero.
    """

    lufs: float | None
    true_peak_dbtp: float | None
    gain_db: float  # the static gain, before any limiting
    limited: bool


def integrated_loudness(samples: npt.NDArray[np.floating[Any]], sample_rate: int) -> float | None:
    """BS.1770-4 integrated loudness (LUFS) with pyloudnorm; a clip shorter than one
    gating block is measured as one block of its own length. ``None`` when the clip is
    empty or silent (no block above the -70 LUFS absolute gate)."""
    import pyloudnorm

    if samples.size < 2:
        return None
    block = min(LOUDNESS_BLOCK_SECONDS, samples.size / sample_rate)
    meter = pyloudnorm.Meter(sample_rate, block_size=block)
    lufs = float(meter.integrated_loudness(samples.astype(np.float64)))
    return lufs if math.isfinite(lufs) else None


def true_peak(samples: npt.NDArray[np.floating[Any]]) -> float:
    """Linear true peak: the largest magnitude of the signal oversampled
    ``TRUE_PEAK_OVERSAMPLING`` times (polyphase resampling)."""
    return float(np.max(np.abs(_oversampled(samples)), initial=0.0))


def to_dbtp(peak: float) -> float | None:
    return 20 * math.log10(peak) if peak > 0 else None


def normalize_loudness(
    samples: Samples,
    sample_rate: int,
    target_lufs: float = TARGET_LUFS,
    ceiling_dbtp: float = TRUE_PEAK_CEILING_DBTP,
) -> tuple[Samples, Loudness]:
    """``samples`` at ``target_lufs`` integrated loudness with no true peak above
    ``ceiling_dbtp``.

    The gain is one static gain; where it would push a true peak over the ceiling, a
    look-ahead limiter lowers the gain smoothly around that peak only (never a hard
    clip). Silent or empty input comes back unchanged, with ``lufs`` ``None``.
    """
    x = samples.astype(np.float64)
    lufs = integrated_loudness(samples, sample_rate)
    if lufs is None:
        peak = true_peak(samples)
        return samples.copy(), Loudness(None, to_dbtp(peak), 0.0, False)
    ceiling = 10 ** (ceiling_dbtp / 20)
    gain_db = target_lufs - lufs
    limited = False
    previous: tuple[float, float] | None = None
    # Oversampling is linear: the true peak of x times a static gain is that gain times
    # x's, so x is oversampled once, not once per pass.
    over = np.abs(_oversampled(x))
    peak = float(over.max(initial=0.0))
    for _ in range(LOUDNESS_PASSES):
        scale = 10 ** (gain_db / 20)
        y = x * scale
        if peak * scale > ceiling:
            y = _limit(y, sample_rate, ceiling, over * scale)
            limited = True
        measured = integrated_loudness(y, sample_rate)
        assert measured is not None, "a gain cannot silence a measured signal"
        if not limited or abs(measured - target_lufs) <= LOUDNESS_TOLERANCE_LU:
            lufs = measured
            break
        # Limiting gives back less than each dB of gain: step by the secant of the last
        # two passes (1 LU per dB before the first, the unlimited slope).
        slope = 1.0
        if previous is not None and gain_db != previous[0]:
            slope = min(1.0, max(0.05, (measured - previous[1]) / (gain_db - previous[0])))
        previous = (gain_db, measured)
        lufs = measured
        gain_db += (target_lufs - measured) / slope
    out = y.astype(np.float32)
    out_peak = true_peak(out) if limited else peak * 10 ** (gain_db / 20)
    return out, Loudness(lufs, to_dbtp(out_peak), gain_db, limited)


def _oversampled(x: npt.NDArray[Any]) -> npt.NDArray[np.float64]:
    from scipy.signal import resample_poly

    if x.size == 0:
        return np.zeros(0)
    return np.asarray(resample_poly(x.astype(np.float64), TRUE_PEAK_OVERSAMPLING, 1))


def _limit(
    x: npt.NDArray[np.float64],
    sample_rate: int,
    ceiling: float,
    over: npt.NDArray[np.float64] | None = None,
) -> npt.NDArray[np.float64]:
    """Look-ahead peak limiter: the gain each sample needs to keep its true peak under
    ``ceiling``, spread (minimum over the look-ahead and hold) and then smoothed with a
    moving average as long as the look-ahead, which keeps it at or below the needed
    gain everywhere. Gain changes are a few ms long, so there is no hard clip.

    ``over`` is ``|x|`` oversampled, when the caller has it. Between rounds it is scaled
    by the gain held over each sample's oversampled points rather than computed again
    (the gain moves over milliseconds, the interpolation filter spans one); the exact
    true peak is taken once at the end, and any excess goes with one static gain."""
    from scipy.ndimage import minimum_filter1d

    factor = TRUE_PEAK_OVERSAMPLING
    # (a little under the ceiling: the gain changes between the samples it was set on)
    target = ceiling * 0.995
    if over is None:
        over = np.abs(_oversampled(x))
    for _ in range(LIMITER_ROUNDS):
        per_sample = np.zeros(x.size)
        usable = min(x.size, over.size // factor)
        per_sample[:usable] = over[: usable * factor].reshape(usable, factor).max(axis=1)
        # an inter-sample peak sits between two samples: both must carry its gain
        per_sample[1:] = np.maximum(per_sample[1:], per_sample[:-1])
        if per_sample.max(initial=0.0) <= ceiling:
            break
        needed = np.minimum(1.0, target / np.maximum(per_sample, 1e-12))
        ahead = max(1, round(LIMITER_LOOKAHEAD_SECONDS * sample_rate))
        hold = max(1, round(LIMITER_HOLD_SECONDS * sample_rate))
        # minimum over [n - hold, n + ahead - 1], then a causal mean over `ahead` samples:
        # every sample of the mean's window covers n, so the result is <= needed[n].
        size = hold + ahead
        spread = minimum_filter1d(needed, size=size, origin=hold - size // 2, mode="nearest")
        padded = np.concatenate([np.full(ahead - 1, spread[0]), spread])
        # (the moving mean from running sums: linear time, where a convolution with the
        # window is as slow as it is long)
        sums = np.concatenate([[0.0], np.cumsum(padded)])
        gain = (sums[ahead:] - sums[:-ahead]) / ahead
        x = x * gain
        held = np.repeat(gain, factor)
        over = over[: held.size] * held[: over.size]
    # (what the rounds left over the ceiling, if anything, goes with one static gain)
    peak = true_peak(x)
    return x * (ceiling / peak) if peak > ceiling else x
