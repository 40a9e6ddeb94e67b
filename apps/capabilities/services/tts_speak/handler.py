"""tts.speak: a narration spoken sentence by sentence, following a voice profile.

check inputs → speak each sentence (matching the profile's speaking rate) → in one
WORLD resynthesis, move the pitch onto the profile's and conform the timbre to the
speaker's (``media.timbre``) → join with pauses → level to -16 LUFS (true peak ≤ -2
dBTP) → align the words to the stored speech → store ``speech.wav``.

Speaking rate is measured as in ``voice.build_profile``: words per second of sound
(pauses left out). An engine's nominal words-per-minute is not that, so when the rate
comes from a profile the narration is spoken once at the nominal rate, measured, and
spoken again at the corrected rate.
"""

from __future__ import annotations

import math
import re
import uuid
from dataclasses import dataclass
from typing import Any

import numpy as np

from apps.capabilities.context import NodeContext
from apps.capabilities.media import audio, speech_timing, timbre
from apps.capabilities.media.tts_engines import (
    PIPER_VOICE,
    EngineUnavailable,
    TTSEngine,
    UnknownVoice,
    Voice,
    choose_engine,
)
from myspinbot.errors import PermanentError

MAX_NARRATION_WORDS = 5000
DEFAULT_RATE_WPM = 175
# Rates the params accept and a profile's rate is held to (eSpeak's own bounds).
MIN_RATE_WPM, MAX_RATE_WPM = 80, 450
# Rate correction: takes at most, and the relative error that stops them.
RATE_TAKES, RATE_TOLERANCE = 3, 0.05
# A take this close to the profile's rate (as a duration ratio) is time-stretched in the
# WORLD resynthesis rather than spoken again: a second take of the neural voice costs
# about as much as the whole resynthesis, and WORLD stretches by 20 % keeping pitch and
# timbre (frames repeated or dropped 5 ms at a time).
STRETCH_BOUNDS = (0.8, 1.25)
# A narration longer than this many words is first probed with its first sentences (at
# least this many words): the engine's rate measured on them sets the first full take's,
# because an engine's nominal words per minute can be 30 % off the profile's words per
# second of sound (measured on Piper), beyond what the stretch corrects.
PROBE_WORDS = 25
# Silence between two sentences in speech.wav.
PAUSE_SECONDS = 0.3
# Keep a little of each sentence's own silence so it does not start or end abruptly.
SENTENCE_MARGIN_SECONDS = 0.02
# speech.wav's true-peak ceiling: 1 dB under EBU R128's -1 dBTP, headroom for a lossy
# encode of the file (video.compose measures its own AAC's overshoot and levels the mix
# it delivers by it: ``video.master_audio``).
NARRATION_CEILING_DBTP = -2.0
# Timbre conform defaults (params timbre_strength and timbre_warp), chosen by speaker
# similarity in ``bench/voice.py --tune`` (6 made speakers, Resemblyzer cosine over a
# strength 0/0.5/0.75/1 x warp 0/0.5/1 grid; bench/RESULTS.md). The full correction
# scored best on average at every warp. The full warp helped the higher voices most
# (high-fast 0.846 -> 0.894) but cost the low ones (deep-slow 0.880 -> 0.862): a low
# voice's long-term envelope has no clear best warp, so the fit is noisy. Half the
# fitted warp scored best on average: mean 0.857, against 0.851 at 1, 0.840 at 0 and
# 0.784 with no conform.
TIMBRE_STRENGTH = 1.0
TIMBRE_WARP = 0.5
# WORLD synthesizes this many frames per analysed 5 ms frame (``audio.world_synthesize``):
# every 2.5 ms, F0 held and envelope and aperiodicity interpolated. Whisper tiny.en on
# the 20 bench sentences spoken by Piper, missed words after WORLD at 5 ms / synthesized
# at 2.5 ms: unchanged pitch 8.2 / 8.2 %, F0 x0.8 8.2 / 7.5 %, x1.5 11.3 / 8.8 % (Piper
# alone 6.3 %); analysing at 2.5 ms as well gained no more (6.9, 8.2, 9.4 %) and left an
# octave-low subharmonic on part of a moved voice. bench/RESULTS.md, "Voice".
SYNTHESIS_SUBFRAMES = 2

_SENTENCE_END = re.compile(r"(?<=[.!?…])\s+|(?<=[.!?…][\"'”’)\]])\s+|\n+")


@dataclass(frozen=True)
class VoiceProfile:
    """What a voice profile tells the speaker."""

    profile_id: str
    pitch: audio.PitchStats
    speaking_rate_wps: float
    timbre: timbre.Timbre | None  # None for a profile built before timbre was described


def run(ctx: NodeContext) -> dict[str, Any]:
    """Speak the narration; see the module doc."""
    narration = find_narration(ctx.inputs)
    sentences = split_sentences(narration)
    words = narration_words(narration)
    profile = find_profile(ctx)
    engine_name = str(ctx.params.get("engine", "auto"))
    voice_name = str(ctx.params.get("voice", "en-us"))
    try:
        engine = choose_engine(engine_name, voice_name)
    except EngineUnavailable as error:
        raise PermanentError("engine_unavailable", str(error)) from None
    voice = Voice(name=voice_name, rate_wpm=DEFAULT_RATE_WPM)

    move_pitch = bool(ctx.params.get("pitch_shift", True))
    strength = float(ctx.params.get("timbre_strength", TIMBRE_STRENGTH))
    warp_strength = float(ctx.params.get("timbre_warp", TIMBRE_WARP))
    # (whether the speech goes through WORLD anyway: then a rate error is cheaper to
    # correct there than by speaking the whole narration again)
    resynthesized = profile is not None and (
        move_pitch or (profile.timbre is not None and (strength > 0 or warp_strength > 0))
    )

    ctx.progress(0.0, f"speaking {len(sentences)} sentences")
    stretch = 1.0
    if "rate_wpm" in ctx.params:
        voice = Voice(voice.name, int(ctx.params["rate_wpm"]), voice.pitch)
        clips, rate = speak(ctx, engine, sentences, voice)
    elif profile is not None:
        voice, clips, rate, stretch = speak_at_profile_rate(
            ctx, engine, sentences, voice, profile, can_stretch=resynthesized
        )
    else:
        clips, rate = speak(ctx, engine, sentences, voice)

    conform: dict[str, Any] = {"conformed": False, "reason": "no voice profile"}
    if profile is not None:
        clips, conform = follow_profile(
            ctx, clips, rate, profile, move_pitch, strength, warp_strength, stretch
        )

    ctx.progress(0.95, "joining sentences")
    stored = store_speech(ctx, clips, sentences, rate)
    ctx.progress(1.0, "speech ready")
    return {
        **stored,
        "engine": engine.name,
        "voice": PIPER_VOICE if engine.name == "piper" else voice.name,
        "rate_wpm": voice.rate_wpm,
        "time_stretch": round(stretch, 3),
        "profile_id": profile.profile_id if profile else None,
        "timbre_conformed": conform["conformed"],
        "timbre": conform,
        "words": words,
    }


def store_speech(
    ctx: NodeContext, clips: list[audio.Samples], sentences: list[str], rate: int
) -> dict[str, Any]:
    """Join the sentences' clips, level them and store ``speech.wav``: the outputs that
    describe it (audio, duration, rate, median pitch, loudness, true peak, cues)."""
    assert ctx.workdir is not None, "the worker gives every attempt a workdir"
    speech, cues = join(clips, sentences, rate)
    # EBU R128: the video's audio is muxed from this file, so it is levelled here.
    speech, loudness = audio.normalize_loudness(speech, rate, ceiling_dbtp=NARRATION_CEILING_DBTP)
    stored = ctx.artifacts.save(
        "speech.wav", audio.write_wav(ctx.workdir / "speech.wav", speech, rate), "audio/wav"
    )
    measured = audio.measure_pitch(speech, rate)
    ctx.progress(0.97, "aligning the words to the speech")
    return {
        "audio": stored,
        "duration_seconds": round(speech.size / rate, 3),
        "sample_rate": rate,
        "median_pitch_hz": round(measured.median_hz, 2) if measured else None,
        "loudness_lufs": None if loudness.lufs is None else round(loudness.lufs, 2),
        "true_peak_dbtp": (
            None if loudness.true_peak_dbtp is None else round(loudness.true_peak_dbtp, 2)
        ),
        "cues": cues,
        **aligned_words(speech, rate, cues),
    }


def aligned_words(speech: audio.Samples, rate: int, cues: list[dict[str, Any]]) -> dict[str, Any]:
    """``word_times``: each dictionary word of the narration and when it is spoken in the
    stored speech, by forced alignment of the speech itself (each sentence's span, with
    half of the pauses beside it, aligned to its text); ``word_times_note`` says which
    sentences could not be aligned (their words are left out)."""
    pad = round(PAUSE_SECONDS / 2 * rate)
    words: list[dict[str, Any]] = []
    missed: list[int] = []
    for number, cue in enumerate(cues):
        first = max(0, round(cue["start"] * rate) - pad)
        last = min(speech.size, round(cue["end"] * rate) + pad)
        try:
            alignment = speech_timing.align_samples(speech[first:last], rate, cue["text"])
        except speech_timing.AlignmentError:
            missed.append(number)
            continue
        offset = first / rate
        words.extend(
            {
                "text": word.text,
                "start": round(offset + word.start, 3),
                "end": round(offset + word.end, 3),
            }
            for word in alignment.words
        )
    note = "every sentence aligned" if not missed else f"sentences not aligned: {missed}"
    return {"word_times": words, "word_times_note": note}


# --- Inputs --------------------------------------------------------------------------


def find_narration(inputs: dict[str, Any]) -> str:
    """The first predecessor output's ``narration``, else the static input ``narration``."""
    for key, value in inputs.items():
        if key != "narration" and isinstance(value, dict):
            narration = value.get("narration")
            if isinstance(narration, str):
                return narration
    narration = inputs.get("narration")
    if isinstance(narration, str):
        return narration
    raise PermanentError(
        "missing_input", "no narration: connect a script node or give the input narration"
    )


def narration_words(narration: str) -> int:
    """The narration's words, refused when there are none or too many."""
    words = audio.count_words(narration)
    if words == 0:
        raise PermanentError("empty_narration", "the narration has no words")
    if words > MAX_NARRATION_WORDS:
        raise PermanentError(
            "too_long",
            f"the narration has {words} words; at most {MAX_NARRATION_WORDS} are spoken",
            details={"words": words, "max_words": MAX_NARRATION_WORDS},
        )
    return words


def find_profile(ctx: NodeContext) -> VoiceProfile | None:
    """The voice profile a predecessor built, else the static input ``profile_id`` (which
    must be a voice profile of the job's owner), else ``None`` (the engine's own voice)."""
    for key, value in ctx.inputs.items():
        is_profile = isinstance(value, dict) and "profile_id" in value and "pitch" in value
        if key != "profile_id" and is_profile:
            return _profile_from(str(value["profile_id"]), value)
    wanted = ctx.inputs.get("profile_id")
    if wanted is None:
        return None
    try:
        profile_uuid = uuid.UUID(str(wanted))
    except ValueError:
        raise PermanentError("bad_input", f"profile_id {wanted!r} is not a profile id") from None
    assert ctx.profiles is not None
    profile = ctx.profiles.find("voice", str(profile_uuid))
    if profile is None:
        raise PermanentError("bad_input", f"no voice profile {profile_uuid} of this user")
    return _profile_from(profile.id, profile.data)


def _profile_from(profile_id: str, data: dict[str, Any]) -> VoiceProfile:
    try:
        pitch = data["pitch"]
        stats = audio.PitchStats(
            float(pitch["median_hz"]), float(pitch["p05_hz"]), float(pitch["p95_hz"]), 0.0
        )
        rate = float(data["speaking_rate_wps"])
    except (KeyError, TypeError, ValueError):
        raise PermanentError("bad_input", f"voice profile {profile_id} is incomplete") from None
    if not (stats.p05_hz > 0 and stats.median_hz > 0 and stats.p95_hz > 0 and rate > 0):
        raise PermanentError("bad_input", f"voice profile {profile_id} is incomplete")
    return VoiceProfile(profile_id, stats, rate, timbre.Timbre.from_json(data.get("timbre")))


def split_sentences(text: str) -> list[str]:
    """Sentences: split after . ! ? … (and closing quotes) and at line breaks; pieces
    without a word (stray punctuation) are dropped."""
    pieces = (" ".join(piece.split()) for piece in _SENTENCE_END.split(text.replace("\0", " ")))
    return [piece for piece in pieces if audio.count_words(piece) > 0]


# --- Speaking ------------------------------------------------------------------------


def speak(
    ctx: NodeContext,
    engine: TTSEngine,
    sentences: list[str],
    voice: Voice,
    progress: tuple[float, float] = (0.0, 0.3),
) -> tuple[list[audio.Samples], int]:
    """Each sentence spoken and trimmed of its own leading and trailing silence; progress
    goes from ``progress[0]`` to ``progress[1]``."""
    clips: list[audio.Samples] = []
    rate = 0
    for index, sentence in enumerate(sentences):
        try:
            samples, rate = engine.synthesize(sentence, voice)
        except UnknownVoice as error:
            raise PermanentError("bad_voice", str(error)) from None
        except EngineUnavailable as error:
            raise PermanentError("engine_unavailable", str(error)) from None
        clips.append(audio.trim_silence(samples, rate, SENTENCE_MARGIN_SECONDS))
        done = progress[0] + (progress[1] - progress[0]) * (index + 1) / len(sentences)
        ctx.progress(done, f"spoke sentence {index + 1} of {len(sentences)}")
    return clips, rate


def speak_at_profile_rate(
    ctx: NodeContext,
    engine: TTSEngine,
    sentences: list[str],
    voice: Voice,
    profile: VoiceProfile,
    can_stretch: bool = False,
) -> tuple[Voice, list[audio.Samples], int, float]:
    """Speak at the profile's rate: at the nominal rate first, then corrected by the rate
    measured on the last take (engines' words per minute include their pauses, and a
    neural voice's duration is not proportional to its rate), until within
    ``RATE_TOLERANCE`` or ``RATE_TAKES`` takes; a narration of more than
    ``PROBE_WORDS`` words has its first take's rate set by a probe of its first sentences.

    With ``can_stretch`` (the speech is resynthesized with WORLD afterwards), a take
    within ``STRETCH_BOUNDS`` of the profile's rate is kept and the time stretch that
    corrects it is returned (else 1.0), instead of speaking everything again."""
    current = Voice(voice.name, _bounded_rate(profile.speaking_rate_wps * 60), voice.pitch)
    step = 0.3 / RATE_TAKES
    probe = probe_sentences(sentences)
    if len(probe) < len(sentences):
        # a long narration: its first sentences tell the engine's rate for less
        clips, rate = speak(ctx, engine, probe, current, (0.0, 0.0))
        measured = spoken_rate_wps(clips, probe, rate)
        if measured is not None:
            corrected_rate = current.rate_wpm * profile.speaking_rate_wps / measured
            current = Voice(voice.name, _bounded_rate(corrected_rate), voice.pitch)
    clips, rate = speak(ctx, engine, sentences, current, (0.0, step))
    for take in range(1, RATE_TAKES):
        measured = spoken_rate_wps(clips, sentences, rate)
        if measured is None or abs(measured / profile.speaking_rate_wps - 1) <= RATE_TOLERANCE:
            break
        stretch = measured / profile.speaking_rate_wps
        if can_stretch and STRETCH_BOUNDS[0] <= stretch <= STRETCH_BOUNDS[1]:
            return current, clips, rate, stretch
        corrected_rate = _bounded_rate(current.rate_wpm * profile.speaking_rate_wps / measured)
        if corrected_rate == current.rate_wpm:
            break
        current = Voice(voice.name, corrected_rate, voice.pitch)
        clips, rate = speak(ctx, engine, sentences, current, (step * take, step * (take + 1)))
    return current, clips, rate, 1.0


def probe_sentences(sentences: list[str]) -> list[str]:
    """The first sentences, up to the one that brings them to ``PROBE_WORDS`` words."""
    probe: list[str] = []
    words = 0
    for sentence in sentences:
        probe.append(sentence)
        words += audio.count_words(sentence)
        if words >= PROBE_WORDS:
            break
    return probe


def _bounded_rate(wpm: float) -> int:
    return min(MAX_RATE_WPM, max(MIN_RATE_WPM, round(wpm)))


def spoken_rate_wps(clips: list[audio.Samples], sentences: list[str], rate: int) -> float | None:
    sound = sum(audio.sound_seconds(clip, rate) for clip in clips)
    if sound == 0:
        return None
    return sum(audio.count_words(sentence) for sentence in sentences) / sound


def follow_profile(
    ctx: NodeContext,
    clips: list[audio.Samples],
    rate: int,
    profile: VoiceProfile,
    move_pitch: bool,
    strength: float,
    warp_strength: float,
    stretch: float = 1.0,
) -> tuple[list[audio.Samples], dict[str, Any]]:
    """Resynthesize every clip once with WORLD so that the narration's F0 distribution
    lands on the profile's (when ``move_pitch``) and its long-term envelope moves toward
    the speaker's (when the profile describes a timbre and ``strength`` > 0). Both maps
    are fitted on all sentences together, so intonation and the differences between
    sentences are kept; every clip is made ``stretch`` times as long. Returns the clips
    and what was done to the timbre."""
    conform: dict[str, Any] = {
        "conformed": False,
        "reason": "timbre_strength and timbre_warp are 0",
    }
    if profile.timbre is None:
        conform = {"conformed": False, "reason": "the profile describes no timbre"}
    wants_timbre = profile.timbre is not None and (strength > 0 or warp_strength > 0)
    if not (move_pitch or wants_timbre or stretch != 1.0):
        return clips, conform
    # (a sentence the engine left silent has nothing to analyse)
    frames = [audio.world_analyse(clip, rate) if clip.size else None for clip in clips]
    analysed = [f for f in frames if f is not None]
    voiced = np.concatenate([f.f0[f.f0 > 0] for f in analysed]) if analysed else np.zeros(0)
    if voiced.size < audio.MIN_VOICED_FRAMES:
        # nothing voiced to move (whispered or unvoiced engine output)
        return clips, {"conformed": False, "reason": "the speech has no voiced frames"}
    pitch_map = audio.PitchMap.between(voiced, profile.pitch) if move_pitch else None
    timbre_map = None
    if wants_timbre:
        assert profile.timbre is not None
        source = timbre.long_term_envelope(analysed)
        assert source is not None, "enough voiced frames were checked above"
        timbre_map = timbre.TimbreMap.between(
            source, rate, profile.timbre, strength=strength, warp_strength=warp_strength
        )
        conform = {
            "conformed": True,
            "strength": strength,
            "warp_strength": warp_strength,
            **timbre_map.to_json(),
        }
    moved: list[audio.Samples] = []
    for index, (clip, analysis) in enumerate(zip(clips, frames, strict=True)):
        if analysis is not None:
            if stretch != 1.0:
                analysis = audio.stretch_frames(analysis, stretch)
            new_f0 = analysis.f0 if pitch_map is None else pitch_map.apply(analysis.f0)
            envelope = None if timbre_map is None else timbre_map.apply(analysis.envelope, rate)
            clip = audio.world_synthesize(analysis, new_f0, envelope, SYNTHESIS_SUBFRAMES)
        moved.append(clip)
        done = 0.3 + 0.65 * (index + 1) / len(clips)
        ctx.progress(done, f"followed the voice profile in sentence {index + 1} of {len(clips)}")
    return moved, conform


def join(
    clips: list[audio.Samples], sentences: list[str], rate: int
) -> tuple[audio.Samples, list[dict[str, Any]]]:
    """Clips joined with ``PAUSE_SECONDS`` of silence, and each sentence's cue (s)."""
    pause = np.zeros(math.ceil(PAUSE_SECONDS * rate), dtype=np.float32)
    parts: list[audio.Samples] = []
    cues: list[dict[str, Any]] = []
    position = 0
    for clip, sentence in zip(clips, sentences, strict=True):
        if clip.size == 0:
            continue
        if parts:
            parts.append(pause)
            position += pause.size
        cues.append(
            {
                "start": round(position / rate, 3),
                "end": round((position + clip.size) / rate, 3),
                "text": sentence,
            }
        )
        parts.append(clip)
        position += clip.size
    if not parts:
        raise PermanentError("empty_narration", "the engine produced no sound for the narration")
    return np.concatenate(parts), cues
