"""The F5-TTS cloning engine: tiny random weights in the published layout, loaded through
the production loader, chosen on a gpu worker and run by tts.clone."""

from __future__ import annotations

import io
import math
import uuid
import wave
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from apps.capabilities.media.tts_engines import Voice, sample_voice
from apps.capabilities.services.tts_clone import handler as clone
from apps.capabilities.services.tts_speak.handler import PAUSE_SECONDS
from gpu_tasks import backends, cloning, speech, torchaudio_mel
from gpu_tasks.model_cache import ModelCache
from myspinbot.errors import PermanentError
from testkit.contexts import make_service_run
from tests.support.voices import TRANSCRIPT, voice_profile

SENTENCES = ["Cats purr when they are happy.", "Is that not neat?"]


def reference_frames(path: Path) -> int:
    """Mel frames of a WAV once at F5-TTS's 24 kHz (hop 256)."""
    with wave.open(str(path)) as read:
        frames, rate = read.getnframes(), read.getframerate()
    return math.ceil(frames * 24000 / rate) // 256


def test_the_cloning_engine_is_offered_only_with_its_weights(gpu_settings: Any) -> None:
    assert speech.available_engines() == ["f5-tts"]
    assert backends.available()["tts_gpu"] == ["f5-tts"]
    assert backends.runnable(["tts.clone"], backends.available()) == ["tts.clone"]

    gpu_settings.MYSPINBOT_F5_TTS_MODEL = "no-such-model"

    assert speech.available_engines() == []
    assert backends.runnable(["tts.clone"], backends.available()) == []


def test_f5_tts_speaks_the_published_duration_rule_in_24_khz(
    gpu_settings: Any, fresh_cache: ModelCache, tmp_path: Path
) -> None:
    reference = sample_voice(TRANSCRIPT, tmp_path / "ref.wav", Voice(pitch=40))
    engine = speech.ENGINES["f5-tts"]

    samples, rate = engine.synthesize(SENTENCES[0], reference, TRANSCRIPT)

    assert rate == 24000
    expected = cloning.frames_to_generate(
        reference_frames(reference), TRANSCRIPT + " ", SENTENCES[0]
    )
    assert expected > 20
    assert samples.shape == (expected * 256,)
    assert samples.dtype == np.float32
    assert np.isfinite(samples).all()
    assert np.abs(samples).max() > 0
    # loaded once into the worker's model cache, the EMA weights as saved
    assert fresh_cache.loaded() == [f"f5-tts:{cloning.model_folder()}"]
    model = engine.model()  # type: ignore[attr-defined]
    saved = cloning.load(cloning.model_folder())
    for (name, mine), (_, theirs) in zip(
        model.cfm.state_dict().items(), saved.cfm.state_dict().items(), strict=True
    ):
        assert torch.equal(mine, theirs), name


@pytest.mark.django_db
def test_tts_clone_speaks_each_sentence_in_the_profiles_voice(
    gpu_settings: Any, fresh_cache: ModelCache, tmp_path: Path
) -> None:
    profile = voice_profile(tmp_path)
    run = make_service_run("tts.clone")
    run.context.inputs = {"script": {"narration": " ".join(SENTENCES)}, "voice": profile}

    output = clone.run(run.context)

    assert (output["engine"], output["profile_id"]) == ("f5-tts", profile["profile_id"])
    with wave.open(io.BytesIO(run.read(output["audio"]))) as read:
        assert read.getframerate() == 24000
        total = read.getnframes()
    reference = tmp_path / "stored-reference.wav"
    reference.write_bytes(run.read(profile["reference"]))
    frames = reference_frames(reference)
    spoken = [cloning.frames_to_generate(frames, TRANSCRIPT + " ", s) * 256 for s in SENTENCES]
    assert total == sum(spoken) + math.ceil(PAUSE_SECONDS * 24000)
    assert [cue["text"] for cue in output["cues"]] == SENTENCES
    assert output["cues"][0]["end"] == pytest.approx(spoken[0] / 24000, abs=1e-3)
    assert output["loudness_lufs"] == pytest.approx(-16, abs=0.5)


@pytest.mark.django_db
def test_tts_clone_without_a_profile_or_an_engine_fails_clearly(
    gpu_settings: Any, tmp_path: Path
) -> None:
    run = make_service_run("tts.clone")
    run.context.inputs = {"narration": "Hello there."}
    with pytest.raises(PermanentError) as raised:
        clone.run(run.context)
    assert raised.value.code == "missing_input"

    gpu_settings.MYSPINBOT_F5_TTS_MODEL = "no-such-model"
    run.context.inputs = {"narration": "Hello there.", "profile_id": str(uuid.uuid4())}
    with pytest.raises(PermanentError) as raised:
        clone.run(run.context)
    assert raised.value.code == "bad_input"


def test_the_mel_stand_in_matches_librosas_htk_magnitude_mel() -> None:
    import librosa

    rng = np.random.default_rng(0)
    signal = rng.standard_normal(24000).astype(np.float32) * 0.1
    mel = torchaudio_mel.MelSpectrogram(
        sample_rate=24000, n_fft=1024, win_length=1024, hop_length=256, n_mels=100, power=1
    )(torch.from_numpy(signal)[None])[0].numpy()
    theirs = librosa.feature.melspectrogram(
        y=signal,
        sr=24000,
        n_fft=1024,
        hop_length=256,
        n_mels=100,
        power=1.0,
        htk=True,
        norm=None,
        pad_mode="reflect",
    )
    assert mel.shape == theirs.shape
    assert np.allclose(mel, theirs, rtol=1e-3, atol=1e-4)
