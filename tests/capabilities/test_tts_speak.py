"""tts.speak with the real eSpeak engine, real WORLD resynthesis and real voice profiles."""

from __future__ import annotations

import io
import itertools
import subprocess
import sys
import uuid
import wave
from pathlib import Path
from typing import Any

import numpy as np
import pyloudnorm
import pytest
from django.contrib.auth.models import User
from scipy.signal import resample_poly

from apps.capabilities.media import audio
from apps.capabilities.media.tts_engines import Voice
from apps.capabilities.registry import get_registry
from apps.capabilities.services.tts_speak import handler
from apps.capabilities.services.voice_build_profile import handler as build_profile
from apps.jobs.models import Artifact, Profile
from myspinbot.errors import PermanentError
from testkit.contexts import ServiceRun, make_service_run
from tests.support.voices import TRANSCRIPT, voice_profile

SERVICE = "tts.speak"
NARRATION = "Cats purr when they are happy. They also purr to calm down!\nIsn't that neat?"
SENTENCES = ["Cats purr when they are happy.", "They also purr to calm down!", "Isn't that neat?"]


def speak(
    inputs: dict[str, Any], params: dict[str, Any] | None = None, username: str = "media"
) -> tuple[dict[str, Any], ServiceRun]:
    run = make_service_run(SERVICE, params or {}, username=username)
    run.context.inputs = inputs
    return handler.run(run.context), run


def error_of(inputs: dict[str, Any], params: dict[str, Any] | None = None) -> PermanentError:
    with pytest.raises(PermanentError) as raised:
        speak(inputs, params)
    return raised.value


def decoded(run: ServiceRun, ref: dict[str, Any]) -> tuple[np.ndarray, int]:
    with wave.open(io.BytesIO(run.read(ref))) as read:
        assert (read.getnchannels(), read.getsampwidth()) == (1, 2)
        pcm = np.frombuffer(read.readframes(read.getnframes()), dtype="<i2")
        return (pcm / 32768.0).astype(np.float32), read.getframerate()


def stored_profile(owner: User, median: float, rate_wps: float) -> Profile:
    return Profile.objects.create(
        owner=owner,
        kind=Profile.Kind.VOICE,
        name="stored",
        data={
            "pitch": {"median_hz": median, "p05_hz": median * 0.85, "p95_hz": median * 1.15},
            "speaking_rate_wps": rate_wps,
        },
    )


# --- declaration -------------------------------------------------------------------


def test_declaration_is_registered() -> None:
    capability = get_registry().get(SERVICE)

    assert (capability.queue, capability.version) == ("cpu", "5")
    assert (capability.cacheable, capability.timeout_seconds, capability.max_attempts) == (
        True,
        900,
        2,
    )
    good = {"engine": "espeak", "voice": "en-us+f3", "rate_wpm": 200, "pitch_shift": False}
    assert capability.validate_params(good) == []
    assert capability.validate_params({"rate_wpm": 20}) != []
    assert capability.validate_params({"voice": "../../etc/passwd"}) != []


def test_sentences_split_after_stops_and_line_breaks() -> None:
    assert handler.split_sentences(NARRATION) == SENTENCES
    assert handler.split_sentences('He said "stop." Then   he left… ... ') == [
        'He said "stop."',
        "Then he left…",
    ]


def test_the_rate_probe_is_the_first_sentences_up_to_25_words() -> None:
    sentences = ["One two three four five six seven eight nine ten."] * 5

    assert handler.probe_sentences(sentences) == sentences[:3]
    assert handler.probe_sentences(sentences[:2]) == sentences[:2]


# --- speaking ----------------------------------------------------------------------


@pytest.mark.django_db
def test_neutral_speech_from_a_script_node_with_sentence_cues() -> None:
    # Given a predecessor script node's output and no profile
    output, run = speak({"script": {"title": "Cats", "narration": NARRATION}})

    # Then one cue per sentence, 0.3 s apart, the last ending the audio
    assert [cue["text"] for cue in output["cues"]] == SENTENCES
    cues = output["cues"]
    assert cues[0]["start"] == 0.0
    for before, after in itertools.pairwise(cues):
        assert before["start"] < before["end"]
        assert after["start"] - before["end"] == pytest.approx(handler.PAUSE_SECONDS, abs=0.002)
    assert cues[-1]["end"] == output["duration_seconds"]
    # (the default engine, auto, is the neural voice for en-us)
    assert (output["engine"], output["voice"], output["rate_wpm"]) == (
        "piper",
        "en_US-joe-medium",
        175,
    )
    assert output["profile_id"] is None
    assert output["words"] == 15
    assert output["sample_rate"] == 22050
    assert 70.0 < output["median_pitch_hz"] < 160.0  # the neural male voice
    # and speech.wav holds exactly that much audio
    samples, rate = decoded(run, output["audio"])
    assert rate == 22050
    assert samples.size / rate == pytest.approx(output["duration_seconds"], abs=0.0005)
    # levelled to EBU R128 (measured here on the stored file): -16 LUFS, and a true peak
    # under -2 dBTP, leaving the video's AAC encoder 1 dB of headroom under -1 dBTP
    lufs = pyloudnorm.Meter(rate).integrated_loudness(samples.astype(np.float64))
    dbtp = 20 * np.log10(np.max(np.abs(resample_poly(samples.astype(np.float64), 4, 1))))
    assert lufs == pytest.approx(-16.0, abs=0.5)
    assert dbtp <= -2.0
    assert output["loudness_lufs"] == pytest.approx(lufs, abs=0.05)
    assert output["true_peak_dbtp"] == pytest.approx(dbtp, abs=0.05)
    stored = Artifact.objects.get(job=run.job)
    assert (stored.name, stored.content_type) == ("speech.wav", "audio/wav")
    assert run.progress.reports[-1] == (1.0, "speech ready")


@pytest.mark.django_db
def test_a_static_narration_input_is_spoken() -> None:
    output, _ = speak({"narration": "Hello there."})

    assert output["cues"] == [
        {"start": 0.0, "end": output["duration_seconds"], "text": "Hello there."}
    ]
    assert output["words"] == 2


@pytest.mark.django_db
def test_lower_profile_speaks_lower_than_higher_profile(tmp_path: Path) -> None:
    # Given profiles built from a low and a high eSpeak voice
    low = voice_profile(tmp_path, 15)
    high = voice_profile(tmp_path, 95)
    assert low["pitch"]["median_hz"] * 1.5 < high["pitch"]["median_hz"]

    # When the same narration is spoken with each (stored profiles, by id)
    low_speech, _ = speak({"narration": NARRATION, "profile_id": low["profile_id"]})
    high_speech, _ = speak({"narration": NARRATION, "profile_id": high["profile_id"]})

    # Then each follows its profile's median pitch
    assert low_speech["median_pitch_hz"] < high_speech["median_pitch_hz"]
    assert low_speech["median_pitch_hz"] == pytest.approx(low["pitch"]["median_hz"], rel=0.1)
    assert high_speech["median_pitch_hz"] == pytest.approx(high["pitch"]["median_hz"], rel=0.1)
    assert low_speech["profile_id"] == low["profile_id"]


@pytest.mark.django_db
def test_a_predecessor_profile_moves_the_pitch(tmp_path: Path) -> None:
    run = make_service_run(SERVICE)
    profile = stored_profile(run.owner, median=200.0, rate_wps=3.0)
    # a voice.build_profile output as the walker passes it (pitch carried in the output)
    built = {"profile_id": str(profile.pk), **profile.data}
    run.context.inputs = {"script": {"narration": NARRATION}, "voice": built}

    output = handler.run(run.context)

    assert output["profile_id"] == str(profile.pk)
    assert output["median_pitch_hz"] == pytest.approx(200.0, rel=0.1)


@pytest.mark.django_db
def test_speaking_rate_follows_the_profile() -> None:
    owner, _ = User.objects.get_or_create(username="media")
    slow = stored_profile(owner, median=110.0, rate_wps=2.5)
    fast = stored_profile(owner, median=110.0, rate_wps=4.0)

    outputs = {}
    for profile in (slow, fast):
        output, run = speak({"narration": NARRATION, "profile_id": str(profile.pk)})
        samples, rate = decoded(run, output["audio"])
        outputs[profile.data["speaking_rate_wps"]] = (
            output,
            15 / audio.sound_seconds(samples, rate),
        )

    assert outputs[2.5][0]["rate_wpm"] < outputs[4.0][0]["rate_wpm"]
    assert outputs[2.5][1] == pytest.approx(2.5, rel=0.15)
    assert outputs[4.0][1] == pytest.approx(4.0, rel=0.15)


@pytest.mark.django_db
def test_without_pitch_shift_and_with_a_set_rate_the_profile_changes_nothing() -> None:
    owner, _ = User.objects.get_or_create(username="media")
    profile = stored_profile(owner, median=220.0, rate_wps=4.0)

    plain, _ = speak({"narration": NARRATION}, {"rate_wpm": 150})
    kept, _ = speak(
        {"narration": NARRATION, "profile_id": str(profile.pk)},
        {"rate_wpm": 150, "pitch_shift": False},
    )

    # (the neural voice's durations carry no noise: the same text takes the same time)
    assert kept["rate_wpm"] == 150
    assert kept["duration_seconds"] == pytest.approx(plain["duration_seconds"], abs=0.01)
    assert kept["median_pitch_hz"] == pytest.approx(plain["median_pitch_hz"], rel=0.01)


@pytest.mark.django_db
def test_another_voice_speaks() -> None:
    default, _ = speak({"narration": "Hello there."})
    female, _ = speak({"narration": "Hello there."}, {"voice": "en-us+f3"})

    assert female["voice"] == "en-us+f3"
    assert female["median_pitch_hz"] > default["median_pitch_hz"] * 1.3


# --- bad input ---------------------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize("narration", ["", "   \n ", " ... — !"])
def test_a_narration_without_words_is_empty(narration: str) -> None:
    assert error_of({"script": {"narration": narration}}).code == "empty_narration"


@pytest.mark.django_db
def test_no_narration_at_all_is_missing_input() -> None:
    assert error_of({"script": {"title": "no narration here"}}).code == "missing_input"


@pytest.mark.django_db
def test_a_narration_over_the_word_limit_is_too_long() -> None:
    error = error_of({"narration": "word " * (handler.MAX_NARRATION_WORDS + 1)})

    assert error.code == "too_long"
    assert error.details == {"words": 5001, "max_words": 5000}


@pytest.mark.django_db
def test_an_unknown_engine_is_unavailable() -> None:
    assert error_of({"narration": "Hello."}, {"engine": "festival"}).code == "engine_unavailable"


@pytest.mark.django_db
def test_an_unknown_voice_is_bad_voice() -> None:
    assert error_of({"narration": "Hello."}, {"voice": "xx-nope"}).code == "bad_voice"


@pytest.mark.django_db
def test_another_users_profile_is_refused() -> None:
    stranger, _ = User.objects.get_or_create(username="stranger")
    theirs = stored_profile(stranger, median=150.0, rate_wps=3.0)

    error = error_of({"narration": "Hello.", "profile_id": str(theirs.pk)})

    assert error.code == "bad_input"
    assert error.message == f"no voice profile {theirs.pk} of this user"


@pytest.mark.django_db
@pytest.mark.parametrize("profile_id", ["not-a-uuid", str(uuid.uuid4())])
def test_a_bad_or_unknown_profile_id_is_bad_input(profile_id: str) -> None:
    assert error_of({"narration": "Hello.", "profile_id": profile_id}).code == "bad_input"


@pytest.mark.django_db
def test_a_lora_profile_is_not_a_voice() -> None:
    owner, _ = User.objects.get_or_create(username="media")
    lora = Profile.objects.create(owner=owner, kind=Profile.Kind.LORA, data={})

    assert error_of({"narration": "Hello.", "profile_id": str(lora.pk)}).code == "bad_input"


# --- engines -------------------------------------------------------------------------


@pytest.mark.django_db
def test_auto_speaks_us_english_with_the_neural_voice_and_other_languages_with_espeak() -> None:
    english, _ = speak({"narration": "Hello there."})
    german, _ = speak({"narration": "Guten Tag."}, {"voice": "de"})
    chosen, _ = speak({"narration": "Hello there."}, {"engine": "espeak"})

    assert (english["engine"], english["voice"]) == ("piper", "en_US-joe-medium")
    assert (german["engine"], german["voice"]) == ("espeak", "de")
    assert (chosen["engine"], chosen["voice"]) == ("espeak", "en-us")


@pytest.mark.django_db
def test_the_neural_voice_refuses_a_voice_it_does_not_have() -> None:
    assert error_of({"narration": "Hello."}, {"engine": "piper", "voice": "fr"}).code == "bad_voice"


def test_neural_speech_never_imports_torch() -> None:
    # The cpu worker stays torch-free: speaking with the neural voice loads no torch.
    code = (
        "import sys\n"
        "from apps.capabilities.media.tts_engines import Voice, choose_engine\n"
        "engine = choose_engine('auto', 'en-us')\n"
        "samples, rate = engine.synthesize('Hello there.', Voice())\n"
        "assert engine.name == 'piper' and samples.size > rate // 4, (engine.name, samples.size)\n"
        "assert 'torch' not in sys.modules\n"
    )
    root = Path(handler.__file__).resolve().parents[4]
    subprocess.run([sys.executable, "-c", code], cwd=root, check=True, timeout=60)


# --- timbre --------------------------------------------------------------------------


def long_term_bands(samples: np.ndarray, rate: int) -> np.ndarray:
    """Measured apart from media.timbre: the mean FFT power spectrum (Hann, 1024-sample
    frames, hop 512) of the frames within 30 dB of the loudest, in 12 log-spaced bands
    over 200-6000 Hz, in dB with the mean taken out."""
    size, hop = 1024, 512
    starts = range(0, samples.size - size, hop)
    frames = np.stack([samples[start : start + size] for start in starts]).astype(np.float64)
    loud = (energy := np.sum(frames**2, axis=1)) > energy.max() * 1e-3
    power = np.mean(np.abs(np.fft.rfft(frames[loud] * np.hanning(size), axis=1)) ** 2, axis=0)
    hz = np.fft.rfftfreq(size, 1 / rate)
    edges = np.geomspace(200.0, 6000.0, 13)
    bands = np.array([power[(hz >= lo) & (hz < hi)].mean() for lo, hi in itertools.pairwise(edges)])
    db = 10 * np.log10(bands)
    return np.asarray(db - db.mean())


def dark_speaker_profile() -> tuple[dict[str, Any], np.ndarray]:
    """A real voice.build_profile output for a darker speaker (the neural voice through a
    2nd-order 1.5 kHz low-pass), and that speaker's clip."""
    from scipy.signal import butter, sosfilt

    from apps.capabilities.media.tts_engines import get_engine

    speech, rate = get_engine("piper").synthesize(TRANSCRIPT, Voice())
    dark = sosfilt(butter(2, 1500, fs=rate, output="sos"), speech).astype(np.float32)
    dark, _ = audio.normalize_loudness(dark, rate)
    run = make_service_run("voice.build_profile")
    run.context.inputs = {
        "voice_sample": run.upload(
            f"dark-{uuid.uuid4().hex[:8]}.wav",
            audio.write_wav(Path(run.context.workdir or ".") / "dark.wav", dark, rate).read_bytes(),
            "audio/wav",
        ),
        "transcript": TRANSCRIPT,
    }
    return build_profile.run(run.context), dark


@pytest.mark.django_db
def test_timbre_conform_moves_the_speech_toward_the_speakers_long_term_spectrum() -> None:
    # Given a profile of a darker speaker than the neural voice
    profile, reference = dark_speaker_profile()
    assert profile["timbre"]["method"] == "world-cheaptrick-mel40"
    target = long_term_bands(reference, 22050)

    # When the narration is spoken with and without the timbre conform
    plain, plain_run = speak(
        {"narration": NARRATION, "profile_id": profile["profile_id"]},
        {"timbre_strength": 0.0, "timbre_warp": 0.0},
    )
    conformed, conformed_run = speak({"narration": NARRATION, "profile_id": profile["profile_id"]})

    # Then each output says what was done
    assert (plain["engine"], plain["timbre_conformed"]) == ("piper", False)
    assert plain["timbre"] == {
        "conformed": False,
        "reason": "timbre_strength and timbre_warp are 0",
    }
    assert (conformed["engine"], conformed["timbre_conformed"]) == ("piper", True)
    assert conformed["timbre"]["strength"] == handler.TIMBRE_STRENGTH
    assert conformed["timbre"]["distance_after_db"] < conformed["timbre"]["distance_before_db"]
    # and, measured on speech.wav, the conformed speech's long-term spectrum is less than
    # half as far from the speaker's (RMS dB over the bands) as the unconformed one's
    distances = {}
    for name, output, run in (("plain", plain, plain_run), ("conformed", conformed, conformed_run)):
        samples, rate = decoded(run, output["audio"])
        distances[name] = float(np.sqrt(np.mean((long_term_bands(samples, rate) - target) ** 2)))
        # and it is still levelled to -16 LUFS
        lufs = pyloudnorm.Meter(rate).integrated_loudness(samples.astype(np.float64))
        assert lufs == pytest.approx(-16.0, abs=1.0)
    assert distances["conformed"] < 0.5 * distances["plain"]
    # (the neural voice really was brighter than the speaker to begin with)
    assert distances["plain"] > 4.0


@pytest.mark.django_db
def test_a_profile_built_before_timbre_was_described_still_speaks() -> None:
    # Given a stored profile from before voice.build_profile 3: pitch and rate, no timbre
    owner, _ = User.objects.get_or_create(username="media")
    old = stored_profile(owner, median=150.0, rate_wps=3.0)

    output, run = speak({"narration": NARRATION, "profile_id": str(old.pk)})

    # Then it is spoken, pitch followed, timbre left alone and saying why
    assert output["median_pitch_hz"] == pytest.approx(150.0, rel=0.1)
    assert output["timbre_conformed"] is False
    assert output["timbre"] == {"conformed": False, "reason": "the profile describes no timbre"}
    samples, rate = decoded(run, output["audio"])
    lufs = pyloudnorm.Meter(rate).integrated_loudness(samples.astype(np.float64))
    assert lufs == pytest.approx(-16.0, abs=1.0)


@pytest.mark.django_db
def test_without_a_profile_nothing_is_conformed() -> None:
    output, _ = speak({"narration": "Hello there."})

    assert output["timbre"] == {"conformed": False, "reason": "no voice profile"}


# --- word times: captions follow the real speech -----------------------------------

CAPTIONED = (
    "Otters hold hands while they sleep, so that they never drift apart. "
    "Then, at dawn, they wake and dive for breakfast. A sea otter eats a quarter of its weight."
)


@pytest.mark.django_db
def test_caption_words_land_within_100_ms_of_the_speech_aligned_independently(
    tmp_path: Path,
) -> None:
    """The word times (and the caption lines video.compose makes of them) come from the
    stored speech itself: here the narration is moved to a profile's pitch, rate and
    timbre by WORLD, and the test aligns the stored speech.wav on its own, whole."""
    from apps.capabilities.media import captions, speech_timing
    from apps.capabilities.services.video_compose import handler as compose

    profile = voice_profile(tmp_path, 80)
    output, run = speak({"narration": CAPTIONED, "profile_id": profile["profile_id"]})
    assert output["timbre_conformed"] is True
    wav = tmp_path / "speech.wav"
    wav.write_bytes(run.read(output["audio"]))

    reference = speech_timing.align(wav, CAPTIONED).words
    assert output["word_times_note"] == "every sentence aligned"
    spoken = [word["text"] for word in output["word_times"]]
    assert spoken == [word.text for word in reference]
    assert len(spoken) == len(speech_timing.normalise_words(CAPTIONED))
    for given, aligned in zip(output["word_times"], reference, strict=True):
        assert abs(given["start"] - aligned.start) <= 0.1, (given, aligned)
        assert abs(given["end"] - aligned.end) <= 0.1, (given, aligned)
    # Every word of the captions video.compose draws from this output lands there too.
    sentence_cues = compose.parse_cues(output["cues"])
    lines, timing, note = compose.caption_cues({"speak": output}, wav, sentence_cues)
    assert (timing, note) == ("words", "word times from the narration's alignment by tts.speak")
    tokens = captions.timed_tokens(CAPTIONED, captions.parse_words(output["word_times"]) or [])
    assert tokens is not None
    assert len(tokens) == len(CAPTIONED.split())
    for token, aligned in zip(tokens, reference, strict=True):
        assert speech_timing.normalise_words(token.text) == [aligned.text]
        assert abs(token.start - aligned.start) <= 0.1, (token, aligned)
    # (each line shows from its first word's aligned start)
    first = 0
    for line in lines:
        assert line.start == tokens[first].start, (line, tokens[first])
        first += len(line.text.split())
    assert first == len(tokens)
