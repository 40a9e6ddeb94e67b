"""lipsync.gpu: a portrait + narration → a GPU lip-sync backend (MuseTalk) → MP4.

The face is found with the CPU lip-sync's face mesh; the face crop, the mouth box and its
feathered mask come from :mod:`~apps.capabilities.media.mouth_region`; the backend makes
the frames and the MP4 carries the narration. The media code, torch and ``gpu_tasks``
are imported inside :func:`run` (a worker answers capability queries without them)."""

from __future__ import annotations

from typing import Any

from apps.capabilities.context import NodeContext
from apps.capabilities.services.gpu_common import choose_backend
from apps.capabilities.services.lipsync_sync.handler import find_inputs


def run(ctx: NodeContext) -> dict[str, Any]:
    """Lip-sync with the chosen (or the first available) backend; see ``capability.json``."""
    import av

    from apps.capabilities.media import audio as audio_media
    from apps.capabilities.media import face as facemesh
    from apps.capabilities.media import mouth_region, probe, talking_head, video
    from gpu_tasks import lipsync, worker

    face_ref, audio_ref, _ = find_inputs(ctx)
    wanted = choose_backend(
        ctx.params.get("backend"),
        lipsync.available_backends(),
        "backend_unavailable",
        "lip-sync backend",
    )
    assert ctx.workdir is not None
    face_path = ctx.artifacts.fetch(face_ref, ctx.workdir, "face")
    audio_path = ctx.artifacts.fetch(audio_ref, ctx.workdir, "audio.wav")
    # Only audio the probe allows, within the length bounds, reaches a decoder.
    probe.probe_audio(audio_path)
    ctx.progress(0.0, "finding the face")
    rgb = talking_head.load_portrait(face_path)
    found = facemesh.find_face(rgb)
    mouth = mouth_region.mouth_box(found.landmarks, rgb.shape)
    job = lipsync.LipSyncJob(
        image=rgb,
        crop=mouth_region.crop_box(found.landmarks, rgb.shape),
        mouth=mouth,
        mask=mouth_region.feathered_mask(mouth),
        samples=audio_media.decode_audio(audio_path, lipsync.AUDIO_RATE),
        fps=ctx.params["fps"],
    )
    narration = video.read_audio(audio_path)
    height, width = rgb.shape[:2]
    settings = video.VideoSettings(
        width=width, height=height, fps=job.fps, crf=ctx.params["crf"], preset="veryfast"
    )
    output = ctx.workdir / "lipsync.mp4"
    frames = 0
    with (
        worker.guarded({"backend": wanted, "width": width, "height": height}),
        video.Mp4Writer(output, settings, narration) as writer,
    ):
        for frame in lipsync.BACKENDS[wanted].frames(
            job, lambda f, m: ctx.progress(0.05 + 0.9 * f, m)
        ):
            writer.write(av.VideoFrame.from_ndarray(frame, format="rgb24"))
            frames += 1
    stored = ctx.artifacts.save("video.mp4", output, "video/mp4")
    ctx.progress(1.0, "lip-sync ready")
    return {
        "video": stored,
        "backend": wanted,
        "face": found.summary(),
        "width": width,
        "height": height,
        "fps": job.fps,
        "frames": frames,
        "duration_seconds": round(narration.duration, 3),
    }
