"""When each word and phone is spoken, and what the mouth does meanwhile.

- :func:`align` force-aligns a KNOWN text to its speech with PocketSphinx 5 (its bundled
  US English acoustic model and CMU dictionary): words and ARPAbet phones with times.
- :func:`mouth_track` turns the phones into four mouth channels per video frame
  (:data:`CHANNELS`), blending neighbouring phones Cohen–Massaro style so that the
  mouth moves continuously instead of snapping from one viseme to the next.
- :func:`loudness_envelope` gives the loudness per video frame on a 0..1 scale, for
  scaling the mouth's opening by the voice's energy.

Pure functions of their inputs: no Django, no torch. The decoder is built once per
process (a forked worker child builds its own) and shared under a lock.
"""

from __future__ import annotations

import math
import os
import re
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy.io import wavfile
from scipy.signal import resample_poly

CHANNELS = ("open", "spread", "close", "teeth")
"""The mouth channels, in the column order of :func:`mouth_track`: ``open`` jaw and lip
opening 0..1, ``spread`` -1 rounded/pursed .. +1 wide, ``close`` lip press 0..1 (1 on
P/B/M), ``teeth`` lower lip against the upper teeth 0..1 (1 on F/V)."""

ALIGN_RATE = 16_000  # Hz: what the acoustic model was trained on
SILENCE = "SIL"


class AlignmentError(ValueError):
    """The text could not be aligned to the audio (no speech, no known word, unreadable
    WAV). Retrying with the same input gives the same result."""


@dataclass(frozen=True)
class Word:
    """A dictionary word of the text and when it is spoken (seconds from the start)."""

    text: str
    start: float
    end: float


@dataclass(frozen=True)
class Phone:
    """An ARPAbet phone without stress digit (``"AA"``, ``"P"``; ``"SIL"`` for silence)."""

    label: str
    start: float
    end: float


@dataclass(frozen=True)
class Alignment:
    """Words (silences left out) and phones (silences included) in time order, and the
    words of the text that were left out because the dictionary does not know them."""

    words: tuple[Word, ...]
    phones: tuple[Phone, ...]
    skipped: tuple[str, ...]


# --- forced alignment -------------------------------------------------------------------

_decoder_lock = threading.Lock()
_decoder: Any = None
_decoder_pid: int | None = None


def _get_decoder() -> Any:
    """The process's decoder; call with ``_decoder_lock`` held."""
    global _decoder, _decoder_pid
    if _decoder is None or _decoder_pid != os.getpid():
        from pocketsphinx import Decoder

        # No language model: the search is the FSG that set_align_text builds.
        # bestpath off: alignment needs the Viterbi path, not a lattice rescoring.
        _decoder, _decoder_pid = Decoder(lm=None, loglevel="FATAL", bestpath=False), os.getpid()
    return _decoder


def normalise_words(text: str) -> list[str]:
    """``text`` as lowercase words: punctuation dropped (apostrophes inside a word kept,
    hyphens split words)."""
    tokens = re.sub(r"[^a-z0-9']+", " ", text.lower()).split()
    return [word for word in (token.strip("'") for token in tokens) if word]


def read_speech(wav_path: Path) -> npt.NDArray[np.int16]:
    """``wav_path`` (any rate, mono or multichannel, integer PCM or float) as 16 kHz mono
    int16, the decoder's input."""
    try:
        rate, data = wavfile.read(wav_path)
    except (OSError, ValueError) as error:
        raise AlignmentError(f"cannot read {wav_path.name} as WAV: {error}") from None
    return _to_pcm(_as_float_mono(data), int(rate))


def _to_pcm(mono: npt.NDArray[np.float64], rate: int) -> npt.NDArray[np.int16]:
    """Float mono at ``rate`` Hz as the decoder's 16 kHz int16."""
    if rate != ALIGN_RATE and mono.size:
        common = math.gcd(rate, ALIGN_RATE)
        mono = resample_poly(mono, ALIGN_RATE // common, rate // common)
    return np.asarray(np.round(np.clip(mono, -1.0, 1.0) * 32767.0), dtype=np.int16)


def align(wav_path: Path, text: str) -> Alignment:
    """Force-align ``text`` (what is said, known in advance) to the speech in ``wav_path``.

    The text is lowercased and stripped of punctuation; words missing from the
    dictionary are left out and listed in ``skipped``. Times are in seconds from the
    start of the file, within its duration. Raises :class:`AlignmentError` when no word
    is left to align or the speech does not match the text (e.g. the WAV is silent).
    """
    return _align_pcm(read_speech(wav_path), text, wav_path.name)


def align_samples(samples: npt.NDArray[Any], rate: int, text: str) -> Alignment:
    """:func:`align` for speech in memory: float samples in [-1, 1] (mono) at ``rate`` Hz."""
    return _align_pcm(_to_pcm(_as_float_mono(np.asarray(samples)), int(rate)), text, "the speech")


def _align_pcm(pcm: npt.NDArray[np.int16], text: str, name: str) -> Alignment:
    words = normalise_words(text)
    if pcm.size == 0:
        raise AlignmentError(f"{name} holds no audio samples")
    with _decoder_lock:
        decoder = _get_decoder()
        known = [word for word in words if decoder.lookup_word(word) is not None]
        skipped = tuple(word for word in words if decoder.lookup_word(word) is None)
        if not known:
            raise AlignmentError(
                f"no word of the text is in the dictionary (text {text!r}, skipped {skipped})"
            )
        frame_rate = float(decoder.config["frate"])
        raw = pcm.tobytes()
        # Pass 1 finds the words through an FSG of the text; pass 2 (set_alignment)
        # aligns their phones and states inside those words.
        decoder.set_align_text(" ".join(known))
        decoder.start_utt()
        decoder.process_raw(raw, full_utt=True)
        decoder.end_utt()
        if decoder.hyp() is None:
            raise AlignmentError(
                f"the speech in {name} does not match the text (silence or other words)"
            )
        decoder.set_alignment()
        decoder.start_utt()
        decoder.process_raw(raw, full_utt=True)
        decoder.end_utt()
        segments = decoder.get_alignment()
        if segments is None:
            raise AlignmentError(f"the phones of the text do not align to {name}")
        aligned = [
            (word.name, word.start, word.duration, [(p.name, p.start, p.duration) for p in word])
            for word in segments
        ]
    duration = pcm.size / ALIGN_RATE

    def seconds(frame: int) -> float:
        return min(duration, frame / frame_rate)

    out_words: list[Word] = []
    out_phones: list[Phone] = []
    for name, start, length, phones in aligned:
        if not _is_filler(name):
            out_words.append(Word(_base_word(name), seconds(start), seconds(start + length)))
        for label, p_start, p_length in phones:
            out_phones.append(
                Phone(_base_phone(label), seconds(p_start), seconds(p_start + p_length))
            )
    if not out_words:
        raise AlignmentError(f"no word of the text aligned to {name}")
    return Alignment(words=tuple(out_words), phones=tuple(out_phones), skipped=skipped)


def _as_float_mono(data: npt.NDArray[Any]) -> npt.NDArray[np.float64]:
    if np.issubdtype(data.dtype, np.floating):
        samples = data.astype(np.float64)
    elif data.dtype == np.uint8:
        samples = (data.astype(np.float64) - 128.0) / 128.0
    else:
        samples = data.astype(np.float64) / float(-np.iinfo(data.dtype).min)
    return samples.mean(axis=1) if samples.ndim == 2 else samples


def _is_filler(name: str) -> bool:
    return name.startswith(("<", "[", "+"))


def _base_word(name: str) -> str:
    """``will(2)`` (an alternative pronunciation) -> ``will``."""
    return name.split("(", 1)[0]


def _base_phone(label: str) -> str:
    base = label.rstrip("012")
    return base if base in _TARGETS else SILENCE


# --- visemes with coarticulation --------------------------------------------------------

# Target (open, spread, close, teeth) of each ARPAbet phone.
_TARGETS: dict[str, tuple[float, float, float, float]] = {
    SILENCE: (0.0, 0.0, 0.5, 0.0),  # lips lightly together, relaxed
    # vowels: open wide, spread front, rounded back
    "AA": (1.0, 0.1, 0.0, 0.0),
    "AE": (0.9, 0.5, 0.0, 0.0),
    "AH": (0.75, 0.1, 0.0, 0.0),
    "AO": (0.8, -0.6, 0.0, 0.0),
    "AW": (0.85, -0.4, 0.0, 0.0),
    "AY": (0.9, 0.3, 0.0, 0.0),
    "EH": (0.6, 0.6, 0.0, 0.0),
    "ER": (0.4, -0.3, 0.0, 0.0),
    "EY": (0.5, 0.7, 0.0, 0.0),
    "IH": (0.4, 0.6, 0.0, 0.0),
    "IY": (0.3, 0.9, 0.0, 0.0),
    "OW": (0.55, -0.8, 0.0, 0.0),
    "OY": (0.6, -0.5, 0.0, 0.0),
    "UH": (0.4, -0.6, 0.0, 0.0),
    "UW": (0.25, -1.0, 0.0, 0.0),
    # bilabials press the lips, labiodentals put the lower lip to the teeth
    "P": (0.0, 0.0, 1.0, 0.0),
    "B": (0.0, 0.0, 1.0, 0.0),
    "M": (0.0, 0.0, 1.0, 0.0),
    "F": (0.1, 0.1, 0.0, 1.0),
    "V": (0.1, 0.1, 0.0, 1.0),
    # rounded glides, spread glide
    "W": (0.15, -1.0, 0.0, 0.0),
    "R": (0.25, -0.5, 0.0, 0.0),
    "Y": (0.2, 0.7, 0.0, 0.0),
    # sibilants: teeth nearly together; postalveolars with rounded lips
    "S": (0.1, 0.5, 0.0, 0.0),
    "Z": (0.1, 0.5, 0.0, 0.0),
    "SH": (0.2, -0.5, 0.0, 0.0),
    "ZH": (0.2, -0.5, 0.0, 0.0),
    "CH": (0.2, -0.5, 0.0, 0.0),
    "JH": (0.2, -0.5, 0.0, 0.0),
    # tongue consonants: the lips follow the neighbours (low dominance below)
    "TH": (0.25, 0.2, 0.0, 0.0),
    "DH": (0.25, 0.2, 0.0, 0.0),
    "T": (0.25, 0.2, 0.0, 0.0),
    "D": (0.25, 0.2, 0.0, 0.0),
    "N": (0.25, 0.2, 0.0, 0.0),
    "L": (0.3, 0.2, 0.0, 0.0),
    "K": (0.3, 0.1, 0.0, 0.0),
    "G": (0.3, 0.1, 0.0, 0.0),
    "NG": (0.3, 0.1, 0.0, 0.0),
    "HH": (0.4, 0.0, 0.0, 0.0),
}

# Dominance magnitude per channel (open, spread, close, teeth): how strongly a phone pulls
# its neighbours towards its target. Phones not listed dominate like a vowel (1.0).
_VOWEL_DOMINANCE = (1.0, 1.0, 1.0, 1.0)
_DOMINANCE: dict[str, tuple[float, float, float, float]] = {
    # a lip closure must be reached even when the phone is short
    # (the jaw may stay a little open behind pressed lips: OPEN dominates less)
    **dict.fromkeys(("P", "B", "M"), (3.0, 2.0, 4.5, 2.0)),
    **dict.fromkeys(("F", "V"), (3.0, 1.0, 3.0, 10.0)),
    # lip rounding is visible and spreads over neighbours
    "W": (1.0, 3.0, 1.0, 1.0),
    "UW": (1.0, 2.0, 1.0, 1.0),
    "OW": (1.0, 2.0, 1.0, 1.0),
    **dict.fromkeys(("SH", "ZH", "CH", "JH"), (0.6, 1.5, 1.0, 1.0)),
    # invisible articulations take the shape of their neighbours
    **dict.fromkeys(
        ("T", "D", "N", "L", "K", "G", "NG", "HH", "TH", "DH", "S", "Z", "R", "Y"),
        (0.4, 0.4, 0.4, 0.4),
    ),
}
# A silence this long (s) is a pause: the mouth rests over all of it, not just its middle.
# Under the 0.2 s a listener hears as a pause: the aligner's 10 ms frames give part of a
# pause to the phones beside it (a 200 ms gap in the audio aligned as 0.19 s of SIL).
PAUSE_SECONDS = 0.15
# It holds the jaw closed and the lips neutral, but yields the lip press to a P/B/M
# starting right after it.
_PAUSE_DOMINANCE = (8.0, 4.0, 1.0, 1.0)
_SHORT_SILENCE_DOMINANCE = (1.0, 0.5, 0.5, 0.5)
# Decay rate (1/s) of a dominance away from its phone, per channel. A weighted average of
# targets whose weights change at most θ·w per second changes at most θ·(target range)
# per second, so these bound the mouth's speed; in practice (fast and normal Piper speech)
# no channel moves more than 0.32 per 25 fps frame. Faster decay means fuller vowel
# targets but jumpier motion.
_DECAY = np.array([17.0, 10.0, 19.0, 16.0])
# Phones farther than this (s) from a frame weigh nothing measurable (exp(-10 * 1.5) ~ 3e-7).
_REACH_SECONDS = 1.5


def mouth_track(
    phones: tuple[Phone, ...] | list[Phone], fps: float, duration: float
) -> npt.NDArray[np.float32]:
    """The mouth's four :data:`CHANNELS` at each video frame ``k`` (time ``k / fps``),
    ``ceil(duration * fps)`` frames, float32 of shape ``(frames, 4)``.

    Each phone pulls towards its target with a dominance that peaks mid-phone and decays
    exponentially (Cohen & Massaro 1993); a frame's value is the dominance-weighted mean
    of the targets, so the mouth never snaps: its speed is bounded by the decay rates.
    Lip closures (P/B/M) and lower lip to teeth (F/V) dominate strongly and are reached
    even in short phones; a silence of at least :data:`PAUSE_SECONDS` dominates over its
    whole span, so the mouth rests there. Time that ``phones`` leave uncovered is silence.
    """
    frames = max(0, math.ceil(duration * fps - 1e-9))
    segments = _with_silences(sorted(phones, key=lambda phone: phone.start), duration)
    track = np.zeros((frames, len(CHANNELS)), dtype=np.float32)
    if frames == 0:
        return track
    starts = np.array([phone.start for phone in segments])
    ends = np.array([max(phone.end, phone.start) for phone in segments])
    targets = np.array([_TARGETS.get(phone.label, _TARGETS[SILENCE]) for phone in segments])
    pauses = np.array(
        [phone.label == SILENCE and phone.end - phone.start >= PAUSE_SECONDS for phone in segments]
    )
    alphas = np.array([_dominance(phone) for phone in segments])
    centres = (starts + ends) / 2
    times = np.arange(frames) / fps
    block = 256
    for first in range(0, frames, block):
        t = times[first : first + block]
        near = (ends >= t[0] - _REACH_SECONDS) & (starts <= t[-1] + _REACH_SECONDS)
        # distance from each frame to each phone: to its centre, or to its span for a pause
        distance = np.abs(t[:, None] - centres[near][None, :])
        to_span = np.maximum(
            0.0, np.maximum(starts[near][None, :] - t[:, None], t[:, None] - ends[near][None, :])
        )
        distance = np.where(pauses[near][None, :], to_span, distance)
        # weights (frames, phones, channels)
        weights = alphas[near][None, :, :] * np.exp(-distance[:, :, None] * _DECAY[None, None, :])
        values = (weights * targets[near][None, :, :]).sum(axis=1) / weights.sum(axis=1)
        track[first : first + block] = values
    return track


def _with_silences(phones: list[Phone], duration: float) -> list[Phone]:
    """``phones`` (in time order) with silence filling the time before, between and after."""
    filled: list[Phone] = []
    cursor = 0.0
    for phone in phones:
        if phone.start > cursor:
            filled.append(Phone(SILENCE, cursor, phone.start))
        filled.append(phone)
        cursor = max(cursor, phone.end)
    if cursor < duration:
        filled.append(Phone(SILENCE, cursor, duration))
    return filled


def _dominance(phone: Phone) -> tuple[float, float, float, float]:
    if phone.label == SILENCE:
        if phone.end - phone.start >= PAUSE_SECONDS:
            return _PAUSE_DOMINANCE
        return _SHORT_SILENCE_DOMINANCE
    return _DOMINANCE.get(phone.label, _VOWEL_DOMINANCE)


# --- loudness -----------------------------------------------------------------------------

SILENCE_DBFS = -60.0


def loudness_envelope(samples: npt.NDArray[Any], rate: int, fps: float) -> npt.NDArray[np.float32]:
    """Loudness of each video frame ``k`` (the samples in ``[k/fps, (k+1)/fps)``), from 0
    (RMS at or below :data:`SILENCE_DBFS`) to 1 (the clip's loudest frame), linear in dB;
    ``ceil(len / rate * fps)`` values, float32. ``samples``: float in [-1, 1] or integer
    PCM, mono or ``(n, channels)``. All zeros when the whole clip is silent."""
    mono = _as_float_mono(np.asarray(samples))
    frames = math.ceil(mono.size / rate * fps - 1e-9)
    bounds = np.minimum(mono.size, np.round(np.arange(frames + 1) * rate / fps).astype(np.int64))
    squares = np.concatenate([[0.0], np.cumsum(mono**2)])
    counts = np.maximum(1, np.diff(bounds))
    rms = np.sqrt(np.maximum(0.0, np.diff(squares[bounds])) / counts)
    db = 20 * np.log10(np.maximum(rms, 1e-12))
    peak = float(db.max()) if frames else SILENCE_DBFS
    if peak <= SILENCE_DBFS:
        return np.zeros(frames, dtype=np.float32)
    return np.clip((db - SILENCE_DBFS) / (peak - SILENCE_DBFS), 0.0, 1.0).astype(np.float32)
