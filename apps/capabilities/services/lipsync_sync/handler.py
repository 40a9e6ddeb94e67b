"""lipsync.sync: one portrait + a narration → a talking-head MP4, on the CPU
(:mod:`apps.capabilities.media.talking_head`)."""

from __future__ import annotations

from typing import Any

from apps.capabilities.context import NodeContext
from myspinbot.errors import PermanentError

BACKEND = "face-mesh"


def find_inputs(ctx: NodeContext) -> tuple[dict[str, Any], dict[str, Any], str]:
    """The face image's ref, the narration audio's ref and the narration's text.

    The face is the static ``portrait`` (or the first of ``photos``), else a
    predecessor's first ``keyframes`` entry,
    ``image``, ``clip`` or ``video``.
    """
    face = ctx.inputs.get("portrait") if isinstance(ctx.inputs.get("portrait"), dict) else None
    photos = ctx.inputs.get("photos")
    if face is None and isinstance(photos, list) and photos and isinstance(photos[0], dict):
        face = photos[0]
    audio: dict[str, Any] | None = None
    text = ""
    for value in ctx.inputs.values():
        if not isinstance(value, dict):
            continue
        if audio is None and isinstance(value.get("audio"), dict):
            audio = value["audio"]
            cues = value.get("cues")
            cues = cues if isinstance(cues, list) else []
            text = " ".join(str(c.get("text", "")) for c in cues if isinstance(c, dict))
        frames = value.get("keyframes")
        if face is None and isinstance(frames, list) and frames and isinstance(frames[0], dict):
            face = frames[0]
        for key in ("image", "clip", "video"):
            if face is None and isinstance(value.get(key), dict):
                face = value[key]
    if face is None or audio is None:
        raise PermanentError(
            "missing_input", "lip-sync needs a face (a portrait or keyframe) and a narration"
        )
    return face, audio, text


def run(ctx: NodeContext) -> dict[str, Any]:
    """Render the talking head; see ``capability.json``."""
    from apps.capabilities.media import talking_head

    face_ref, audio_ref, text = find_inputs(ctx)
    assert ctx.workdir is not None
    portrait = ctx.artifacts.fetch(face_ref, ctx.workdir, "portrait")
    narration = ctx.artifacts.fetch(audio_ref, ctx.workdir, "narration.wav")
    ctx.progress(0.0, "finding the face")
    output = ctx.workdir / "talking.mp4"
    clip = talking_head.render(
        portrait,
        narration,
        text,
        output,
        lambda fraction, message: ctx.progress(0.95 * fraction, message),
        fps=ctx.params["fps"],
        crf=ctx.params["crf"],
        preset=ctx.params["preset"],
    )
    stored = ctx.artifacts.save("talking.mp4", output, "video/mp4")
    ctx.progress(1.0, "talking head ready")
    return {
        "video": stored,
        "face": clip.face,
        "backend": BACKEND,
        "timing": clip.timing,
        "timing_note": clip.timing_note,
        "words": clip.words,
        "width": clip.width,
        "height": clip.height,
        "fps": clip.fps,
        "frames": clip.frames,
        "duration_seconds": round(clip.duration_seconds, 3),
    }
