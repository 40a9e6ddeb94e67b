"""lipsync.gpu: face + narration → a registered GPU lip-sync backend → MP4. torch and
``gpu_tasks`` are imported inside :func:`run`."""

from __future__ import annotations

from typing import Any

from apps.capabilities.context import NodeContext
from apps.capabilities.media import probe
from apps.capabilities.services.lipsync_sync.handler import find_inputs
from myspinbot.errors import PermanentError


def run(ctx: NodeContext) -> dict[str, Any]:
    """Lip-sync with the chosen (or the first available) backend; see ``capability.json``."""
    from gpu_tasks import lipsync, worker

    face_ref, audio_ref, _ = find_inputs(ctx)
    available = lipsync.available_backends()
    wanted = ctx.params.get("backend") or (available[0] if available else None)
    if wanted is None or wanted not in available:
        known = ", ".join(available) or "none"
        raise PermanentError(
            "backend_unavailable",
            f"lip-sync backend {wanted or '(any)'} is not available here; available: {known}",
        )
    assert ctx.workdir is not None
    face = ctx.artifacts.fetch(face_ref, ctx.workdir, "face")
    audio = ctx.artifacts.fetch(audio_ref, ctx.workdir, "audio.wav")
    # A backend hands the narration to its own decoder (FFmpeg, librosa): it gets only
    # audio the probe allows, within the length bounds.
    probe.probe_audio(audio)
    with worker.guarded({"backend": wanted}):
        output = lipsync.BACKENDS[wanted].run(
            face, audio, ctx.workdir / "lipsync.mp4", lambda f, m: ctx.progress(0.9 * f, m)
        )
    stored = ctx.artifacts.save("video.mp4", output, "video/mp4")
    ctx.progress(1.0, "lip-sync ready")
    return {"video": stored, "backend": wanted}
