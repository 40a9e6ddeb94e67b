"""tts.clone: the narration spoken in the voice of a profile's reference clip by a GPU
cloning engine (``gpu_tasks.speech``: F5-TTS), sentence by sentence. torch and
``gpu_tasks`` are imported inside :func:`run`.

The planner puts it in place of ``tts.speak`` when a gpu worker offers a cloning engine
and the speech follows a voice profile; its outputs are ``tts.speak``'s, so the lip-sync
and the video read it the same way.
"""

from __future__ import annotations

import uuid
from typing import Any

from apps.capabilities.context import NodeContext
from apps.capabilities.media import audio
from apps.capabilities.services.gpu_common import choose_backend
from apps.capabilities.services.tts_speak.handler import (
    find_narration,
    narration_words,
    split_sentences,
    store_speech,
)
from myspinbot.errors import PermanentError


def run(ctx: NodeContext) -> dict[str, Any]:
    """Speak the narration with the chosen (or the first available) engine."""
    from gpu_tasks import speech, worker

    narration = find_narration(ctx.inputs)
    sentences = split_sentences(narration)
    words = narration_words(narration)
    profile_id, reference_ref, transcript = find_reference(ctx)
    wanted = choose_backend(
        ctx.params.get("engine"), speech.available_engines(), "engine_unavailable", "cloning engine"
    )
    engine = speech.ENGINES[wanted]
    workdir = ctx.workdir
    assert workdir is not None, "the worker gives every attempt a workdir"
    reference = ctx.artifacts.fetch(reference_ref, workdir, "reference.wav")
    clips: list[audio.Samples] = []
    rate = 0
    with worker.guarded({"engine": wanted, "sentences": len(sentences)}):
        for index, sentence in enumerate(sentences):
            samples, rate = engine.synthesize(sentence, reference, transcript)
            clips.append(samples.astype("float32"))
            ctx.progress(0.9 * (index + 1) / len(sentences), f"spoke sentence {index + 1}")
    stored = store_speech(ctx, clips, sentences, rate)
    ctx.progress(1.0, "speech ready")
    return {
        **stored,
        "engine": engine.name,
        "voice": f"cloned from voice profile {profile_id}",
        "rate_wpm": None,
        "time_stretch": 1.0,
        "profile_id": profile_id,
        "timbre_conformed": True,
        "timbre": {"conformed": True, "cloned_by": engine.name},
        "words": words,
    }


def find_reference(ctx: NodeContext) -> tuple[str, dict[str, Any], str]:
    """The voice profile (a predecessor's, else the static input ``profile_id``) as its
    id, its reference clip's artifact and its transcript."""
    wanted: Any = None
    for key, value in ctx.inputs.items():
        if key != "profile_id" and isinstance(value, dict) and "profile_id" in value:
            wanted = value["profile_id"]
            break
    else:
        wanted = ctx.inputs.get("profile_id")
    if wanted is None:
        raise PermanentError(
            "missing_input", "cloning needs a voice profile: connect voice.build_profile"
        )
    try:
        profile_id = str(uuid.UUID(str(wanted)))
    except ValueError:
        raise PermanentError("bad_input", f"profile_id {wanted!r} is not a profile id") from None
    assert ctx.profiles is not None
    profile = ctx.profiles.find("voice", profile_id)
    if profile is None:
        raise PermanentError("bad_input", f"no voice profile {profile_id} of this user")
    reference, transcript = profile.data.get("reference"), profile.data.get("transcript")
    if not isinstance(reference, dict) or not isinstance(transcript, str) or not transcript:
        raise PermanentError(
            "bad_input", f"voice profile {profile_id} has no reference clip and transcript"
        )
    return profile.id, reference, transcript
